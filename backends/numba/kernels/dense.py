"""Dense layers with few outputs (at most ``SMALL_LAYER`` of the backend): one parallel call per
forward and one per backward, the notebook's step loop at the speed the machine allows.

* Forward: blocks of ``ROWS_PER_BLOCK`` rows x 5 outputs whose dot products stay in vector registers
  while the rows stream past once; the bias and the sigmoid are the block's epilogue. LLVM keeps
  each dot product in a vector of sums plus one vector per weight row: 4 x 5 + 5 fit AVX-512's 32
  registers, while with AVX2's 16 they spilled to the stack (67 stack accesses in the AVX2 build
  against 17 in the AVX-512 one) and 2 x 5 + 5 ran faster there (``benchmarks/dense_blocks.py``
  times both; figures in docs/performance.md).
* Backward: fixed chunks of ``CHUNK`` rows, each on one thread: ``dz`` (the sigmoid's slope
  applied), its column sums, the chunk's ``dz.T @ x`` and ``dx = dz @ W`` in blocks of 4 rows x 5
  outputs (20 coefficients in registers, each row element loaded once per block), while the
  chunk's rows are in cache. The chunk sums are then added
  in chunk order, split by columns over the threads: the same bits for any thread count.

Scratch space comes from the caller (:func:`backward_workspace`), made once per batch shape.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .. import target
from .intrinsics import JIT, REDUCE, _sigmoid

#: The activation fused into a dense layer's kernels: none, a sigmoid or a ReLU.
IDENTITY, SIGMOID, RELU = 0, 1, 2
#: Rows per chunk of the backward pass's reduction over the batch.
CHUNK = 64
#: Elements of the gradient each task adds up over the chunks.
SUM_BLOCK = 2048
#: Rows per forward register block, by the vector registers of the instruction set Numba compiles for
#: (chosen when :mod:`.intrinsics` was imported; see the module's docstring).
ROWS_PER_BLOCK = {16: 2, 32: 4}[target.vector_unit(numba)[2]]


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


@numba.njit(fastmath=REDUCE, **JIT)
def _dot_2x5(x, i0, i1, W, j0, j1, j2, j3, j4):
    """The 10 dot products of rows ``i0, i1`` of ``x`` with rows ``j0..j4`` of ``W``."""
    z = x.dtype.type(0)
    s00 = s01 = s02 = s03 = s04 = s10 = s11 = s12 = s13 = s14 = z
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
    return (s00, s01, s02, s03, s04), (s10, s11, s12, s13, s14)


@numba.njit(**JIT)
def _store_block(z, b, rows, j, sums):
    """``z[rows[q], j[u]] = sums[q][u] + b[0, j[u]]`` for a register block's rows and outputs."""
    for q in range(len(rows)):
        for u in range(5):
            z[rows[q], j[u]] = sums[q][u] + b[0, j[u]]


