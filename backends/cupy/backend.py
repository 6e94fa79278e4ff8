"""The CuPy backend: fastprop's layers on an NVIDIA GPU.

Matrix products go to cuBLAS, convolutions as products of im2col column matrices; the elementwise,
row-wise, pooling and batch-normalisation parts run as fused kernels from :mod:`.kernels`, compiled on
first use and memoized per dtype. Training data stays on the device: each epoch is shuffled there and
batches are gathered there. For an epoch plan of dense layers (each with no activation, a sigmoid or a ReLU)
trained with plain SGD on the summed squared error or softmax cross-entropy,
:meth:`CupyBackend.compile_epoch` replays whole epochs from CUDA graphs of fastprop's own kernels,
with no Python per batch.
"""

from __future__ import annotations

import time
import warnings

import numpy

from ..arrays import KERNEL_FLOATS, kernel_ready, norm_ready
from ..base import Backend
from ..convolution import window_output
from ..registry import BackendUnavailableError

try:
    import cupy
except Exception as error:  # not installed, or its CUDA libraries fail to load
    cupy, _IMPORT_ERROR = None, error
else:
    _IMPORT_ERROR = None
    from . import epoch, kernels


#: The NumPy reference, for host arrays given to the methods that take them.
_HOST = Backend()


def _window_output(image_shape, kernel, stride, padding=(0, 0)):
    """``(Ho, Wo)`` of a window on images of ``image_shape`` ``(n, H, W, C)``, or ``None`` when the conv
    kernels do not take it: no output, or sizes beyond their int indices."""
    (n, H, W, C), (kh, kw), (sh, sw), (ph, pw) = image_shape, kernel, stride, padding
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        return None
    ho, wo = window_output(H, W, kernel, stride, padding)
    fits = max(n * H * W * C, H + 2 * ph, W + 2 * pw, kh * kw * C, sh, sw) < kernels.INT_LIMIT
    return (ho, wo) if fits and min(n, C, ho, wo) > 0 else None


