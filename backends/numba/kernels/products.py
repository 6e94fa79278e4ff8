"""Matrix products on Numba's own threads: oneMKL's ``cblas_?gemm`` called one thread per block,
from inside parallel kernels, with the pass before or after each product fused into the same block.

Calling a threaded BLAS from Python and then a parallel Numba kernel keeps two thread pools on the
same cores: oneMKL's OpenMP threads spin after each product while Numba's threads start the next
kernel, and a process forked after an OpenMP product hangs in its next one (GNU OpenMP cannot
follow a ``fork()``). These kernels split a product into one block per Numba thread and call
oneMKL on each block with its thread count set to one for the calling thread
(``MKL_Set_Num_Threads_Local``), so every thread of a training step is Numba's, and each block's
bias, ReLU or mask is applied while the block is still in that core's cache.

oneMKL's functions are passed in as addresses (``calls``: ``[cblas_?gemm, MKL_Set_Num_Threads_Local]``
as int64, from :meth:`backends.blas.MklProducts.kernel_calls`), so the machine code Numba caches does
not hold an address of this process. Products are row-major; the caller checks that every array is
C-contiguous, of the one float dtype the ``gemm`` address was taken for, and of matching shapes.

Blocks split the rows of an output between the threads (the weight gradient's output rows are the
layer's outputs); bias-gradient sums are taken per chunk of ``ROWS_PER_CHUNK`` rows whatever the
thread count, then added in chunk order. Each output element is one oneMKL product over the whole
inner dimension.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .conv import (ROWS_PER_CHUNK, bias_rows, col2im_images, im2col_images, mask_rows, pool_rows,
                   unpool_images)
from .intrinsics import JIT

#: cblas enumerations (row-major storage; an operand as stored, or transposed).
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


@intrinsic
def _cblas_gemm(typingctx, address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call the ``cblas_?gemm`` at ``address`` (row-major); ``a``, ``b``, ``c`` are data addresses and
    ``alpha`` / ``beta`` are of the product's float type."""
    if not isinstance(alpha, types.Float) or beta != alpha:
        return None

    def codegen(context, builder, signature, arguments):
        i32, pointer = ir.IntType(32), ir.IntType(8).as_pointer()
        real = context.get_value_type(signature.args[6])
        parameters = [i32] * 6 + [real, pointer, i32, pointer, i32, real, pointer, i32]
        function = builder.inttoptr(arguments[0], ir.FunctionType(ir.VoidType(), parameters).as_pointer())
        values = [i32(ROW_MAJOR)]
        for value, kind in zip(arguments[1:], parameters[1:]):
            if kind is i32:
                value = builder.trunc(value, i32)
            elif kind is pointer:
                value = builder.inttoptr(value, pointer)
            values.append(value)
        builder.call(function, values)
        return context.get_dummy_value()

    integer = types.int64
    return types.void(integer, integer, integer, integer, integer, integer, alpha, integer, integer,
                      integer, integer, alpha, integer, integer), codegen


@intrinsic
def _local_threads(typingctx, address, count):
    """Call the ``MKL_Set_Num_Threads_Local(count)`` at ``address`` (0: the process-wide count again)."""

    def codegen(context, builder, signature, arguments):
        i32 = ir.IntType(32)
        function = builder.inttoptr(arguments[0], ir.FunctionType(i32, [i32]).as_pointer())
        builder.call(function, [builder.trunc(arguments[1], i32)])
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@numba.njit(**JIT)
def _gemm(calls, trans_a, trans_b, m, n, k, a, a_at, lda, b, b_at, ldb, beta, c, c_at, ldc):
    """``c[c_at:] = a[a_at:] @ b[b_at:] + beta c`` on one thread, for flat element offsets ``*_at`` into
    C-contiguous arrays read as row-major ``(m, k) @ (k, n)`` matrices (``trans_*``: stored transposed)."""
    if m == 0 or n == 0:
        return
    one, size = c.dtype.type(1), c.itemsize
    _local_threads(calls[1], 1)
    _cblas_gemm(calls[0], trans_a, trans_b, m, n, k, one, a.ctypes.data + a_at * size, lda,
                b.ctypes.data + b_at * size, ldb, c.dtype.type(beta), c.ctypes.data + c_at * size, ldc)
    _local_threads(calls[1], 0)


