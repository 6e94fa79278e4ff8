"""Numba kernels behind :mod:`fastprop.backends.numba_backend`.

Every kernel is type-generic: Numba compiles one specialization per dtype, and constants are made
with ``x.dtype.type(...)`` so float32 math stays float32. The backend checks shapes, dtypes and
contiguity before calling; these kernels do not bounds-check (``take_rows`` checks its indices).

Determinism: a result never depends on the thread count. Row-parallel kernels compute each output
row on one thread in a fixed order; reductions over the batch (weight and bias gradients) sum fixed
chunks of ``CHUNK`` rows in parallel, then add the chunk sums in chunk order on one thread.
``fastmath`` is limited to ``reassoc`` and ``contract`` on the dot-product kernels: it lets LLVM
vectorize the reductions and use FMA, an order fixed at compile time (on this CPU), so results
differ from NumPy only by float rounding and are identical from run to run.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

#: Rows per chunk of a batch reduction; depends on nothing but this constant.
CHUNK = 64

_REDUCE = {"reassoc", "contract"}
_jit = dict(cache=True, nogil=True)


@numba.njit(parallel=True, **_jit)
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
        out[i, :] = src[r, :]
    return True


@numba.njit(inline="always")
def _fma5(a, w, s):
    """``s + a * w`` for 5-tuples ``w`` and ``s``."""
    return s[0] + a * w[0], s[1] + a * w[1], s[2] + a * w[2], s[3] + a * w[3], s[4] + a * w[4]


@numba.njit(fastmath=_REDUCE, **_jit)  # LLVM inlines it; Numba's inline="always" breaks its parfors
def _dot_4x5(a, r0, r1, r2, r3, W, j0):
    """Dot products of rows ``r0..r3`` of ``a`` with rows ``j0..j0+4`` of ``W``, kept in registers.

    Returns the five output indices (clamped to the last row of ``W``, so a duplicate is computed
    twice and written with the same value) and one 5-tuple of sums per input row.
    """
    m, zero = W.shape[0], a.dtype.type(0)
    j1, j2, j3, j4 = min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1)
    s0 = s1 = s2 = s3 = (zero, zero, zero, zero, zero)
    for k in range(a.shape[1]):
        w = (W[j0, k], W[j1, k], W[j2, k], W[j3, k], W[j4, k])
        s0 = _fma5(a[r0, k], w, s0)
        s1 = _fma5(a[r1, k], w, s1)
        s2 = _fma5(a[r2, k], w, s2)
        s3 = _fma5(a[r3, k], w, s3)
    return (j0, j1, j2, j3, j4), s0, s1, s2, s3


@numba.njit(parallel=True, fastmath=_REDUCE, **_jit)
def dense_forward(x, W, b, sigmoid):
    """Return ``z = x @ W.T + b``, or ``1 / (1 + exp(-z))`` when ``sigmoid``.

    Each pass over ``k`` computes a block of 4 rows x 5 outputs in registers. Indices past the end
    are clamped: the duplicate row or output is computed twice and written with the same value.
    """
    n, k_in = x.shape
    m = W.shape[0]
    one = x.dtype.type(1)
    out = np.empty((n, m), x.dtype)
    for block in prange((n + 3) // 4):
        i0 = 4 * block
        i1, i2, i3 = min(i0 + 1, n - 1), min(i0 + 2, n - 1), min(i0 + 3, n - 1)
        for j0 in range(0, m, 5):
            j, s0, s1, s2, s3 = _dot_4x5(x, i0, i1, i2, i3, W, j0)
            for i, s in ((i0, s0), (i1, s1), (i2, s2), (i3, s3)):
                out[i, j[0]], out[i, j[1]], out[i, j[2]], out[i, j[3]], out[i, j[4]] = s
        for i in range(i0, min(i0 + 4, n)):
            for j in range(m):
                z = out[i, j] + b[0, j]
                out[i, j] = one / (one + np.exp(-z)) if sigmoid else z
    return out


@numba.njit(parallel=True, fastmath=_REDUCE, **_jit)
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
        pw[:] = zero
        for i0 in range(start, stop, 4):
            r = i0 - start
            i1, i2, i3 = min(i0 + 1, stop - 1), min(i0 + 2, stop - 1), min(i0 + 3, stop - 1)
            for j0 in range(0, m, 2):
                a0, a1, a2, a3 = dz[r, j0], dz[r + 1, j0], dz[r + 2, j0], dz[r + 3, j0]
                if j0 + 1 < m:
                    j1 = j0 + 1
                    b0, b1, b2, b3 = dz[r, j1], dz[r + 1, j1], dz[r + 2, j1], dz[r + 3, j1]
                    for k in range(k_in):
                        x0, x1, x2, x3 = x[i0, k], x[i1, k], x[i2, k], x[i3, k]
                        pw[j0, k] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
                        pw[j1, k] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3
                else:
                    for k in range(k_in):
                        pw[j0, k] += a0 * x[i0, k] + a1 * x[i1, k] + a2 * x[i2, k] + a3 * x[i3, k]
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


@numba.njit(**_jit)
def sigmoid_mse_gradient(p, t):
    """Return ``(p - t) * p * (1 - p)``."""
    out = np.empty_like(p)
    one = p.dtype.type(1)
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            out[i, j] = (p[i, j] - t[i, j]) * p[i, j] * (one - p[i, j])
    return out


@numba.njit(**_jit)
def relu(z):
    """Return ``max(z, 0)``."""
    out = np.empty_like(z)
    zero = z.dtype.type(0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            out[i, j] = zero if z[i, j] < zero else z[i, j]  # NaN stays NaN, as in numpy.maximum
    return out


@numba.njit(**_jit)
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


@numba.njit(**_jit)
def softmax_cross_entropy(z, t):
    """Return ``-t * log_softmax(z)``, row by row."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        top, total = _row_max_and_exp_sum(z, i)
        log_total = np.log(total)
        for j in range(z.shape[1]):
            out[i, j] = -t[i, j] * (z[i, j] - top - log_total)
    return out