class CupyBackend(Backend):
    """CuPy arrays on the current CUDA device."""

    xp = cupy
    fast_checksum = True

    def __init__(self):
        self._scratch = {}

    def info(self) -> dict:
        device = cupy.cuda.Device().id
        name = cupy.cuda.runtime.getDeviceProperties(device)["name"]
        pool = cupy.get_default_memory_pool()
        return {
            "version": f"cupy {cupy.__version__}",
            "device": f"{name.decode() if isinstance(name, bytes) else name} (CUDA device {device})",
            "memory_used_bytes": pool.used_bytes(), "memory_total_bytes": pool.total_bytes(),
        }

    def synchronize(self) -> None:
        cupy.cuda.Device().synchronize()

    def warmup(self, dtype) -> float:
        started = time.perf_counter()
        kernels.step_kernels(dtype)
        kernels.epoch_kernels(dtype)
        kernels.conv_kernels(dtype)
        kernels.norm_kernels(dtype)
        x = cupy.ones((3, 4), dtype)
        W, b = cupy.ones((2, 4), dtype), cupy.ones((1, 2), dtype)
        _, p = self.linear_sigmoid_forward(x, W, b)
        self.linear_sigmoid_backward(x, W, p, p, W.copy(), b.copy())
        self.sigmoid_backward(p, p)
        self.relu_backward(self.relu(x), x)
        self.softmax_cross_entropy_gradient(x, self.softmax_cross_entropy(x, x))
        self.sgd_update(x, x, 0.5)
        self.take_rows(x, self.permutation(numpy.random.default_rng(0), 3))
        images, kernel = cupy.ones((1, 3, 4, 2), dtype), cupy.ones((2, 2, 2, 2), dtype)
        y = self.conv2d_forward(images, kernel, b, (1, 1), (1, 1), relu=True)
        self.conv2d_backward(images, kernel, y, y, kernel.copy(), b.copy(), (1, 1), (1, 1), relu=True)
        ones = cupy.ones(4, dtype)
        y, mu, inverse_std = self.batch_norm_forward(x, ones, ones, ones.copy(), ones.copy(), training=True,
                                                     momentum=0.1, eps=1e-5, relu=True)
        self.batch_norm_backward(x, mu, inverse_std, ones, y, ones.copy(), ones.copy(), y, training=True)
        pooled, argmax = self.maxpool2d_forward(images, (2, 2), (1, 1))
        self.maxpool2d_backward(argmax, pooled, (2, 2), (1, 1), images.shape)
        self.synchronize()
        return time.perf_counter() - started

    def compile_epoch(self, plan, images, targets, batch_size):
        if plan is None or not self._epoch_fits(plan, images, targets, batch_size):
            return None
        try:
            return epoch.EpochProgram(plan, images, targets, batch_size)
        except Exception as error:  # e.g. a toolkit that cannot compile the kernels: keep the step loop
            warnings.warn(
                f"fastprop: the CuPy epoch kernels are unavailable ({error}); using the step loop",
                stacklevel=2,
            )
            return None

    def _epoch_fits(self, plan, images, targets, batch_size):
        dtype, n, layers = images.dtype, images.shape[0], plan.layers
        arrays = [images, targets] + [a for p in plan.parameters() for a in (p.value, p.gradient)]
        return (
            all(isinstance(a, cupy.ndarray) and a.dtype == dtype and a.flags.c_contiguous for a in arrays)
            and dtype in KERNEL_FLOATS
            and images.shape == (n, layers[0].n_in) and targets.shape == (n, layers[-1].n_out)
            and all(a.n_out == b.n_in for a, b in zip(layers, layers[1:]))
            and min(batch_size, n) <= 32 * 65535  # the dense kernels' grid rows
        )

    def asarray(self, data, dtype=None):
        if (
            isinstance(data, numpy.ndarray)
            and dtype is not None
            and data.dtype.itemsize < numpy.dtype(dtype).itemsize
        ):
            return cupy.asarray(data).astype(dtype, copy=False)  # move the narrower type, convert there
        return cupy.asarray(data, dtype=dtype)

    def to_numpy(self, array) -> numpy.ndarray:
        return cupy.asnumpy(array)

    def permutation(self, rng: numpy.random.Generator, n: int):
        keys = cupy.empty(n, dtype=numpy.uint64)
        kernels.elementwise("shuffle_keys")(numpy.uint64(rng.integers(0, 2**63)), keys)
        return cupy.argsort(keys)

    def take_rows(self, array, indices, out=None):
        n = array.shape[0]
        if indices.size:  # Python's rules, as the contract says: -1 is the last row, n is an error
            low, high = int(indices.min()), int(indices.max())
            if low < -n or high >= n:
                raise IndexError(
                    f"take_rows got row indices from {low} to {high} for an array of {n} rows; "
                    f"give indices in [-{n}, {n})."
                )
            if low < 0:
                indices = indices % n
        rows = indices.shape[0] if indices.ndim == 1 else -1
        if (
            indices.ndim == 1 and indices.dtype == numpy.int64 and indices.flags.c_contiguous
            and array.ndim == 2 and array.shape[0] > 0 and kernel_ready(array)
            and (out is None or (kernel_ready(array, out) and out.shape == (rows, array.shape[1])))
        ):
            result = cupy.empty((rows, array.shape[1]), array.dtype) if out is None else out
            kernels.gather_rows(array, indices, result)
            return result
        result = array[indices]  # cupy.take has no ``mode``, so the reference cannot serve here
        if out is None:
            return result
        out[...] = result
        return out

    def checksum(self, array) -> int:
        if not isinstance(array, cupy.ndarray):  # host data (train_epoch's NumPy arrays): summed on the host
            return _HOST.checksum(array)  # CuPy takes no NumPy arrays (cupy.ascontiguousarray raises)
        return super().checksum(array)

    def fill(self, array, value: float) -> None:
        if value == 0 and array.flags.c_contiguous and array.nbytes:
            array.data.memset_async(0, array.nbytes)
        else:
            array.fill(value)

    # -- fused kernels --------------------------------------------------------------------------

    def linear_sigmoid_forward(self, x, W, b):
        if not kernel_ready(x, W, b):
            return super().linear_sigmoid_forward(x, W, b)
        z = cupy.matmul(x, W.T)
        z += b
        return z, kernels.elementwise("sigmoid")(z)

    def linear_backward(self, x, W, dz, dW, db, *, accumulate=True, need_dx=True):
        if not kernel_ready(x, W, dz, dW, db):
            return super().linear_backward(x, W, dz, dW, db, accumulate=accumulate, need_dx=need_dx)
        kernels.weight_gradient(dz, x, dW, accumulate)
        kernels.column_sums(dz, db, accumulate)
        return cupy.matmul(dz, W) if need_dx else None

    def linear_sigmoid_backward(self, x, W, p, dp, dW, db, *, accumulate=True, need_dx=True):
        if not kernel_ready(x, W, p, dp, dW, db):
            return super().linear_sigmoid_backward(
                x, W, p, dp, dW, db, accumulate=accumulate, need_dx=need_dx
            )
        dz = self._buffer(p.shape, p.dtype)  # consumed by the calls below, in stream order
        kernels.elementwise("sigmoid_delta")(p, dp, dz)
        return self.linear_backward(x, W, dz, dW, db, accumulate=accumulate, need_dx=need_dx)

    def sigmoid(self, z):
        return self._elementwise("sigmoid", super().sigmoid, z)

    def sigmoid_backward(self, p, dp):
        return self._elementwise("sigmoid_delta", super().sigmoid_backward, p, dp)

    def relu(self, z):
        return self._elementwise("relu", super().relu, z)

    def relu_backward(self, y, dy):
        return self._elementwise("relu_backward", super().relu_backward, y, dy)

    def softmax(self, z):
        return self._rows(2, super().softmax, z)

    def softmax_cross_entropy(self, z, t):
        return self._rows(0, super().softmax_cross_entropy, z, t)

    def softmax_cross_entropy_gradient(self, z, t):
        return self._rows(1, super().softmax_cross_entropy_gradient, z, t)

    def sgd_update(self, param, grad, learning_rate: float) -> None:
        if param.dtype not in KERNEL_FLOATS or grad.dtype != param.dtype or grad.shape != param.shape:
            return super().sgd_update(param, grad, learning_rate)
        kernels.elementwise("sgd")(grad, param.dtype.type(learning_rate), param)

    def batch_norm_forward(self, x, gamma, beta, mean, var, *, training, momentum, eps, relu=False):
        ready = norm_ready(x, gamma, beta, mean, var, max_rows=kernels.NORM_ROW_LIMIT)
        if ready and (x.shape[0] >= 2 or not training):
            return kernels.batch_norm_forward(x, gamma, beta, mean, var, bool(training), float(momentum),
                                              float(eps), bool(relu))
        return super().batch_norm_forward(x, gamma, beta, mean, var, training=training, momentum=momentum,
                                          eps=eps, relu=relu)

    def batch_norm_backward(self, x, mu, inverse_std, gamma, dy, dgamma, dbeta, relu_output=None, *, training,
                            accumulate=True, need_dx=True):
        arrays = (x, dy) if relu_output is None else (x, dy, relu_output)
        if all(a.shape == x.shape for a in arrays) and kernel_ready(*arrays) and norm_ready(
                x, mu, inverse_std, gamma, dgamma, dbeta, max_rows=kernels.NORM_ROW_LIMIT):
            return kernels.batch_norm_backward(x, mu, inverse_std, gamma, dy, dgamma, dbeta, relu_output,
                                               bool(training), bool(accumulate), bool(need_dx))
        return super().batch_norm_backward(x, mu, inverse_std, gamma, dy, dgamma, dbeta, relu_output,
                                           training=training, accumulate=accumulate, need_dx=need_dx)

    # -- convolution and pooling ----------------------------------------------------------------

    def conv2d_forward(self, x, W, b, stride, padding, *, relu=False):
        out = self._conv_output(x, W, stride, padding)
        if out is None or not (kernel_ready(b) and b.dtype == x.dtype and b.shape == (1, W.shape[0])):
            return super().conv2d_forward(x, W, b, stride, padding, relu=relu)
        columns = kernels.im2col(x, (W.shape[2:], stride, padding), out)
        y = cupy.matmul(columns, self._weight_matrix(W).T)
        kernels.add_bias(y, b, relu)
        return y.reshape(x.shape[0], *out, W.shape[0])

    def conv2d_backward(self, x, W, y, dy, dW, db, stride, padding, *, relu=False,
                        accumulate=True, need_dx=True):
        out = self._conv_output(x, W, stride, padding)
        K, C, kh, kw = W.shape
        if (
            out is None or tuple(dy.shape) != (x.shape[0], *out, K) or not kernel_ready(x, dy, ndim=4)
            or not (kernel_ready(db) and db.dtype == x.dtype and db.shape == (1, K))
            or dW.shape != W.shape or dW.dtype != x.dtype
            or (relu and (y.shape != dy.shape or y.dtype != dy.dtype))
        ):
            return super().conv2d_backward(x, W, y, dy, dW, db, stride, padding, relu=relu,
                                           accumulate=accumulate, need_dx=need_dx)
        dz = dy
        if relu:
            dz = cupy.empty(dy.shape, dy.dtype)
            kernels.elementwise("relu_backward")(y, dy, dz)
        dz = dz.reshape(-1, K)
        window = ((kh, kw), stride, padding)
        gradient = cupy.matmul(dz.T, kernels.im2col(x, window, out)).reshape(K, kh, kw, C)
        gradient = gradient.transpose(0, 3, 1, 2)  # (K, C, kh, kw), as dW
        if accumulate:
            dW += gradient
        else:
            dW[...] = gradient
        kernels.column_sums(dz, db, accumulate)
        if not need_dx:
            return None
        return kernels.col2im(cupy.matmul(dz, self._weight_matrix(W)), x.shape, window, out)

    def maxpool2d_forward(self, x, size, stride):
        out = _window_output(x.shape, size, stride) if kernel_ready(x, ndim=4) else None
        if out is None:
            return super().maxpool2d_forward(x, size, stride)
        return kernels.maxpool_forward(x, (size, stride), out)

    def maxpool2d_backward(self, argmax, dy, size, stride, input_shape):
        input_shape = tuple(input_shape)
        out = _window_output(input_shape, size, stride) if len(input_shape) == 4 else None
        if (
            out is None or not kernel_ready(dy, ndim=4)
            or tuple(dy.shape) != (input_shape[0], *out, input_shape[3])
            or argmax.dtype != numpy.int32 or argmax.shape != dy.shape or not argmax.flags.c_contiguous
        ):
            return super().maxpool2d_backward(argmax, dy, size, stride, input_shape)
        return kernels.maxpool_backward(argmax, dy, (size, stride), input_shape)

    # -- helpers --------------------------------------------------------------------------------

    def _elementwise(self, name, fallback, *arrays):
        if arrays[0].dtype not in KERNEL_FLOATS or any(a.dtype != arrays[0].dtype for a in arrays):
            return fallback(*arrays)
        return kernels.elementwise(name)(*arrays)

    def _rows(self, mode, fallback, z, t=None):
        arrays = (z,) if t is None else (z, t)
        if not z.size or not kernel_ready(*arrays) or any(a.shape != z.shape for a in arrays):
            return fallback(*arrays)
        return kernels.softmax_rows(z, arrays[-1], mode)

    @staticmethod
    def _conv_output(x, W, stride, padding):
        """``(Ho, Wo)`` when the conv kernels take ``x`` and ``W``, else ``None``."""
        if not (kernel_ready(x, ndim=4) and W.ndim == 4 and W.dtype == x.dtype and W.shape[1] == x.shape[3]):
            return None
        out = _window_output(x.shape, W.shape[2:], stride, padding)
        if out is None:
            return None
        positions, (K, C, kh, kw) = x.shape[0] * out[0] * out[1], W.shape
        return out if max(positions * kh * kw * C, positions * K) < kernels.INT_LIMIT and K > 0 else None

    def _buffer(self, shape, dtype):
        """A scratch array reused for every call with this shape and dtype on this stream."""
        key = (tuple(shape), numpy.dtype(dtype).str, cupy.cuda.get_current_stream().ptr)
        if key not in self._scratch:
            self._scratch[key] = cupy.empty(shape, dtype)
        return self._scratch[key]


def create() -> CupyBackend:
    if cupy is None:
        raise BackendUnavailableError(
            f"CuPy is not importable ({_IMPORT_ERROR}); install the CuPy wheel for your CUDA version: "
            "pip install cupy-cuda12x for CUDA 12.x, cupy-cuda13x for CUDA 13.x"
        )
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # no driver, or it cannot initialise
        raise BackendUnavailableError(
            f"no CUDA device is visible ({error}); check nvidia-smi and CUDA_VISIBLE_DEVICES"
        ) from None
    if count == 0:
        raise BackendUnavailableError("no CUDA device is visible; check nvidia-smi and CUDA_VISIBLE_DEVICES")
    return CupyBackend()
