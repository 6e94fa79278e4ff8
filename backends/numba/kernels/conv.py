"""Kernels of the convolution and pooling contract methods, on channels-last images ``(n, H, W, C)``,
beside the direct convolution (:mod:`.direct`).

Wider convolutions are matrix products (on Numba's threads with oneMKL, :mod:`.products`, else
the BLAS's own); these kernels make the column matrix (``im2col``), apply the epilogue (bias, ReLU)
and the backward's mask and bias sum, add columns back into images (``col2im``), and pool and
unpool. The serial helpers (``*_images``, ``*_rows``) work on a range of images or rows on the
calling thread, so that the parallel kernels here and the fused ones of :mod:`.products` and
:mod:`.direct` share them. Every kernel is parallel over images or rows of its output, and
reductions over the batch sum fixed chunks in chunk order, so results never depend on the thread
count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .intrinsics import JIT

#: Rows per chunk of the bias-gradient sums of the matrix-product path.
ROWS_PER_CHUNK = 256


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


@numba.njit(**JIT)
def im2col_images(x, first, stop, kh, kw, sh, sw, ph, pw, columns):
    """``columns[((i - first), r, c), (p, q, j)] = xpad[i, r * sh + p, c * sw + q, j]`` for the images
    ``first <= i < stop`` (zero outside ``x``), on the calling thread."""
    n, H, Wd, C = x.shape
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (Wd + 2 * pw - kw) // sw + 1
    zero = columns.dtype.type(0)
    for row in range((stop - first) * ho):
        i, r = first + row // ho, row % ho
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
def im2col(x, kh, kw, sh, sw, ph, pw, columns):
    """The column matrix of all of ``x``: :func:`im2col_images` image by image in parallel."""
    n, H, Wd, _ = x.shape
    per_image = ((H + 2 * ph - kh) // sh + 1) * ((Wd + 2 * pw - kw) // sw + 1)
    for i in prange(n):
        im2col_images(x, i, i + 1, kh, kw, sh, sw, ph, pw, columns[i * per_image:(i + 1) * per_image])


@numba.njit(**JIT)
def col2im_images(d_columns, first, stop, kh, kw, sh, sw, ph, pw, dx):
    """The adjoint of :func:`im2col_images`: ``dx[first:stop]`` (overwritten) sums the entries of
    ``d_columns`` (rows of those images, from row 0) that read each input, on the calling thread."""
    n, H, Wd, C = dx.shape
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (Wd + 2 * pw - kw) // sw + 1
    for i in range(first, stop):
        dx[i] = 0
        for r in range(ho):
            for c in range(wo):
                d = d_columns[((i - first) * ho + r) * wo + c]
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


@numba.njit(**JIT)
def col2im_planes(d_planes, rows, first, stop, kh, kw, ph, pw, dx):
    """:func:`col2im_images` at stride 1 from the transposed product: ``d_planes``, flat, holds ``kh * kw *
    C`` planes of ``rows`` entries, plane ``(p * kw + q) * C + j`` tap ``(p, q)``'s value for channel
    ``j`` at each output pixel of images ``first <= i < stop``. Each row of ``dx[first:stop]``
    (overwritten) is summed in a buffer, tap plane by tap plane over runs of pixels (vector loads, no
    per-value bounds tests), adding the taps in the order :func:`col2im_images` does: the same bits."""
    n, H, Wd, C = dx.shape
    ho, wo = H + 2 * ph - kh + 1, Wd + 2 * pw - kw + 1
    line = np.empty(Wd * C, dx.dtype)
    for i in range(first, stop):
        for u in range(H):
            line[:] = 0
            for p in range(kh - 1, -1, -1):  # later output pixels read earlier taps
                r = u + ph - p
                if r < 0 or r >= ho:
                    continue
                for q in range(kw - 1, -1, -1):
                    at = ((i - first) * ho + r) * wo + pw - q  # plane entry of input column 0
                    start, end = max(0, q - pw), min(Wd, wo + q - pw)
                    if C == 1:  # unit strides both sides: a loop LLVM vectorizes
                        source = d_planes[p * kw * rows + q * rows + at:]
                        for v in range(start, end):
                            line[v] += source[v]
                        continue
                    for j in range(C):
                        plane = ((p * kw + q) * C + j) * rows + at
                        for v in range(start, end):
                            line[v * C + j] += d_planes[plane + v]
            for v in range(Wd):
                for j in range(C):
                    dx[i, u, v, j] = line[v * C + j]


@numba.njit(parallel=True, **JIT)
def col2im(d_columns, kh, kw, sh, sw, ph, pw, dx):
    """The adjoint of :func:`im2col`: :func:`col2im_images` image by image in parallel."""
    n, H, Wd, _ = dx.shape
    per_image = d_columns.shape[0] // max(n, 1)
    for i in prange(n):
        col2im_images(d_columns[i * per_image:(i + 1) * per_image], i, i + 1, kh, kw, sh, sw, ph, pw, dx)


@numba.njit(**JIT)
def bias_rows(y, b, relu, first, stop):
    """In place on rows ``first <= i < stop`` of ``y`` ``(m, K)``: ``y += b``, then ``max(y, 0)`` with
    ``relu``, on the calling thread."""
    zero = y.dtype.type(0)
    for i in range(first, stop):
        for k in range(y.shape[1]):
            s = y[i, k] + b[0, k]
            y[i, k] = max(s, zero) if relu else s


@numba.njit(parallel=True, **JIT)
def bias_epilogue(y, b, relu):
    """:func:`bias_rows` on every row of ``y``, in parallel."""
    for i in prange(y.shape[0]):
        bias_rows(y, b, relu, i, i + 1)


@numba.njit(**JIT)
def mask_rows(y, dy, relu, first, stop, dz, sums):
    """For rows ``first <= i < stop`` of ``dy`` ``(m, K)``, on the calling thread: with ``relu``,
    ``dz = dy`` where ``y > 0`` and 0 elsewhere; ``sums`` (overwritten) the column sums of ``dz`` (of
    ``dy`` without ``relu``, and ``dz`` is not written). ``dz`` may be ``dy`` (masked in place).

    Masking in place reads and writes through one row view: with two views of the same row LLVM's
    runtime overlap check fails and the loop runs element by element, ten times slower."""
    zero = dy.dtype.type(0)
    sums[:] = 0
    in_place = dz.ctypes.data == dy.ctypes.data
    for i in range(first, stop):
        gradient = dy[i]
        if relu and in_place:
            output = y[i]
            for k in range(gradient.shape[0]):
                d = gradient[k] if output[k] > zero else zero
                gradient[k] = d
                sums[k] += d
        elif relu:
            out, output = dz[i], y[i]
            for k in range(gradient.shape[0]):
                d = gradient[k] if output[k] > zero else zero
                out[k] = d
                sums[k] += d
        else:
            for k in range(gradient.shape[0]):
                sums[k] += gradient[k]


@numba.njit(parallel=True, **JIT)
def masked_gradient(y, dy, relu, dz, partial):
    """:func:`mask_rows` per chunk of ``ROWS_PER_CHUNK`` rows in parallel, each chunk's sums in
    ``partial[chunk, 0]``."""
    m = dy.shape[0]
    for chunk in prange(partial.shape[0]):
        first = chunk * ROWS_PER_CHUNK
        mask_rows(y, dy, relu, first, min(m, first + ROWS_PER_CHUNK), dz, partial[chunk, 0])


@numba.njit(**JIT)
def _better(value, top):
    """Whether ``value`` takes a window's maximum from ``top``: larger, or the first NaN."""
    return value > top or (value != value and top == top)


