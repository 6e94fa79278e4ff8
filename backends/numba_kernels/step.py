"""The kernels behind the Numba backend's contract methods, one call per layer and batch."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from .intrinsics import JIT, REDUCE, _sigmoid

#: Rows per chunk of a batch reduction in the step-loop kernels.
CHUNK = 64


@numba.njit(parallel=True, **JIT)
def take_rows(src, indices, out):
    """``out[i] = src[indices[i]]``; returns False (copying nothing) if an index is out of range."""
    n = src.shape[0]
    for i in range(indices.shape[0]):
        if indices[i] < -n or indices[i] >= n:
            return False
    for i in prange(indices.shape[0]):
        r = indices[i]
        if r < 0:
            r += n
        for k in range(src.shape[1]):  # an explicit loop: Numba's row-slice assignment is slower
            out[i, k] = src[r, k]
    return True


@numba.njit(inline="always")
def _fma5(a, w, s):
    """``s + a * w`` for 5-tuples ``w`` and ``s``."""
    return s[0] + a * w[0], s[1] + a * w[1], s[2] + a * w[2], s[3] + a * w[3], s[4] + a * w[4]


@numba.njit(fastmath=REDUCE, **JIT)  # LLVM inlines it; Numba's inline="always" breaks its parfors
def _dot_4x5(a, r0, r1, r2, r3, W, j0):
    """Dot products of rows ``r0..r3`` of ``a`` with rows ``j0..j0+4`` of ``W``, kept in registers.

    ``a``'s elements are converted to ``W``'s dtype (nothing for floats; uint8 codes become exact).

    Returns the five output indices (clamped to the last row of ``W``, so a duplicate is computed
    twice and written with the same value) and one 5-tuple of sums per input row.
    """
    m, zero, f = W.shape[0], W.dtype.type(0), W.dtype.type
    j1, j2, j3, j4 = min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1)
    s0 = s1 = s2 = s3 = (zero, zero, zero, zero, zero)
    for k in range(a.shape[1]):
        w = (W[j0, k], W[j1, k], W[j2, k], W[j3, k], W[j4, k])
        s0 = _fma5(f(a[r0, k]), w, s0)
        s1 = _fma5(f(a[r1, k]), w, s1)
        s2 = _fma5(f(a[r2, k]), w, s2)
        s3 = _fma5(f(a[r3, k]), w, s3)
    return (j0, j1, j2, j3, j4), s0, s1, s2, s3


@numba.njit(fastmath=REDUCE, **JIT)
def _add_4x5(P, d, x, r0, r1, r2, r3, j0):
    """``P[j] += d[0, j] * x[r0] + ... + d[3, j] * x[r3]`` for the five outputs ``j`` from ``j0``.

    Outputs past the end of ``P`` are clamped to its last row with zero coefficients: they add nothing.
    """
    m, zero, f = P.shape[0], P.dtype.type(0), P.dtype.type
    j = (j0, min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1))
    a0 = (d[0, j[0]], d[1, j[0]], d[2, j[0]], d[3, j[0]])
    a1 = (d[0, j[1]], d[1, j[1]], d[2, j[1]], d[3, j[1]]) if j0 + 1 < m else (zero, zero, zero, zero)
    a2 = (d[0, j[2]], d[1, j[2]], d[2, j[2]], d[3, j[2]]) if j0 + 2 < m else (zero, zero, zero, zero)
    a3 = (d[0, j[3]], d[1, j[3]], d[2, j[3]], d[3, j[3]]) if j0 + 3 < m else (zero, zero, zero, zero)
    a4 = (d[0, j[4]], d[1, j[4]], d[2, j[4]], d[3, j[4]]) if j0 + 4 < m else (zero, zero, zero, zero)
    for k in range(x.shape[1]):
        x0, x1, x2, x3 = f(x[r0, k]), f(x[r1, k]), f(x[r2, k]), f(x[r3, k])
        P[j[0], k] += a0[0] * x0 + a0[1] * x1 + a0[2] * x2 + a0[3] * x3
        P[j[1], k] += a1[0] * x0 + a1[1] * x1 + a1[2] * x2 + a1[3] * x3
        P[j[2], k] += a2[0] * x0 + a2[1] * x1 + a2[2] * x2 + a2[3] * x3
        P[j[3], k] += a3[0] * x0 + a3[1] * x1 + a3[2] * x2 + a3[3] * x3
        P[j[4], k] += a4[0] * x0 + a4[1] * x1 + a4[2] * x2 + a4[3] * x3


@numba.njit(fastmath=REDUCE, **JIT)
def _dense_4rows(a, rows, W, b, scale, out, targets):
    """``out[targets[q]] = (a[rows[q]] @ W.T) * scale + b`` for the four rows, 4 x 5 outputs at a time."""
    m = W.shape[0]
    for j0 in range(0, m, 5):
        j, s0, s1, s2, s3 = _dot_4x5(a, rows[0], rows[1], rows[2], rows[3], W, j0)
        for o, s in ((targets[0], s0), (targets[1], s1), (targets[2], s2), (targets[3], s3)):
            for u in range(5):
                out[o, j[u]] = s[u] * scale + b[0, j[u]]


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def dense_forward(x, W, b, p):
    """Return ``z = x @ W.T + b``; when ``p`` has rows (``(batch, n_out)``), also ``p = 1 / (1 + exp(-z))``.

    Each pass over ``k`` computes a block of 4 rows x 5 outputs in registers. Indices past the end
    are clamped: the duplicate row or output is computed twice and written with the same value.
    """
    n, m = x.shape[0], W.shape[0]
    one = x.dtype.type(1)
    out = np.empty((n, m), x.dtype)
    sigmoid = p.shape[0] > 0
    for block in prange((n + 3) // 4):
        i0 = 4 * block
        rows = (i0, min(i0 + 1, n - 1), min(i0 + 2, n - 1), min(i0 + 3, n - 1))
        _dense_4rows(x, rows, W, b, one, out, rows)
        if sigmoid:
            for i in range(i0, min(i0 + 4, n)):
                for j in range(m):
                    p[i, j] = _sigmoid(out[i, j])
    return out


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def dense_backward(x, W, p, g, dW, db, sigmoid, accumulate, need_dx):
    """Backward of :func:`dense_forward` given ``g = dL/dout`` (and its output ``p`` when ``sigmoid``).

    ``dz = g * p * (1 - p)`` (or ``g``); ``dW``/``db`` get (or get added) ``dz.T @ x`` and
    ``dz.sum(0)``. Returns ``dx = dz @ W`` when ``need_dx``, else an empty array.
    """
    n, k_in = x.shape
    m = W.shape[0]
    dtype = x.dtype
    zero, one = dtype.type(0), dtype.type(1)
    chunks = (n + CHUNK - 1) // CHUNK
    partial_w = np.empty((chunks, m, k_in), dtype)
    partial_b = np.empty((chunks, m), dtype)
    dx = np.empty((n, k_in) if need_dx else (0, 0), dtype)
    for c in prange(chunks):
        start = c * CHUNK
        stop = min(n, start + CHUNK)
        dz = np.zeros((CHUNK + 3, m), dtype)  # rows past the chunk stay zero for the 4-row blocks
        for i in range(start, stop):
            for j in range(m):
                dz[i - start, j] = g[i, j] * p[i, j] * (one - p[i, j]) if sigmoid else g[i, j]
        for j in range(m):
            s = zero
            for r in range(stop - start):
                s += dz[r, j]
            partial_b[c, j] = s
        pw = partial_w[c]
        for j in range(m):
            for k in range(k_in):
                pw[j, k] = zero
        for i0 in range(start, stop, 4):
            i1, i2, i3 = min(i0 + 1, stop - 1), min(i0 + 2, stop - 1), min(i0 + 3, stop - 1)
            block = dz[i0 - start:i0 - start + 4]  # rows past the chunk are zero: they add nothing
            for j0 in range(0, m, 5):
                _add_4x5(pw, block, x, i0, i1, i2, i3, j0)
        if need_dx:
            for i in range(start, stop):
                r = i - start
                dx[i, :] = zero
                for j0 in range(0, m - 3, 4):
                    a0, a1, a2, a3 = dz[r, j0], dz[r, j0 + 1], dz[r, j0 + 2], dz[r, j0 + 3]
                    for k in range(k_in):
                        dx[i, k] += a0 * W[j0, k] + a1 * W[j0 + 1, k] + a2 * W[j0 + 2, k] + a3 * W[j0 + 3, k]
                for j in range(m - m % 4, m):
                    a0 = dz[r, j]
                    for k in range(k_in):
                        dx[i, k] += a0 * W[j, k]
    # Chunk sums are added in chunk order on this thread: the same bits for any thread count.
    total_w, total_b = partial_w[0], partial_b[0]
    for c in range(1, chunks):
        for j in range(m):
            total_b[j] += partial_b[c, j]
            for k in range(k_in):
                total_w[j, k] += partial_w[c, j, k]
    for j in range(m):
        db[0, j] = db[0, j] + total_b[j] if accumulate else total_b[j]
        for k in range(k_in):
            dW[j, k] = dW[j, k] + total_w[j, k] if accumulate else total_w[j, k]
    return dx


@numba.njit(**JIT)
def relu(z):
    """Return ``max(z, 0)``."""
    out = np.empty_like(z)
    zero = z.dtype.type(0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            out[i, j] = zero if z[i, j] < zero else z[i, j]  # NaN stays NaN, as in numpy.maximum
    return out


@numba.njit(**JIT)
def relu_backward(y, dy):
    """Return ``dy * (y > 0)``."""
    out = np.empty_like(y)
    zero, one = y.dtype.type(0), y.dtype.type(1)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            out[i, j] = dy[i, j] * (one if y[i, j] > zero else zero)
    return out


@numba.njit(inline="always")
def _row_max_and_exp_sum(z, i):
    """``max(z[i])`` and ``sum(exp(z[i] - max))``."""
    top = z[i, 0]
    for j in range(1, z.shape[1]):
        top = max(top, z[i, j])
    total = z.dtype.type(0)
    for j in range(z.shape[1]):
        total += np.exp(z[i, j] - top)
    return top, total


@numba.njit(**JIT)
def softmax_cross_entropy(z, t):
    """Return ``-t * log_softmax(z)``, row by row."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        top, total = _row_max_and_exp_sum(z, i)
        log_total = np.log(total)
        for j in range(z.shape[1]):
            out[i, j] = -t[i, j] * (z[i, j] - top - log_total)
    return out


