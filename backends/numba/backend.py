"""The Numba backend: JIT-compiled CPU kernels (:mod:`.kernels`) for the hot paths.

Kernels run for C-contiguous float32/float64 arrays; anything else goes to the NumPy reference.
Layers with more than ``SMALL_LAYER`` outputs go to the reference too: BLAS beats a hand-written
loop there (the ReLUs and costs around them are still Numba's).

The notebook's network (Linear+Sigmoid, summed MeanSquareError, plain SGD) trains through
``compile_epoch``: one kernel call per epoch, each row read straight from the training set. W1 is
bound by memory (a 50,000 x 784 float32 set is 157 MB, read in random row order every epoch), so
when every image value is exactly ``k / 255`` for an integer ``k`` (8-bit pixels scaled to [0, 1],
as fastprop's loaders give them) the kernel reads a uint8 copy of the codes instead, a quarter of
the bytes, and folds the ``1 / 255`` into its sums: the same model up to float rounding
(tested against the step loop in float32 and float64). Any other data takes the float path.

Compilation is cached (``cache=True``): Numba writes machine code to ``__pycache__`` beside the
kernels or, when that folder is read-only, to its user-wide cache (``~/.cache/numba`` on Linux);
``NUMBA_CACHE_DIR`` overrides both. ``warmup(dtype)`` loads or compiles every kernel up front.
Parallel kernels use Numba's thread pool: ``NUMBA_NUM_THREADS`` sets its size at start-up and
``numba.set_num_threads(n)`` lowers it at run time; results are the same bits for every count.
OpenBLAS's idle threads keep spinning for a while after a product, and parallel kernels fighting
them for the cores made networks with wide layers several times slower than plain NumPy: unless
that spin is known to be short (:mod:`.blas_spin`, the case under ``fastprop train`` and ``fastprop
bench``), kernels run on one thread for ``BLAS_SPIN_SECONDS`` after this backend hands a product
to BLAS.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time

import numpy

from .. import blas, blas_spin
from . import target, threads
from ..arrays import kernel_ready, norm_ready
from ..base import Backend, window_output
from ..plan import Activation, Loss
from ..registry import BackendUnavailableError

#: Parameters with at least this many elements are updated in parallel.
PARALLEL_UPDATE = 2**16
#: Layers with at most this many outputs use the fused Numba kernels instead of BLAS.
SMALL_LAYER = 32
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
#: 0.25 to 4 MB trained the CNN at the same speed within the noise (medians 549-580 ms per epoch of
#: 2,560 rows, Emerald Rapids Xeon, 2 cores, the sizes taking turns in one process).
CHUNK_BYTES = 2**20
#: 3x3 stride-1 convolutions with at least this many input and output channels run as Winograd
#: F(2x2, 3x3) (:mod:`.kernels.winograd`); ``None``: none do. Off because it measured no faster than
#: im2col + oneMKL on the 2-core machine it was written on (the numbers are in that module).
WINOGRAD_CHANNELS = None
#: Bytes of transformed tiles (inputs and products) made at a time, for the same reason as ``COLUMN_BYTES``.
WINOGRAD_BYTES = 2 * 2**20
#: How long after a BLAS product kernels stay on one thread (OpenBLAS spins ~0.1 s; with margin).
BLAS_SPIN_SECONDS = 0.2
#: Training images that are all exactly ``k / PIXEL_LEVELS`` (k = 0..255) are kept as uint8 codes.
PIXEL_LEVELS = 255


def _elementwise(kernel, reference, *arrays):
    """``kernel(*arrays)`` on same-shaped, non-empty 2-D arrays it takes; ``reference(*arrays)`` otherwise."""
    first = arrays[0]
    same_shape = all(a.shape == first.shape for a in arrays)
    if first.ndim == 2 and first.size and same_shape and kernel_ready(*arrays):
        return kernel(*arrays)
    return reference(*arrays)


def _wide(x, W, b):
    """True for a dense layer's forward that BLAS and the epilogue kernel take: matching 2-D shapes."""
    return (x.ndim == W.ndim == 2 and x.shape[0] > 0 and x.shape[1] == W.shape[1]
            and b.shape == (1, W.shape[0]) and kernel_ready(x, W, b))


