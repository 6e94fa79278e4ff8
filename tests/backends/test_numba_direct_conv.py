"""The Numba backend's direct convolution (few inputs per output: a first layer on raw pixels) against
a float64 convolution written here, its independence of the thread count, a finite-difference check,
and the vector registers its block sizes are chosen for."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy
import pytest

numba = pytest.importorskip("numba", reason="numba is not installed (pip install 'fastprop[numba]')")

import fastprop  # noqa: E402
from fastprop import Conv2D, MeanSquareError, Network, ReLU  # noqa: E402
from fastprop.backends import load_backend  # noqa: E402
from fastprop.backends.numba import convolution as numba_convolution  # noqa: E402
from fastprop.backends.numba import target  # noqa: E402
from tests.conftest import relative_error  # noqa: E402
from tests.helpers import on_one_and_two_threads  # noqa: E402

TOLERANCE = {numpy.float32: 1e-5, numpy.float64: 1e-12}  # sums of up to 3,136 terms
DTYPES = pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
RELU = pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])

#: n, H, W, C, K, (kh, kw), stride, padding: odd sizes, channel counts off every vector width, rows
#: shorter and longer than a register block of pixels, windows up to the direct path's limit.
CASES = {
    "3x3 pad 1, K=5": (3, 7, 9, 1, 5, (3, 3), (1, 1), (1, 1)),
    "3x3 stride 2, C=2, K=17": (2, 8, 6, 2, 17, (3, 3), (2, 2), (0, 0)),
    "1x3 stride (1, 2) pad (2, 1), C=3, K=33": (2, 9, 11, 3, 33, (1, 3), (1, 2), (2, 1)),
    "5x5 pad 2, K=32": (2, 10, 13, 1, 32, (5, 5), (1, 1), (2, 2)),
    "3x3 stride (2, 1) pad (2, 0), C=3, K=7": (1, 5, 4, 3, 7, (3, 3), (2, 1), (2, 0)),
    "3x1 pad (1, 2), K=16, one column wider than the window": (2, 6, 1, 1, 16, (3, 1), (1, 1), (1, 2)),
    "the CNN's first layer": (4, 28, 28, 1, 32, (3, 3), (1, 1), (1, 1)),
}


@pytest.fixture(scope="module")
def backend():
    return load_backend("numba")


def _windows(x, kernel, stride, padding):
    """``windows[p, q, i, r, c, j] = xpad[i, r * sh + p, c * sw + q, j]`` in float64."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = numpy.pad(numpy.asarray(x, numpy.float64), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    ho, wo = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    return numpy.array([[xp[:, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw] for q in range(kw)]
                        for p in range(kh)])


def _reference_forward(x, W, b, stride, padding, relu):
    z = numpy.einsum("pqircj,kjpq->irck", _windows(x, W.shape[2:], stride, padding), W) + b[0]
    return numpy.maximum(z, 0) if relu else z


def _reference_backward(x, W, y, dy, stride, padding, relu):
    """``(dW, db, dx)`` of :func:`_reference_forward`, ``dx`` by scattering each tap's share."""
    (sh, sw), (ph, pw), (kh, kw) = stride, padding, W.shape[2:]
    dz = numpy.where(y > 0, dy, 0) if relu else numpy.asarray(dy, numpy.float64)
    dW = numpy.einsum("pqircj,irck->kjpq", _windows(x, (kh, kw), stride, padding), dz)
    n, H, Wd, C = x.shape
    ho, wo = dz.shape[1:3]
    dxp = numpy.zeros((n, H + 2 * ph, Wd + 2 * pw, C))
    for p in range(kh):
        for q in range(kw):
            dxp[:, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw] += numpy.einsum(
                "irck,kj->ircj", dz, W[:, :, p, q])
    return dW, dz.sum(axis=(0, 1, 2))[None], dxp[:, ph:ph + H, pw:pw + Wd]


def _arrays(case, dtype, seed=5):
    n, H, Wd, C, K, kernel, stride, padding = CASES[case]
    assert C * kernel[0] * kernel[1] <= numba_convolution.DIRECT_CONVOLUTION  # the path under test
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(n, H, Wd, C)).astype(dtype)
    W = rng.normal(0, 0.5, (K, C, *kernel)).astype(dtype)
    b = rng.normal(0, 0.5, (1, K)).astype(dtype)
    return x, W, b, stride, padding


@DTYPES
@RELU
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_a_float64_convolution(backend, case, relu, dtype):
    x, W, b, stride, padding = _arrays(case, dtype)
    y = backend.conv2d_forward(x, W, b, stride, padding, relu=relu)
    expected = _reference_forward(x, W, b, stride, padding, relu)
    assert y.dtype == dtype and y.shape == expected.shape
    assert relative_error(y, expected) <= TOLERANCE[dtype]
    if relu:
        assert (y >= 0).all() and (y == 0).any() and (y > 0).any()