@numba.njit(**JIT)
def _block(count, parts, part):
    """``(first, stop)``: the items ``first <= i < stop`` of ``count`` that block ``part`` of ``parts``
    takes (nearly equal blocks, in order)."""
    return part * count // parts, (part + 1) * count // parts


@numba.njit(**JIT)
def _chunk_items(chunk, per_chunk, n):
    """``(first, stop)``: the items (images, rows) of chunk ``chunk`` when ``n`` go ``per_chunk`` a chunk."""
    return chunk * per_chunk, min(n, (chunk + 1) * per_chunk)


@numba.njit(**JIT)
def _pixels(x, kh, kw, sh, sw, ph, pw):
    """Output pixels per image of a convolution of the images ``x (n, H, W, C)``."""
    return ((x.shape[1] + 2 * ph - kh) // sh + 1) * ((x.shape[2] + 2 * pw - kw) // sw + 1)


@numba.njit(parallel=True, **JIT)
def linear_forward(calls, x, W, b, relu, parts, y):
    """``y = x @ W.T + b`` (then ``max(y, 0)`` with ``relu``): ``x (n, k)``, ``W (m, k)``, ``b (1, m)``,
    ``y (n, m)``; each of ``parts`` row blocks a product, then its bias and ReLU while in cache."""
    (n, k), m = x.shape, W.shape[0]
    for part in prange(parts):
        first, stop = _block(n, parts, part)
        _gemm(calls, NO_TRANS, TRANS, stop - first, m, k, x, first * k, k, W, 0, k, 0.0, y, first * m, m)
        bias_rows(y, b, relu, first, stop)


@numba.njit(parallel=True, **JIT)
def linear_backward(calls, x, W, y, dy, relu, dz, partial, dW, db, beta, need_dx, parts, dx):
    """A dense layer's gradients from ``dy (n, m)``: ``dz = dy`` masked where ``y <= 0`` with ``relu``
    (``dz`` is ``dy`` itself otherwise), ``partial[c, 0]`` the column sums of ``dz`` over chunk ``c`` of
    ``ROWS_PER_CHUNK`` rows, ``db = partial.sum(0) + beta db`` (added in chunk order), ``dx = dz @ W``
    when ``need_dx``, ``dW = dz.T @ x + beta dW`` (``beta`` 0 or 1).

    The mask, the chunk sums and ``dx`` go by blocks of whole chunks of rows, so that each block's
    ``dz`` is in cache for its product; then ``dW`` by blocks of its rows."""
    (n, k), m = x.shape, W.shape[0]
    chunks = partial.shape[0]
    for part in prange(parts):
        lo, hi = _block(chunks, parts, part)
        for chunk in range(lo, hi):
            rows = _chunk_items(chunk, ROWS_PER_CHUNK, n)
            mask_rows(y, dy, relu, rows[0], rows[1], dz, partial[chunk, 0])
        if need_dx:
            first, stop = min(n, lo * ROWS_PER_CHUNK), min(n, hi * ROWS_PER_CHUNK)
            _gemm(calls, NO_TRANS, NO_TRANS, stop - first, k, m, dz, first * m, m, W, 0, k, 0.0,
                  dx, first * k, k)
    for part in prange(parts):
        first, stop = _block(m, parts, part)
        _gemm(calls, TRANS, NO_TRANS, stop - first, k, n, dz, first, m, x, 0, k, beta, dW, first * k, k)
        for j in range(first, stop):
            s = partial[0, 0, j]
            for chunk in range(1, chunks):
                s += partial[chunk, 0, j]
            db[0, j] = s + db[0, j] if beta else s


@numba.njit(parallel=True, **JIT)
def matmul(calls, a, trans_a, b, trans_b, beta, parts, c):
    """``c = op(a) @ op(b) + beta c`` for C-contiguous 2-D arrays (``op``: transposed when ``trans_*``),
    by blocks of the rows of ``c``."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    lda, ldb = a.shape[1], b.shape[1]
    for part in prange(parts):
        first, stop = _block(m, parts, part)
        a_at = first if trans_a else first * lda
        _gemm(calls, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, stop - first, n, k,
              a, a_at, lda, b, 0, ldb, beta, c, first * n, n)


@numba.njit(parallel=True, **JIT)
def conv_forward(calls, x, weights, b, kh, kw, sh, sw, ph, pw, relu, per_chunk, columns, y):
    """A convolution as products by chunks of ``per_chunk`` images: each chunk's column matrix
    (:func:`.conv.im2col_images`, into ``columns[part]``, one buffer per block), its product with
    ``weights (K, kh * kw * C)`` into the output rows ``y (n * Ho * Wo, K)``, then bias and ReLU on
    those rows, all on one thread while the chunk is in its cache."""
    n, (K, taps) = x.shape[0], weights.shape
    per_image = _pixels(x, kh, kw, sh, sw, ph, pw)
    parts, chunks = columns.shape[0], (n + per_chunk - 1) // per_chunk
    for part in prange(parts):
        lo, hi = _block(chunks, parts, part)
        for chunk in range(lo, hi):
            first, stop = _chunk_items(chunk, per_chunk, n)
            im2col_images(x, first, stop, kh, kw, sh, sw, ph, pw, columns[part])
            rows = (stop - first) * per_image
            _gemm(calls, NO_TRANS, TRANS, rows, K, taps, columns[part], 0, taps, weights, 0, taps, 0.0,
                  y, first * per_image * K, K)
            bias_rows(y, b, relu, first * per_image, stop * per_image)


@numba.njit(parallel=True, **JIT)
def conv_backward(calls, x, weights, y, dy, relu, kh, kw, sh, sw, ph, pw, per_chunk, need_dx, dz, columns,
                  d_columns, partial, dx):
    """A convolution's gradients by chunks of ``per_chunk`` images, each on one thread: the output
    gradient rows ``dy (n * Ho * Wo, K)`` masked where ``y <= 0`` with ``relu`` (into ``dz``; ``dz`` is
    ``dy`` otherwise), ``partial[chunk]`` the chunk's weight gradient by tap ``(kh * kw * C, K)`` (the
    column matrix, made again in ``columns[part]``, times ``dz``) followed by its bias sum, and with
    ``need_dx`` the input gradient ``dx`` (the product ``dz @ weights`` in ``d_columns[part]`` added
    back into images, :func:`.conv.col2im_images`)."""
    n, (K, taps) = x.shape[0], weights.shape
    per_image = _pixels(x, kh, kw, sh, sw, ph, pw)
    parts, chunks = columns.shape[0], (n + per_chunk - 1) // per_chunk
    for part in prange(parts):
        lo, hi = _block(chunks, parts, part)
        for chunk in range(lo, hi):
            first, stop = _chunk_items(chunk, per_chunk, n)
            rows, at = (stop - first) * per_image, first * per_image
            mask_rows(y, dy, relu, at, at + rows, dz, partial[chunk, taps])
            im2col_images(x, first, stop, kh, kw, sh, sw, ph, pw, columns[part])
            _gemm(calls, TRANS, NO_TRANS, taps, K, rows, columns[part], 0, taps, dz, at * K, K, 0.0,
                  partial, chunk * (taps + 1) * K, K)
            if need_dx:
                _gemm(calls, NO_TRANS, NO_TRANS, rows, taps, K, dz, at * K, K, weights, 0, taps, 0.0,
                      d_columns[part], 0, taps)
                col2im_images(d_columns[part], first, stop, kh, kw, sh, sw, ph, pw, dx)


@numba.njit(parallel=True, **JIT)
def conv_pool_forward(calls, x, weights, b, kh, kw, sh, sw, ph, pw, pool, per_chunk, columns, conv, y,
                      argmax):
    """A convolution, its max pooling (``pool``: window rows, columns, strides) and a ReLU, by chunks of
    ``per_chunk`` images, each on one thread: the chunk's convolution with its bias (as
    :func:`conv_forward`) into ``conv[part]`` ``(per_chunk, Ho, Wo, K)``, pooled into ``y`` and
    ``argmax`` (:func:`.conv.pool_rows`), then ``max(y, 0)`` on the pooled rows: the convolution's
    output never leaves the core's cache."""
    n, (K, taps) = x.shape[0], weights.shape
    ho, wo = conv.shape[2:4]
    per_image, pooled_rows = ho * wo, y.shape[1]
    parts, chunks = columns.shape[0], (n + per_chunk - 1) // per_chunk
    for part in prange(parts):
        best, place = np.empty(K, y.dtype), np.empty(K, np.int32)
        out = conv[part].reshape((per_chunk * per_image, K))
        lo, hi = _block(chunks, parts, part)
        for chunk in range(lo, hi):
            first, stop = _chunk_items(chunk, per_chunk, n)
            rows = (stop - first) * per_image
            im2col_images(x, first, stop, kh, kw, sh, sw, ph, pw, columns[part])
            _gemm(calls, NO_TRANS, TRANS, rows, K, taps, columns[part], 0, taps, weights, 0, taps, 0.0,
                  out, 0, K)
            bias_rows(out, b, False, 0, rows)
            pool_rows(conv[part], first, pool[0], pool[1], pool[2], pool[3], first * pooled_rows,
                      stop * pooled_rows, y, argmax, best, place, True)