@numba.njit(**JIT)
def _relu(value, zero, relu):
    """``max(value, zero)`` with ``relu`` (NaN stays NaN), else ``value``."""
    return (zero if value < zero else value) if relu else value


@numba.njit(**JIT)
def pool_rows(x, x_first, kh, kw, sh, sw, first, stop, y, argmax, best, place, relu):
    """Output rows ``first <= row < stop`` of the ``n * Ho`` rows of ``y`` and ``argmax`` ``(n, Ho, Wo,
    C)``: each window's maximum over ``x`` (then ``max(., 0)`` with ``relu``, NaN staying NaN) and its
    place ``p * kw + q`` (the first of equal values; a NaN wins), on the calling thread. ``x`` holds
    images from ``x_first`` on (image ``i`` is ``x[i - x_first]``).

    2 x 2 windows compare their four values in one loop over the channels; other windows keep the
    running maxima in ``best`` and ``place`` (``C`` each), rows of their own, which LLVM vectorizes
    (it does not vectorize updates of the output in place)."""
    ho, wo, C = y.shape[1:]
    zero = y.dtype.type(0)
    for row in range(first, stop):
        i, r = row // ho, row % ho
        for c in range(wo):
            u0, v0 = r * sh, c * sw
            out, where = y[i, r, c], argmax[i, r, c]
            if kh == 2 and kw == 2:
                a, b = x[i - x_first, u0, v0], x[i - x_first, u0, v0 + 1]
                d, e = x[i - x_first, u0 + 1, v0], x[i - x_first, u0 + 1, v0 + 1]
                for j in range(C):
                    top, at = a[j], np.int32(0)
                    if _better(b[j], top):
                        top, at = b[j], np.int32(1)
                    if _better(d[j], top):
                        top, at = d[j], np.int32(2)
                    if _better(e[j], top):
                        top, at = e[j], np.int32(3)
                    out[j] = _relu(top, zero, relu)
                    where[j] = at
                continue
            for j in range(C):
                best[j] = x[i - x_first, u0, v0, j]
                place[j] = 0
            for p in range(kh):
                for q in range(kw):
                    if p == 0 and q == 0:
                        continue
                    here = np.int32(p * kw + q)
                    for j in range(C):
                        value, top = x[i - x_first, u0 + p, v0 + q, j], best[j]
                        better = _better(value, top)
                        best[j] = value if better else top
                        place[j] = here if better else place[j]
            for j in range(C):
                out[j] = _relu(best[j], zero, relu)
                where[j] = place[j]