@DTYPES
@RELU
@pytest.mark.parametrize("accumulate", [True, False], ids=["accumulate", "overwrite"])
@pytest.mark.parametrize("case", CASES)
def test_backward_matches_a_float64_convolution(backend, case, relu, accumulate, dtype):
    x, W, b, stride, padding = _arrays(case, dtype)
    rng = numpy.random.default_rng(8)
    y = backend.conv2d_forward(x, W, b, stride, padding, relu=relu)
    dy = rng.normal(size=y.shape).astype(dtype)
    dW0, db0 = rng.normal(size=W.shape).astype(dtype), rng.normal(size=b.shape).astype(dtype)
    dW, db = dW0.copy(), db0.copy()
    dx = backend.conv2d_backward(x, W, y, dy, dW, db, stride, padding, relu=relu, accumulate=accumulate)
    expected_dW, expected_db, expected_dx = _reference_backward(x, W, y, dy, stride, padding, relu)
    if accumulate:
        expected_dW, expected_db = expected_dW + dW0, expected_db + db0
    assert dW.dtype == db.dtype == dx.dtype == dtype
    assert relative_error(dW, expected_dW) <= TOLERANCE[dtype]
    assert relative_error(db, expected_db) <= TOLERANCE[dtype]
    assert relative_error(dx, expected_dx) <= TOLERANCE[dtype]


def _both_directions(backend, dtype):
    """Forward and backward outputs of a few cases, on images enough for several gradient chunks."""
    outputs = []
    for case in ("the CNN's first layer", "3x3 stride 2, C=2, K=17"):
        x, W, b, stride, padding = _arrays(case, dtype)
        x = numpy.concatenate([x] * 7)  # 28 or 14 images: chunks of the batch sums beyond the first
        y = backend.conv2d_forward(x, W, b, stride, padding, relu=True)
        dW, db = numpy.zeros_like(W), numpy.zeros_like(b)
        dy = numpy.random.default_rng(3).normal(size=y.shape).astype(dtype)
        dx = backend.conv2d_backward(x, W, y, dy, dW, db, stride, padding, relu=True, accumulate=False)
        outputs += [y, dW, db, dx]
    return outputs


@DTYPES
def test_results_are_the_same_bits_for_one_and_two_threads(backend, dtype):
    one, two = on_one_and_two_threads(lambda: _both_directions(backend, dtype))
    for first, second in zip(one, two, strict=True):
        assert numpy.array_equal(first, second)


@pytest.mark.parametrize("fused_relu", [False, True], ids=["conv", "conv + relu"])
def test_a_small_first_layer_passes_gradcheck(fused_relu):
    rng = numpy.random.default_rng(6)
    with fastprop.use_backend("numba", dtype="float64"):
        conv = Conv2D(1, 7, 3, padding=1, rng=4)
        layer = Network([conv, ReLU()]) if fused_relu else conv
    conv.b = rng.normal(size=(1, 7))
    x = rng.normal(size=(2, 1, 6, 5))
    target_values = rng.normal(size=layer.forward(x).shape)
    result = fastprop.gradcheck(layer, MeanSquareError(), x, target_values, max_entries=32)
    assert result.passed(1e-6), str(result)
    assert len(result.errors) == 3  # w, b and the input


@pytest.mark.parametrize("length", [3, 10, 14, 25], ids=lambda n: f"line of {n}")
def test_padded_rows_fill_exactly_their_line(backend, length):
    """The input rows under one output row, padded, as long as the line they go to: shorter lines
    (a stride that skips the last columns) must leave what follows them untouched."""
    from fastprop.backends.numba.kernels.direct import _padded_rows

    x = numpy.random.default_rng(1).normal(size=(2, 5, 6, 2))
    sentinel = 7.5
    for r, sh, ph, pw in ((0, 1, 1, 2), (1, 2, 0, 0), (3, 1, 2, 1)):
        room = numpy.full((3, length + 4), sentinel)
        line = room[:, :length]  # whatever follows each row in memory is the sentinel
        _padded_rows(x, 1, r, sh, ph, pw, line)
        padded = numpy.pad(x[1], ((ph, ph + 3), (pw, length), (0, 0)))[r * sh:r * sh + 3]
        assert numpy.array_equal(line, padded.reshape(3, -1)[:, :length])
        assert (room[:, length:] == sentinel).all()



PLANE_SHAPES = [  # n, H, W, C, kh, kw, ph, pw
    (3, 28, 28, 1, 3, 3, 1, 1), (4, 7, 9, 2, 3, 2, 1, 0), (2, 5, 6, 3, 2, 3, 0, 2), (3, 4, 4, 1, 5, 5, 2, 2)]


