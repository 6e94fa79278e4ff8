"""Kernels of the convolution and pooling contract methods, on channels-last images ``(n, H, W, C)``.

A convolution with few inputs per output (``C * kh * kw`` small, a first layer on raw pixels) runs
directly: each output pixel's ``K`` sums are kept in a row and the ``kh * kw * C`` inputs broadcast
into them (LLVM vectorizes over ``K``), with the bias and ReLU in the same pass. Wider convolutions
are matrix products the backend hands to BLAS; these kernels make the column matrix (``im2col``),
apply the epilogue (bias, ReLU) and the backward's mask and bias sum, and add columns back into
images (``col2im``). Every kernel is parallel over images or rows of its output, and reductions
over the batch sum fixed chunks of images in chunk order, so results never depend on the thread
count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .intrinsics import JIT, REDUCE

#: Images per chunk of a batch reduction (weight and bias gradients of the direct convolution).
IMAGES_PER_CHUNK = 8
#: Rows per chunk of the bias-gradient sums of the matrix-product path.
ROWS_PER_CHUNK = 256


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def conv_forward_direct(x, Wt, b, sh, sw, ph, pw, relu, chunks, y):
    """``y = conv(x, W) + b`` (then ``max(., 0)`` with ``relu``) with ``Wt = W`` as ``(kh, kw, C, K)``.

    Output rows are split into ``chunks`` (a few per thread); each chunk sums in one row of ``K``
    values of its own, allocated once per chunk rather than once per row. Every output is computed
    alone, so the split changes no bit."""
    n, H, Wd, C = x.shape
    ho, wo, K = y.shape[1], y.shape[2], y.shape[3]
    kh, kw = Wt.shape[0], Wt.shape[1]
    zero, rows = y.dtype.type(0), n * ho
    chunks = max(1, min(rows, chunks))
    for chunk in prange(chunks):
        acc = np.empty(K, y.dtype)
        for row in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            i, r = row // ho, row % ho
            for c in range(wo):
                for k in range(K):
                    acc[k] = b[0, k]
                for p in range(kh):
                    u = r * sh + p - ph
                    if u < 0 or u >= H:
                        continue
                    for q in range(kw):
                        v = c * sw + q - pw
                        if v < 0 or v >= Wd:
                            continue
                        for j in range(C):
                            value = x[i, u, v, j]
                            for k in range(K):
                                acc[k] += value * Wt[p, q, j, k]
                for k in range(K):
                    y[i, r, c, k] = max(acc[k], zero) if relu else acc[k]


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def conv_weight_gradient_direct(x, y, dy, relu, kh, kw, sh, sw, ph, pw, partial):
    """Per chunk of ``IMAGES_PER_CHUNK`` images, ``partial[chunk, (p, q, j), k] = sum over the chunk's
    output pixels of dz[pixel, k] * xpad[input under (p, q), j]`` and, in its last row, the bias
    sums of ``dz``, where ``dz = dy`` (masked where ``y <= 0`` with ``relu``). Summed in arrays of
    the chunk's own, which LLVM vectorizes better than a view of ``partial``."""
    n, H, Wd, C = x.shape
    ho, wo, K = dy.shape[1], dy.shape[2], dy.shape[3]
    taps, zero = kh * kw * C, dy.dtype.type(0)
    for chunk in prange(partial.shape[0]):
        acc = np.zeros((taps + 1, K), partial.dtype)
        d = np.empty(K, partial.dtype)
        for i in range(chunk * IMAGES_PER_CHUNK, min(n, (chunk + 1) * IMAGES_PER_CHUNK)):
            for r in range(ho):
                for c in range(wo):
                    for k in range(K):
                        d[k] = dy[i, r, c, k] if (not relu or y[i, r, c, k] > zero) else zero
                        acc[taps, k] += d[k]
                    for p in range(kh):
                        u = r * sh + p - ph
                        if u < 0 or u >= H:
                            continue
                        for q in range(kw):
                            v = c * sw + q - pw
                            if v < 0 or v >= Wd:
                                continue
                            for j in range(C):
                                value, t = x[i, u, v, j], (p * kw + q) * C + j
                                for k in range(K):
                                    acc[t, k] += value * d[k]
        partial[chunk] = acc


@numba.njit(parallel=True, **JIT)
def sum_chunks(partial, out):
    """``out = partial.sum(axis=0)`` summed in chunk order, split by columns across threads."""
    rows, columns = out.shape
    for t in prange(rows):
        for k in range(columns):
            s = partial[0, t, k]
            for chunk in range(1, partial.shape[0]):
                s += partial[chunk, t, k]
            out[t, k] = s


@numba.njit(parallel=True, **JIT)
def im2col(x, kh, kw, sh, sw, ph, pw, columns):
    """``columns[(i, r, c), (p, q, j)] = xpad[i, r * sh + p, c * sw + q, j]`` (zero outside ``x``)."""
    n, H, Wd, C = x.shape
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (Wd + 2 * pw - kw) // sw + 1
    zero = columns.dtype.type(0)
    for row in prange(n * ho):
        i, r = row // ho, row % ho
        for c in range(wo):
            out = columns[(row * wo + c)]
            for p in range(kh):
                u = r * sh + p - ph
                for q in range(kw):
                    v = c * sw + q - pw
                    start = (p * kw + q) * C
                    if u < 0 or u >= H or v < 0 or v >= Wd:
                        for j in range(C):
                            out[start + j] = zero
                    else:
                        for j in range(C):
                            out[start + j] = x[i, u, v, j]