@numba.njit(**JIT)
def softmax_cross_entropy_gradient(z, t):
    """Return ``softmax(z) * sum(t) - t``, row by row."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        top, total = _row_max_and_exp_sum(z, i)
        mass = z.dtype.type(0)
        for j in range(z.shape[1]):
            mass += t[i, j]
        for j in range(z.shape[1]):
            out[i, j] = np.exp(z[i, j] - top) / total * mass - t[i, j]
    return out


@numba.njit(**JIT)
def sgd_update(param, grad, learning_rate):
    """In place: ``param -= learning_rate * grad`` with the rate rounded to the arrays' dtype."""
    rate = param.dtype.type(learning_rate)
    flat_param, flat_grad = param.reshape(param.size), grad.reshape(grad.size)
    for i in range(flat_param.shape[0]):
        flat_param[i] -= rate * flat_grad[i]


@numba.njit(parallel=True, **JIT)
def adam_update(param, grad, m, v, learning_rate, beta1, beta2, eps, step, weight_decay, decoupled):
    """In place, one pass: the Adam (AdamW with ``decoupled``) step of the contract's ``adam_update``,
    its operations in the reference's order, constants rounded to the arrays' dtype."""
    f = param.dtype.type
    decay, keep = f(weight_decay), f(1.0 - learning_rate * weight_decay)
    b1, b2, rest2 = f(beta1), f(beta2), f(1.0 - beta2)
    unbias2, epsilon = f(1.0 / math.sqrt(1.0 - beta2**step)), f(eps)
    rate = f(learning_rate / (1.0 - beta1**step))
    flat_param, flat_grad = param.reshape(param.size), grad.reshape(grad.size)
    flat_m, flat_v = m.reshape(m.size), v.reshape(v.size)
    for i in prange(flat_param.shape[0]):
        value, g = flat_param[i], flat_grad[i]
        if decoupled and weight_decay:
            value *= keep
        elif weight_decay:
            g = value * decay + g
        first = g + b1 * (flat_m[i] - g)
        second = flat_v[i] * b2 + g * g * rest2
        flat_m[i], flat_v[i] = first, second
        flat_param[i] = value - first / (math.sqrt(second) * unbias2 + epsilon) * rate
