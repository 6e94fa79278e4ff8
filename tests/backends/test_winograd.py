"""Winograd F(2x2, 3x3) in the Numba backend: the kernels and the backend's convolutions against a
float64 convolution written here, a finite-difference check of a Conv2D on that path, and the rule
that picks it."""

from __future__ import annotations

import numpy
import pytest

numba = pytest.importorskip("numba", reason="numba is not installed (pip install 'fastprop[numba]')")

import fastprop  # noqa: E402
from fastprop import Conv2D, MeanSquareError  # noqa: E402
from fastprop.backends import load_backend  # noqa: E402
from fastprop.backends.numba import convolution as numba_convolution  # noqa: E402
from fastprop.backends.numba import kernels  # noqa: E402

DTYPES = pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])


@pytest.fixture(scope="module")
def backend():
    return load_backend("numba")


@pytest.fixture
def winograd_on(monkeypatch):
    """Winograd for every 3x3 stride-1 convolution it can run, whatever the default rule says."""
    monkeypatch.setattr(numba_convolution, "WINOGRAD_CHANNELS", 1)


def reference_conv(x, W, b, padding):
    """Stride-1 cross-correlation in float64 with its sum of absolute terms: ``(y, |terms|)``."""
    (ph, pw), (kh, kw) = padding, W.shape[2:]
    x, W = x.astype(numpy.float64), W.astype(numpy.float64)
    xpad = numpy.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    windows = numpy.lib.stride_tricks.sliding_window_view(xpad, (kh, kw), axis=(1, 2))  # n, ho, wo, C, kh, kw
    y = numpy.einsum("nrcjpq,kjpq->nrck", windows, W) + b.astype(numpy.float64)[0]
    size = numpy.einsum("nrcjpq,kjpq->nrck", abs(windows), abs(W)) + abs(b.astype(numpy.float64)[0])
    return y, size