@numba.njit(parallel=True, **JIT)
def conv_pool_backward(calls, x, weights, y, argmax, dy, kh, kw, sh, sw, ph, pw, pool, per_chunk, need_dx,
                       dz, columns, d_columns, partial, dx):
    """The gradients of :func:`conv_pool_forward` from the pooled output's ``y``, ``argmax`` and ``dy``,
    by chunks of images, each on one thread: the chunk's convolution-output gradient made in ``dz[part]``
    (``dy`` masked by ``y > 0`` and put at each window's maximum, :func:`.conv.unpool_images`), then as
    :func:`conv_backward`: its bias sum and weight gradient by tap in ``partial[chunk]``, and with
    ``need_dx`` the input gradient ``dx``."""
    n, (K, taps) = x.shape[0], weights.shape
    ho, wo = dz.shape[2:4]
    per_image = ho * wo
    parts, chunks = columns.shape[0], (n + per_chunk - 1) // per_chunk
    for part in prange(parts):
        rows_of = dz[part].reshape((per_chunk * per_image, K))
        lo, hi = _block(chunks, parts, part)
        for chunk in range(lo, hi):
            first, stop = _chunk_items(chunk, per_chunk, n)
            rows = (stop - first) * per_image
            unpool_images(argmax, dy, y, True, pool[0], pool[1], pool[2], pool[3], first, stop, dz[part],
                          first)
            mask_rows(rows_of, rows_of, False, 0, rows, rows_of, partial[chunk, taps])
            im2col_images(x, first, stop, kh, kw, sh, sw, ph, pw, columns[part])
            _gemm(calls, TRANS, NO_TRANS, taps, K, rows, columns[part], 0, taps, rows_of, 0, K, 0.0,
                  partial, chunk * (taps + 1) * K, K)
            if need_dx:
                _gemm(calls, NO_TRANS, NO_TRANS, rows, taps, K, rows_of, 0, K, weights, 0, taps, 0.0,
                      d_columns[part], 0, taps)
                col2im_images(d_columns[part], first, stop, kh, kw, sh, sw, ph, pw, dx)