@pytest.mark.parametrize("shape", PLANE_SHAPES, ids=lambda s: "{}x{}x{}x{}, {}x{}, padding {},{}".format(*s))
@DTYPES
def test_tap_planes_sum_to_the_same_bits_as_column_rows(shape, dtype):
    """The input gradient's stride-1 path sums the product's transpose, a plane per tap, row by row; it
    must give exactly what ``col2im_images`` gives from the product itself (the order of the sums kept),
    on the images of a chunk that starts inside the batch, leaving the others untouched."""
    from fastprop.backends.numba.kernels.conv import col2im_images, col2im_planes

    n, H, Wd, C, kh, kw, ph, pw = shape
    ho, wo = H + 2 * ph - kh + 1, Wd + 2 * pw - kw + 1
    d_columns = numpy.random.default_rng(2).normal(size=((n - 1) * ho * wo, kh * kw * C)).astype(dtype)
    expected, actual = numpy.full((n, H, Wd, C), 7.5, dtype), numpy.full((n, H, Wd, C), 7.5, dtype)
    col2im_images(d_columns, 1, n, kh, kw, 1, 1, ph, pw, expected)
    col2im_planes(numpy.ascontiguousarray(d_columns.T).reshape(-1), d_columns.shape[0], 1, n, kh, kw, ph, pw,
                  actual)
    assert numpy.array_equal(actual, expected)
    assert (actual[0] == 7.5).all()

def _config(name=None, features=None):
    return types.SimpleNamespace(config=types.SimpleNamespace(CPU_NAME=name, CPU_FEATURES=features))


@pytest.mark.parametrize("features, expected", [
    ("+avx,+avx2,+avx512f,+fma,-prefer-256-bit", (64, 32)),
    ("+avx,+avx2,+avx512f,+fma", (32, 32)),  # LLVM's tuning keeps 256-bit vectors
    ("+avx,+avx2,-avx512f,+fma", (32, 16)),
    ("+sse2,-avx,-avx2", (16, 16)),
])
def test_vector_registers_follow_the_features_numba_compiles_for(features, expected):
    unit = target.vector_unit(_config("haswell", features))
    assert (unit.name, unit.bytes, unit.count) == ("haswell", *expected)


def test_without_a_choice_the_vector_registers_are_the_hosts():
    from numba.core.codegen import get_host_cpu_features

    unit = target.vector_unit(_config())
    flags = get_host_cpu_features().split(",")
    assert unit.count == (32 if "+avx512f" in flags else 16)
    assert unit.bytes == (32 if "+avx" in flags else 16)  # the host's features never ask for 512 bits


HASWELL = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+invpcid,+lzcnt,"
           "+mmx,+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,"
           "+xsaveopt,-avx512f")
SUBPROCESS = """
import numpy
from fastprop.backends import load_backend
from fastprop.backends.numba.kernels import blocks, direct
from tests.backends import test_numba_direct_conv as t
unit = (blocks.VECTOR_BYTES, blocks.VECTOR_REGISTERS)
assert unit == (32, 16) and (direct.PIXELS_PER_BLOCK, direct.TAPS_PER_BLOCK) == (6, 5), unit
backend = load_backend("numba")
for dtype in (numpy.float32, numpy.float64):
    for case in ("3x3 stride 2, C=2, K=17", "the CNN's first layer"):
        t.test_forward_matches_a_float64_convolution(backend, case, True, dtype)
        t.test_backward_matches_a_float64_convolution(backend, case, True, False, dtype)
print("ok")
"""


@pytest.mark.slow
def test_avx2_blocks_compute_the_same_convolution(tmp_path):
    """Built for Haswell (AVX2: 16 registers of 32 bytes) in a fresh cache, on whatever CPU runs this."""
    if "+avx2" not in numba.core.codegen.get_host_cpu_features().split(","):
        pytest.skip("this CPU cannot run AVX2 code")
    environment = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL,
                       NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", SUBPROCESS], env=environment, capture_output=True,
                            text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_the_block_sizes_do_not_depend_on_what_was_imported_first():
    """The kernels size their register blocks by the target the backend compiles for, whether the
    kernels module or the backend is imported first (the target is decided once, before either)."""
    report = ("from fastprop.backends import load_backend; "
              "backend = load_backend('numba'); "
              "from fastprop.backends.numba.kernels import blocks; "
              "print(blocks.VECTOR_BYTES, blocks.VECTOR_REGISTERS, backend.info()['instruction_set'])")
    kernels_first = "import fastprop.backends.numba.kernels.direct; " + report
    outputs = []
    for code in (report, kernels_first):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU_")}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]
