"""The whole-epoch kernel: SGD on a dense sigmoid layer and summed squared error, one call per epoch."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .dense import CHUNK
from .intrinsics import JIT, REDUCE, _prefetch_row, _sigmoid

#: The whole-epoch kernel splits each batch into at most this many chunks of at least CHUNK // 2
#: rows: a split that depends on the batch size only. Every chunk's gradient sum is added up after
#: the batch, so fewer, longer chunks are cheaper than chunks of CHUNK rows; 8 still shares out
#: evenly over 1, 2, 4 or 8 threads.
EPOCH_SPLIT = 8
#: How many rows ahead the whole-epoch kernel asks the CPU to prefetch the rows it will read.
PREFETCH = 4


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



@numba.njit(parallel=True, **JIT)
def encode_pixels(images, levels, codes):
    """``codes = images * levels`` as uint8 if every value is exactly ``k / levels`` for a ``k`` in 0..255.

    Returns False (``codes`` then holds garbage) when any value is not: NaN, out of range, or between
    levels. Exact means the bits of ``dtype(k) / dtype(levels)``, which is what ``pixels / 255`` gives.
    Branch-free, so that LLVM vectorizes it.
    """
    n, k_in = images.shape
    level = images.dtype.type(levels)
    decoded = np.arange(256).astype(images.dtype) / level
    lowest, highest = images.dtype.type(-0.5), images.dtype.type(255.49)
    exact = np.empty(n, np.bool_)
    for i in prange(n):
        row, out = images[i], codes[i]
        ok = True
        for k in range(k_in):
            v = row[k] * level
            inside = v >= lowest and v <= highest  # False for NaN
            c = np.uint8(v + images.dtype.type(0.5)) if inside else np.uint8(0)
            ok &= inside and decoded[c] == row[k]
            out[k] = c
        exact[i] = ok
    return exact.all()


@numba.njit(fastmath=REDUCE, error_model="numpy", **JIT)
def _sigmoid_mse_chunk(images, scale, targets, rows, start, stop, W, b, P, pb, d, t):
    """Forward, cost and gradient sums of ``rows[start:stop]``; returns their summed cost (float64).

    1. Forward: each block of four rows is read straight from ``images`` (prefetched ``PREFETCH``
       rows ahead) and ``z`` goes to ``d``; the target rows are gathered into ``t``.
    2. Sigmoid, cost and ``dz`` for the whole chunk in one loop LLVM vectorizes; ``pb`` gets
       ``sum(dz)``, and ``d`` becomes ``dz * scale`` (zero in the padding rows of the last block).
    3. ``P = sum(dz.T @ x)``, four rows at a time, the rows read again from L1/L2.

    ``images * scale`` are the inputs: ``scale`` is 1 for float images and ``1 / levels`` for
    :func:`encode_pixels` codes, folded into ``z`` and into ``dz`` before it meets ``x``. ``d`` and
    ``t`` are workspaces of at least ``stop - start`` rows rounded up to a multiple of 4.
    """
    m, k_in = W.shape
    zero, one = W.dtype.type(0), W.dtype.type(1)
    n, last = stop - start, stop - 1
    padded = 4 * ((n + 3) // 4)
    for ahead in range(start, min(start + PREFETCH, stop)):  # the rows before the first look-ahead
        _prefetch_row(images, rows[ahead])
        _prefetch_row(targets, rows[ahead])
    for i0 in range(start, stop, 4):
        for ahead in range(i0 + PREFETCH, min(i0 + PREFETCH + 4, stop)):
            _prefetch_row(images, rows[ahead])
            _prefetch_row(targets, rows[ahead])
        block = (rows[i0], rows[min(i0 + 1, last)], rows[min(i0 + 2, last)], rows[min(i0 + 3, last)])
        q = i0 - start
        _dense_4rows(images, block, W, b, scale, d, (q, q + 1, q + 2, q + 3))
    for q in range(n):
        r = rows[start + q]
        for j in range(m):
            t[q, j] = targets[r, j]
    flat_d, flat_t, cost = d[:padded].reshape(padded * m), t[:padded].reshape(padded * m), 0.0
    for i in range(n * m):
        p = _sigmoid(flat_d[i])
        e = flat_t[i] - p
        cost += e * e
        flat_d[i] = -e * p * (one - p)
    for j in range(m):
        pb[j] = zero
    for q in range(n):
        for j in range(m):
            pb[j] += d[q, j]
            d[q, j] *= scale
    for q in range(n, padded):
        for j in range(m):
            d[q, j] = zero
    for j in range(m):
        for k in range(k_in):
            P[j, k] = zero
    for i0 in range(start, stop, 4):
        r0, r1 = rows[i0], rows[min(i0 + 1, last)]
        r2, r3 = rows[min(i0 + 2, last)], rows[min(i0 + 3, last)]
        for j0 in range(0, m, 5):
            _add_4x5(P, d[i0 - start:i0 - start + 4], images, r0, r1, r2, r3, j0)
    return 0.5 * cost


@numba.njit(**JIT)
def epoch_chunk_rows(n):
    """Rows per chunk of a batch of ``n`` in the whole-epoch kernel (see ``EPOCH_SPLIT``)."""
    return max(CHUNK // 2, (n + EPOCH_SPLIT - 1) // EPOCH_SPLIT)


@numba.njit(parallel=True, **JIT)
def _sigmoid_mse_chunks(images, scale, targets, rows, size, W, b, partial_w, partial_b, cost, d, t):
    """:func:`_sigmoid_mse_chunk` on each chunk of ``size`` rows of a batch, chunks in parallel."""
    n = rows.shape[0]
    for c in prange((n + size - 1) // size):
        start = c * size
        cost[c] = _sigmoid_mse_chunk(images, scale, targets, rows, start, min(n, start + size), W, b,
                                     partial_w[c], partial_b[c], d[c], t[c])


@numba.njit(fastmath=REDUCE, **JIT)
def _sum_and_step(partial_w, chunks, W, dW, learning_rate, k0, k1):
    """``dW[:, k0:k1] = sum of the chunks' partial_w`` in chunk order, then ``W -= learning_rate * dW``.

    The loops run over views from index 0: Numba then knows no index is negative and LLVM vectorizes.
    """
    for j in range(W.shape[0]):
        out, weights = dW[j, k0:k1], W[j, k0:k1]
        first = partial_w[0, j, k0:k1]
        for k in range(out.shape[0]):
            out[k] = first[k]
        for c in range(1, chunks):
            part = partial_w[c, j, k0:k1]
            for k in range(out.shape[0]):
                out[k] += part[k]
        for k in range(out.shape[0]):
            weights[k] -= learning_rate * out[k]


@numba.njit(parallel=True, **JIT)
def _sum_and_step_parallel(partial_w, chunks, W, dW, learning_rate):
    """:func:`_sum_and_step` on ``EPOCH_SPLIT`` blocks of columns in parallel (sums stay in chunk order).

    Long blocks let the hardware prefetcher stream the other threads' chunk sums, which short blocks
    (of 64 columns, say) interrupt.
    """
    k_in = W.shape[1]
    size = (k_in + EPOCH_SPLIT - 1) // EPOCH_SPLIT
    for block in prange(EPOCH_SPLIT):
        start = min(k_in, size * block)
        _sum_and_step(partial_w, chunks, W, dW, learning_rate, start, min(k_in, start + size))


@numba.njit(**JIT)
def sigmoid_mse_epoch(images, scale, targets, order, batch_size, W, b, dW, db, learning_rate, workspace):
    """One epoch of SGD on a dense sigmoid layer with summed squared error.

    Per batch ``order[i:i + batch_size]``: up to ``EPOCH_SPLIT`` chunks in parallel
    (:func:`_sigmoid_mse_chunk`, reading each row straight from ``images``: no gathered copy), then
    the chunk sums added in chunk order into ``dW``/``db`` (overwritten, as the step loop leaves
    them) and ``W -= learning_rate * dW``, ``b -= learning_rate * db``. ``workspace`` is
    :func:`epoch_workspace`'s. Returns the summed cost ``sum(1/2 (t - p)**2)`` in float64 as
    ``[over the batches of the first batch's size, over a smaller last batch]``.
    """
    partial_w, partial_b, cost, d, t = workspace
    total = np.zeros(2)
    first = min(batch_size, order.shape[0])
    for start in range(0, order.shape[0], batch_size):
        rows = order[start:start + batch_size]
        size = epoch_chunk_rows(rows.shape[0])
        chunks = (rows.shape[0] + size - 1) // size
        _sigmoid_mse_chunks(images, scale, targets, rows, size, W, b, partial_w, partial_b, cost, d, t)
        _sum_and_step_parallel(partial_w, chunks, W, dW, learning_rate)
        kind = 0 if rows.shape[0] == first else 1
        for c in range(chunks):
            total[kind] += cost[c]
        for j in range(W.shape[0]):
            s = partial_b[0, j]
            for c in range(1, chunks):
                s += partial_b[c, j]
            db[0, j] = s
            b[0, j] -= learning_rate * s
    return total


def epoch_workspace(W, batch_size):
    """The arrays :func:`sigmoid_mse_epoch` works in for batches of up to ``batch_size`` rows, made once."""
    m, rows = W.shape[0], 4 * -(-epoch_chunk_rows(batch_size) // 4)
    return (np.empty((EPOCH_SPLIT,) + W.shape, W.dtype), np.empty((EPOCH_SPLIT, m), W.dtype),
            np.empty(EPOCH_SPLIT), np.empty((EPOCH_SPLIT, rows, m), W.dtype),
            np.empty((EPOCH_SPLIT, rows, m), W.dtype))