@numba.njit(parallel=True, **JIT)
def col2im(d_columns, kh, kw, sh, sw, ph, pw, dx):
    """The adjoint of :func:`im2col`: ``dx`` (overwritten) sums the column entries that read each input."""
    n, H, Wd, C = dx.shape
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (Wd + 2 * pw - kw) // sw + 1
    for i in prange(n):
        dx[i] = 0
        for r in range(ho):
            for c in range(wo):
                d = d_columns[(i * ho + r) * wo + c]
                for p in range(kh):
                    u = r * sh + p - ph
                    if u < 0 or u >= H:
                        continue
                    for q in range(kw):
                        v = c * sw + q - pw
                        if v < 0 or v >= Wd:
                            continue
                        start = (p * kw + q) * C
                        for j in range(C):
                            dx[i, u, v, j] += d[start + j]


@numba.njit(parallel=True, **JIT)
def bias_epilogue(y, b, relu):
    """In place on rows ``y`` ``(m, K)``: ``y += b``, then ``max(y, 0)`` with ``relu``."""
    zero = y.dtype.type(0)
    for i in prange(y.shape[0]):
        for k in range(y.shape[1]):
            s = y[i, k] + b[0, k]
            y[i, k] = max(s, zero) if relu else s


@numba.njit(parallel=True, **JIT)
def masked_gradient(y, dy, relu, dz, partial):
    """With ``relu``, ``dz = dy`` where ``y > 0`` and 0 elsewhere, on rows ``(m, K)``; the column sums
    of ``dz`` (of ``dy`` without ``relu``, and ``dz`` is not written) per chunk of ``ROWS_PER_CHUNK``
    rows in ``partial[chunk, 0]``."""
    m, K = dy.shape
    zero = dy.dtype.type(0)
    for chunk in prange(partial.shape[0]):
        acc = partial[chunk, 0]
        acc[:] = 0
        for i in range(chunk * ROWS_PER_CHUNK, min(m, (chunk + 1) * ROWS_PER_CHUNK)):
            if relu:
                for k in range(K):
                    d = dy[i, k] if y[i, k] > zero else zero
                    dz[i, k] = d
                    acc[k] += d
            else:
                for k in range(K):
                    acc[k] += dy[i, k]


@numba.njit(parallel=True, **JIT)
def maxpool_forward(x, kh, kw, sh, sw, chunks, y, argmax):
    """``y`` the maximum of each window, ``argmax`` its place ``p * kw + q`` (the first of equal values;
    a NaN wins). Output rows are split into ``chunks``; each keeps a window's running maxima in rows
    of its own, which LLVM vectorizes (it does not vectorize updates of the output in place)."""
    n, ho, wo, C = y.shape
    rows = n * ho
    chunks = max(1, min(rows, chunks))
    for chunk in prange(chunks):
        best = np.empty(C, y.dtype)
        place = np.empty(C, np.int32)
        for row in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            i, r = row // ho, row % ho
            for c in range(wo):
                u0, v0 = r * sh, c * sw
                for j in range(C):
                    best[j] = x[i, u0, v0, j]
                    place[j] = 0
                for p in range(kh):
                    for q in range(kw):
                        if p == 0 and q == 0:
                            continue
                        here = np.int32(p * kw + q)
                        for j in range(C):
                            value, top = x[i, u0 + p, v0 + q, j], best[j]
                            better = value > top or (value != value and top == top)
                            best[j] = value if better else top
                            place[j] = here if better else place[j]
                for j in range(C):
                    y[i, r, c, j] = best[j]
                    argmax[i, r, c, j] = place[j]


@numba.njit(parallel=True, **JIT)
def maxpool_backward(argmax, dy, kh, kw, sh, sw, dx):
    """``dx`` (overwritten) receives each ``dy`` at its window's maximum, summed where windows overlap.

    Windows that tile the image (stride = size) are written in one pass, each input value once."""
    n, ho, wo, C = dy.shape
    if sh == kh and sw == kw:
        zero = dx.dtype.type(0)
        for row in prange(n * dx.shape[1]):
            i, u = row // dx.shape[1], row % dx.shape[1]
            r, p = u // kh, u % kh
            for v in range(dx.shape[2]):
                c, q = v // kw, v % kw
                if r >= ho or c >= wo:  # rows and columns no window covers
                    for j in range(C):
                        dx[i, u, v, j] = zero
                    continue
                place = p * kw + q
                for j in range(C):
                    dx[i, u, v, j] = dy[i, r, c, j] if argmax[i, r, c, j] == place else zero
        return
    for i in prange(n):
        dx[i] = 0
        for r in range(ho):
            for c in range(wo):
                for j in range(C):
                    place = argmax[i, r, c, j]
                    dx[i, r * sh + place // kw, c * sw + place % kw, j] += dy[i, r, c, j]
