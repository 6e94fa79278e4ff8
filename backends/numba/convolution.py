"""The Numba backend's convolutions and max pooling (channels-last images; see ``backends/convolution.py``).

A convolution with at most ``DIRECT_CONVOLUTION`` inputs per output (``C * kh * kw``: a first layer on
raw pixels) runs as the register-blocked direct kernels of :mod:`.kernels.direct`. Wider ones are column
matrices and BLAS products: with oneMKL, chunks of about ``CHUNK_BYTES`` of column matrix, each made,
multiplied and finished on one Numba thread (:mod:`.kernels.products`); with NumPy's BLAS, chunks of
``COLUMN_BYTES`` multiplied on its own threads, the passes around them as parallel kernels. 3x3
stride-1 layers of at least ``WINOGRAD_CHANNELS`` channels run as Winograd F(2x2, 3x3) (off).

:class:`ConvolutionMethods` holds these contract methods for :class:`.backend.NumbaBackend`, which
provides what they call: ``_k`` (the kernels), ``_numba``, ``_parallel``, ``_blas``, ``_products``,
``_parts``, ``_masked`` and ``_work_array``.
"""

from __future__ import annotations

import math

import numpy

from ..arrays import kernel_ready
from ..convolution import window_output

#: Convolutions with at most this many inputs per output (``C * kh * kw``) run directly; wider ones
#: are a column matrix and a BLAS product.
DIRECT_CONVOLUTION = 32
#: Bytes of column matrix made at a time where a product is one call to the BLAS's own threads (no
#: oneMKL, or Winograd's batched products): some images, so that the matrix stays in cache between
#: ``im2col`` and the product that reads it (half the time of one matrix for the whole batch). With
#: oneMKL called that way, 8 MB chunks trained the CNN faster than 2 MB ones in every run (fewer,
#: larger products): ``python benchmarks/column_chunks.py --megabytes 2,8 --rounds 7`` gave best
#: epochs of 726 against 777 ms and medians of 754 against 908 ms (Emerald Rapids Xeon, 2 cores).
#: With oneMKL the backend now runs products on its own threads, in chunks of ``CHUNK_BYTES``.
COLUMN_BYTES = 8 * 2**20
#: Bytes of column matrix per chunk of images where oneMKL's products run on Numba's threads
#: (:mod:`.kernels.products`): each thread makes a chunk's matrix and multiplies it while in its cache.
#: ``python benchmarks/column_chunks.py --megabytes 0.5,1,2 --rounds 3`` gave best / median epochs of
#: 501 / 531, 433 / 455 and 482 / 508 ms per 2,560 CNN rows (Emerald Rapids Xeon, 2 cores; earlier
#: runs of 0.25 to 4 MB differed by less than the noise).
CHUNK_BYTES = 2**20
#: 3x3 stride-1 convolutions with at least this many input and output channels run as Winograd
#: F(2x2, 3x3) (:mod:`.kernels.winograd`); ``None``: none do. Off because it measured no faster than
#: im2col + oneMKL on the 2-core machine it was written on (the numbers are in that module).
WINOGRAD_CHANNELS = None
#: Bytes of transformed tiles (inputs and products) made at a time, for the same reason as ``COLUMN_BYTES``.
WINOGRAD_BYTES = 2 * 2**20


def _winograd(W, stride, padding):
    """True for the convolutions that run as Winograd F(2x2, 3x3): 3x3 filters at stride 1 with
    padding 0 to 2 (the input gradient's convolution is padded by ``2 - padding``), between at least
    ``WINOGRAD_CHANNELS`` input and output channels."""
    K, C, kh, kw = W.shape
    return (WINOGRAD_CHANNELS is not None and (kh, kw) == (3, 3) and tuple(stride) == (1, 1)
            and all(0 <= p <= 2 for p in padding)
            and min(C, K) >= WINOGRAD_CHANNELS and C * kh * kw > DIRECT_CONVOLUTION)


def _direct(x, W, *arrays):
    """True for a convolution the direct kernels take: at most ``DIRECT_CONVOLUTION`` inputs per output,
    a non-empty batch of images and arrays ready for kernels."""
    K, C, kh, kw = W.shape
    return (x.ndim == 4 and x.shape[0] > 0 and C * kh * kw <= DIRECT_CONVOLUTION
            and kernel_ready(x, W, *arrays))