@numba.njit(**_jit)
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


@numba.njit(**_jit)
def sgd_update(param, grad, learning_rate):
    """In place: ``param -= learning_rate * grad`` with the rate rounded to the arrays' dtype."""
    rate = param.dtype.type(learning_rate)
    flat_param, flat_grad = param.reshape(param.size), grad.reshape(grad.size)
    for i in range(flat_param.shape[0]):
        flat_param[i] -= rate * flat_grad[i]


@numba.njit(parallel=True, fastmath=_REDUCE, **_jit)
def sigmoid_mse_step(images, targets, rows, W, b, dW, db, learning_rate):
    """One whole SGD step of ``Linear`` + ``Sigmoid`` + ``MeanSquareError`` on ``images[rows]``.

    Each row is read from ``images`` once for the forward pass and once, still in cache, for its
    share of the weight gradient, with no gathered copy of the batch. ``dW`` and ``db`` are
    overwritten with the batch's summed gradients (as the step loop leaves them), then
    ``W -= learning_rate * dW`` and ``b -= learning_rate * db``. Returns the batch's summed cost
    ``sum(1/2 (t - p)**2)`` in float64. Chunks of ``CHUNK`` rows are summed in chunk order.
    """
    n = rows.shape[0]
    m, k_in = W.shape
    zero, one, half = W.dtype.type(0), W.dtype.type(1), W.dtype.type(0.5)
    chunks = (n + CHUNK - 1) // CHUNK
    partial_w = np.empty((chunks, m, k_in), W.dtype)
    partial_b = np.zeros((chunks, m), W.dtype)
    cost = np.zeros(chunks)
    for c in prange(chunks):
        start, stop = c * CHUNK, min(n, c * CHUNK + CHUNK)
        P = partial_w[c]
        P[:] = zero
        d = np.zeros((4, m), W.dtype)
        for i0 in range(start, stop, 4):
            last = stop - 1
            r0, r1 = rows[i0], rows[min(i0 + 1, last)]
            r2, r3 = rows[min(i0 + 2, last)], rows[min(i0 + 3, last)]
            valid = min(4, stop - i0)
            for j0 in range(0, m, 5):
                j, s0, s1, s2, s3 = _dot_4x5(images, r0, r1, r2, r3, W, j0)
                for q, s in ((0, s0), (1, s1), (2, s2), (3, s3)):
                    d[q, j[0]], d[q, j[1]], d[q, j[2]], d[q, j[3]], d[q, j[4]] = s
            for q in range(4):
                r = rows[min(i0 + q, last)]
                for j in range(m):
                    if q < valid:
                        p = one / (one + np.exp(-(d[q, j] + b[0, j])))
                        e = targets[r, j] - p
                        cost[c] += half * e * e
                        d[q, j] = -e * p * (one - p)
                        partial_b[c, j] += d[q, j]
                    else:
                        d[q, j] = zero
            for j0 in range(0, m, 2):  # two outputs per pass over the four rows
                j1 = min(j0 + 1, m - 1)
                a0, a1, a2, a3 = d[0, j0], d[1, j0], d[2, j0], d[3, j0]
                c0, c1, c2, c3 = d[0, j1], d[1, j1], d[2, j1], d[3, j1]
                if j1 == j0:  # odd m: the clamped second output must add nothing
                    c0 = c1 = c2 = c3 = zero
                for k in range(k_in):
                    x0, x1, x2, x3 = images[r0, k], images[r1, k], images[r2, k], images[r3, k]
                    P[j0, k] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
                    P[j1, k] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
    total = 0.0
    for c in range(chunks):
        total += cost[c]
    for c in range(1, chunks):
        for j in range(m):
            partial_b[0, j] += partial_b[c, j]
            for k in range(k_in):
                partial_w[0, j, k] += partial_w[c, j, k]
    for j in range(m):
        db[0, j] = partial_b[0, j]
        b[0, j] -= learning_rate * db[0, j]
        for k in range(k_in):
            dW[j, k] = partial_w[0, j, k]
            W[j, k] -= learning_rate * dW[j, k]
    return total
