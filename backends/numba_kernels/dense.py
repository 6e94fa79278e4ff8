"""Dense layers with few outputs (at most ``SMALL_LAYER`` of the backend): one parallel call per
forward and one per backward, the notebook's step loop at the speed the machine allows.

* Forward: blocks of 4 rows x 5 outputs whose 20 dot products stay in vector registers while
  the rows stream past once; the bias and the sigmoid are the block's epilogue.
* Backward: fixed chunks of ``CHUNK`` rows, each on one thread: ``dz`` (the sigmoid's slope
  applied), its column sums, the chunk's ``dz.T @ x`` (eight rows at a time, one output row per
  pass, so each loop has one store target and LLVM vectorizes it without runtime alias checks),
  and ``dx = dz @ W`` for the chunk's rows while they are in cache. The chunk sums are then added
  in chunk order, split by columns over the threads: the same bits for any thread count.

Scratch space comes from the caller (:func:`backward_workspace`), made once per batch shape.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .intrinsics import JIT, REDUCE, _sigmoid

#: Rows per chunk of the backward pass's reduction over the batch.
CHUNK = 64
#: Elements of the gradient each task adds up over the chunks.
SUM_BLOCK = 2048


@numba.njit(fastmath=REDUCE, **JIT)  # LLVM inlines it; Numba's inline="always" breaks its parfors
def _dot_4x5(x, i0, i1, i2, i3, W, j0, j1, j2, j3, j4):
    """The 20 dot products of rows ``i0..i3`` of ``x`` with rows ``j0..j4`` of ``W``."""
    z = x.dtype.type(0)
    s00 = s01 = s02 = s03 = s04 = s10 = s11 = s12 = s13 = s14 = z
    s20 = s21 = s22 = s23 = s24 = s30 = s31 = s32 = s33 = s34 = z
    for k in range(x.shape[1]):
        w0, w1, w2, w3, w4 = W[j0, k], W[j1, k], W[j2, k], W[j3, k], W[j4, k]
        a = x[i0, k]
        s00 += a * w0
        s01 += a * w1
        s02 += a * w2
        s03 += a * w3
        s04 += a * w4
        a = x[i1, k]
        s10 += a * w0
        s11 += a * w1
        s12 += a * w2
        s13 += a * w3
        s14 += a * w4
        a = x[i2, k]
        s20 += a * w0
        s21 += a * w1
        s22 += a * w2
        s23 += a * w3
        s24 += a * w4
        a = x[i3, k]
        s30 += a * w0
        s31 += a * w1
        s32 += a * w2
        s33 += a * w3
        s34 += a * w4
    return ((s00, s01, s02, s03, s04), (s10, s11, s12, s13, s14), (s20, s21, s22, s23, s24),
            (s30, s31, s32, s33, s34))


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def dense_forward(x, W, b, z, p):
    """``z = x @ W.T + b``; when ``p`` has rows, also ``p = 1 / (1 + exp(-z))``, both ``(batch, n_out)``.

    Indices past the end are clamped: a duplicate row or output is computed twice and written with
    the same value.
    """
    n, m = x.shape[0], W.shape[0]
    sigmoid = p.shape[0] > 0
    for block in prange((n + 3) // 4):
        i0 = 4 * block
        rows = (i0, min(i0 + 1, n - 1), min(i0 + 2, n - 1), min(i0 + 3, n - 1))
        for j0 in range(0, m, 5):
            j = (j0, min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1))
            sums = _dot_4x5(x, rows[0], rows[1], rows[2], rows[3], W, j[0], j[1], j[2], j[3], j[4])
            for q in range(4):
                for u in range(5):
                    z[rows[q], j[u]] = sums[q][u] + b[0, j[u]]
        if sigmoid:
            for i in range(i0, min(i0 + 4, n)):
                for o in range(m):
                    p[i, o] = _sigmoid(z[i, o])


@numba.njit(fastmath=REDUCE, **JIT)
def _add_8_rows(out, d, j, r, x, i0, rows):
    """``out += d[r + q, j] * x[i0 + q]`` summed over the ``rows`` (at most 8) rows ``q``."""
    last, z = x.shape[0] - 1, x.dtype.type(0)
    c0 = d[r, j]
    c1 = d[r + 1, j] if rows > 1 else z
    c2 = d[r + 2, j] if rows > 2 else z
    c3 = d[r + 3, j] if rows > 3 else z
    c4 = d[r + 4, j] if rows > 4 else z
    c5 = d[r + 5, j] if rows > 5 else z
    c6 = d[r + 6, j] if rows > 6 else z
    c7 = d[r + 7, j] if rows > 7 else z
    x0, x1, x2, x3 = x[i0], x[min(i0 + 1, last)], x[min(i0 + 2, last)], x[min(i0 + 3, last)]
    x4, x5, x6, x7 = x[min(i0 + 4, last)], x[min(i0 + 5, last)], x[min(i0 + 6, last)], x[min(i0 + 7, last)]
    for k in range(x.shape[1]):
        out[k] += (c0 * x0[k] + c1 * x1[k] + c2 * x2[k] + c3 * x3[k]) + (
            c4 * x4[k] + c5 * x5[k] + c6 * x6[k] + c7 * x7[k])


@numba.njit(fastmath=REDUCE, **JIT)
def _row_times_weights(out, d, r, W):
    """``out = d[r] @ W``, ten rows of ``W`` per pass (coefficients past the last row are zero)."""
    m, last, z = W.shape[0], W.shape[0] - 1, W.dtype.type(0)
    for j0 in range(0, m, 10):
        c = d[r]
        c0, c1, c2, c3, c4 = (c[j0], c[j0 + 1] if j0 + 1 < m else z, c[j0 + 2] if j0 + 2 < m else z,
                              c[j0 + 3] if j0 + 3 < m else z, c[j0 + 4] if j0 + 4 < m else z)
        c5, c6, c7, c8, c9 = (c[j0 + 5] if j0 + 5 < m else z, c[j0 + 6] if j0 + 6 < m else z,
                              c[j0 + 7] if j0 + 7 < m else z, c[j0 + 8] if j0 + 8 < m else z,
                              c[j0 + 9] if j0 + 9 < m else z)
        w0, w1, w2, w3, w4 = (W[j0], W[min(j0 + 1, last)], W[min(j0 + 2, last)], W[min(j0 + 3, last)],
                              W[min(j0 + 4, last)])
        w5, w6, w7, w8, w9 = (W[min(j0 + 5, last)], W[min(j0 + 6, last)], W[min(j0 + 7, last)],
                              W[min(j0 + 8, last)], W[min(j0 + 9, last)])
        if j0 == 0:
            for k in range(W.shape[1]):
                out[k] = (c0 * w0[k] + c1 * w1[k] + c2 * w2[k] + c3 * w3[k] + c4 * w4[k]) + (
                    c5 * w5[k] + c6 * w6[k] + c7 * w7[k] + c8 * w8[k] + c9 * w9[k])
        else:
            for k in range(W.shape[1]):
                out[k] += (c0 * w0[k] + c1 * w1[k] + c2 * w2[k] + c3 * w3[k] + c4 * w4[k]) + (
                    c5 * w5[k] + c6 * w6[k] + c7 * w7[k] + c8 * w8[k] + c9 * w9[k])


def backward_workspace(n, m, k_in, dtype):
    """Scratch for :func:`dense_backward` on a batch of ``n`` rows: per chunk ``dz``, bias and weight
    gradient sums."""
    chunks = (n + CHUNK - 1) // CHUNK
    return np.empty((chunks, CHUNK, m), dtype), np.empty((chunks, m), dtype), np.empty((chunks, m, k_in), dtype)


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def dense_backward(x, W, p, g, dW, db, sigmoid, accumulate, dx, workspace):
    """Backward of :func:`dense_forward` given ``g = dL/dout`` (and its output ``p`` when ``sigmoid``).

    ``dz = g * p * (1 - p)`` (or ``g``); ``dW``/``db`` get (or get added, with ``accumulate``)
    ``dz.T @ x`` and ``dz.sum(0)``; ``dx`` (``(batch, n_in)``, or no rows when not wanted) gets
    ``dz @ W``. ``workspace`` is :func:`backward_workspace`'s.
    """
    n, k_in = x.shape
    m = W.shape[0]
    zero, one = x.dtype.type(0), x.dtype.type(1)
    slopes, partial_b, partial_w = workspace
    chunks = (n + CHUNK - 1) // CHUNK
    need_dx = dx.shape[0] > 0
    for c in prange(chunks):
        start, stop = c * CHUNK, min(n, (c + 1) * CHUNK)
        d, P = slopes[c], partial_w[c]
        for i in range(start, stop):
            for j in range(m):
                d[i - start, j] = g[i, j] * p[i, j] * (one - p[i, j]) if sigmoid else g[i, j]
        for j in range(m):
            s = zero
            for r in range(stop - start):
                s += d[r, j]
            partial_b[c, j] = s
            for k in range(k_in):
                P[j, k] = zero
        for i0 in range(start, stop, 8):
            for j in range(m):
                _add_8_rows(P[j], d, j, i0 - start, x, i0, min(8, stop - i0))
            if need_dx:
                for i in range(i0, min(i0 + 8, stop)):
                    _row_times_weights(dx[i], d, i - start, W)
    # Chunk sums added in chunk order, each task a block of columns: the same bits for any thread count.
    flat, out, size = partial_w.reshape(partial_w.shape[0], m * k_in), dW.reshape(m * k_in), m * k_in
    for task in prange((size + SUM_BLOCK - 1) // SUM_BLOCK):
        lo, hi = task * SUM_BLOCK, min(size, (task + 1) * SUM_BLOCK)
        total = flat[0, lo:hi]
        for c in range(1, chunks):
            part = flat[c, lo:hi]
            for e in range(hi - lo):
                total[e] += part[e]
        target = out[lo:hi]
        for e in range(hi - lo):
            target[e] = target[e] + total[e] if accumulate else total[e]
    for j in range(m):
        s = partial_b[0, j]
        for c in range(1, chunks):
            s += partial_b[c, j]
        db[0, j] = db[0, j] + s if accumulate else s
