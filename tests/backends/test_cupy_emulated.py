"""The CuPy backend run without a GPU, kernel by kernel, on the host CUDA emulator.

``backends/cupy/backend.py`` and ``kernels.py`` run unchanged on the stand-in ``cupy`` of
``tests/cuda_emulation``: its ``RawModule`` builds the CUDA sources with g++ and runs every thread of
every block as a fiber, with real barriers and warp exchanges, in the order the test picks. So every
kernel is checked against the NumPy reference (``Backend``) under several thread and block orders,
which must give the same bits (a missing barrier or a race would not); and the backend's Python is
checked as CuPy would run it: kernel arguments against the kernels' C signatures, launch shapes
against CUDA's limits, cuBLAS's argument rules, writes outside arrays, and CUDA-graph capture and
replay of whole epochs.

What only a GPU shows is listed in ``tests/cuda_emulation/README.md``.
"""

from __future__ import annotations

import inspect
import itertools
import re
import sys
import types
import warnings

import numpy
import pytest

import fastprop
from fastprop import (
    Conv2D, CrossEntropy, Flatten, Linear, MaxPool2D, MeanSquareError, Network, ReLU, Reshape, Sigmoid,
    SoftMax, SoftmaxCrossEntropy, train,
)
from fastprop.backends import Backend
from fastprop.backends.plan import Activation, Loss
from fastprop.lowering import lower
from tests.conftest import relative_error
from tests.cuda_emulation import emulated_cupy_backend, host_module, standin_cupy
from tests.cuda_emulation.host_module import SCHEDULES, EmulationError, schedule

pytestmark = pytest.mark.skipif(host_module.available() is not None,
                                reason=f"the CUDA emulation needs g++ and nm: {host_module.available()}")

REFERENCE = Backend()
DTYPES = [pytest.param(numpy.float32, id="float32"), pytest.param(numpy.float64, id="float64")]
TOLERANCE = {numpy.float32: 2e-6, numpy.float64: 1e-13}


@pytest.fixture(scope="module")
def emulated():
    """The CuPy backend on the stand-in cupy: ``.backend``, ``.kernels`` (its kernels module), ``.cupy``."""
    with emulated_cupy_backend() as (backend, kernels, cupy):
        yield types.SimpleNamespace(backend=backend, kernels=kernels, cupy=cupy)


def under_every_order(run, *, schedules=SCHEDULES, inexact=()):
    """``run()`` (a dict of device or host arrays) under each schedule; every array must have the same
    bits under all of them (those named in ``inexact``, sums made with atomics in block order, the same
    values within rounding). Returns the host arrays of the first."""
    results = []
    for order in schedules:
        with schedule(order.threads, order.blocks, order.seed):
            results.append({name: numpy.array(value.get() if hasattr(value, "get") else value)
                            for name, value in run().items()})
    first = results[0]
    for order, other in zip(schedules[1:], results[1:]):
        for name, value in first.items():
            if name in inexact:
                assert numpy.allclose(other[name], value, rtol=1e-12, atol=0), f"{name} under {order}"
            else:
                assert value.tobytes() == other[name].tobytes(), f"{name} differs under {order}"
    return first


def close(actual, expected, dtype, factor=1.0):
    assert actual.shape == expected.shape
    error = relative_error(actual, expected) if actual.size else 0.0
    assert error <= factor * TOLERANCE[dtype], f"relative error {error:.3g}"


# ==================================================================================== the emulator itself

RACE = r"""
template <typename T>
__global__ void rotate(const T* __restrict__ x, T* __restrict__ y, int n, int barrier) {
    __shared__ T values[256];
    const int t = threadIdx.x;
    values[t] = x[t];
    if (barrier) __syncthreads();
    y[t] = values[(t + 1) % n];
}

extern "C" __global__ void rows_sum(const float* x, float* out) {  // a warp sum per row, lanes in any order
    float v = x[blockIdx.x * 32 + threadIdx.x];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}

extern "C" __global__ void __launch_bounds__(64) early_exit(int* y) {
    if (threadIdx.x < 3) return;
    __syncthreads();
    y[threadIdx.x] = 1;
}

extern "C" __global__ void lane_left(int* y) {
    if (threadIdx.x == 5) return;
    y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

extern "C" __global__ void past_the_end(float* y, int n) { y[threadIdx.x] = 1.0f; }

extern "C" __global__ void too_much_shared(double* y) {
    __shared__ double big[7000];
    big[threadIdx.x] = 1.0;
    __syncthreads();
    y[threadIdx.x] = big[(threadIdx.x + 1) % blockDim.x];
}

extern "C" __global__ void scalar(long long n, int k, double* y) { y[0] = (double)n + k; }
"""
RACE_NAMES = ("rotate<float>", "rotate<double>")


