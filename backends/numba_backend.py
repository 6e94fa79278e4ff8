"""The Numba backend: JIT-compiled CPU kernels for the hot paths, NumPy for the rest.

Kernels live in :mod:`.numba_kernels`. They run for C-contiguous float32/float64 arrays; anything
else goes to the NumPy reference. Layers with more than ``SMALL_LAYER`` outputs keep their matrix
products in BLAS, which beats a hand-written loop there; only the elementwise parts are Numba's.

Compilation is cached (``cache=True``): on first use Numba writes machine code to ``__pycache__``
next to the kernels, or, when that folder is read-only, to its user-wide cache
(``~/.cache/numba`` on Linux); ``NUMBA_CACHE_DIR`` overrides both. ``warmup(dtype)`` loads or
compiles every kernel up front. Kernels use Numba's thread pool: ``NUMBA_NUM_THREADS`` sets its
size at start-up and ``numba.set_num_threads(n)`` lowers it at run time; results are bit-identical
for every thread count.
"""

from __future__ import annotations

import os
import time

import numpy

from .base import Backend
from .registry import BackendUnavailableError

#: Layers with at most this many outputs use the fused Numba dot-product kernels.
SMALL_LAYER = 32
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def _fits(dtype, *arrays):
    """True when every array has ``dtype`` (float32 or float64) and is C-contiguous."""
    return dtype in _FLOATS and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays)


class NumbaBackend(Backend):
    """NumPy arrays, computed by JIT-compiled parallel kernels on the CPU."""

    xp = numpy

    def __init__(self, numba, kernels):
        self._numba, self._k = numba, kernels

    def info(self):
        try:
            layer = self._numba.threading_layer()
        except ValueError:  # known only once a parallel kernel has run
            layer = self._numba.config.THREADING_LAYER
        return {
            "version": f"numba {self._numba.__version__}", "device": "cpu",
            "threads": self._numba.get_num_threads(), "threading_layer": layer,
        }

    def warmup(self, dtype):
        started = time.perf_counter()
        x = numpy.ones((3, 4), dtype)
        for n_out in (2, SMALL_LAYER + 1):
            W, b = numpy.ones((n_out, 4), dtype), numpy.ones((1, n_out), dtype)
            p = self.linear_sigmoid_forward(x, W, b)
            self.linear_sigmoid_backward(x, W, p, p, W.copy(), b.copy(), need_dx=True)
            self.linear_backward(x, W, self.linear_forward(x, W, b), W.copy(), b.copy())
        z = self.relu(x)
        self.relu_backward(z, x)
        self.sigmoid_mse_gradient(x, z)
        self.softmax_cross_entropy_gradient(x, self.softmax_cross_entropy(x, z))
        self.sgd_update(z, x, 0.5)
        self.take_rows(x, numpy.arange(2), out=numpy.empty((2, 4), dtype))
        return time.perf_counter() - started

    def take_rows(self, array, indices, out=None):
        ok = (
            array.ndim == 2 and indices.ndim == 1 and indices.dtype.kind == "i"
            and _fits(array.dtype, array) and (out is None or _fits(array.dtype, out))
        )
        if ok:
            result = numpy.empty((indices.shape[0], array.shape[1]), array.dtype) if out is None else out
            if result.shape == (indices.shape[0], array.shape[1]) and self._k.take_rows(array, indices, result):
                return result
        return super().take_rows(array, indices, out=out)

    def linear_forward(self, x, W, b):
        if W.shape[0] > SMALL_LAYER or not x.shape[0] or not _fits(x.dtype, x, W, b):
            return super().linear_forward(x, W, b)
        out = numpy.empty((x.shape[0], W.shape[0]), x.dtype)
        self._k.dense_forward(x, W, b, out, False)
        return out

    def linear_sigmoid_forward(self, x, W, b):
        if not x.shape[0] or not _fits(x.dtype, x, W, b):
            return super().linear_sigmoid_forward(x, W, b)
        if W.shape[0] > SMALL_LAYER:
            z = x @ W.T
            self._k.bias_sigmoid(z, b)
            return z
        out = numpy.empty((x.shape[0], W.shape[0]), x.dtype)
        self._k.dense_forward(x, W, b, out, True)
        return out

    def linear_backward(self, x, W, dz, dW, db, *, accumulate=True, need_dx=True):
        if W.shape[0] > SMALL_LAYER or not x.shape[0] or not _fits(x.dtype, x, W, dz, dW, db):
            return super().linear_backward(x, W, dz, dW, db, accumulate=accumulate, need_dx=need_dx)
        return self._dense_backward(x, W, dz, dz, dW, db, False, accumulate, need_dx)

    def linear_sigmoid_backward(self, x, W, p, dp, dW, db, *, accumulate=True, need_dx=True):
        if not x.shape[0] or not _fits(x.dtype, x, W, p, dp, dW, db):
            return super().linear_sigmoid_backward(
                x, W, p, dp, dW, db, accumulate=accumulate, need_dx=need_dx
            )
        if W.shape[0] > SMALL_LAYER:
            dz = numpy.empty_like(p)
            self._k.sigmoid_delta(p, dp, dz)
            return super().linear_backward(x, W, dz, dW, db, accumulate=accumulate, need_dx=need_dx)
        return self._dense_backward(x, W, p, dp, dW, db, True, accumulate, need_dx)

    def _dense_backward(self, x, W, p, g, dW, db, sigmoid, accumulate, need_dx):
        dx = numpy.empty(x.shape if need_dx else (0, 0), x.dtype)
        self._k.dense_backward(x, W, p, g, dW, db, dx, sigmoid, accumulate, need_dx)
        return dx if need_dx else None

    def _elementwise(self, kernel, fallback, a, *others):
        if a.ndim != 2 or not a.size or not _fits(a.dtype, a, *others):
            return fallback(a, *others)
        out = numpy.empty_like(a)
        kernel(a, *others, out)
        return out

    def relu(self, z):
        return self._elementwise(self._k.relu, super().relu, z)

    def relu_backward(self, y, dy):
        return self._elementwise(self._k.relu_backward, super().relu_backward, y, dy)

    def sigmoid_mse_gradient(self, p, t):
        return self._elementwise(self._k.sigmoid_mse_gradient, super().sigmoid_mse_gradient, p, t)

    def softmax_cross_entropy(self, z, t):
        kernel = lambda z, t, out: self._k.softmax_cross_entropy(z, t, out, False)  # noqa: E731
        return self._elementwise(kernel, super().softmax_cross_entropy, z, t)

    def softmax_cross_entropy_gradient(self, z, t):
        kernel = lambda z, t, out: self._k.softmax_cross_entropy(z, t, out, True)  # noqa: E731
        return self._elementwise(kernel, super().softmax_cross_entropy_gradient, z, t)

    def sgd_update(self, param, grad, learning_rate):
        if not _fits(param.dtype, param, grad) or param.shape != grad.shape:
            return super().sgd_update(param, grad, learning_rate)
        self._k.sgd_update(param, grad, learning_rate)


def create() -> NumbaBackend:
    # GNU OpenMP threads spin ~8 ms after each parallel kernel by default, stealing a core from
    # OpenBLAS in networks that mix both (3x slower measured); ~0.3 ms covers the gaps of a step.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    try:
        import numba
    except ImportError:
        raise BackendUnavailableError(
            "numba is not installed; install it with pip install 'fastprop[numba]'"
        ) from None
    from . import numba_kernels

    return NumbaBackend(numba, numba_kernels)