def _wide_backward_ready(x, W, y, dy, dW, db):
    """True for a dense layer's backward that BLAS and the mask kernel take."""
    return (x.ndim == W.ndim == 2 and x.shape[0] > 0 and x.shape[1] == W.shape[1]
            and y.shape == dy.shape == (x.shape[0], W.shape[0]) and dW.shape == W.shape
            and db.shape == (1, W.shape[0]) and kernel_ready(x, W, y, dy, dW, db))


def _small(x, W, b, *batch, dW=None):
    """True for layers the fused kernels take: few outputs, matching 2-D shapes, contiguous floats."""
    n, m = x.shape[0], W.shape[0]
    gradient = () if dW is None else (dW,)
    return (
        m <= SMALL_LAYER and n > 0 and x.ndim == W.ndim == 2 and x.shape[1] == W.shape[1]
        and b.shape == (1, m) and all(a.shape == (n, m) for a in batch)
        and all(a.shape == W.shape for a in gradient) and kernel_ready(x, W, b, *batch, *gradient)
    )


def _winograd(W, stride, padding):
    """True for the convolutions that run as Winograd F(2x2, 3x3): 3x3 filters at stride 1 with
    padding 0 to 2 (the input gradient's convolution is padded by ``2 - padding``), between at least
    ``WINOGRAD_CHANNELS`` input and output channels."""
    K, C, kh, kw = W.shape
    return (WINOGRAD_CHANNELS is not None and (kh, kw) == (3, 3) and tuple(stride) == (1, 1)
            and all(0 <= p <= 2 for p in padding)
            and min(C, K) >= WINOGRAD_CHANNELS and C * kh * kw > DIRECT_CONVOLUTION)