def _staggered(length, itemsize):
    """A row length of at least ``length`` items that is an odd number of 64-byte cache lines, so that
    rows of an array are spread over the cache sets (see :mod:`.kernels.winograd`)."""
    per_line = 64 // itemsize
    lines = -(-length // per_line)
    return (lines + 1 - lines % 2) * per_line


class ConvolutionMethods:
    """The convolution and max-pooling methods of :class:`.backend.NumbaBackend` (a mixin)."""

    def conv2d_forward(self, x, W, b, stride, padding, *, relu=False):
        if not (x.ndim == 4 and x.shape[0] and kernel_ready(x, W, b)):
            return super().conv2d_forward(x, W, b, stride, padding, relu=relu)
        (sh, sw), (ph, pw), (K, C, kh, kw) = stride, padding, W.shape
        n, H, Wd, _ = x.shape
        ho, wo = window_output(H, Wd, (kh, kw), stride, padding)
        y = numpy.empty((n, ho, wo, K), x.dtype)
        if _winograd(W, stride, padding):
            U = numpy.empty((self._k.TILE_ENTRIES, C, K), x.dtype)
            self._parallel(self._k.winograd_filter, W, False, U)
            self._winograd_convolution(x, U, b, padding, relu, y)
            return y
        if C * kh * kw <= DIRECT_CONVOLUTION:
            Wt = numpy.ascontiguousarray(W.transpose(2, 3, 1, 0))
            chunks = 4 * self._numba.get_num_threads()
            self._parallel(self._k.conv_forward_direct, x, Wt, b, sh, sw, ph, pw, relu, chunks, y)
            return y
        rows, calls = y.reshape(-1, K), self._products.kernel_calls(x.dtype)
        if calls is not None:  # oneMKL on Numba's threads: column matrix, product and epilogue per chunk
            per_chunk, columns = self._chunk_columns(x, (kh, kw), stride, padding)
            weights = numpy.ascontiguousarray(self._weight_matrix(W))
            self._parallel(self._k.products.conv_forward, calls, x, weights, b, kh, kw, sh, sw, ph, pw, relu,
                           per_chunk, columns, rows)
            return y
        weights = self._weight_matrix(W).T
        for start, stop, columns in self._column_chunks(x, (kh, kw), stride, padding):
            self._blas(self._products.matmul, columns, weights, out=rows[start * ho * wo:stop * ho * wo])
        self._parallel(self._k.bias_epilogue, rows, b, relu)
        return y

    def conv2d_backward(self, x, W, y, dy, dW, db, stride, padding, *, relu=False,
                        accumulate=True, need_dx=True):
        masks = (y,) if relu else ()
        if not (x.ndim == 4 and x.shape[0] and kernel_ready(x, W, dy, dW, db, *masks)
                and (not relu or y.shape == dy.shape)):
            return super().conv2d_backward(x, W, y, dy, dW, db, stride, padding, relu=relu,
                                           accumulate=accumulate, need_dx=need_dx)
        (sh, sw), (ph, pw), (K, C, kh, kw) = stride, padding, W.shape
        k, direct, taps = self._k, C * kh * kw <= DIRECT_CONVOLUTION, kh * kw * C
        rows, calls = dy.reshape(-1, K), self._products.kernel_calls(dy.dtype)
        if not direct and calls is not None and not (need_dx and _winograd(W, stride, padding)):
            # oneMKL on Numba's threads: mask, bias sum, column matrix, products and col2im per chunk
            per_chunk, columns = self._chunk_columns(x, (kh, kw), stride, padding)
            partial = self._work_array("partial", (-(-x.shape[0] // per_chunk), taps + 1, K), dy.dtype)
            dz = self._work_array("dz", rows.shape, dy.dtype) if relu else rows
            dx = numpy.empty(x.shape if need_dx else (0, *x.shape[1:]), dy.dtype)
            d_columns = (self._work_array("d_columns", columns.shape, columns.dtype) if need_dx
                         else columns[:, :0])
            weights = numpy.ascontiguousarray(self._weight_matrix(W))
            masks = y.reshape(-1, K) if relu else rows
            self._parallel(k.products.conv_backward, calls, x, weights, masks, rows, relu, kh, kw, sh, sw, ph,
                           pw, per_chunk, need_dx, dz, columns, d_columns, partial, dx)
            self._store_chunk_gradients(partial, dW, db, accumulate)
            return dx if need_dx else None
        if direct:  # mask, bias and weight gradients in one pass over the output gradient
            chunks = (x.shape[0] + k.IMAGES_PER_CHUNK - 1) // k.IMAGES_PER_CHUNK
            partial = self._work_array("partial", (chunks, taps + 1, K), dy.dtype)
            self._parallel(k.conv_weight_gradient_direct, x, y if relu else dy, dy, relu, kh, kw, sh, sw,
                           ph, pw, partial)
            sums = numpy.empty((taps + 1, K), dy.dtype)
            self._parallel(k.sum_chunks, partial, sums)
            by_tap, bias_gradient = sums[:taps], sums[taps:]
            dz = self._masked(rows, y, relu)[0] if need_dx and relu else rows
        else:
            dz, bias_gradient = self._masked(rows, y, relu)
            by_tap = numpy.zeros((taps, K), dy.dtype)
        dx = numpy.empty(x.shape, dy.dtype) if need_dx else None
        columns_dx = need_dx and not _winograd(W, stride, padding)
        if need_dx and not columns_dx:
            # dx is the convolution of dz with the rotated, channel-transposed filter, padded so
            # that it has the input's size: no column matrix of dz and no col2im
            U = numpy.empty((k.TILE_ENTRIES, K, C), dy.dtype)
            self._parallel(k.winograd_filter, W, True, U)
            zero_bias = numpy.zeros((1, C), dy.dtype)
            self._winograd_convolution(dz.reshape(dy.shape), U, zero_bias, (2 - ph, 2 - pw), False, dx)
        if columns_dx or not direct:
            weights, per_image, d_columns = self._weight_matrix(W), rows.shape[0] // x.shape[0], None
            for start, stop, columns in self._column_chunks(x, (kh, kw), stride, padding, skip=direct):
                block = dz[start * per_image:stop * per_image]
                if columns is not None:
                    self._matmul(columns.T, block, by_tap, accumulate=True)
                if columns_dx:
                    if d_columns is None:  # one buffer for every chunk
                        d_columns = numpy.empty((block.shape[0], weights.shape[1]), dy.dtype)
                    d_block = d_columns[:block.shape[0]]
                    self._matmul(block, weights, d_block)
                    self._parallel(k.col2im, d_block, kh, kw, sh, sw, ph, pw, dx[start:stop])
        self._store_conv_gradients(dW, db, by_tap, bias_gradient, accumulate)
        return dx

    def _chunked_products(self, x, W, stride, padding, *arrays):
        """oneMKL's calls when a convolution runs as the chunked products of :mod:`.kernels.products`
        (a column matrix, not Winograd, oneMKL there, ``x`` and ``arrays`` ready for kernels), else None."""
        K, C, kh, kw = W.shape
        if (x.ndim != 4 or not x.shape[0] or C * kh * kw <= DIRECT_CONVOLUTION
                or _winograd(W, stride, padding) or not kernel_ready(x, W, *arrays)):
            return None
        return self._products.kernel_calls(x.dtype)

    def conv2d_relu_maxpool_forward(self, x, W, b, stride, padding, size, pool_stride):
        direct = _direct(x, W, b)
        calls = None if direct else self._chunked_products(x, W, stride, padding, b)
        if calls is None and not direct:
            return super().conv2d_relu_maxpool_forward(x, W, b, stride, padding, size, pool_stride)
        (sh, sw), (ph, pw), (K, _, kh, kw), (n, H, Wd, _) = stride, padding, W.shape, x.shape
        ho, wo = window_output(H, Wd, (kh, kw), stride, padding)
        shape = (n, *window_output(ho, wo, size, pool_stride), K)
        y, argmax = numpy.empty(shape, x.dtype), numpy.empty(shape, numpy.int32)
        if direct:  # the direct convolution, pooled and ReLU'd per chunk of images on one thread
            per_chunk = self._k.IMAGES_PER_CHUNK
            parts = min(self._parts(), -(-n // per_chunk))
            conv = self._work_array("conv", (parts, per_chunk, ho, wo, K), x.dtype)
            Wt = numpy.ascontiguousarray(W.transpose(2, 3, 1, 0))
            self._parallel(self._k.direct.direct_pool_forward, x, Wt, b, sh, sw, ph, pw,
                           (*size, *pool_stride), per_chunk, conv, y, argmax)
            return y, argmax
        per_chunk, columns = self._chunk_columns(x, (kh, kw), stride, padding)
        conv = self._work_array("conv", (columns.shape[0], per_chunk, ho, wo, K), x.dtype)
        weights = numpy.ascontiguousarray(self._weight_matrix(W))
        self._parallel(self._k.products.conv_pool_forward, calls, x, weights, b, kh, kw, sh, sw, ph, pw,
                       (*size, *pool_stride), per_chunk, columns, conv, y, argmax)
        return y, argmax

    def conv2d_relu_maxpool_backward(self, x, W, y, argmax, dy, dW, db, stride, padding, size, pool_stride,
                                     *, accumulate=True, need_dx=True):
        mkl = self._products.kernel_calls(dy.dtype)  # with oneMKL, the input gradient in the same pass
        direct = (not need_dx or mkl is not None) and _direct(x, W, y, dy, dW, db)
        calls = None if direct else self._chunked_products(x, W, stride, padding, y, dy, dW, db)
        if ((calls is None and not direct) or argmax.dtype != numpy.int32 or not argmax.flags.c_contiguous
                or not argmax.shape == y.shape == dy.shape):
            return super().conv2d_relu_maxpool_backward(x, W, y, argmax, dy, dW, db, stride, padding, size,
                                                        pool_stride, accumulate=accumulate, need_dx=need_dx)
        (sh, sw), (ph, pw), (K, C, kh, kw), (n, H, Wd, _) = stride, padding, W.shape, x.shape
        ho, wo = window_output(H, Wd, (kh, kw), stride, padding)
        taps = kh * kw * C
        if direct:  # per chunk of images: unpooled gradient in a thread's buffer, weight sums (and dx)
            per_chunk = self._k.IMAGES_PER_CHUNK
            chunks = -(-n // per_chunk)
            parts = min(self._parts(), chunks)
            dz = self._work_array("dz", (parts, per_chunk, ho, wo, K), dy.dtype)
            partial = self._work_array("partial", (chunks, taps + 1, K), dy.dtype)
            dx = numpy.empty(x.shape if need_dx else (0, *x.shape[1:]), dy.dtype)
            d_columns = self._work_array("d_columns", (parts, per_chunk * ho * wo if need_dx else 0, taps),
                                         dy.dtype)
            self._parallel(self._k.direct.direct_pool_backward, x, y, argmax, dy, kh, kw, sh, sw, ph, pw,
                           (*size, *pool_stride), dz, partial,
                           numpy.zeros(2, numpy.int64) if mkl is None else mkl,
                           numpy.ascontiguousarray(self._weight_matrix(W)), d_columns, dx)
            self._store_chunk_gradients(partial, dW, db, accumulate)
            return dx if need_dx else None
        per_chunk, columns = self._chunk_columns(x, (kh, kw), stride, padding)
        dz = self._work_array("dz", (columns.shape[0], per_chunk, ho, wo, K), dy.dtype)
        partial = self._work_array("partial", (-(-n // per_chunk), taps + 1, K), dy.dtype)
        dx = numpy.empty(x.shape if need_dx else (0, *x.shape[1:]), dy.dtype)
        d_columns = self._work_array("d_columns", columns.shape, columns.dtype) if need_dx else columns[:, :0]
        weights = numpy.ascontiguousarray(self._weight_matrix(W))
        self._parallel(self._k.products.conv_pool_backward, calls, x, weights, y, argmax, dy, kh, kw, sh, sw,
                       ph, pw, (*size, *pool_stride), per_chunk, need_dx, dz, columns, d_columns, partial, dx)
        self._store_chunk_gradients(partial, dW, db, accumulate)
        return dx if need_dx else None

    def _store_chunk_gradients(self, partial, dW, db, accumulate):
        """Add (or write) the weight and bias gradients from per-chunk sums ``partial (chunks, taps + 1,
        K)``: each chunk's weight gradient by tap, then its bias sum, added in chunk order."""
        sums = numpy.empty(partial.shape[1:], partial.dtype)
        self._parallel(self._k.sum_chunks, partial, sums)
        self._store_conv_gradients(dW, db, sums[:-1], sums[-1:], accumulate)

    def _matmul(self, a, b, out, accumulate=False):
        """``out (+)= a @ b``: on Numba's threads when oneMKL's calls are there and each operand is
        C-contiguous or the transpose of a C-contiguous array, else by the chosen BLAS."""
        calls = self._products.kernel_calls(out.dtype)
        layouts = [None if m.dtype != out.dtype else False if m.flags.c_contiguous
                   else True if m.T.flags.c_contiguous else None for m in (a, b)]
        if calls is None or None in layouts or not out.flags.c_contiguous or out.size == 0:
            return self._blas(self._products.matmul, a, b, out=out, accumulate=accumulate)
        (ta, tb), (a, b) = layouts, (a.T if layouts[0] else a, b.T if layouts[1] else b)
        beta = 1.0 if accumulate else 0.0
        self._parallel(self._k.products.matmul, calls, a, ta, b, tb, beta, self._parts(), out)
        return out

    def _chunk_columns(self, x, kernel, stride, padding):
        """``(images per chunk, one column-matrix buffer per Numba thread)`` for the convolution kernels
        that make a chunk's column matrix and multiply it on one thread (about ``CHUNK_BYTES`` each)."""
        (kh, kw), (n, H, Wd, C) = kernel, x.shape
        per_image = math.prod(window_output(H, Wd, kernel, stride, padding))
        per_chunk = max(1, min(n, CHUNK_BYTES // (per_image * kh * kw * C * x.itemsize)))
        shape = (self._parts(), per_chunk * per_image, kh * kw * C)
        return per_chunk, self._work_array("columns", shape, x.dtype)

    def _winograd_convolution(self, x, U, b, padding, relu, y):
        """``y`` = the 3x3 stride-1 convolution of ``x`` zero-padded by ``padding`` with the filter
        transformed to ``U (16, C, K)``, plus ``b`` (then ``max(., 0)`` with ``relu``), a chunk of
        about ``WINOGRAD_BYTES`` of transformed tiles at a time."""
        k, (ph, pw), (entries, C, K) = self._k, padding, U.shape
        n, ho, wo = y.shape[:3]
        tile_rows, tile_columns = (ho + 1) // 2, (wo + 1) // 2
        tiles = n * tile_rows * tile_columns
        chunk = max(1, min(tiles, WINOGRAD_BYTES // (entries * (C + K) * x.itemsize)))
        inputs = numpy.empty((entries, _staggered(chunk * C, x.itemsize)), x.dtype)
        products = numpy.empty((entries, _staggered(chunk * K, x.itemsize)), x.dtype)
        chunks = 4 * self._numba.get_num_threads()
        for first in range(0, tiles, chunk):
            count = min(chunk, tiles - first)
            self._parallel(k.winograd_input, x, ph, pw, tile_rows, tile_columns, first, count, chunks, inputs)
            V = inputs[:, :count * C].reshape(entries, count, C)  # 16 products in one call
            M = products[:, :count * K].reshape(entries, count, K)
            self._blas(self._products.matmul_batched, V, U, M)
            self._parallel(k.winograd_output, products, b, relu, tile_rows, tile_columns, first, count, y)

    def _column_chunks(self, x, kernel, stride, padding, *, skip=False):
        """``(start, stop, columns)`` for chunks of the images ``x``: the column matrix of
        ``x[start:stop]`` (``None`` with ``skip``), in one buffer of about ``COLUMN_BYTES``."""
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        n, H, Wd, C = x.shape
        per_image = math.prod(window_output(H, Wd, kernel, stride, padding))
        chunk = max(1, COLUMN_BYTES // (per_image * kh * kw * C * x.itemsize))
        buffer = None if skip else numpy.empty((min(chunk, n) * per_image, kh * kw * C), x.dtype)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            columns = None
            if not skip:
                columns = buffer[:(stop - start) * per_image]
                self._parallel(self._k.im2col, x[start:stop], kh, kw, sh, sw, ph, pw, columns)
            yield start, stop, columns

    def maxpool2d_forward(self, x, size, stride):
        if not (x.ndim == 4 and x.shape[0] and kernel_ready(x)):
            return super().maxpool2d_forward(x, size, stride)
        (kh, kw), (sh, sw), (n, H, Wd, C) = size, stride, x.shape
        shape = (n, *window_output(H, Wd, size, stride), C)
        y, argmax = numpy.empty(shape, x.dtype), numpy.empty(shape, numpy.int32)
        chunks = 4 * self._numba.get_num_threads()
        self._parallel(self._k.maxpool_forward, x, kh, kw, sh, sw, chunks, y, argmax)
        return y, argmax

    def maxpool2d_backward(self, argmax, dy, size, stride, input_shape):
        if not (dy.ndim == 4 and dy.shape[0] and kernel_ready(dy) and argmax.dtype == numpy.int32
                and argmax.flags.c_contiguous and argmax.shape == dy.shape):
            return super().maxpool2d_backward(argmax, dy, size, stride, input_shape)
        dx = numpy.empty(tuple(input_shape), dy.dtype)
        self._parallel(self._k.maxpool_backward, argmax, dy, size[0], size[1], stride[0], stride[1], dx)
        return dx
