"""The Numba backend: JIT-compiled CPU kernels (:mod:`.kernels`) for the hot paths.

Kernels run for C-contiguous float32/float64 arrays; anything else goes to the NumPy reference.
Layers with more than ``SMALL_LAYER`` outputs are BLAS products: with oneMKL, split between Numba's
threads with the passes around them fused (:mod:`.kernels.products`), else NumPy's BLAS and parallel
kernels around it. Convolutions and max pooling are in :mod:`.convolution`.

Dense ReLU stacks on the summed softmax cross-entropy with plain SGD (W2) train through
``compile_epoch`` as one compiled program per epoch when oneMKL is in use (:mod:`.kernels.dense_epoch`:
two parallel regions per step, no Python between steps). The notebook's network (Linear+Sigmoid,
summed MeanSquareError, plain SGD) trains through ``compile_epoch`` too: one kernel call per epoch,
each row read straight from the training set. W1 is
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
import threading
import time

import numpy

from .. import blas, blas_spin
from . import target, threads
from .convolution import ConvolutionMethods
from ..arrays import kernel_ready, norm_ready
from ..base import Backend
from ..plan import Activation, Loss
from ..registry import BackendUnavailableError

#: Parameters with at least this many elements are updated in parallel.
PARALLEL_UPDATE = 2**16
#: Layers with at most this many outputs use the fused Numba kernels instead of BLAS.
SMALL_LAYER = 32
#: How long after a BLAS product kernels stay on one thread (OpenBLAS spins ~0.1 s; with margin).
BLAS_SPIN_SECONDS = 0.2
#: Training images that are all exactly ``k / PIXEL_LEVELS`` (k = 0..255) are kept as uint8 codes.
PIXEL_LEVELS = 255
#: Buffers each Python thread keeps between calls (:meth:`NumbaBackend._kept`): a few per layer of a
#: network.
WORK_ARRAYS = 24


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


class NumbaBackend(ConvolutionMethods, Backend):
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
        calls = self._products.kernel_calls(dtype)
        if calls is not None:  # the dense program for two hidden layers (mlp_network's default)
            layers = tuple(numpy.ones((4, 4), dtype) for _ in range(3))
            biases = tuple(numpy.ones((1, 4), dtype) for _ in layers)
            self._k.dense_epoch.dense_softmax_epoch(
                calls, x, codes[:0], numpy.empty(0, dtype), x, numpy.arange(3), 3, 0.5, self._parts(), layers,
                biases, tuple(a.copy() for a in layers), tuple(a.copy() for a in biases),
                numpy.array([True, True, False]), self._k.dense_epoch.workspace(layers, 3))
        return time.perf_counter() - started

    def compile_epoch(self, plan, images, targets, batch_size):
        """The notebook's network (one dense layer with a sigmoid, summed squared error) as one kernel
        per epoch; dense stacks with ReLUs on the summed softmax cross-entropy as one compiled epoch
        of two parallel regions per step (:mod:`.kernels.dense_epoch`) when oneMKL is in use."""
        if plan is not None and plan.loss is Loss.SOFTMAX_CROSS_ENTROPY:
            return self._dense_softmax_epoch(plan, images, targets, batch_size)
        if plan is None or len(plan.layers) != 1 or plan.loss is not Loss.SQUARED_ERROR:
            return None
        step = plan.layers[0]
        weight, bias = step.weight, step.bias
        if step.activation is not Activation.SIGMOID or not (
                _small(images, weight.value, bias.value, targets, dW=weight.gradient)
                and kernel_ready(images, bias.gradient)):
            return None

        # the 1/255 of pixel codes is folded into the sums (_sigmoid_mse_chunk)
        codes, dtype = self._pixel_codes(images), images.dtype.type
        inputs, scale = (images, dtype(1)) if codes is None else (codes, dtype(1) / dtype(PIXEL_LEVELS))
        workspace = self._k.epoch_workspace(weight.value, min(batch_size, images.shape[0]))

        def run(order, learning_rate):
            return self._parallel(
                self._k.sigmoid_mse_epoch, inputs, scale, targets, order, batch_size,
                weight.value, bias.value, weight.gradient, bias.gradient,
                dtype(learning_rate), workspace,
            )

        return run

    def _pixel_codes(self, images):
        """``images`` as uint8 codes when every value is exactly ``k / PIXEL_LEVELS`` (8-bit pixels
        scaled to [0, 1], what the loaders give: a quarter of the bytes for the epoch programs to
        read), else None."""
        codes = numpy.empty(images.shape, numpy.uint8)
        return codes if self._parallel(self._k.encode_pixels, images, PIXEL_LEVELS, codes) else None

    def _dense_softmax_epoch(self, plan, images, targets, batch_size):
        layers = plan.layers
        calls = self._products.kernel_calls(images.dtype)
        if (calls is None or layers[-1].activation is not Activation.NONE
                or any(layer.activation not in (Activation.NONE, Activation.RELU) for layer in layers)
                or images.ndim != 2 or targets.shape != (images.shape[0], layers[-1].n_out)
                or images.shape[1] != layers[0].n_in
                or any(a.n_out != b.n_in for a, b in zip(layers, layers[1:]))
                or not kernel_ready(images, targets, *(array for p in plan.parameters()
                                                        for array in (p.value, p.gradient)))):
            return None
        codes = self._pixel_codes(images)
        if codes is None:
            codes, table = numpy.empty((0, images.shape[1]), numpy.uint8), numpy.empty(0, images.dtype)
        else:  # gathered through a table of the exact values (what encode_pixels checked)
            table = numpy.arange(256).astype(images.dtype) / images.dtype.type(PIXEL_LEVELS)
            images = images[:0]
        relus = numpy.array([layer.activation is Activation.RELU for layer in layers])
        workspace = self._k.dense_epoch.workspace([layer.weight.value for layer in layers],
                                                  min(batch_size, images.shape[0] or codes.shape[0]))

        def run(order, learning_rate):
            weights, gradients, biases, bias_gradients = (
                tuple(getattr(getattr(layer, kind), name) for layer in layers)
                for kind in ("weight", "bias") for name in ("value", "gradient"))
            return self._parallel(self._k.dense_epoch.dense_softmax_epoch, calls, images, codes, table,
                                  targets, order, batch_size, learning_rate, self._parts(), weights, biases,
                                  gradients, bias_gradients, relus, workspace)

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

    def _dense_backward(self, x, W, p, g, dW, db, activation, accumulate, need_dx):
        (n, k_in), m = x.shape, W.shape[0]
        dx = numpy.empty((n if need_dx else 0, k_in), x.dtype)
        key = ("dense", m, k_in, x.dtype)
        workspace = self._scratch(key, n, self._k.backward_workspace, m, k_in, x.dtype)
        self._parallel(self._k.dense_backward, x, W, p, g, dW, db, activation, accumulate, dx, workspace)
        return dx if need_dx else None

    def _kept(self, key, make, fits=lambda value: True):
        """What ``make()`` returns, kept for the calling Python thread under ``key`` and given again while
        ``fits(value)``: buffers that steps of the same shapes reuse instead of faulting in fresh memory
        each time (the C library gives freed memory back to the system and takes it again, page by
        page). Each Python thread keeps its own last ``WORK_ARRAYS``, the least recently used let go."""
        kept = self._local.__dict__.setdefault("kept", {})
        value = kept.pop(key, None)
        if value is None or not fits(value):
            value = make()
            while len(kept) >= WORK_ARRAYS:
                kept.pop(next(iter(kept)))
        kept[key] = value
        return value

    def _scratch(self, key, rows, make, *shape):
        """Arrays from ``make(rows, *shape)`` that kernels write before they read, kept per ``key`` (made
        again only for a larger batch, :meth:`_kept`), sliced to the chunks ``rows`` need."""
        _, arrays = self._kept(key, lambda: (rows, make(rows, *shape)), lambda value: value[0] >= rows)
        chunks = (rows + self._k.CHUNK - 1) // self._k.CHUNK
        return tuple(array[:chunks] for array in arrays)

    def _work_array(self, name, shape, dtype):
        """An array of ``shape`` and ``dtype`` that the kernels of one method call write before they read
        and nobody keeps (:meth:`_kept`), one per ``name``: the buffers of one call never share memory,
        whatever their shapes."""
        shape, dtype = tuple(shape), numpy.dtype(dtype)
        return self._kept(("work", name, shape, dtype), lambda: numpy.empty(shape, dtype))

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