def reference_backward(x, W, y, dy, padding, relu):
    """``(dx, dW, db)`` of :func:`reference_conv` in float64, by the adjoint of the window sum."""
    (ph, pw), (kh, kw) = padding, W.shape[2:]
    dz = dy.astype(numpy.float64) * ((y > 0) if relu else 1)
    xpad = numpy.pad(x.astype(numpy.float64), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    windows = numpy.lib.stride_tricks.sliding_window_view(xpad, (kh, kw), axis=(1, 2))
    dW = numpy.einsum("nrcjpq,nrck->kjpq", windows, dz)
    dxpad = numpy.zeros(xpad.shape)
    ho, wo = dz.shape[1:3]
    for p in range(kh):
        for q in range(kw):
            tap = W[:, :, p, q].astype(numpy.float64)
            dxpad[:, p:p + ho, q:q + wo] += numpy.einsum("nrck,kj->nrcj", dz, tap)
    dx = dxpad[:, ph:ph + x.shape[1], pw:pw + x.shape[2]]
    return dx, dW, dz.sum(axis=(0, 1, 2))[None]


def assert_within(result, expected, size, dtype):
    """Float32: within ``1e-4`` of the sum of absolute terms; float64: ``1e-12`` of it."""
    tolerance = 1e-4 if dtype == numpy.float32 else 1e-12
    assert result.shape == expected.shape
    assert numpy.all(abs(result - expected) <= tolerance * (size + 1e-30))


def _arrays(rng, n, H, Wd, C, K, dtype):
    return [a.astype(dtype) for a in (rng.normal(size=(n, H, Wd, C)), rng.normal(0, 0.3, (K, C, 3, 3)),
                                      rng.normal(size=(1, K)))]


# (n, H, W, C, K): odd and even sizes, odd channel counts, one image and three
SHAPES = [(1, 5, 5, 5, 3), (3, 6, 7, 17, 19), (3, 8, 8, 16, 21), (1, 3, 4, 7, 9)]


@DTYPES
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_compute_the_convolution(shape, padding, dtype):
    """Filter and input transforms, the 16 products and the output transform make the convolution."""
    n, H, Wd, C, K = shape
    x, W, b = _arrays(numpy.random.default_rng(0), n, H, Wd, C, K, dtype)
    ho, wo = H + 2 * padding - 2, Wd + 2 * padding - 2
    tile_rows, tile_columns = (ho + 1) // 2, (wo + 1) // 2
    tiles = n * tile_rows * tile_columns
    U = numpy.empty((16, C, K), dtype)
    kernels.winograd_filter(W, False, U)
    V, M = numpy.empty((16, tiles * C), dtype), numpy.empty((16, tiles * K), dtype)
    y = numpy.full((n, ho, wo, K), numpy.nan, dtype)
    for first in range(0, tiles, 4):  # chunks of four tiles, the last one short
        count = min(4, tiles - first)
        kernels.winograd_input(x, padding, padding, tile_rows, tile_columns, first, count, 3, V)
        for xi in range(16):
            M[xi, :count * K] = (V[xi, :count * C].reshape(count, C) @ U[xi]).ravel()
        kernels.winograd_output(M, b, False, tile_rows, tile_columns, first, count, y)
    expected, size = reference_conv(x, W, b, (padding, padding))
    assert_within(y, expected, size, dtype)


@DTYPES
def test_flipped_filter_is_the_rotated_transposed_filter(dtype):
    W = numpy.random.default_rng(1).normal(size=(5, 3, 3, 3)).astype(dtype)
    flipped, expected = numpy.empty((16, 5, 3), dtype), numpy.empty((16, 5, 3), dtype)
    kernels.winograd_filter(W, True, flipped)
    rotated = numpy.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    kernels.winograd_filter(rotated, False, expected)
    numpy.testing.assert_array_equal(flipped, expected)


@DTYPES
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("shape", SHAPES[1:])
def test_backend_convolution_on_the_winograd_path(backend, winograd_on, shape, padding, relu, dtype):
    n, H, Wd, C, K = shape
    rng = numpy.random.default_rng(2)
    x, W, b = _arrays(rng, n, H, Wd, C, K, dtype)
    stride, pad = (1, 1), (padding, padding)
    y = backend.conv2d_forward(x, W, b, stride, pad, relu=relu)
    expected, size = reference_conv(x, W, b, pad)
    assert_within(y, numpy.maximum(expected, 0) if relu else expected, size, dtype)

    dy = rng.normal(size=y.shape).astype(dtype)
    dx_expected, dW_expected, db_expected = reference_backward(x, W, y, dy, pad, relu)
    for accumulate, need_dx in [(True, True), (False, True), (True, False)]:
        dW, db = numpy.ones_like(W), numpy.ones_like(b)
        dx = backend.conv2d_backward(x, W, y, dy, dW, db, stride, pad, relu=relu,
                                     accumulate=accumulate, need_dx=need_dx)
        start = 1 if accumulate else 0
        tolerance = 1e-4 if dtype == numpy.float32 else 1e-10
        scale = n * H * Wd * C
        numpy.testing.assert_allclose(dW, start + dW_expected, atol=tolerance * scale)
        numpy.testing.assert_allclose(db, start + db_expected, atol=tolerance * scale)
        if not need_dx:
            assert dx is None
            continue
        # |terms| of dx: the same adjoint on absolute values
        dx_size = reference_backward(x, abs(W), y, abs(dy), pad, relu)[0]
        assert_within(dx, dx_expected, dx_size, dtype)


def test_conv2d_layer_passes_gradcheck_on_the_winograd_path(winograd_on):
    with fastprop.use_backend("numba", dtype="float64"):
        layer = Conv2D(16, 17, 3, padding=1, rng=3)
    rng = numpy.random.default_rng(4)
    layer.b[...] = rng.normal(0, 0.1, layer.b.shape)
    x, target = rng.normal(size=(2, 16, 5, 6)), rng.normal(size=(2, 17, 5, 6))
    result = fastprop.gradcheck(layer, MeanSquareError(), x, target)
    assert result.passed(1e-6), str(result)


def test_rule_picks_winograd_for_3x3_stride_1_only(monkeypatch):
    monkeypatch.setattr(numba_convolution, "WINOGRAD_CHANNELS", 16)
    W = numpy.empty((64, 32, 3, 3))
    assert numba_convolution._winograd(W, (1, 1), (1, 1))
    assert not numba_convolution._winograd(W, (2, 2), (1, 1))
    assert not numba_convolution._winograd(W, (1, 1), (3, 3))
    assert not numba_convolution._winograd(numpy.empty((64, 32, 5, 5)), (1, 1), (1, 1))
    assert not numba_convolution._winograd(numpy.empty((8, 32, 3, 3)), (1, 1), (1, 1))
    monkeypatch.setattr(numba_convolution, "WINOGRAD_CHANNELS", None)
    assert not numba_convolution._winograd(W, (1, 1), (1, 1))


def test_cnn_conv2_takes_the_winograd_path_when_enabled(backend, monkeypatch):
    """The CNN's second convolution (32 -> 64 on 14x14) runs both its forward and its input gradient
    through the Winograd kernels, and neither through im2col's col2im."""
    monkeypatch.setattr(numba_convolution, "WINOGRAD_CHANNELS", 16)
    calls = {"winograd_input": 0, "col2im": 0}
    for name in calls:
        original = getattr(kernels, name)

        def counted(*arguments, _original=original, _name=name):
            calls[_name] += 1
            return _original(*arguments)

        monkeypatch.setattr(kernels, name, counted)
    x, W, b = _arrays(numpy.random.default_rng(5), 2, 14, 14, 32, 64, numpy.float32)
    y = backend.conv2d_forward(x, W, b, (1, 1), (1, 1), relu=True)
    forward_calls = calls["winograd_input"]
    backend.conv2d_backward(x, W, y, y, numpy.zeros_like(W), numpy.zeros_like(b), (1, 1), (1, 1), relu=True)
    assert forward_calls >= 1
    assert calls["winograd_input"] > forward_calls
    assert calls["col2im"] == 0