def _staggered(length, itemsize):
    """A row length of at least ``length`` items that is an odd number of 64-byte cache lines, so that
    rows of an array are spread over the cache sets (see :mod:`.kernels.winograd`)."""
    per_line = 64 // itemsize
    lines = -(-length // per_line)
    return (lines + 1 - lines % 2) * per_line


class NumbaBackend(Backend):
    """NumPy arrays on the CPU, computed by JIT-compiled kernels where it pays."""

    xp = numpy
    fast_checksum = True

    def relu(self, z):
        return _elementwise(self._k.relu, super().relu, z)

    def relu_backward(self, y, dy):
        return _elementwise(self._k.relu_backward, super().relu_backward, y, dy)

    def softmax_cross_entropy(self, z, t):
        return _elementwise(self._k.softmax_cross_entropy, super().softmax_cross_entropy, z, t)

    def softmax_cross_entropy_gradient(self, z, t):
        kernel = self._k.softmax_cross_entropy_gradient
        return _elementwise(kernel, super().softmax_cross_entropy_gradient, z, t)

    def __init__(self, numba, kernels):
        self._numba, self._k = numba, kernels
        try:
            self._products = blas.products()
        except blas.BlasUnavailableError as error:
            raise BackendUnavailableError(str(error)) from error
        self._blas_until = 0.0
        self._local = threading.local()  # scratch arrays, one set per Python thread
        tiny = numpy.zeros((1, 1))
        #: The layer parallel kernels run on (see :mod:`.threads`), known from the start.
        self.threading_layer = threads.layer_in_use(
            numba, lambda: kernels.take_rows(tiny, numpy.zeros(1, numpy.intp), tiny.copy()))
        # workqueue aborts the process when two Python threads launch kernels at once: take turns.
        thread_safe = self.threading_layer in threads.THREAD_SAFE
        self._one_at_a_time = contextlib.nullcontext() if thread_safe else threading.Lock()

    @property
    def kernels(self):
        """The package of Numba kernels this backend calls (:mod:`.kernels`)."""
        return self._k

    def _parallel(self, kernel, *arguments):
        """Run a parallel kernel, on one thread while BLAS threads may still be spinning."""
        with self._one_at_a_time:
            if time.perf_counter() >= self._blas_until:
                return kernel(*arguments)
            count = self._numba.get_num_threads()
            self._numba.set_num_threads(1)
            try:
                return kernel(*arguments)
            finally:
                self._numba.set_num_threads(count)

    def _blas(self, reference, *arguments, **options):
        """Run a reference method, whose matrix products may leave BLAS threads spinning."""
        try:
            return reference(*arguments, **options)
        finally:
            if not (blas_spin.SHORT or self._products.short_spin):
                self._blas_until = time.perf_counter() + BLAS_SPIN_SECONDS

    def info(self):
        return {"version": f"numba {self._numba.__version__}", "device": "cpu",
                "threads": self._numba.get_num_threads(), "threading_layer": self.threading_layer,
                "instruction_set": target.choice, "blas": self._products.info()}

    def warmup(self, dtype):
        started, x = time.perf_counter(), numpy.ones((3, 4), dtype)
        W, b = numpy.ones((2, 4), dtype), numpy.ones((1, 2), dtype)
        _, p = self.linear_sigmoid_forward(x, W, b)
        self.linear_sigmoid_backward(x, W, p, p, W.copy(), b.copy())
        self.linear_backward(x, W, self.linear_forward(x, W, b), W.copy(), b.copy())
        self.relu_backward(x, self.relu(x))
        for w in (W, numpy.ones((SMALL_LAYER + 1, 4), dtype)):  # the fused kernel and BLAS + epilogue
            y = self.linear_relu_forward(x, w, numpy.ones((1, w.shape[0]), dtype))
            self.linear_relu_backward(x, w, y, y, w.copy(), numpy.ones((1, w.shape[0]), dtype))
        self.softmax_cross_entropy_gradient(x, self.softmax_cross_entropy(x, x))
        self.sgd_update(x, x.copy(), 0.5)
        self._k.sgd_update_parallel(x, x.copy(), 0.5)
        self.take_rows(x, numpy.arange(2), out=numpy.empty((2, 4), dtype))
        codes, workspace = numpy.empty((3, 4), numpy.uint8), self._k.epoch_workspace(W, 3)
        self._k.encode_pixels(x, PIXEL_LEVELS, codes)
        for inputs in (x, codes):  # the whole-epoch kernel, for float images and for pixel codes
            self._k.sigmoid_mse_epoch(inputs, dtype(1), x[:, :2].copy(), numpy.arange(3), 3, W, b,
                                      W.copy(), b.copy(), dtype(0.5), workspace)
        return time.perf_counter() - started

    def compile_epoch(self, plan, images, targets, batch_size):
        """The notebook's network (one dense layer with a sigmoid, summed squared error) as one kernel
        per epoch."""
        if plan is None or len(plan.layers) != 1 or plan.loss is not Loss.SQUARED_ERROR:
            return None
        step = plan.layers[0]
        weight, bias = step.weight, step.bias
        if step.activation is not Activation.SIGMOID or not (
                _small(images, weight.value, bias.value, targets, dW=weight.gradient)
                and kernel_ready(images, bias.gradient)):
            return None

        # 8-bit pixels scaled to [0, 1] (what the loaders give) are kept as exact uint8 codes: a
        # quarter of the memory traffic, and the 1/255 is folded into the sums (_sigmoid_mse_chunk).
        codes = numpy.empty(images.shape, numpy.uint8)
        dtype = images.dtype.type
        if self._parallel(self._k.encode_pixels, images, PIXEL_LEVELS, codes):
            inputs, scale = codes, dtype(1) / dtype(PIXEL_LEVELS)
        else:
            inputs, scale = images, dtype(1)
        del codes
        workspace = self._k.epoch_workspace(weight.value, min(batch_size, images.shape[0]))

        def run(order, learning_rate):
            return self._parallel(
                self._k.sigmoid_mse_epoch, inputs, scale, targets, order, batch_size,
                weight.value, bias.value, weight.gradient, bias.gradient,
                dtype(learning_rate), workspace,
            )

        return run

    def checksum(self, array):
        return int(self._parallel(self._k.checksum, self._checksum_words(array), self.CHECKSUM_BLOCK))

    def take_rows(self, array, indices, out=None):
        if array.ndim == 2 and indices.ndim == 1 and indices.dtype.kind == "i" and kernel_ready(array):
            shape = (indices.shape[0], array.shape[1])
            if out is None or (out.shape == shape and kernel_ready(array, out)):
                result = numpy.empty(shape, array.dtype) if out is None else out
                if self._parallel(self._k.take_rows, array, indices, result):  # False: index out of range
                    return result
        return super().take_rows(array, indices, out=out)

    def linear_forward(self, x, W, b):
        if _small(x, W, b):
            z = numpy.empty((x.shape[0], W.shape[0]), x.dtype)
            self._parallel(self._k.dense_forward, x, W, b, z, z, self._k.IDENTITY)
            return z
        if _wide(x, W, b):
            return self._wide_forward(x, W, b, relu=False)
        return self._blas(super().linear_forward, x, W, b)

    def linear_sigmoid_forward(self, x, W, b):
        if _small(x, W, b):
            z, p = numpy.empty((2, x.shape[0], W.shape[0]), x.dtype)
            self._parallel(self._k.dense_forward, x, W, b, z, p, self._k.SIGMOID)
            return z, p
        return super().linear_sigmoid_forward(x, W, b)  # self.linear_forward picks BLAS or the kernel

    def linear_relu_forward(self, x, W, b):
        if _small(x, W, b):
            y = numpy.empty((x.shape[0], W.shape[0]), x.dtype)
            self._parallel(self._k.dense_forward, x, W, b, y, y, self._k.RELU)
            return y
        if _wide(x, W, b):
            return self._wide_forward(x, W, b, relu=True)
        return super().linear_relu_forward(x, W, b)

    def _wide_forward(self, x, W, b, relu):
        y = numpy.empty((x.shape[0], W.shape[0]), x.dtype)
        calls = self._products.kernel_calls(x.dtype)
        if calls is not None:  # oneMKL on Numba's threads, bias and ReLU per block
            self._parallel(self._k.products.linear_forward, calls, x, W, b, relu, self._parts(), y)
            return y
        self._blas(self._products.matmul, x, W.T, out=y)  # then the bias (and ReLU) in one pass over y
        self._parallel(self._k.bias_epilogue, y, b, relu)
        return y

    def linear_backward(self, x, W, dz, dW, db, *, accumulate=True, need_dx=True):
        if _small(x, W, db, dz, dW=dW):
            return self._dense_backward(x, W, dz, dz, dW, db, self._k.IDENTITY, accumulate, need_dx)
        if _wide_backward_ready(x, W, dz, dz, dW, db):
            return self._wide_backward(x, W, None, dz, dW, db, accumulate, need_dx)
        return self._blas(super().linear_backward, x, W, dz, dW, db, accumulate=accumulate, need_dx=need_dx)

    def linear_sigmoid_backward(self, x, W, p, dp, dW, db, *, accumulate=True, need_dx=True):
        if _small(x, W, db, p, dp, dW=dW):
            return self._dense_backward(x, W, p, dp, dW, db, self._k.SIGMOID, accumulate, need_dx)
        return super().linear_sigmoid_backward(x, W, p, dp, dW, db, accumulate=accumulate, need_dx=need_dx)

    def linear_relu_backward(self, x, W, y, dy, dW, db, *, accumulate=True, need_dx=True):
        if _small(x, W, db, y, dy, dW=dW):
            return self._dense_backward(x, W, y, dy, dW, db, self._k.RELU, accumulate, need_dx)
        if not _wide_backward_ready(x, W, y, dy, dW, db):
            return super().linear_relu_backward(x, W, y, dy, dW, db, accumulate=accumulate, need_dx=need_dx)
        return self._wide_backward(x, W, y, dy, dW, db, accumulate, need_dx)

    def _wide_backward(self, x, W, y, dy, dW, db, accumulate, need_dx):
        """A dense layer's gradients by BLAS; ``dy`` masked where ``y <= 0`` unless ``y`` is None."""
        calls = self._products.kernel_calls(x.dtype)
        if calls is not None:  # oneMKL on Numba's threads; mask, bias gradient and dx per block of rows
            relu, (n, k_in), m = y is not None, x.shape, W.shape[0]
            dz = numpy.empty_like(dy) if relu else dy
            chunks = (n + self._k.ROWS_PER_CHUNK - 1) // self._k.ROWS_PER_CHUNK
            partial = numpy.empty((chunks, 1, m), dy.dtype)
            dx = numpy.empty((n if need_dx else 0, k_in), x.dtype)
            self._parallel(self._k.products.linear_backward, calls, x, W, dy if y is None else y, dy, relu,
                           dz, partial, dW, db, 1.0 if accumulate else 0.0, need_dx, self._parts(), dx)
            return dx if need_dx else None
        dz, bias_gradient = self._masked(dy, y, y is not None)  # the mask and the bias gradient in one pass
        if accumulate:
            db += bias_gradient
        else:
            db[...] = bias_gradient
        self._blas(self._products.matmul, dz.T, x, out=dW, accumulate=accumulate)
        return self._blas(self._products.matmul, dz, W) if need_dx else None

    def _parts(self):
        """Blocks a product is split into on Numba's threads: one per thread."""
        return self._numba.get_num_threads()

    def _dense_backward(self, x, W, p, g, dW, db, activation, accumulate, need_dx):
        (n, k_in), m = x.shape, W.shape[0]
        dx = numpy.empty((n if need_dx else 0, k_in), x.dtype)
        key = ("dense", m, k_in, x.dtype)
        workspace = self._scratch(key, n, self._k.backward_workspace, m, k_in, x.dtype)
        self._parallel(self._k.dense_backward, x, W, p, g, dW, db, activation, accumulate, dx, workspace)
        return dx if need_dx else None

    def _scratch(self, key, rows, make, *shape):
        """Arrays from ``make(rows, *shape)`` that kernels write before they read, kept per Python thread
        and per ``key`` (made again only for a larger batch), sliced to the chunks ``rows`` need."""
        kept = self._local.__dict__.setdefault("scratch", {})
        rows_made, arrays = kept.get(key, (-1, None))
        if rows > rows_made:
            arrays = make(rows, *shape)
            kept[key] = rows, arrays
        chunks = (rows + self._k.CHUNK - 1) // self._k.CHUNK
        return tuple(array[:chunks] for array in arrays)

    def adam_update(self, param, grad, first_moment, second_moment, scratch, learning_rate,
                    beta1, beta2, eps, step, *, weight_decay=0.0, decoupled=False):
        arrays = (param, grad, first_moment, second_moment)
        if all(a.shape == param.shape for a in arrays) and kernel_ready(*arrays):
            self._parallel(self._k.adam_update, param, grad, first_moment, second_moment,
                           float(learning_rate), float(beta1), float(beta2), float(eps), int(step),
                           float(weight_decay), bool(decoupled))
        else:
            super().adam_update(param, grad, first_moment, second_moment, scratch, learning_rate, beta1,
                                beta2, eps, step, weight_decay=weight_decay, decoupled=decoupled)

    def sgd_update(self, param, grad, learning_rate):
        if param.shape == grad.shape and kernel_ready(param, grad):
            if param.size < PARALLEL_UPDATE:  # a launch costs more than the loop
                self._k.sgd_update(param, grad, learning_rate)
            else:
                self._parallel(self._k.sgd_update_parallel, param, grad, learning_rate)
        else:
            super().sgd_update(param, grad, learning_rate)

    # -- batch normalisation ((rows, C) matrices; see backends/base.py) -------------------------

    def batch_norm_forward(self, x, gamma, beta, mean, var, *, training, momentum, eps, relu=False):
        if norm_ready(x, gamma, beta, mean, var) and (x.shape[0] >= 2 or not training):
            return self._parallel(self._k.batch_norm_forward, x, gamma, beta, mean, var, bool(training),
                                  float(momentum), float(eps), bool(relu))
        return super().batch_norm_forward(x, gamma, beta, mean, var, training=training, momentum=momentum,
                                          eps=eps, relu=relu)

    def batch_norm_backward(self, x, mu, inverse_std, gamma, dy, dgamma, dbeta, relu_output=None, *, training,
                            accumulate=True, need_dx=True):
        arrays = (x, dy) if relu_output is None else (x, dy, relu_output)
        same = all(a.shape == x.shape for a in arrays)
        ready = same and norm_ready(x, mu, inverse_std, gamma, dgamma, dbeta)
        if ready and kernel_ready(*arrays):
            return self._parallel(self._k.batch_norm_backward, x, mu, inverse_std, gamma, dy, dgamma, dbeta,
                                  bool(training), bool(accumulate), bool(need_dx), relu_output)
        return super().batch_norm_backward(x, mu, inverse_std, gamma, dy, dgamma, dbeta, relu_output,
                                           training=training, accumulate=accumulate, need_dx=need_dx)

    def shift_images(self, images, shifts, flips):
        if images.ndim == 4 and images.shape[0] == len(shifts) == len(flips) and kernel_ready(images):
            out = numpy.empty_like(images)
            self._parallel(self._k.shift_images, images, numpy.ascontiguousarray(shifts, numpy.int64),
                           numpy.ascontiguousarray(flips, numpy.bool_), out)
            return out
        return super().shift_images(images, shifts, flips)

    # -- convolution and pooling (channels-last images; see backends/base.py) -------------------

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
            self._winograd(x, U, b, padding, relu, y)
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
            partial = numpy.empty((-(-x.shape[0] // per_chunk), taps + 1, K), dy.dtype)
            dz = numpy.empty_like(rows) if relu else rows
            dx = numpy.empty(x.shape if need_dx else (0, *x.shape[1:]), dy.dtype)
            d_columns = numpy.empty_like(columns) if need_dx else columns[:, :0]
            weights = numpy.ascontiguousarray(self._weight_matrix(W))
            masks = y.reshape(-1, K) if relu else rows
            self._parallel(k.products.conv_backward, calls, x, weights, masks, rows, relu, kh, kw, sh, sw, ph,
                           pw, per_chunk, need_dx, dz, columns, d_columns, partial, dx)
            sums = numpy.empty((taps + 1, K), dy.dtype)
            self._parallel(k.sum_chunks, partial, sums)
            self._store_conv_gradients(dW, db, sums[:taps], sums[taps:], accumulate)
            return dx if need_dx else None
        if direct:  # mask, bias and weight gradients in one pass over the output gradient
            chunks = (x.shape[0] + k.IMAGES_PER_CHUNK - 1) // k.IMAGES_PER_CHUNK
            partial = numpy.empty((chunks, taps + 1, K), dy.dtype)
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
            self._winograd(dz.reshape(dy.shape), U, zero_bias, (2 - ph, 2 - pw), False, dx)
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
        return per_chunk, numpy.empty((self._parts(), per_chunk * per_image, kh * kw * C), x.dtype)

    def _winograd(self, x, U, b, padding, relu, y):
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

    def _masked(self, rows, y, relu):
        """``(dz, bias gradient)`` for output-gradient rows ``(m, K)``: ``dz`` is ``rows`` masked where
        ``y <= 0`` with ``relu`` (a new array), else ``rows`` itself."""
        k, K = self._k, rows.shape[1]
        dz = numpy.empty_like(rows) if relu else rows
        partial = numpy.empty(((rows.shape[0] + k.ROWS_PER_CHUNK - 1) // k.ROWS_PER_CHUNK, 1, K), rows.dtype)
        self._parallel(k.masked_gradient, y.reshape(-1, K) if relu else rows, rows, relu, dz, partial)
        bias_gradient = numpy.empty((1, K), rows.dtype)
        self._parallel(k.sum_chunks, partial, bias_gradient)
        return dz, bias_gradient

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


def create() -> NumbaBackend:
    try:
        import numba
    except ImportError:
        raise BackendUnavailableError(
            "numba is not installed; install it with pip install 'fastprop[numba]'"
        ) from None
    threads.configure(numba)  # TBB where pip put it, before a parallel kernel fixes the layer
    target.configure(numba)  # vector width, before the kernels are defined
    from . import kernels

    return NumbaBackend(numba, kernels)