@numba.njit(fastmath=REDUCE, **JIT)
def _block_rows(x, W, b, z, i0, rows_per_block):
    """``z = x @ W.T + b`` on the ``rows_per_block`` rows (4 or 2) from ``i0``, 5 outputs at a time."""
    n, m = x.shape[0], W.shape[0]
    for j0 in range(0, m, 5):
        j = (j0, min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1))
        if rows_per_block == 4:
            rows = (i0, min(i0 + 1, n - 1), min(i0 + 2, n - 1), min(i0 + 3, n - 1))
            _store_block(z, b, rows, j, _dot_4x5(x, rows[0], rows[1], rows[2], rows[3], W, j[0], j[1], j[2],
                                                 j[3], j[4]))
        else:
            pair = (i0, min(i0 + 1, n - 1))
            _store_block(z, b, pair, j, _dot_2x5(x, pair[0], pair[1], W, j[0], j[1], j[2], j[3], j[4]))


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def dense_forward(x, W, b, z, p, activation):
    """``z = x @ W.T + b`` and ``p = activation(z)`` (``SIGMOID`` or ``RELU``; ``p`` may be ``z`` itself),
    both ``(batch, n_out)``; ``p`` is not written for ``IDENTITY``.

    Indices past the end are clamped: a duplicate row or output is computed twice and written with
    the same value.
    """
    n, m = x.shape[0], W.shape[0]
    zero = x.dtype.type(0)
    for block in prange((n + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        i0 = ROWS_PER_BLOCK * block
        _block_rows(x, W, b, z, i0, ROWS_PER_BLOCK)
        if activation == SIGMOID:
            for i in range(i0, min(i0 + ROWS_PER_BLOCK, n)):
                for o in range(m):
                    p[i, o] = _sigmoid(z[i, o])
        elif activation == RELU:
            for i in range(i0, min(i0 + ROWS_PER_BLOCK, n)):
                for o in range(m):
                    p[i, o] = zero if z[i, o] < zero else z[i, o]  # NaN stays NaN, as in numpy.maximum


@numba.njit(fastmath=REDUCE, **JIT)
def _add_4x5(P, j0, d, r, x, i0):
    """``P[j] += d[r + q, j] * x[i0 + q]`` over four rows ``q``, for the five outputs ``j`` from ``j0``.

    Outputs past the last row of ``P`` add zero to that row; rows past the end of ``x`` are read
    with the zero coefficients ``d`` holds past the chunk.
    """
    m, last, z = P.shape[0], x.shape[0] - 1, x.dtype.type(0)
    j1, j2, j3, j4 = min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1)
    c = d[r:r + 4]
    a00, a10, a20, a30 = c[0, j0], c[1, j0], c[2, j0], c[3, j0]
    a01, a11, a21, a31 = (c[0, j1], c[1, j1], c[2, j1], c[3, j1]) if j0 + 1 < m else (z, z, z, z)
    a02, a12, a22, a32 = (c[0, j2], c[1, j2], c[2, j2], c[3, j2]) if j0 + 2 < m else (z, z, z, z)
    a03, a13, a23, a33 = (c[0, j3], c[1, j3], c[2, j3], c[3, j3]) if j0 + 3 < m else (z, z, z, z)
    a04, a14, a24, a34 = (c[0, j4], c[1, j4], c[2, j4], c[3, j4]) if j0 + 4 < m else (z, z, z, z)
    x0, x1, x2, x3 = x[i0], x[min(i0 + 1, last)], x[min(i0 + 2, last)], x[min(i0 + 3, last)]
    p0, p1, p2, p3, p4 = P[j0], P[j1], P[j2], P[j3], P[j4]
    for k in range(x.shape[1]):
        v0, v1, v2, v3 = x0[k], x1[k], x2[k], x3[k]
        p0[k] += a00 * v0 + a10 * v1 + a20 * v2 + a30 * v3
        p1[k] += a01 * v0 + a11 * v1 + a21 * v2 + a31 * v3
        p2[k] += a02 * v0 + a12 * v1 + a22 * v2 + a32 * v3
        p3[k] += a03 * v0 + a13 * v1 + a23 * v2 + a33 * v3
        p4[k] += a04 * v0 + a14 * v1 + a24 * v2 + a34 * v3


@numba.njit(fastmath=REDUCE, **JIT)
def _four_rows_times_weights(dx, i0, d, r, W):
    """``dx[i0 + q] = d[r + q] @ W`` for four rows ``q``, five rows of ``W`` per pass."""
    m, z = W.shape[0], W.dtype.type(0)
    o0, o1, o2, o3 = dx[i0], dx[i0 + 1], dx[i0 + 2], dx[i0 + 3]
    c = d[r:r + 4]
    for j0 in range(0, m, 5):
        j1, j2, j3, j4 = min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1)
        a00, a10, a20, a30 = c[0, j0], c[1, j0], c[2, j0], c[3, j0]
        a01, a11, a21, a31 = (c[0, j1], c[1, j1], c[2, j1], c[3, j1]) if j0 + 1 < m else (z, z, z, z)
        a02, a12, a22, a32 = (c[0, j2], c[1, j2], c[2, j2], c[3, j2]) if j0 + 2 < m else (z, z, z, z)
        a03, a13, a23, a33 = (c[0, j3], c[1, j3], c[2, j3], c[3, j3]) if j0 + 3 < m else (z, z, z, z)
        a04, a14, a24, a34 = (c[0, j4], c[1, j4], c[2, j4], c[3, j4]) if j0 + 4 < m else (z, z, z, z)
        w0, w1, w2, w3, w4 = W[j0], W[j1], W[j2], W[j3], W[j4]
        first = j0 == 0
        for k in range(W.shape[1]):
            u0, u1, u2, u3, u4 = w0[k], w1[k], w2[k], w3[k], w4[k]
            s0 = a00 * u0 + a01 * u1 + a02 * u2 + a03 * u3 + a04 * u4
            s1 = a10 * u0 + a11 * u1 + a12 * u2 + a13 * u3 + a14 * u4
            s2 = a20 * u0 + a21 * u1 + a22 * u2 + a23 * u3 + a24 * u4
            s3 = a30 * u0 + a31 * u1 + a32 * u2 + a33 * u3 + a34 * u4
            o0[k] = s0 if first else o0[k] + s0
            o1[k] = s1 if first else o1[k] + s1
            o2[k] = s2 if first else o2[k] + s2
            o3[k] = s3 if first else o3[k] + s3