@numba.njit(parallel=True, **JIT)
def maxpool_forward(x, kh, kw, sh, sw, chunks, y, argmax):
    """:func:`pool_rows` over every output row, split into ``chunks`` run in parallel."""
    n, ho, wo, C = y.shape
    rows = n * ho
    chunks = max(1, min(rows, chunks))
    for chunk in prange(chunks):
        best, place = np.empty(C, y.dtype), np.empty(C, np.int32)
        pool_rows(x, 0, kh, kw, sh, sw, chunk * rows // chunks, (chunk + 1) * rows // chunks, y, argmax, best,
                  place, False)


@numba.njit(**JIT)
def unpool_images(argmax, dy, y, relu, kh, kw, sh, sw, first, stop, dx, dx_first):
    """For images ``first <= i < stop``: ``dx[i - dx_first]`` (overwritten) receives each ``dy`` (times
    ``y > 0`` with ``relu``: a ReLU after the pooling) at its window's maximum, summed where windows
    overlap, on the calling thread. Windows that tile the image (stride = size) are written in one
    pass, each input value once, window by window: a loop over the channels per input pixel (with
    three arrays read and one written, few enough for LLVM to vectorize it)."""
    ho, wo, C = dy.shape[1:]
    H, Wd = dx.shape[1:3]
    zero, one = dx.dtype.type(0), dx.dtype.type(1)
    for i in range(first, stop):
        out = dx[i - dx_first]
        if sh == kh and sw == kw:
            for u in range(ho * kh, H):  # rows and columns no window covers
                out[u] = zero
            for r in range(ho):
                for p in range(kh):
                    out[r * kh + p, wo * kw:] = zero
                for c in range(wo):
                    gradient, output, where = dy[i, r, c], y[i, r, c], argmax[i, r, c]
                    for p in range(kh):
                        for q in range(kw):
                            target, place = out[r * kh + p, c * kw + q], p * kw + q
                            for j in range(C):
                                g = gradient[j]
                                g = g * (one if output[j] > zero else zero) if relu else g
                                target[j] = g if where[j] == place else zero
            continue
        out[:] = 0
        for r in range(ho):
            for c in range(wo):
                for j in range(C):
                    place, d = argmax[i, r, c, j], dy[i, r, c, j]
                    d = d * (one if y[i, r, c, j] > zero else zero) if relu else d
                    out[r * sh + place // kw, c * sw + place % kw, j] += d


@numba.njit(parallel=True, **JIT)
def maxpool_backward(argmax, dy, kh, kw, sh, sw, dx):
    """:func:`unpool_images` (no ReLU) image by image in parallel."""
    for i in prange(dy.shape[0]):
        unpool_images(argmax, dy, dy, False, kh, kw, sh, sw, i, i + 1, dx, 0)