def _module(cupy):
    return cupy.RawModule(code=RACE, name_expressions=RACE_NAMES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_missing_barrier_changes_the_result_between_thread_orders(emulated, dtype):
    cupy = emulated.cupy
    kernel = _module(cupy).get_function(f"rotate<{'float' if dtype == numpy.float32 else 'double'}>")
    x = cupy.asarray(numpy.arange(256, dtype=dtype))
    results = {}
    for barrier, order in itertools.product((0, 1), ("forward", "reverse", "shuffled")):
        y = cupy.empty(256, dtype)
        with schedule(order, seed=3):
            kernel((1,), (256,), (x, y, numpy.int32(256), numpy.int32(barrier)))
        results[barrier, order] = y.get()
    expected = numpy.roll(numpy.arange(256, dtype=dtype), -1)
    for order in ("forward", "reverse", "shuffled"):
        assert numpy.array_equal(results[1, order], expected)  # with the barrier: right in every order
    racy = [results[0, order] for order in ("forward", "reverse", "shuffled")]
    assert not all(numpy.array_equal(racy[0], r, equal_nan=True) for r in racy[1:])  # without: not
    assert numpy.isnan(racy[0]).any()  # forward: threads read shared memory not yet written (poisoned)


def test_warp_shuffles_wait_for_every_lane(emulated):
    cupy = emulated.cupy
    kernel = _module(cupy).get_function("rows_sum")
    x = numpy.random.default_rng(0).normal(size=(5, 32)).astype(numpy.float32)
    result = under_every_order(lambda: {"out": _launch(kernel, cupy, (5,), (32,), cupy.asarray(x))})
    tree = x.copy()
    for offset in (16, 8, 4, 2, 1):  # the butterfly's own order of additions
        tree = tree + tree[:, numpy.arange(32) ^ offset]
    assert numpy.array_equal(result["out"], tree[:, 0])


def _launch(kernel, cupy, grid, block, x):
    out = cupy.zeros(grid[0], numpy.float32)
    kernel(grid, block, (x, out))
    return out


def test_the_emulator_reports_what_a_gpu_would_not_forgive(emulated):
    cupy = emulated.cupy
    module = _module(cupy)
    y = cupy.zeros(64, numpy.int32)
    with pytest.raises(EmulationError, match="__syncthreads .* divergent"):
        module.get_function("early_exit")((1,), (64,), (y,))
    with pytest.raises(EmulationError, match="warp"):
        module.get_function("lane_left")((1,), (32,), (y,))
    with pytest.raises(host_module.CUDADriverError, match="__launch_bounds__"):
        module.get_function("early_exit")((1,), (128,), (y,))
    with pytest.raises(host_module.CUDADriverError, match="block"):
        module.get_function("lane_left")((1,), (2048,), (y,))
    with pytest.raises(EmulationError, match="outside an array"):
        module.get_function("past_the_end")((1,), (80,), (cupy.zeros(64, numpy.float32), numpy.int32(64)))
    with pytest.raises(EmulationError, match="static shared memory"):
        module.get_function("too_much_shared")((1,), (32,), (cupy.zeros(32, numpy.float64),))
    scalar = module.get_function("scalar")
    out = cupy.zeros(1, numpy.float64)
    scalar((1,), (1,), (5, numpy.int32(2), out))  # a Python int is passed as 8 bytes: right for long long
    assert out.get()[0] == 7
    for wrong in ((numpy.int32(5), numpy.int32(2), out), (5, 2, out), (5, numpy.int32(2), out.get()),
                  (5, numpy.int32(2), out.astype(numpy.float32)), (5, numpy.int32(2))):
        with pytest.raises(EmulationError):
            scalar((1,), (1,), wrong)
    with pytest.raises(host_module.CUDADriverError, match="named symbol"):
        module.get_function("rotate")  # a template needs its name expression
    with pytest.raises(TypeError):
        scalar([1], (1,), (5, numpy.int32(2), out))  # CuPy takes tuples only


@pytest.mark.slow
def test_a_barrier_removed_from_the_tiled_product_is_caught(emulated, monkeypatch):
    """The orders find a missing barrier in the real kernels too: without the barrier that ends each
    slice of tile_product, the next slice overwrites shared memory that slower threads still read."""
    kernels = emulated.kernels
    source = kernels.cuda_source("epoch_kernels")
    end_of_slice = source.index("__syncthreads();\n    }\n}", source.index("tile_product"))
    mutant = source[:end_of_slice] + source[end_of_slice + len("__syncthreads();"):]
    module = emulated.cupy.RawModule(code=mutant, name_expressions=("dense_forward<double, 32, 32>",))
    kernel = module.get_function("dense_forward<double, 32, 32>")
    cupy, rng = emulated.cupy, numpy.random.default_rng(0)
    x, W, b = (cupy.asarray(rng.normal(size=s)) for s in ((40, 50), (33, 50), (33,)))
    order, cursor = cupy.asarray(numpy.arange(40)), cupy.zeros(1, numpy.int64)
    results = []
    for threads in ("forward", "reverse"):
        y = cupy.empty((40, 33), numpy.float64)
        with schedule(threads):
            kernel((2, 2), (256,), (x, order, cursor, numpy.int64(0), numpy.int32(0), W, b, y,
                                    numpy.int64(40), numpy.int64(33), numpy.int64(50), numpy.int32(0)))
        results.append(y.get())
    assert not numpy.array_equal(results[0], results[1], equal_nan=True)


def test_graph_capture_records_launches_and_replays_them(emulated):
    cupy = emulated.cupy
    kernel = _module(cupy).get_function("scalar")
    out = cupy.zeros(1, numpy.float64)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        kernel((1,), (1,), (3, numpy.int32(4), out))
        with pytest.raises(NotImplementedError, match="captures"):
            out.fill(1)  # the stand-in records kernels only: anything else in a capture fails loudly
        graph = stream.end_capture()
    assert out.get()[0] == 0  # captured, not run
    graph.launch()
    assert out.get()[0] == 7
    with pytest.raises(RuntimeError, match="default"):
        cupy.cuda.Stream.null.begin_capture()


def test_the_stand_in_refuses_what_cupy_refuses(emulated):
    cupy = emulated.cupy
    device = cupy.ones((2, 3), numpy.float32)
    host = numpy.ones((2, 3), numpy.float32)
    with pytest.raises(TypeError):
        device + host  # CuPy takes no host arrays in arithmetic
    with pytest.raises(TypeError):
        cupy.take(device, cupy.asarray([0]), axis=0, mode="wrap")  # cupy.take has no mode
    with pytest.raises(AttributeError, match="stand-in"):
        cupy.random  # noqa: B018  (not provided: fails loudly)
    assert isinstance(device.sum(), cupy.ndarray) and device.sum().ndim == 0  # 0-d arrays, as CuPy's
    assert type(cupy.asnumpy(device)) is numpy.ndarray
    empty = cupy.empty(4, numpy.float64)
    assert numpy.isnan(empty.get()).all()  # uninitialised memory reads as NaN
    with pytest.raises(host_module.CUDADriverError):
        cupy.RawModule(code=RACE).get_function("nothing")


def test_standin_cupy_restores_sys_modules():
    import sys

    before = sys.modules.get("cupy")
    with standin_cupy() as cupy:
        assert sys.modules["cupy"] is cupy
    assert sys.modules.get("cupy") is before


# ==================================================================================== step kernels


def _ctype(dtype):
    return "float" if dtype == numpy.float32 else "double"


GATHER_SHAPES = [(5, 3, 0), (5, 3, 1), (1, 7, 4), (50, 9, 30), (40, 33, 300)]  # table rows, cols, out rows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, cols, rows", GATHER_SHAPES)
def test_gather_rows(emulated, dtype, n, cols, rows):
    cupy, kernels = emulated.cupy, emulated.kernels
    rng = numpy.random.default_rng(n * 100 + rows)
    table = rng.normal(size=(n, cols)).astype(dtype)
    index = rng.integers(-n, 2 * n, rows)  # the kernel wraps indices modulo n
    device_table, device_index = cupy.asarray(table), cupy.asarray(index)
    kernel = kernels.step_kernels(dtype)[f"gather_rows<{_ctype(dtype)}>"]

    def run():
        out, small = cupy.empty((rows, cols), dtype), cupy.empty((rows, cols), dtype)
        kernels.gather_rows(device_table, device_index, out)
        # two blocks: a grid-stride loop that goes round
        kernel((2,), (kernels.THREADS,), (device_table, device_index, small, numpy.int64(rows),
                                          numpy.int64(cols), numpy.int64(n)))
        return {"out": out, "small grid": small}

    result = under_every_order(run)
    assert numpy.array_equal(result["out"], table[index % n])
    assert numpy.array_equal(result["small grid"], table[index % n])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, cols", [(0, 5), (1, 1), (7, 31), (9, 32), (100, 33), (20, 70)])
def test_column_sums(emulated, dtype, rows, cols):
    cupy, kernels = emulated.cupy, emulated.kernels
    rng = numpy.random.default_rng(rows * 7 + cols)
    g, start = rng.normal(size=(rows, cols)).astype(dtype), rng.normal(size=(1, cols)).astype(dtype)
    device_g = cupy.asarray(g)

    def run():
        written, added = cupy.asarray(start.copy()), cupy.asarray(start.copy())
        kernels.column_sums(device_g, written, False)
        kernels.column_sums(device_g, added, True)
        return {"written": written, "added": added}

    result = under_every_order(run)
    close(result["written"], g.astype(numpy.float64).sum(0, keepdims=True), dtype, 4)
    close(result["added"], start + g.astype(numpy.float64).sum(0, keepdims=True), dtype, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, cols", [(0, 3), (1, 1), (3, 5), (4, 31), (5, 32), (9, 33), (6, 70)])
def test_softmax_rows_in_every_mode(emulated, dtype, rows, cols):
    cupy, kernels = emulated.cupy, emulated.kernels
    rng = numpy.random.default_rng(rows * 11 + cols)
    z = rng.normal(size=(rows, cols)) * 20
    if rows and cols >= 2:
        z[0, :2] = 1000, -1000
    t = rng.random((rows, cols))
    z, t = z.astype(dtype), t.astype(dtype)
    device_z, device_t = cupy.asarray(z), cupy.asarray(t)
    modes = kernels.SoftmaxRows

    def run():
        return {mode.name: kernels.softmax_rows(device_z, device_t, int(mode)) for mode in modes}

    result = under_every_order(run)
    wide = z.astype(numpy.float64), t.astype(numpy.float64)
    close(result["CROSS_ENTROPY"], REFERENCE.softmax_cross_entropy(*wide), dtype, 8)
    close(result["GRADIENT"], REFERENCE.softmax_cross_entropy_gradient(*wide), dtype, 8)
    close(result["PROBABILITIES"], REFERENCE.softmax(wide[0]), dtype, 8)


ELEMENTWISE = {  # name -> (inputs from rng and shape, reference on float64 inputs)
    "sigmoid": (lambda r, s: (r.normal(size=s) * 20,), lambda z: 1 / (1 + numpy.exp(-z))),
    "sigmoid_delta": (lambda r, s: (r.random(s), r.normal(size=s)), lambda p, dp: dp * (p * (1 - p))),
    "relu": (lambda r, s: (r.normal(size=s),), lambda z: numpy.maximum(z, 0)),
    "relu_backward": (lambda r, s: (numpy.maximum(r.normal(size=s), 0), r.normal(size=s)),
                      lambda y, dy: dy * (y > 0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(0, 4), (1, 1), (7, 13)])
def test_elementwise_kernels(emulated, dtype, name, shape):
    cupy, kernels = emulated.cupy, emulated.kernels
    make, expected = ELEMENTWISE[name]
    inputs = [a.astype(dtype) for a in make(numpy.random.default_rng(1), shape)]
    with numpy.errstate(over="ignore"):
        wanted = expected(*(a.astype(numpy.float64) for a in inputs))
    result = kernels.elementwise(name)(*map(cupy.asarray, inputs))
    assert isinstance(result, cupy.ndarray) and result.dtype == dtype
    close(result.get(), wanted, dtype, 2)
    if shape[0]:  # into a given output that is not contiguous (the kernel writes through a copy)
        out = cupy.zeros((shape[0], 2 * shape[1]), dtype)[:, ::2]
        kernels.elementwise(name)(*map(cupy.asarray, inputs), out)
        close(out.get(), wanted, dtype, 2)


def test_elementwise_kernels_broadcast_as_cupy_does(emulated):
    cupy, kernels = emulated.cupy, emulated.kernels
    y, dy = numpy.array([[1.0, -1.0, 2.0]]), numpy.arange(6.0).reshape(2, 3)
    result = kernels.elementwise("relu_backward")(cupy.asarray(y), cupy.asarray(dy))
    assert result.shape == (2, 3) and numpy.array_equal(result.get(), dy * (y > 0))
    with pytest.raises(ValueError, match="Out shape is mismatched"):
        kernels.elementwise("relu_backward")(cupy.asarray(y), cupy.asarray(dy), cupy.empty((1, 3)))
    with pytest.raises(TypeError, match="Wrong arguments"):  # outputs are positional, as in CuPy
        kernels.elementwise("relu_backward")(cupy.asarray(y), cupy.asarray(dy), out=cupy.empty((2, 3)))
    with pytest.raises(TypeError):  # a host array
        kernels.elementwise("relu_backward")(y, cupy.asarray(dy))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_and_shuffle_keys(emulated, dtype):
    cupy, kernels = emulated.cupy, emulated.kernels
    rng = numpy.random.default_rng(2)
    w, g = rng.normal(size=(9, 5)).astype(dtype), rng.normal(size=(9, 5)).astype(dtype)
    device_w = cupy.asarray(w)
    kernels.elementwise("sgd")(cupy.asarray(g), dtype(0.25), device_w)
    assert numpy.array_equal(device_w.get(), w - dtype(0.25) * g)
    other = numpy.float64 if dtype == numpy.float32 else numpy.float32
    with pytest.raises(TypeError, match="mismatched"):  # CuPy binds T to the arrays: g and w must agree
        kernels.elementwise("sgd")(cupy.asarray(g.astype(other)), dtype(0.25), device_w)
    keys = cupy.empty(1000, numpy.uint64)
    kernels.elementwise("shuffle_keys")(numpy.uint64(12345), keys)
    expected = numpy.empty(1000, numpy.uint64)
    for i in range(1000):  # splitmix64 of seed + (i + 1) * golden ratio, in Python's integers
        s = (12345 + (i + 1) * 0x9E3779B97F4A7C15) % 2**64
        s = ((s ^ (s >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        s = ((s ^ (s >> 27)) * 0x94D049BB133111EB) % 2**64
        expected[i] = s ^ (s >> 31)
    assert numpy.array_equal(keys.get(), expected)
    assert len(numpy.unique(expected)) == 1000


# ==================================================================================== conv kernels

CONV_SHAPES = [  # n, (H, W, C), K, kernel, stride, padding
    (1, (7, 6, 3), 4, (5, 5), (2, 2), (1, 1)),
    (2, (9, 8, 5), 3, (3, 2), (1, 2), (1, 0)),
    (2, (3, 3, 2), 2, (5, 4), (1, 1), (1, 1)),  # a kernel larger than the image, padded
    (1, (5, 5, 1), 1, (5, 5), (1, 1), (0, 0)),  # one window, one channel
    (2, (6, 7, 2), 3, (1, 1), (3, 2), (0, 0)),  # strides past a 1 x 1 kernel
]
POOL_SHAPES = [  # n, (H, W, C), size, stride
    (2, (9, 8, 5), (3, 3), (2, 2)),  # overlapping windows
    (1, (6, 11, 7), (3, 2), (2, 1)),
    (3, (8, 7, 3), (2, 2), (3, 3)),  # gaps between windows
    (1, (2, 2, 1), (2, 2), (1, 1)),  # one window
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_im2col_col2im_and_the_bias_epilogue(emulated, dtype, shape):
    cupy, kernels = emulated.cupy, emulated.kernels
    n, image, K, kernel, stride, padding = shape
    rng = numpy.random.default_rng(sum(image))
    x = rng.normal(size=(n, *image)).astype(dtype)
    out_size = fastprop.backends.convolution.window_output(*image[:2], kernel, stride, padding)
    window = (kernel, stride, padding)
    columns_expected, _ = REFERENCE._im2col(x, kernel, stride, padding)
    d_columns = rng.normal(size=columns_expected.shape).astype(dtype)
    y = rng.normal(size=(n * out_size[0] * out_size[1], K)).astype(dtype)
    b = rng.normal(size=(1, K)).astype(dtype)
    device = [cupy.asarray(a) for a in (x, d_columns, y, b)]

    def run():
        relu_y = device[2].copy()
        kernels.add_bias(relu_y, device[3], True)
        plain_y = device[2].copy()
        kernels.add_bias(plain_y, device[3], False)
        return {"columns": kernels.im2col(device[0], window, out_size),
                "dx": kernels.col2im(device[1], x.shape, window, out_size), "relu": relu_y, "plain": plain_y}

    result = under_every_order(run)
    assert numpy.array_equal(result["columns"], columns_expected)
    assert numpy.array_equal(result["plain"], y + b)
    assert numpy.array_equal(result["relu"], numpy.maximum(y + b, 0))
    # the adjoint: <im2col(x), c> = <x, col2im(c)>, and col2im sums in the reference's order
    dz = d_columns.astype(numpy.float64).reshape(n, *out_size, *kernel, image[2])
    reference = numpy.zeros((n, image[0] + 2 * padding[0], image[1] + 2 * padding[1], image[2]))
    for p, q in itertools.product(range(kernel[0]), range(kernel[1])):
        reference[:, p:p + stride[0] * (out_size[0] - 1) + 1:stride[0],
                  q:q + stride[1] * (out_size[1] - 1) + 1:stride[1]] += dz[:, :, :, p, q]
    inside = reference[:, padding[0]:padding[0] + image[0], padding[1]:padding[1] + image[1]]
    close(result["dx"], inside, dtype, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
@pytest.mark.parametrize("values", ["distinct", "ties", "NaNs"])
def test_max_pooling_kernels_match_the_reference_exactly(emulated, dtype, shape, values):
    cupy, kernels = emulated.cupy, emulated.kernels
    n, image, size, stride = shape
    rng = numpy.random.default_rng(sum(image))
    x = rng.normal(size=(n, *image)) if values == "distinct" else rng.integers(0, 3, (n, *image)) * 1.0
    if values == "NaNs":
        x[rng.random(x.shape) < 0.1] = numpy.nan
    x = x.astype(dtype)
    y_expected, argmax_expected = REFERENCE.maxpool2d_forward(x, size, stride)
    dy = rng.normal(size=y_expected.shape).astype(dtype)
    dx_expected = REFERENCE.maxpool2d_backward(argmax_expected, dy, size, stride, x.shape)
    out_size = y_expected.shape[1:3]
    device_x, device_dy = cupy.asarray(x), cupy.asarray(dy)

    def run():
        y, argmax = kernels.maxpool_forward(device_x, (size, stride), out_size)
        dx = kernels.maxpool_backward(argmax, device_dy, (size, stride), x.shape)
        return {"y": y, "argmax": argmax, "dx": dx}

    result = under_every_order(run)
    assert numpy.array_equal(result["y"], y_expected, equal_nan=True)
    assert result["argmax"].dtype == numpy.int32 and numpy.array_equal(result["argmax"], argmax_expected)
    assert numpy.array_equal(result["dx"], dx_expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_kernels_loop_round_a_small_grid(emulated, dtype):
    """The conv kernels are grid-stride loops; Python launches enough blocks for one pass, so launch
    three blocks here and let each thread go round."""
    cupy, kernels = emulated.cupy, emulated.kernels
    n, image, K, kernel, stride, padding = CONV_SHAPES[1]
    x = numpy.random.default_rng(4).normal(size=(n, *image)).astype(dtype)
    out_size = fastprop.backends.convolution.window_output(*image[:2], kernel, stride, padding)
    expected, _ = REFERENCE._im2col(x, kernel, stride, padding)
    columns = cupy.empty(expected.shape, dtype)
    sizes = (*image, *out_size, *kernel, *stride, *padding)
    function = kernels.conv_kernels(dtype)[f"im2col<{_ctype(dtype)}>"]
    result = under_every_order(lambda: {"columns": _run_im2col(function, cupy.asarray(x), columns, sizes)})
    assert numpy.array_equal(result["columns"], expected)


def _run_im2col(function, x, columns, sizes):
    function((3,), (256,), (x, columns, *map(numpy.int32, sizes), numpy.int64(columns.size)))
    return columns


# ==================================================================================== epoch kernels


def _activate(z, act):
    if act == Activation.SIGMOID:
        return 1 / (1 + numpy.exp(-z))
    return numpy.maximum(z, 0) if act == Activation.RELU else z


def _slope(g, y, act):
    if act == Activation.SIGMOID:
        return g * y * (1 - y)
    return g * (y > 0) if act == Activation.RELU else g


class Batch:
    """An epoch's order, cursor and first row, as the epoch kernels read them, on device and host."""

    def __init__(self, cupy, n, rows, rng, first=3, cursor=2):
        self.order = rng.permutation(n).astype(numpy.int64)
        self.cursor, self.first = cursor, first
        self.rows = self.order[cursor + first:cursor + first + rows]
        self.device = (cupy.asarray(self.order), cupy.asarray(numpy.array([cursor], numpy.int64)),
                       numpy.int64(first))


DENSE_SHAPES = [(1, 1, 1), (5, 17, 15), (33, 40, 16), (70, 65, 33)]  # rows M, outputs N, inputs K


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", [(64, 64), (32, 64), (32, 32)], ids=str)
@pytest.mark.parametrize("act", list(Activation), ids=lambda a: a.name)
def test_dense_kernels(emulated, dtype, tile, act):
    """dense_forward (rows gathered through the order, or not), dense_backward_input and dense_update,
    against NumPy, on shapes below, at and past a tile and the tile depth."""
    for M, N, K in DENSE_SHAPES:
        _check_dense(emulated, dtype, tile, act, M, N, K)


def _check_dense(emulated, dtype, tile, act, M, N, K):
    cupy, kernels = emulated.cupy, emulated.kernels
    bm, bn = tile
    k = kernels.epoch_kernels(dtype)
    t = _ctype(dtype)
    blocks = kernels._blocks
    rng = numpy.random.default_rng(M * N + K)
    batch = Batch(cupy, M + 10, M, rng)
    images = rng.normal(size=(M + 10, K)).astype(dtype)
    W, b = rng.normal(size=(N, K)).astype(dtype), rng.normal(size=N).astype(dtype)
    G, Y = rng.normal(size=(M, N)).astype(dtype), rng.random((M, K)).astype(dtype)
    lr = numpy.array(0.125, dtype)
    device = {name: cupy.asarray(a) for name, a in
              (("images", images), ("W", W), ("b", b), ("G", G), ("Y", Y), ("lr", lr))}
    W2 = rng.normal(size=(N, K)).astype(dtype)  # dense_update's weights: M = N outputs, K inputs

    def run():
        out = {}
        for gather in (0, 1):
            y = cupy.empty((M, N), dtype)
            x = device["images"] if gather else device["images"][:M]
            k[f"dense_forward<{t}, {bm}, {bn}>"]((blocks(N, bn), blocks(M, bm)), (kernels.THREADS,), (
                x, *batch.device, numpy.int32(gather), device["W"], device["b"], y, numpy.int64(M),
                numpy.int64(N), numpy.int64(K), numpy.int32(act)))
            out[f"forward {gather}"] = y
        d = cupy.empty((M, K), dtype)
        k[f"dense_backward_input<{t}, {bm}, {bn}>"]((blocks(K, bn), blocks(M, bm)), (kernels.THREADS,), (
            device["G"], device["W"], device["Y"], d, numpy.int64(M), numpy.int64(K), numpy.int64(N),
            numpy.int32(act)))
        out["backward"] = d
        w, bias = cupy.asarray(W2), cupy.asarray(b)
        dw, db = cupy.empty((N, K), dtype), cupy.empty(N, dtype)
        k[f"dense_update<{t}, {bm}, {bn}>"]((blocks(K, bn), blocks(N, bm)), (kernels.THREADS,), (
            device["G"], device["images"], *batch.device, numpy.int32(1), w, bias, dw, db, device["lr"],
            numpy.int64(N), numpy.int64(K), numpy.int64(M)))
        out.update(W=w, b=bias, dW=dw, db=db)
        return out

    result = under_every_order(run)
    wide = {name: a.astype(numpy.float64) for name, a in
            (("images", images), ("W", W), ("b", b), ("G", G), ("Y", Y), ("W2", W2))}
    with numpy.errstate(over="ignore"):
        gathered = wide["images"][batch.rows]
        close(result["forward 1"], _activate(gathered @ wide["W"].T + wide["b"], act), dtype, 8)
        close(result["forward 0"], _activate(wide["images"][:M] @ wide["W"].T + wide["b"], act), dtype, 8)
    close(result["backward"], _slope(wide["G"] @ wide["W"], wide["Y"], act), dtype, 8)
    dW = wide["G"].T @ wide["images"][batch.rows]
    close(result["dW"], dW, dtype, 8)
    close(result["db"], wide["G"].sum(0), dtype, 8)
    close(result["W"], wide["W2"] - 0.125 * dW, dtype, 8)
    close(result["b"], wide["b"] - 0.125 * wide["G"].sum(0), dtype, 8)


#: Rows M, outputs N, inputs K: below, at and past the widths (8, 16, 32) narrow_forward is built for.
NARROW_SHAPES = [(1, 1, 1), (5, 3, 40), (9, 8, 33), (4, 10, 7), (6, 16, 20), (3, 17, 5), (7, 32, 9)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", [0, *Loss], ids=lambda v: getattr(v, "name", "no loss"))
@pytest.mark.parametrize("act", list(Activation), ids=lambda a: a.name)
def test_narrow_forward_and_batch_loss(emulated, dtype, loss, act):
    """narrow_forward (one warp per row, the cost fused) for every width it is compiled for, and
    batch_loss (the cost of a wide last layer), against NumPy: outputs, dL/dz and the summed cost."""
    for M, N, K in NARROW_SHAPES:
        _check_narrow(emulated, dtype, loss, act, M, N, K)


def _check_narrow(emulated, dtype, loss, act, M, N, K):
    cupy, kernels = emulated.cupy, emulated.kernels
    k, t = kernels.epoch_kernels(dtype), _ctype(dtype)
    row_grid, row_block = (kernels._blocks(M, kernels.ROWS_PER_BLOCK),), (32 * kernels.ROWS_PER_BLOCK,)
    nmax = next(w for w in kernels.NARROW_FORWARD if N <= w)
    rng = numpy.random.default_rng(M * N * K)
    batch = Batch(cupy, M + 8, M, rng)
    images = rng.normal(size=(M + 8, K)).astype(dtype)
    targets = (numpy.eye(N)[rng.integers(0, N, M + 8)] if loss == Loss.SOFTMAX_CROSS_ENTROPY
               else rng.random((M + 8, N))).astype(dtype)
    W, b = rng.normal(size=(N, K)).astype(dtype), rng.normal(size=N).astype(dtype)
    device = [cupy.asarray(a) for a in (images, targets, W, b)]

    def run():
        y, d, total = cupy.empty((M, N), dtype), cupy.zeros((M, N), dtype), cupy.zeros(1, numpy.float64)
        k[f"narrow_forward<{t}, {nmax}>"](row_grid, row_block, (
            device[0], *batch.device, numpy.int32(1), device[2], device[3], y, numpy.int64(M), numpy.int32(N),
            numpy.int64(K), numpy.int32(act), numpy.int32(loss), device[1], d, total))
        out = {"y": y, "d": d, "total": total}
        if loss:
            d2, total2 = cupy.zeros((M, N), dtype), cupy.zeros(1, numpy.float64)
            k[f"batch_loss<{t}>"](row_grid, row_block, (
                y, device[1], *batch.device, d2, numpy.int64(M), numpy.int64(N), numpy.int32(act),
                numpy.int32(loss), total2))
            out.update({"d2": d2, "total2": total2})
        return out

    result = under_every_order(run, inexact=("total", "total2"))
    wide = [a.astype(numpy.float64) for a in (images, targets, W, b)]
    with numpy.errstate(over="ignore"):
        y = _activate(wide[0][batch.rows] @ wide[2].T + wide[3], act)
    close(result["y"], y, dtype, 8)
    if not loss:
        assert not result["d"].any() and result["total"][0] == 0
        return
    target = wide[1][batch.rows]
    yy = result["y"].astype(numpy.float64)  # the cost of the outputs the kernel made
    if loss == Loss.SQUARED_ERROR:
        cost, gradient = 0.5 * ((target - yy) ** 2).sum(), yy - target
    else:
        cost = REFERENCE.softmax_cross_entropy(yy, target).sum()
        gradient = REFERENCE.softmax_cross_entropy_gradient(yy, target)
    for d, total in (("d", "total"), ("d2", "total2")):
        close(result[d], _slope(gradient, yy, act), dtype, 64)
        assert result[total][0] == pytest.approx(cost, rel=64 * TOLERANCE[dtype], abs=1e-300)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M, N, R", [(1, 1, 1), (3, 5, 7), (8, 8, 33), (16, 9, 40), (11, 17, 64)])
def test_narrow_update(emulated, dtype, M, N, R):
    """The weight step of a layer with few outputs: (COLUMNS, SLICES) blocks whose sums meet in shared
    memory."""
    cupy, kernels = emulated.cupy, emulated.kernels
    k, t = kernels.epoch_kernels(dtype), _ctype(dtype)
    nmax = next(w for w in kernels.NARROW_UPDATE if M <= w)
    rng = numpy.random.default_rng(M * N * R)
    batch = Batch(cupy, R + 6, R, rng)
    images = rng.normal(size=(R + 6, N)).astype(dtype)
    G = rng.normal(size=(R, M)).astype(dtype)
    W, b = rng.normal(size=(M, N)).astype(dtype), rng.normal(size=M).astype(dtype)
    device = [cupy.asarray(a) for a in (images, G, numpy.array(0.5, dtype))]

    def run():
        w, bias, dw, db = cupy.asarray(W), cupy.asarray(b), cupy.empty((M, N), dtype), cupy.empty(M, dtype)
        grid, block = (kernels._blocks(N, kernels.COLUMNS),), (kernels.COLUMNS, kernels.SLICES)
        k[f"narrow_update<{t}, {nmax}>"](grid, block, (
            device[1], device[0], *batch.device, numpy.int32(1), w, bias, dw, db, device[2], numpy.int32(M),
            numpy.int64(N), numpy.int64(R)))
        return {"W": w, "b": bias, "dW": dw, "db": db}

    result = under_every_order(run)
    dW = G.astype(numpy.float64).T @ images.astype(numpy.float64)[batch.rows]
    db = G.astype(numpy.float64).sum(0)
    close(result["dW"], dW, dtype, 8)
    close(result["db"], db, dtype, 8)
    close(result["W"], W - 0.5 * dW, dtype, 8)
    close(result["b"], b - 0.5 * db, dtype, 8)


def test_advance_cursor(emulated):
    cupy, kernels = emulated.cupy, emulated.kernels
    cursor = cupy.asarray(numpy.array([5], numpy.int64))
    kernels.epoch_kernels(numpy.float32)["advance_cursor"]((1,), (1,), (cursor, numpy.int64(300)))
    assert cursor.get()[0] == 305


# ==================================================================================== the backend's methods


def _contract():
    from tests.backends import test_contract

    return test_contract


#: Cases of the contract table left to the slow run: large batches and images (every method keeps
#: cases of each layout and edge shape in the quick run).
LARGE = re.compile(r"1000 rows|601 rows|784|28x28|14x14|wide layer")


def _contract_cases(quick):
    cases = _contract().CASES
    return [c for c in cases if (LARGE.search(str(c)) is None) == quick or not quick]


def test_the_quick_contract_run_covers_every_method(emulated):
    """Every method of the contract table, and every public method the CuPy backend writes itself."""
    quick, table = {c.method for c in _contract_cases(True)}, {c.method for c in _contract().CASES}
    assert quick == table
    own = {name for name, value in vars(type(emulated.backend)).items()
           if inspect.isfunction(value) and not name.startswith("_")}
    assert own <= table, f"CupyBackend methods without a contract case: {sorted(own - table)}"


def _keeps_the_contract(backend, dtype, cases):
    """Every case of the contract table (all reported at once, not only the first that fails)."""
    contract, failures = _contract(), []
    for case in cases:
        try:
            if case.check is not None:
                case.check(backend, dtype)
            else:
                contract._run(backend, dtype, case)
        except Exception as error:
            failures.append(f"{case}: {type(error).__name__}: {str(error)[:300]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_contract_method_on_small_cases(emulated, dtype):
    _keeps_the_contract(emulated.backend, dtype, _contract_cases(True))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_contract_case(emulated, dtype):
    _keeps_the_contract(emulated.backend, dtype, _contract().CASES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["linear_backward", "linear_sigmoid_backward", "linear_relu_backward"])
def test_the_backward_of_an_empty_batch(emulated, dtype, method):
    """No rows: the weight gradient is a product over zero rows, which CuPy hands to cuBLAS's gemm with
    leading dimensions of 0, and cuBLAS refuses those (lda >= max(1, rows)) even when k is 0."""
    backend, cupy = emulated.backend, emulated.cupy
    x, dz = cupy.empty((0, 6), dtype), cupy.empty((0, 4), dtype)
    W = cupy.asarray(numpy.ones((4, 6), dtype))
    for accumulate in (False, True):
        dW, db = cupy.asarray(numpy.full((4, 6), 2.0, dtype)), cupy.asarray(numpy.full((1, 4), 3.0, dtype))
        dx = getattr(backend, method)(x, W, *((dz,) if method == "linear_backward" else (dz, dz)), dW, db,
                                      accumulate=accumulate, need_dx=True)
        assert dx.shape == (0, 6)
        assert (dW.get() == (2.0 if accumulate else 0.0)).all()  # a sum of no rows: 0, or nothing added
        assert (db.get() == (3.0 if accumulate else 0.0)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_weight_gradient_without_cublas_gemm(emulated, monkeypatch, dtype):
    """CuPy without cupy.cublas.gemm (before v9): matmul, into dW or added to it."""
    monkeypatch.setattr(emulated.kernels, "_gemm", None)
    rng = numpy.random.default_rng(8)
    x, dz, dW = rng.normal(size=(7, 5)), rng.normal(size=(7, 3)), rng.normal(size=(3, 5))
    for accumulate in (False, True):
        ours = emulated.cupy.asarray(dW.astype(dtype))
        emulated.kernels.weight_gradient(*(emulated.cupy.asarray(a.astype(dtype)) for a in (dz, x)), ours,
                                         accumulate)
        close(ours.get(), dz.T @ x + (dW if accumulate else 0), dtype, 4)


def test_other_dtypes_go_to_the_reference(emulated):
    """float16, and mixed dtypes, take the NumPy reference's path on the device arrays."""
    backend, cupy = emulated.backend, emulated.cupy
    z = numpy.random.default_rng(9).normal(size=(4, 5)).astype(numpy.float16)
    for method in ("sigmoid", "relu", "softmax"):
        ours = getattr(backend, method)(cupy.asarray(z))
        assert ours.dtype == numpy.float16
        assert numpy.allclose(ours.get(), getattr(REFERENCE, method)(z), rtol=1e-3, atol=1e-3), method
    param, grad = cupy.asarray(numpy.ones(3, numpy.float32)), cupy.asarray(numpy.ones(3, numpy.float64))
    backend.sgd_update(param, grad, 0.5)
    assert param.dtype == numpy.float32 and numpy.array_equal(param.get(), numpy.full(3, 0.5, numpy.float32))


def test_create_says_why_there_is_no_device(emulated, monkeypatch):
    module = inspect.getmodule(type(emulated.backend))
    runtime = emulated.cupy.cuda.runtime
    monkeypatch.setattr(runtime, "getDeviceCount", lambda: 0)
    with pytest.raises(fastprop.BackendUnavailableError, match="no CUDA device is visible"):
        module.create()

    def no_driver():
        raise runtime.CUDARuntimeError("cudaErrorNoDevice")

    monkeypatch.setattr(runtime, "getDeviceCount", no_driver)
    with pytest.raises(fastprop.BackendUnavailableError, match="cudaErrorNoDevice"):
        module.create()


def test_overrides_keep_the_contract_signatures(emulated):
    contract = _contract()
    for method, reference in contract._public_methods(Backend).items():
        ours = getattr(type(emulated.backend), method)
        assert contract._parameters(ours) == contract._parameters(reference), method


def test_info_names_an_h200(emulated):
    info = emulated.backend.info()
    assert info["version"].startswith("cupy 13") and info["device"] == "NVIDIA H200 (CUDA device 0)"
    assert 0 <= info["memory_used_bytes"] <= info["memory_total_bytes"]
    status = fastprop.available_backends()["cupy"]
    assert status.available and status.device == info["device"]


# ==================================================================================== layers


GRADCHECK_MODELS = {
    "linear+sigmoid": (lambda: Network([Linear(6, 5), Sigmoid()]), MeanSquareError, 5, False),
    # seeded weights: every ReLU input of the batch stays >= 1e-3 away from the kink at 0 (with NumPy's
    # global draws, a sample whose seven hidden units are all off feeds the next ReLU exactly 0)
    "relu": (lambda: Network([Linear(6, 7, rng=4), ReLU(), Linear(7, 4, rng=5), ReLU(), Linear(4, 3, rng=6)]),
             MeanSquareError, 3, False),
    "softmax+cross-entropy": (lambda: Network([Linear(6, 3), SoftMax()]), CrossEntropy, 3, True),
    "softmax-cross-entropy": (lambda: Network([Linear(6, 8), Sigmoid(), Linear(8, 3)]), SoftmaxCrossEntropy,
                              3, True),
    "cnn": (lambda: Network([Reshape((3, 9, 8)), Conv2D(3, 4, (3, 2), padding=1, rng=7), ReLU(),
                             MaxPool2D(3, stride=2), Conv2D(4, 5, 3, stride=2, padding=1, rng=8), Flatten(),
                             Linear(20, 3, rng=9)]), MeanSquareError, 3, False),
}


@pytest.mark.parametrize("model", GRADCHECK_MODELS)
def test_gradients_match_finite_differences(emulated, model):
    build, cost, n_out, one_hot = GRADCHECK_MODELS[model]
    with fastprop.use_backend("cupy", dtype="float64"):
        net = build()
    assert net.backend is emulated.backend
    rng = numpy.random.default_rng(3)
    n_in = 3 * 9 * 8 if model == "cnn" else 6
    x = rng.normal(size=(4, n_in))
    target = numpy.eye(n_out)[rng.integers(0, n_out, 4)] if one_hot else rng.random((4, n_out))
    result = fastprop.gradcheck(net, cost(), x, target, max_entries=24)
    assert result.passed(1e-6), f"{model}:\n{result}"


FUSED_NETWORKS = {
    "linear+sigmoid, linear+relu": (lambda: [Linear(7, 6, rng=1), Sigmoid(), Linear(6, 5, rng=2), ReLU(),
                                             Linear(5, 3, rng=3)], (5, 7)),
    "conv+relu+pool, conv+relu": (lambda: [Reshape((2, 8, 7)), Conv2D(2, 3, 3, padding=1, rng=1), ReLU(),
                                           MaxPool2D(2), Conv2D(3, 4, 2, rng=2), ReLU(), Flatten(),
                                           Linear(24, 3, rng=3)], (3, 2 * 8 * 7)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FUSED_NETWORKS)
def test_fused_stages_match_the_numpy_backend(emulated, dtype, name):
    build, shape = FUSED_NETWORKS[name]
    with fastprop.use_backend("cupy", dtype=dtype):
        fused, unfused = Network(build()), Network(build(), fuse=False)
    with fastprop.use_backend("numpy", dtype=dtype):
        reference = Network(build())
    rng = numpy.random.default_rng(5)
    x, target = rng.normal(size=shape), rng.random((shape[0], 3))
    outputs = []
    for net in (fused, unfused, reference):
        backend = net.backend
        net.zero_gradients()
        y = net.forward(backend.asarray(x, dtype))
        cost = MeanSquareError()
        net.backward(cost.gradient(cost.estimate(backend.asarray(target, dtype), y)))
        outputs.append([backend.to_numpy(y)] + [backend.to_numpy(p.gradient) for p in net.parameters()])
    for ours, theirs in zip(outputs[0], outputs[2]):
        close(ours, theirs, dtype, 16)
    for ours, theirs in zip(outputs[1], outputs[2]):
        close(ours, theirs, dtype, 16)


def test_to_backend_there_and_back(emulated):
    with fastprop.use_backend("numpy", dtype="float64"):
        net = Network([Linear(5, 4, rng=0), Sigmoid(), Linear(4, 2, rng=1)])
    x = numpy.random.default_rng(0).normal(size=(3, 5))
    before = [p.value.copy() for p in net.parameters()]
    expected = net.forward(x)
    net.to_backend("cupy", "float32")
    assert net.backend is emulated.backend
    assert all(isinstance(p.value, emulated.cupy.ndarray) for p in net.parameters())
    assert all(p.value.dtype == numpy.float32 for p in net.parameters())
    close(emulated.backend.to_numpy(net.forward(x)), expected, numpy.float32, 4)
    net.to_backend("numpy", "float64")
    assert all(type(p.value) is numpy.ndarray for p in net.parameters())
    for p, b in zip(net.parameters(), before):
        assert numpy.array_equal(p.value, b.astype(numpy.float32).astype(numpy.float64))


def test_a_checkpoint_round_trip(emulated, tmp_path):
    with fastprop.use_backend("cupy", dtype="float32"):
        net = Network([Reshape((1, 5, 5)), Conv2D(1, 2, 3, rng=0), ReLU(), Flatten(), Linear(18, 3, rng=1)])
    path = tmp_path / "model.fastprop"
    fastprop.save(net, path)
    again = fastprop.load(path, backend="cupy")
    on_host = fastprop.load(path, backend="numpy")
    x = numpy.random.default_rng(1).normal(size=(2, 25)).astype(numpy.float32)
    for a, b, c in zip(net.parameters(), again.parameters(), on_host.parameters()):
        assert isinstance(b.value, emulated.cupy.ndarray) and type(c.value) is numpy.ndarray
        assert numpy.array_equal(a.value.get(), b.value.get()) and numpy.array_equal(a.value.get(), c.value)
    assert numpy.array_equal(net.forward(x).get(), again.forward(x).get())


def test_a_resumed_run_continues_as_the_uninterrupted_one(emulated, tmp_path):
    """Training with Adam, shuffling, early stopping and a checkpoint every epoch, all on the device:
    stopped after two epochs and resumed for a third, it ends as three epochs in one go."""
    x, t = _dataset(60, 16, 3)
    data = (x, t, *_dataset(20, 16, 3, seed=1))

    def run(epochs, path):
        with fastprop.use_backend("cupy"):
            net = Network([Reshape((1, 4, 4)), Conv2D(1, 2, 3, padding=1, rng=0), ReLU(), MaxPool2D(2),
                           Flatten(), Linear(8, 3, rng=1)])
        train(net, SoftmaxCrossEntropy(), epochs, 16, None, data=data, quiet=True, verbose=False,
              shuffle=True, seed=5, optimizer=fastprop.Adam(learning_rate=0.01), checkpoint=path, patience=3)
        return [p.value.get() for p in net.parameters()]

    whole = run(3, tmp_path / "whole.fastprop")
    run(2, tmp_path / "parts.fastprop")
    resumed = run(3, tmp_path / "parts.fastprop")
    for a, b in zip(whole, resumed):
        assert numpy.array_equal(a, b)


# ==================================================================================== compiled epochs


def _dataset(n, n_in, n_out, seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.random((n, n_in)), numpy.eye(n_out)[rng.integers(0, n_out, n)]


def _step_loop(net, cost_function, images, targets, order, batch_size, learning_rate):
    """The notebook's step loop over the batches of ``order``: ``[(rows, summed cost)]``."""
    backend, batches = net.backend, []
    for start in range(0, images.shape[0], batch_size):
        index = order[start:start + batch_size]
        x, t = backend.take_rows(images, index), backend.take_rows(targets, index)
        net.zero_gradients()
        prediction = net.forward(x)
        cost = cost_function.estimate(t, prediction)
        batches.append((x.shape[0], float(cost.sum(dtype=numpy.float64))))
        net.backward(cost_function.gradient(cost))
        net.update_parameters(learning_rate)
    return batches


EPOCH_MODELS = {  # each covers other kernels: narrow (<= 32 outputs) and dense layers, fused costs
    "narrow sigmoid, squared error": (lambda: [Linear(20, 10, rng=0), Sigmoid()], MeanSquareError),
    "wide layers, squared error": (
        lambda: [Linear(20, 48, rng=0), ReLU(), Linear(48, 37, rng=1), Sigmoid()], MeanSquareError),
    "tiny layers, squared error": (
        lambda: [Linear(20, 6, rng=0), ReLU(), Linear(6, 5, rng=1), Sigmoid()], MeanSquareError),
    "relu, softmax cross-entropy": (
        lambda: [Linear(20, 40, rng=0), ReLU(), Linear(40, 10, rng=1)], SoftmaxCrossEntropy),
    "mixed widths, softmax cross-entropy": (
        lambda: [Linear(20, 33, rng=0), Sigmoid(), Linear(33, 20, rng=1), ReLU(), Linear(20, 12, rng=2)],
        SoftmaxCrossEntropy),
    "wide output, softmax cross-entropy": (
        lambda: [Linear(20, 24, rng=0), Sigmoid(), Linear(24, 45, rng=1)], SoftmaxCrossEntropy),
}


def _compare_epochs(emulated, model, dtype, n=137, batch_size=30, epochs=2, schedules=(SCHEDULES[0],),
                    mode="graph"):
    """A compiled epoch (graphs replayed, or launched one by one in ``mode="eager"``) against the step
    loop on the same shuffled orders: the summed costs, and parameters and gradients after each epoch;
    the same bits under each of ``schedules``."""
    build, cost_type = EPOCH_MODELS[model]
    backend = emulated.backend
    runs = []
    for order_schedule in schedules:
        with fastprop.use_backend("cupy", dtype=dtype):
            fast, slow = Network(build()), Network(build())
        linears = [layer for layer in fast.leaves() if isinstance(layer, Linear)]
        x, t = _dataset(n, linears[0].n_in, linears[-1].n_out)
        images, targets = backend.asarray(x, dtype=dtype), backend.asarray(t, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a capture that fails warns and falls back: not here
            run = backend.compile_epoch(lower(fast, cost_type()), images, targets, batch_size)
        assert run is not None
        rng, seen = numpy.random.default_rng(7), []
        for learning_rate in (0.05, 0.02)[:epochs]:  # a new rate needs no new capture
            order = backend.permutation(rng, n)
            with schedule(order_schedule.threads, order_schedule.blocks, order_schedule.seed), \
                    warnings.catch_warnings(record=mode != "graph"):
                if mode == "graph":
                    warnings.simplefilter("error")
                totals = backend.to_numpy(run(order, learning_rate))
            assert run.mode == mode
            assert totals.shape == (2,) and totals.dtype == numpy.float64
            batches = _step_loop(slow, cost_type(), images, targets, order, batch_size, learning_rate)
            first = batches[0][0]  # the contract's full batches are as long as the first
            full = sum(total for rows, total in batches if rows == first)
            last = sum(total for rows, total in batches if rows != first)
            assert totals[0] == pytest.approx(full, rel=16 * TOLERANCE[dtype])
            assert totals[1] == pytest.approx(last, rel=16 * TOLERANCE[dtype], abs=0.0)
            for a, b in zip(fast.parameters(), slow.parameters()):
                name = f"{a.layer!r}.{a.name}"
                close(backend.to_numpy(a.value), backend.to_numpy(b.value), dtype, 64)
                gradients = backend.to_numpy(a.gradient), backend.to_numpy(b.gradient)
                assert relative_error(*gradients) <= 256 * TOLERANCE[dtype], name
            seen.append([backend.to_numpy(p.value) for p in fast.parameters()])
        # The program leaves marking the gradients written to its caller (train's EpochRunner does);
        # tests/test_cupy_backend.py's _compare_epochs still expects the program to do it.
        assert all(p.fresh for layer in linears for p in layer.parameters())
        runs.append((run, seen))
    for _, seen in runs[1:]:  # another order of threads and blocks: the same parameters, bit for bit
        for a, b in zip(itertools.chain(*runs[0][1]), itertools.chain(*seen)):
            assert a.tobytes() == b.tobytes()
    return runs[0][0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", EPOCH_MODELS)
def test_graph_replayed_epoch_equals_the_step_loop(emulated, model, dtype):
    run = _compare_epochs(emulated, model, dtype)
    assert run._chunk is None and run._tail is not None


def test_epochs_give_the_same_bits_in_every_thread_order(emulated):
    _compare_epochs(emulated, "mixed widths, softmax cross-entropy", numpy.float32, n=64, batch_size=20,
                    epochs=1, schedules=SCHEDULES)


@pytest.mark.parametrize("n", [137, 120])  # with and without a partial last batch
def test_long_epochs_replay_a_graph_with_a_device_cursor(emulated, monkeypatch, n):
    epoch = sys.modules["fastprop.backends.cupy.epoch"]  # loaded with the emulated backend
    monkeypatch.setattr(epoch.EpochProgram, "max_steps_per_graph", 2)
    run = _compare_epochs(emulated, "relu, softmax cross-entropy", numpy.float64, n=n)
    assert run._repeats == 2 and run._chunk.launched == 2 * 2  # two epochs


@pytest.mark.parametrize("multiprocessors, tile", [(1, (64, 64)), (2, (32, 64)), (132, (32, 32))])
def test_larger_tiles_on_a_device_with_fewer_multiprocessors(emulated, monkeypatch, multiprocessors, tile):
    """The tile is the largest that fills the device: on an H200 small epochs take 32 x 32 tiles, so
    fewer multiprocessors make them take the larger ones."""
    monkeypatch.setitem(emulated.cupy.cuda.runtime.properties, "multiProcessorCount", multiprocessors)
    run = _compare_epochs(emulated, "wide layers, squared error", numpy.float64, n=100, batch_size=64,
                          epochs=1)
    names = " ".join(run._tail.descriptions)
    assert f"dense_forward<double, {tile[0]}, {tile[1]}>" in names


def test_a_batch_larger_than_the_data_is_one_step(emulated):
    run = _compare_epochs(emulated, "tiny layers, squared error", numpy.float32, n=23, batch_size=40)
    assert len(run._tail.descriptions) == 5  # one step: two forwards, an input gradient, two weight steps


def test_weights_set_between_epochs_are_captured_again(emulated):
    """The graphs hold the arrays' addresses: a weight array replaced (``layer.w = ...``) is captured
    again, and the next epoch updates the new array, as the step loop does."""
    build, cost_type = EPOCH_MODELS["relu, softmax cross-entropy"]
    backend, n = emulated.backend, 90
    with fastprop.use_backend("cupy", dtype="float64"):
        fast, slow = Network(build()), Network(build())
    x, t = _dataset(n, 20, 10)
    images, targets = backend.asarray(x, dtype=numpy.float64), backend.asarray(t, dtype=numpy.float64)
    run = backend.compile_epoch(lower(fast, cost_type()), images, targets, 30)
    rng, graphs = numpy.random.default_rng(7), []
    for epoch in range(2):
        order = backend.permutation(rng, n)
        run(order, 0.05)
        graphs.append(run._tail)
        _step_loop(slow, cost_type(), images, targets, order, 30, 0.05)
        if epoch == 0:
            new = numpy.random.default_rng(9).normal(0, 0.1, (40, 20))
            fast.layers[0].w, slow.layers[0].w = new, new
    assert graphs[0] is not graphs[1]
    for a, b in zip(fast.parameters(), slow.parameters()):
        close(backend.to_numpy(a.value), backend.to_numpy(b.value), numpy.float64, 64)


def test_train_epoch_on_host_data_prepares_the_epoch_once(emulated, monkeypatch):
    """The notebook's ``train_epoch`` on NumPy arrays, epoch after epoch: the backend's checksum of the
    host images and labels tells that they did not change, so the compiled epoch is made once."""
    x, t = _dataset(60, 20, 10)
    backend, compiled = emulated.backend, []
    compile_epoch = backend.compile_epoch
    monkeypatch.setattr(backend, "compile_epoch", lambda *args: compiled.append(1) or compile_epoch(*args))
    with fastprop.use_backend("cupy"):
        net = Network([Linear(20, 10, rng=0), Sigmoid()])
    cost = MeanSquareError()
    costs = [fastprop.train_epoch(e, net, x, t, cost, 25, 0.05, quiet=True) for e in (1, 2)]
    assert len(compiled) == 1 and costs[1] < costs[0]
    x[0, 0] += 1  # changed in place: prepared again
    fastprop.train_epoch(3, net, x, t, cost, 25, 0.05, quiet=True)
    assert len(compiled) == 2


def test_epochs_run_launch_by_launch_where_graphs_cannot_be_captured(emulated, monkeypatch):
    """ROCm builds of CuPy capture no graphs, and a capture may fail: the same launches then run from
    Python, with a warning for a failed capture."""
    monkeypatch.setattr(emulated.cupy.cuda.runtime, "is_hip", True)
    run = _compare_epochs(emulated, "mixed widths, softmax cross-entropy", numpy.float64, mode="eager")
    assert run._tail is None and run._eager
    monkeypatch.setattr(emulated.cupy.cuda.runtime, "is_hip", False)

    def refuse(self, mode=None):
        raise emulated.cupy.cuda.runtime.CUDARuntimeError("cudaErrorStreamCaptureUnsupported")

    monkeypatch.setattr(emulated.cupy.cuda.Stream, "begin_capture", refuse)
    run = _compare_epochs(emulated, "wide output, softmax cross-entropy", numpy.float32, epochs=1,
                          mode="eager")
    with pytest.warns(UserWarning, match="capture failed.*launch by launch"):
        run._build()


def test_the_epoch_program_refuses_what_it_cannot_run(emulated, monkeypatch):
    backend, kernels = emulated.backend, emulated.kernels
    build, cost_type = EPOCH_MODELS["narrow sigmoid, squared error"]
    with fastprop.use_backend("cupy", dtype="float32"):
        net = Network(build())
    x, t = _dataset(40, 20, 10)
    images, targets = backend.asarray(x, dtype=numpy.float32), backend.asarray(t, dtype=numpy.float32)
    run = backend.compile_epoch(lower(net, cost_type()), images, targets, 16)
    with pytest.raises(ValueError, match="order of 40 rows"):
        run(backend.permutation(numpy.random.default_rng(0), 39), 0.1)
    parameter = net.parameters()[0]
    kept = parameter.value
    parameter.value, parameter.version = kept.astype(numpy.float64), parameter.version + 1
    with pytest.raises(RuntimeError, match="call train again"):
        run(backend.permutation(numpy.random.default_rng(0), 40), 0.1)
    parameter.value = kept

    def broken(dtype):
        raise host_module.CompileException("no toolkit")

    monkeypatch.setattr(kernels, "epoch_kernels", broken)
    with pytest.warns(UserWarning, match="epoch kernels are unavailable"):
        assert backend.compile_epoch(lower(net, cost_type()), images, targets, 16) is None


def test_compile_epoch_leaves_other_models_to_the_step_loop(emulated):
    backend = emulated.backend
    with fastprop.use_backend("cupy"):
        net = Network([Linear(6, 4), SoftMax()])
    images, targets = (backend.asarray(numpy.ones(shape), numpy.float32) for shape in ((10, 6), (10, 4)))
    assert backend.compile_epoch(lower(net, CrossEntropy()), images, targets, 5) is None


@pytest.mark.parametrize("shuffle", [False, True])
def test_train_with_host_data_runs_the_graph_epoch(emulated, monkeypatch, shuffle):
    """``train`` on NumPy data: the data moves to the device once, and epochs run as graphs."""
    x, t = _dataset(90, 20, 10)
    validation = _dataset(30, 20, 10, seed=1)
    backend, programs = emulated.backend, []
    with fastprop.use_backend("cupy"):
        net = Network([Linear(20, 10, rng=0), Sigmoid()])
        reference = Network([Linear(20, 10, rng=0), Sigmoid()])
    compile_epoch = backend.compile_epoch
    monkeypatch.setattr(backend, "compile_epoch",
                        lambda *args: programs.append(compile_epoch(*args)) or programs[-1])
    history = train(net, MeanSquareError(), 1, 25, 0.05, data=(x, t, *validation), quiet=True, verbose=False,
                    shuffle=shuffle, seed=4)
    assert programs and programs[0] is not None and programs[0].mode == "graph"
    order = (backend.permutation(numpy.random.default_rng((4, 1)), 90) if shuffle
             else backend.asarray(numpy.arange(90)))
    images, targets = backend.asarray(x, dtype=numpy.float32), backend.asarray(t, dtype=numpy.float32)
    batches = _step_loop(reference, MeanSquareError(), images, targets, order, 25, 0.05)
    mean_cost = numpy.mean([total / (rows * 10) for rows, total in batches])
    assert history.cost[0] == pytest.approx(mean_cost, rel=1e-5)
    for a, b in zip(net.parameters(), reference.parameters()):
        close(backend.to_numpy(a.value), backend.to_numpy(b.value), numpy.float32, 8)
    assert not any(p.fresh for p in net.parameters())  # the gradients hold the last batch's, as after a step
