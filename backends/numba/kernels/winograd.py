"""Winograd minimal filtering F(2x2, 3x3) for 3x3 stride-1 convolutions on channels-last images.

Each 2x2 block of outputs (a *tile*) is computed from the 4x4 block of (zero-padded) inputs under it
as ``Y = A^T [U . V] A`` with ``U = G g G^T`` (the filter, once per call) and ``V = B^T d B`` (the
inputs): 16 products per channel pair instead of 36 (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016). Summed over channels, the elementwise products are 16 matrix
products ``M[xi] = V[xi] (tiles x C) @ U[xi] (C x K)``, which the backend hands to BLAS; these
kernels are the transforms around them. The transforms only add, subtract and halve, so results
differ from a direct sum by float rounding only (somewhat more than im2col's, as ``V`` and ``M``
carry sums of several terms: within ``1e-5`` of the sum of absolute terms in float32, tested).

Layouts: ``U (16, C, K)``, ``V (16, >= tiles * C)``, ``M (16, >= tiles * K)`` with ``xi = 4 * a + b``
for row ``a`` and column ``b`` of the transformed tile; ``V[xi, :tiles * C]`` is the matrix ``(tiles,
C)`` of one product. The backend staggers the rows of ``V`` and ``M`` (an odd number of cache lines
apart): 16 rows a power of two apart map to one cache set, and a chunk of 512 tiles made the
transforms 20 times slower. Tiles are numbered ``(image, tile row, tile column)`` over the whole batch and
processed ``first, first + 1, ...``: the backend transforms a chunk of tiles at a time so that ``V``
and ``M`` stay in cache between the transforms and the products. The last tile row and column of an
odd-sized output are partial: their inputs past the image read zero and their outputs past it are
not written. Every tile is computed alone, so results never depend on the thread count.

The backend leaves this path off (``WINOGRAD_CHANNELS = None``) because it measured slower on every
shape tried. ``python benchmarks/winograd_conv.py --rounds 4`` on an idle Intel Xeon (Emerald Rapids,
2 cores, AVX-512), oneMKL 2026.2 with the 16 products of a chunk in one batched call
(``cblas_sgemm_batch_strided``), float32, batch 128, padding 1, 2 threads; im2col over Winograd,
medians, forward (with ReLU) / backward (with dx): 32->64 on 14x14 (the CNN's conv2) 0.81 / 0.76;
32->32 on 28x28 0.85 / 0.94; 64->64 on 7x7 0.87 / 0.83; 16->16 on 28x28 0.84 / 0.85; 16->32 on
14x14 0.61 / 0.74; 8->8 on 28x28 0.87 / 0.83. The 16 products have an inner dimension of only ``C``,
and oneMKL ran them at 50-83 GFLOP/s against 117-131 for im2col's one product with ``9 C``
(measured one call per product, one thread): the 2.25x fewer multiplications do not pay for the
slower products and the two transform passes at these channel counts.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .intrinsics import JIT

#: Entries of one transformed tile (4 x 4).
TILE_ENTRIES = 16


@numba.njit(parallel=True, **JIT)
def winograd_filter(W, flip, U):
    """``U[xi, j, k] = (G W[k, j] G^T)[xi]`` for ``W (K, C, 3, 3)`` and ``U (16, C, K)``.

    With ``flip``, the filter of the input gradient instead: ``U (16, K, C)`` with ``U[xi, k, j] =
    (G W[k, j, ::-1, ::-1] G^T)[xi]``, the 180-degree rotated, channel-transposed filter whose
    convolution with the output gradient is the input gradient."""
    K, C = W.shape[0], W.shape[1]
    half = W.dtype.type(0.5)
    for j in prange(C):
        g = np.empty((3, 3), W.dtype)
        t = np.empty((4, 3), W.dtype)
        for k in range(K):
            for p in range(3):
                for q in range(3):
                    g[p, q] = W[k, j, 2 - p, 2 - q] if flip else W[k, j, p, q]
            for q in range(3):  # t = G g
                t[0, q] = g[0, q]
                t[1, q] = half * (g[0, q] + g[1, q] + g[2, q])
                t[2, q] = half * (g[0, q] - g[1, q] + g[2, q])
                t[3, q] = g[2, q]
            for a in range(4):  # (G g) G^T
                u0 = t[a, 0]
                u1 = half * (t[a, 0] + t[a, 1] + t[a, 2])
                u2 = half * (t[a, 0] - t[a, 1] + t[a, 2])
                u3 = t[a, 2]
                if flip:
                    U[4 * a, k, j], U[4 * a + 1, k, j] = u0, u1
                    U[4 * a + 2, k, j], U[4 * a + 3, k, j] = u2, u3
                else:
                    U[4 * a, j, k], U[4 * a + 1, j, k] = u0, u1
                    U[4 * a + 2, j, k], U[4 * a + 3, j, k] = u2, u3


@numba.njit(**JIT)
def _input_tile(d, u0, v0, V, t):
    """``V[:, t * C:(t + 1) * C] = B^T d[u0:u0 + 4, v0:v0 + 4] B`` channel by channel, ``d`` an
    ``(rows, columns, C)`` image with the 4x4 block inside it."""
    C = d.shape[2]
    for j in range(C):
        c = t * C + j
        a0, a1, a2, a3 = d[u0, v0, j], d[u0, v0 + 1, j], d[u0, v0 + 2, j], d[u0, v0 + 3, j]
        b0, b1, b2, b3 = d[u0 + 1, v0, j], d[u0 + 1, v0 + 1, j], d[u0 + 1, v0 + 2, j], d[u0 + 1, v0 + 3, j]
        c0, c1, c2, c3 = d[u0 + 2, v0, j], d[u0 + 2, v0 + 1, j], d[u0 + 2, v0 + 2, j], d[u0 + 2, v0 + 3, j]
        e0, e1, e2, e3 = d[u0 + 3, v0, j], d[u0 + 3, v0 + 1, j], d[u0 + 3, v0 + 2, j], d[u0 + 3, v0 + 3, j]
        # the rows of B^T d
        r0, r1, r2, r3 = a0 - c0, a1 - c1, a2 - c2, a3 - c3
        s0, s1, s2, s3 = b0 + c0, b1 + c1, b2 + c2, b3 + c3
        t0, t1, t2, t3 = c0 - b0, c1 - b1, c2 - b2, c3 - b3
        w0, w1, w2, w3 = b0 - e0, b1 - e1, b2 - e2, b3 - e3
        # then (B^T d) B, row by row
        V[0, c], V[1, c], V[2, c], V[3, c] = r0 - r2, r1 + r2, r2 - r1, r1 - r3
        V[4, c], V[5, c], V[6, c], V[7, c] = s0 - s2, s1 + s2, s2 - s1, s1 - s3
        V[8, c], V[9, c], V[10, c], V[11, c] = t0 - t2, t1 + t2, t2 - t1, t1 - t3
        V[12, c], V[13, c], V[14, c], V[15, c] = w0 - w2, w1 + w2, w2 - w1, w1 - w3


@numba.njit(parallel=True, **JIT)
def winograd_input(x, ph, pw, tile_rows, tile_columns, first, tiles, chunks, V):
    """``V[:, t * C:(t + 1) * C] = B^T d B`` for tiles ``first + t``, ``t < tiles``, of ``x (n, H, W, C)``
    zero-padded by ``(ph, pw)``,
    ``d`` the 4x4 block of inputs at ``(2 * tile row - ph, 2 * tile column - pw)``.

    Tiles are split into ``chunks`` (a few per thread); blocks inside the image are read in place,
    the others copied with their zeros into a block of the chunk's own."""
    n, H, Wd, C = x.shape
    per_image = tile_rows * tile_columns
    chunks = max(1, min(tiles, chunks))
    for chunk in prange(chunks):
        block = np.empty((4, 4, C), x.dtype)
        for t in range(chunk * tiles // chunks, (chunk + 1) * tiles // chunks):
            tile = first + t
            i, place = tile // per_image, tile % per_image
            u0 = 2 * (place // tile_columns) - ph
            v0 = 2 * (place % tile_columns) - pw
            if u0 >= 0 and v0 >= 0 and u0 + 4 <= H and v0 + 4 <= Wd:
                _input_tile(x[i], u0, v0, V, t)
                continue
            for p in range(4):
                for q in range(4):
                    u, v = u0 + p, v0 + q
                    if u < 0 or u >= H or v < 0 or v >= Wd:
                        block[p, q, :] = 0
                    else:
                        for c in range(C):
                            block[p, q, c] = x[i, u, v, c]
            _input_tile(block, 0, 0, V, t)


@numba.njit(parallel=True, **JIT)
def winograd_output(M, b, relu, tile_rows, tile_columns, first, tiles, y):
    """Tiles ``first + t``, ``t < tiles``, of ``y (n, Ho, Wo, K)``: ``A^T M[:, t * K:(t + 1) * K] A + b``,
    then ``max(., 0)`` with ``relu``; outputs of a partial tile past the image are not written.

    Each tile's four output rows of ``K`` are made in a block of the chunk's own, then copied: LLVM
    vectorizes those loops (it does not vectorize the 16 reads and 4 writes of the output in place)."""
    ho, wo, K = y.shape[1], y.shape[2], y.shape[3]
    per_image = tile_rows * tile_columns
    zero, chunks = y.dtype.type(0), max(1, min(tiles, 64))
    for chunk in prange(chunks):
        out = np.empty((4, K), y.dtype)
        for t in range(chunk * tiles // chunks, (chunk + 1) * tiles // chunks):
            tile = first + t
            i, place = tile // per_image, tile % per_image
            r, c = 2 * (place // tile_columns), 2 * (place % tile_columns)
            base = t * K
            for k in range(K):
                e = base + k
                # A^T m: two rows of four, then times A
                s0 = M[0, e] + M[4, e] + M[8, e]
                s1 = M[1, e] + M[5, e] + M[9, e]
                s2 = M[2, e] + M[6, e] + M[10, e]
                s3 = M[3, e] + M[7, e] + M[11, e]
                w0 = M[4, e] - M[8, e] - M[12, e]
                w1 = M[5, e] - M[9, e] - M[13, e]
                w2 = M[6, e] - M[10, e] - M[14, e]
                w3 = M[7, e] - M[11, e] - M[15, e]
                bias = b[0, k]
                out[0, k], out[1, k] = s0 + s1 + s2 + bias, s1 - s2 - s3 + bias
                out[2, k], out[3, k] = w0 + w1 + w2 + bias, w1 - w2 - w3 + bias
            for a in range(min(2, ho - r)):
                for e in range(min(2, wo - c)):
                    row, target = out[2 * a + e], y[i, r + a, c + e]
                    if relu:
                        for k in range(K):
                            target[k] = max(row[k], zero)
                    else:
                        for k in range(K):
                            target[k] = row[k]