@numba.njit(fastmath=REDUCE, **JIT)
def _row_times_weights(out, d, r, W):
    """``out = d[r] @ W``, one row at a time."""
    for k in range(W.shape[1]):
        out[k] = d[r, 0] * W[0, k]
    for j in range(1, W.shape[0]):
        a, w = d[r, j], W[j]
        for k in range(W.shape[1]):
            out[k] += a * w[k]


def backward_workspace(n, m, k_in, dtype):
    """Scratch for :func:`dense_backward` on a batch of ``n`` rows: per chunk ``dz``, bias and weight
    gradient sums."""
    chunks = (n + CHUNK - 1) // CHUNK
    # dz keeps three zero rows past each chunk, read by the four-row blocks of a chunk's last rows.
    slopes = np.zeros((chunks, CHUNK + 3, m), dtype)
    return slopes, np.empty((chunks, m), dtype), np.empty((chunks, m, k_in), dtype)


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def dense_backward(x, W, p, g, dW, db, activation, accumulate, dx, workspace):
    """Backward of :func:`dense_forward` given ``g = dL/dout`` and the forward's output ``p``.

    ``dz = g * p * (1 - p)`` (``SIGMOID``), ``g`` where ``p > 0`` and 0 elsewhere (``RELU``) or ``g``;
    ``dW``/``db`` get (or get added, with ``accumulate``) ``dz.T @ x`` and ``dz.sum(0)``; ``dx``
    (``(batch, n_in)``, or no rows when not wanted) gets ``dz @ W``. ``workspace`` is
    :func:`backward_workspace`'s.
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
                if activation == SIGMOID:
                    d[i - start, j] = g[i, j] * p[i, j] * (one - p[i, j])
                elif activation == RELU:
                    d[i - start, j] = g[i, j] if p[i, j] > zero else zero
                else:
                    d[i - start, j] = g[i, j]
        for r in range(stop - start, CHUNK + 3):
            for j in range(m):
                d[r, j] = zero
        for j in range(m):
            s = zero
            for r in range(stop - start):
                s += d[r, j]
            partial_b[c, j] = s
            for k in range(k_in):
                P[j, k] = zero
        for i0 in range(start, stop, 4):
            for j0 in range(0, m, 5):
                _add_4x5(P, j0, d, i0 - start, x, i0)
            if need_dx and i0 + 4 <= stop:
                _four_rows_times_weights(dx, i0, d, i0 - start, W)
            elif need_dx:
                for i in range(i0, stop):
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
