"""Image layers on every available backend: Conv2D, MaxPool2D, Reshape and Flatten against a reference
written from their definitions, finite differences, fusion, errors, checkpoints."""

from __future__ import annotations

import math
import zlib

import numpy
import pytest

import fastprop
from fastprop import (
    Conv2D, Flatten, Linear, MaxPool2D, MeanSquareError, Network, ReLU, Reshape, SoftmaxCrossEntropy,
)
from fastprop.models import cnn_network
from tests.conftest import AVAILABLE_BACKENDS, relative_error

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}  # norm-wise relative error against the float64 reference


# ------------------------------------------------------------------------------------ reference
# Naive loops over output positions on (batch, channels, height, width) arrays in float64, from the
# definitions in the layers' docstrings: out[i, k, r, c] = b[k] + sum over j, p, q of
# xpad[i, j, r * sh + p, c * sw + q] * w[k, j, p, q].


def _padded(x, padding):
    (ph, pw), (n, channels, height, width) = padding, x.shape
    xpad = numpy.zeros((n, channels, height + 2 * ph, width + 2 * pw))
    xpad[:, :, ph:ph + height, pw:pw + width] = x
    return xpad


def _positions(height, width, window, stride):
    """``(r, c, rows, columns)`` for every output position: the slices its window reads."""
    (kh, kw), (sh, sw) = window, stride
    for r in range((height - kh) // sh + 1):
        for c in range((width - kw) // sw + 1):
            yield r, c, slice(r * sh, r * sh + kh), slice(c * sw, c * sw + kw)


def conv_reference(x, w, b, stride, padding):
    xpad, (k_out, _, kh, kw), (sh, sw) = _padded(x, padding), w.shape, stride
    height, width = xpad.shape[2:]
    y = numpy.empty((x.shape[0], k_out, (height - kh) // sh + 1, (width - kw) // sw + 1))
    for r, c, rows, columns in _positions(height, width, (kh, kw), stride):
        window = xpad[:, :, rows, columns]  # (n, C, kh, kw)
        y[:, :, r, c] = numpy.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b.reshape(-1)
    return y


def conv_backward_reference(x, w, dy, stride, padding):
    """``(dw, db, dx)`` for the output gradient ``dy``."""
    xpad, (ph, pw) = _padded(x, padding), padding
    dw, dxpad = numpy.zeros(w.shape), numpy.zeros(xpad.shape)
    for r, c, rows, columns in _positions(xpad.shape[2], xpad.shape[3], w.shape[2:], stride):
        g = dy[:, :, r, c]  # (n, K)
        dw += numpy.tensordot(g, xpad[:, :, rows, columns], axes=([0], [0]))
        dxpad[:, :, rows, columns] += numpy.tensordot(g, w, axes=([1], [0]))
    dx = dxpad[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return dw, dy.sum(axis=(0, 2, 3)).reshape(1, -1), dx


def maxpool_reference(x, size, stride):
    """``(y, place)``: each window's maximum and its place ``p * kw + q`` (the first of equal values;
    the first NaN, which wins)."""
    (n, channels, height, width), (kh, kw) = x.shape, size
    ho, wo = (height - kh) // stride[0] + 1, (width - kw) // stride[1] + 1
    y, place = numpy.empty((n, channels, ho, wo)), numpy.empty((n, channels, ho, wo), int)
    for r, c, rows, columns in _positions(height, width, size, stride):
        for i in range(n):
            for j in range(channels):
                values = x[i, j, rows, columns].reshape(-1)
                best = 0
                for position in range(1, kh * kw):
                    if math.isnan(values[best]):
                        break
                    if values[position] > values[best] or math.isnan(values[position]):
                        best = position
                y[i, j, r, c], place[i, j, r, c] = values[best], best
    return y, place


def maxpool_backward_reference(x, dy, size, stride):
    _, place = maxpool_reference(x, size, stride)
    dx, kw = numpy.zeros(x.shape), size[1]
    for r, c, rows, columns in _positions(x.shape[2], x.shape[3], size, stride):
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                p, q = divmod(place[i, j, r, c], kw)
                dx[i, j, rows.start + p, columns.start + q] += dy[i, j, r, c]
    return dx


def test_the_reference_is_right_on_numbers_worked_by_hand():
    """A reference that agrees with the layers by sharing their mistakes would prove nothing."""
    x = numpy.arange(16.0).reshape(1, 1, 4, 4)
    w = numpy.array([[[[1.0, 0.0], [0.0, -1.0]]]])  # x[r, c] - x[r + 1, c + 1] = -5 everywhere
    y = conv_reference(x, w, numpy.array([[0.5]]), (2, 2), (0, 0))
    assert numpy.array_equal(y, numpy.full((1, 1, 2, 2), -4.5))
    padded = conv_reference(x, numpy.ones((1, 1, 1, 1)), numpy.zeros((1, 1)), (1, 1), (1, 0))
    assert padded.shape == (1, 1, 6, 4) and not padded[0, 0, 0].any() and padded[0, 0, 1, 3] == 3
    y, place = maxpool_reference(numpy.array([[[[1.0, 3.0, 3.0], [2.0, numpy.nan, 0.0]]]]), (2, 2), (1, 1))
    assert y[0, 0, 0, 0] != y[0, 0, 0, 0] and place.tolist() == [[[[3, 2]]]]  # NaN wins; first of equal 3s
    assert y[0, 0, 0, 1] != y[0, 0, 0, 1]
    x, dy = numpy.array([[[[1.0, 5.0, 2.0]]]]), numpy.array([[[[1.0, 10.0]]]])
    dx = maxpool_backward_reference(x, dy, (1, 2), (1, 1))
    assert dx.tolist() == [[[[0.0, 11.0, 0.0]]]]  # overlapping windows sum at their shared maximum


# ------------------------------------------------------------------------------------ helpers

@pytest.fixture
def rng(request):
    """A generator seeded by the test's name: each test has its own fixed inputs, whatever else runs."""
    return numpy.random.default_rng(zlib.crc32(request.node.name.encode()))


def _build(backend_name, dtype, make):
    with fastprop.use_backend(backend_name, dtype=dtype):
        return make()


def _host(layer_or_backend, array):
    backend = getattr(layer_or_backend, "backend", layer_or_backend)
    return numpy.asarray(backend.to_numpy(array), dtype=numpy.float64)


def _rounded(array, dtype):
    """``array`` as the layer sees it: rounded to ``dtype``, then widened for the reference."""
    return numpy.asarray(array).astype(dtype).astype(numpy.float64)


def _distinct(shape, rng):
    """Values without ties (max pooling's choice is then unique), spread around zero, exact in float32."""
    size = math.prod(shape)
    return (rng.permutation(size).reshape(shape) - size / 2) / 8


def _with_bias(conv, rng):
    """``conv`` with a non-zero bias (it starts at zero), so that tests see where it goes."""
    conv.b = rng.normal(size=(1, conv.out_channels))
    return conv


# ------------------------------------------------------------------------------------ against the reference

CONVOLUTIONS = {  # in, out, kernel, stride, padding, input shape
    "3x3": (3, 5, 3, 1, 0, (2, 3, 6, 7)),
    "3x3, stride 2, padding 1": (3, 5, 3, 2, 1, (2, 3, 9, 8)),
    "5x5, padding 2": (5, 7, 5, 1, 2, (2, 5, 7, 9)),
    "(3, 2) kernel, stride (2, 1), padding (0, 1)": (7, 3, (3, 2), (2, 1), (0, 1), (3, 7, 8, 7)),
    "batch of one, 1x1 kernel": (3, 1, 1, 1, 0, (1, 3, 4, 5)),
    "window the size of the padded image": (2, 3, 4, 1, 1, (2, 2, 2, 2)),
    "MNIST's first layer": (1, 32, 3, 1, 1, (4, 1, 28, 28)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CONVOLUTIONS)
def test_conv2d_matches_the_reference(backend_name, dtype, case, rng):
    n_in, n_out, kernel, stride, padding, shape = CONVOLUTIONS[case]
    conv = _build(backend_name, dtype, lambda: Conv2D(n_in, n_out, kernel, stride, padding, rng=1))
    _with_bias(conv, rng)
    x = rng.normal(size=shape)
    w, b = _host(conv, conv.w), _host(conv, conv.b)
    pairs = tuple(value if isinstance(value, tuple) else (value, value) for value in (stride, padding))
    expected = conv_reference(_rounded(x, dtype), w, b, *pairs)

    y = conv.forward(x)
    assert y.shape == expected.shape and y.dtype == numpy.dtype(dtype)
    assert relative_error(_host(conv, y), expected) <= TOLERANCE[dtype]
    assert relative_error(_host(conv, conv.x_in), _rounded(x, dtype)) == 0  # the notebook's x_in: the input

    dy = rng.normal(size=expected.shape)
    conv.zero_gradients()
    dx = conv.backward(dy)
    dw, db, dx_expected = conv_backward_reference(_rounded(x, dtype), w, _rounded(dy, dtype), *pairs)
    assert dx.shape == x.shape and dx.dtype == numpy.dtype(dtype)
    for name, actual, wanted in (("dw", conv.dw, dw), ("db", conv.db, db), ("dx", dx, dx_expected)):
        error = relative_error(_host(conv, actual), wanted)
        assert error <= TOLERANCE[dtype], f"{case}, {name}: relative error {error:.3g}"


POOLINGS = {  # size, stride, input shape
    "2x2": (2, None, (2, 3, 6, 8)),
    "2x2 on odd sides": (2, None, (2, 5, 7, 9)),
    "3x3 stride 2, overlapping": (3, 2, (3, 3, 7, 9)),
    "(3, 2) stride (2, 1), overlapping rows": ((3, 2), (2, 1), (1, 7, 8, 7)),
    "2x2 stride 3, gaps": (2, 3, (2, 2, 8, 7)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", POOLINGS)
def test_maxpool2d_matches_the_reference(backend_name, dtype, case, rng):
    size, stride, shape = POOLINGS[case]
    pool = _build(backend_name, dtype, lambda: MaxPool2D(size, stride))
    pairs = [value if isinstance(value, tuple) else (value, value) for value in (size, stride or size)]
    x = _distinct(shape, rng)
    expected, _ = maxpool_reference(x, *pairs)
    y = pool.forward(x)
    assert y.shape == expected.shape and y.dtype == numpy.dtype(dtype)
    assert numpy.array_equal(_host(pool, y), expected)  # a maximum is one of the inputs, exactly
    dy = rng.normal(size=expected.shape)
    dx = pool.backward(dy)
    assert dx.shape == x.shape and dx.dtype == numpy.dtype(dtype)
    expected_dx = maxpool_backward_reference(x, _rounded(dy, dtype), *pairs)
    assert relative_error(_host(pool, dx), expected_dx) <= TOLERANCE[dtype]


def test_maxpool2d_picks_the_first_of_equal_values_and_lets_nan_win(backend_name, rng):
    pool = _build(backend_name, "float64", lambda: MaxPool2D(2, stride=1))
    x = rng.integers(0, 3, (2, 3, 6, 5)).astype(numpy.float64)  # ties everywhere
    x[0, 1, 2, 3] = x[1, 2, 0, 0] = numpy.nan
    expected, _ = maxpool_reference(x, (2, 2), (1, 1))
    y = _host(pool, pool.forward(x))
    assert numpy.array_equal(y, expected, equal_nan=True)
    assert numpy.isnan(y).sum() == 5  # every window holding one of the two NaNs
    dy = rng.normal(size=expected.shape)
    dx = _host(pool, pool.backward(dy))
    assert relative_error(dx, maxpool_backward_reference(x, dy, (2, 2), (1, 1))) <= 1e-12


def test_reshape_and_flatten_follow_row_major_order(backend_name, rng):
    reshape, flatten = _build(backend_name, "float64", lambda: (Reshape((3, 4, 5)), Flatten()))
    rows = rng.normal(size=(2, 60))
    images = reshape.forward(rows)
    assert images.shape == (2, 3, 4, 5)
    assert numpy.array_equal(_host(reshape, images), rows.reshape(2, 3, 4, 5))
    # Flatten reads the logical (batch, channels, height, width) order, also from a channels-last
    # view such as a Conv2D output: channel by channel, as PyTorch's Flatten.
    conv = _with_bias(_build(backend_name, "float64", lambda: Conv2D(3, 4, 3, padding=1, rng=2)), rng)
    out = conv.forward(images)
    flat = flatten.forward(out)
    assert flat.shape == (2, 80)
    assert numpy.array_equal(_host(flatten, flat), _host(conv, out).reshape(2, 80))
    d_flat = rng.normal(size=(2, 80))
    assert numpy.array_equal(_host(flatten, flatten.backward(d_flat)), d_flat.reshape(2, 4, 4, 5))
    d_images = rng.normal(size=(2, 3, 4, 5))
    assert numpy.array_equal(_host(reshape, reshape.backward(d_images)), d_images.reshape(2, 60))
    assert reshape.backward(d_images, input_gradient=False) is None
    assert flatten.backward(d_flat, input_gradient=False) is None


def test_one_image_is_a_batch_of_one(backend_name, rng):
    """A 3-D ``(channels, height, width)`` input: the same numbers as ``x[None]``."""
    def make():
        conv = Conv2D(3, 5, (3, 2), stride=(1, 2), padding=1, rng=3)
        return _with_bias(conv, numpy.random.default_rng(3)), MaxPool2D(2)

    single, batch = _build(backend_name, "float64", make), _build(backend_name, "float64", make)
    x = rng.normal(size=(3, 6, 7))
    for conv, pool, given in ((single[0], single[1], x), (batch[0], batch[1], x[None])):
        conv.zero_gradients()
        y = pool.forward(conv.forward(given))  # convolution 6 x 4, pooled 3 x 2
        assert y.shape == (1, 5, 3, 2)
        dy = numpy.ones(y.shape[1:]) if given.ndim == 3 else numpy.ones(y.shape)  # one gradient: 3-D too
        dy = pool.backward(dy)
        assert dy.shape == (1, 5, 6, 4)
        dx = conv.backward(dy)
        assert dx.shape == (1, 3, 6, 7)
    for a, b in ((single[0].forward(x), batch[0].forward(x[None])), (single[0].dw, batch[0].dw),
                 (single[0].db, batch[0].db)):
        assert numpy.array_equal(_host(single[0], a), _host(batch[0], b))
    w, b = _host(batch[0], batch[0].w), _host(batch[0], batch[0].b)
    expected = conv_reference(x[None], w, b, (1, 2), (1, 1))
    assert relative_error(_host(single[0], single[0].forward(x)), expected) <= 1e-12


def test_any_input_layout_gives_the_same_numbers(backend_name, rng):
    conv = _with_bias(_build(backend_name, "float64", lambda: Conv2D(3, 4, 3, stride=2, rng=4)), rng)
    x = rng.normal(size=(2, 3, 9, 9))
    expected = _host(conv, conv.forward(x))
    wide = numpy.full((2, 6, 9, 18), numpy.nan)  # a kernel reading outside the view sees NaN
    wide[:, ::2, :, ::2] = x
    channels_last = x.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)  # what Conv2D itself returns
    for view in (numpy.asfortranarray(x), channels_last, wide[:, ::2, :, ::2]):
        assert numpy.array_equal(_host(conv, conv.forward(view)), expected)


# ------------------------------------------------------------------------------------ finite differences


def _small_cnn(fuse=True):
    return Network([
        Reshape((3, 7, 6)),
        Conv2D(3, 5, 3, padding=1, rng=5), ReLU(), MaxPool2D(3, stride=2),
        Conv2D(5, 7, (3, 2), rng=6), ReLU(), Flatten(),
        Linear(7, 4, init="xavier", rng=7),
    ], fuse=fuse)


GRADCHECKS = {  # build, input shape
    "conv 3x3 stride 2 padding 1": (lambda: Conv2D(3, 5, 3, stride=2, padding=1, rng=8), (2, 3, 7, 8)),
    "conv 5x5 padding 2": (lambda: Conv2D(5, 7, 5, padding=2, rng=9), (2, 5, 6, 5)),
    "conv (3, 2) stride (2, 1) padding (1, 0)": (lambda: Conv2D(7, 3, (3, 2), (2, 1), (1, 0), rng=10),
                                                 (1, 7, 6, 5)),
    "conv batch of one": (lambda: Conv2D(3, 3, 3, rng=11), (1, 3, 5, 5)),
    "maxpool 2": (lambda: MaxPool2D(2), (2, 3, 6, 7)),
    "maxpool 3 stride 2 (overlapping)": (lambda: MaxPool2D(3, stride=2), (2, 5, 7, 8)),
    "maxpool (3, 2) stride (1, 2)": (lambda: MaxPool2D((3, 2), stride=(1, 2)), (1, 7, 5, 6)),
    "reshape": (lambda: Reshape((2, 3, 5)), (3, 30)),
    "flatten": (lambda: Flatten(), (3, 2, 3, 5)),
    "conv + relu, fused": (lambda: Network([Conv2D(3, 5, 3, padding=1, rng=12), ReLU()]), (2, 3, 5, 6)),
    "conv + relu + overlapping maxpool, fused": (
        lambda: Network([Conv2D(3, 5, 3, stride=(1, 2), rng=20), ReLU(), MaxPool2D(3, stride=2)]),
        (2, 3, 9, 12)),
}


@pytest.mark.parametrize("case", GRADCHECKS)
def test_image_layers_pass_gradcheck(backend_name, case, rng):
    build, shape = GRADCHECKS[case]
    layer = _build(backend_name, "float64", build)
    for conv in layer.leaves():
        if isinstance(conv, Conv2D):
            _with_bias(conv, rng)
    x = _distinct(shape, rng) if "maxpool" in case else rng.normal(size=shape)  # no ties for max pooling
    output = layer.forward(x)
    target = rng.normal(size=output.shape)
    result = fastprop.gradcheck(layer, MeanSquareError(), x, target, max_entries=24)
    assert result.passed(1e-6), f"{case} on {backend_name}:\n{result}"
    assert len(result.errors) == len(layer.parameters()) + 1


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_small_cnn_passes_gradcheck(backend_name, fuse, rng):
    net = _build(backend_name, "float64", lambda: _small_cnn(fuse))
    x = rng.normal(size=(2, 126))
    target = numpy.eye(4)[[1, 3]]
    result = fastprop.gradcheck(net, SoftmaxCrossEntropy(), x, target, max_entries=24)
    assert result.passed(1e-6), f"{backend_name}, fuse={fuse}:\n{result}"
    assert len(result.errors) == 7  # w and b of three layers, and the input


# ------------------------------------------------------------------------------------ semantics


def test_conv2d_shapes_and_initial_state():
    conv = Conv2D(3, 8, (5, 3), rng=0)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 8, (5, 3))
    assert (conv.stride, conv.padding, conv.init) == ((1, 1), (0, 0), "he")
    assert conv.w.shape == conv.dw.shape == (8, 3, 5, 3) and conv.b.shape == conv.db.shape == (1, 8)
    assert conv.w.dtype == numpy.float32  # the process default
    assert not any(numpy.asarray(array).any() for array in (conv.b, conv.dw, conv.db))
    assert conv.x_in is None
    assert numpy.array_equal(conv.w, Conv2D(3, 8, (5, 3), rng=0).w)
    assert not numpy.array_equal(conv.w, Conv2D(3, 8, (5, 3), rng=1).w)
    assert [parameter.name for parameter in conv.parameters()] == ["w", "b"]
    assert MaxPool2D(3).parameters() == [] and MaxPool2D(3).stride == (3, 3)
    assert repr(Conv2D(1, 32, 3, padding=1)) == "Conv2D(1, 32, 3, padding=1)"
    assert repr(Conv2D(7, 3, (3, 2), stride=(2, 1))) == "Conv2D(7, 3, (3, 2), stride=(2, 1))"


@pytest.mark.parametrize("init, kernel, expected", [
    ("he", 3, math.sqrt(2 / (64 * 9))),
    ("he", (5, 2), math.sqrt(2 / (64 * 10))),
    ("xavier", 3, math.sqrt(2 / (64 * 9 + 48 * 9))),
    ("xavier", (1, 4), math.sqrt(2 / (64 * 4 + 48 * 4))),
    ("normal", 3, 0.3),
])
def test_initialisers_use_the_fan_of_the_whole_kernel(init, kernel, expected):
    """He and Xavier count ``channels * kh * kw`` inputs (outputs) per weight; "normal" uses initial_sigma."""
    conv = Conv2D(64, 48, kernel, initial_sigma=0.3, init=init, rng=3)
    w = numpy.asarray(conv.w, dtype=numpy.float64)
    assert w.size >= 12288
    assert abs(w.std() / expected - 1) < 0.05 and abs(w.mean()) < 0.05 * expected


def _conv_step(layer, x, dy):
    layer.forward(x)
    return layer.backward(dy)


STEPS = {  # what follows the Conv2D in a fused Network step, none for the layer alone
    "Conv2D": (), "Conv2D + ReLU fused": (ReLU,), "Conv2D + ReLU + MaxPool2D fused": (ReLU, MaxPool2D),
}


@pytest.mark.parametrize("step", STEPS)
def test_gradients_accumulate_until_zero_gradients(backend_name, step, rng):
    after = STEPS[step]

    def make():
        conv = _with_bias(Conv2D(3, 4, 3, stride=2, padding=1, rng=13), numpy.random.default_rng(13))
        rest = [kind(2) if kind is MaxPool2D else kind() for kind in after]
        return conv, (Network([conv, *rest]) if rest else conv)

    conv, layer = _build(backend_name, "float64", make)
    xa, xb = rng.normal(size=(2, 3, 7, 8)), rng.normal(size=(3, 3, 7, 8))
    out = (2, 2) if MaxPool2D in after else (4, 4)
    da, db_ = rng.normal(size=(2, 4, *out)), rng.normal(size=(3, 4, *out))
    w, b = _host(conv, conv.w), _host(conv, conv.b)

    def gradients(x, d):
        z = conv_reference(x, w, b, (2, 2), (1, 1))
        if MaxPool2D in after:  # routed back to each window's maximum (of the ReLU's output)
            d = maxpool_backward_reference(numpy.maximum(z, 0), d, (2, 2), (2, 2))
        if ReLU in after:  # the ReLU's slope masks the output gradient
            d = d * (z > 0)
        return conv_backward_reference(x, w, d, (2, 2), (1, 1))

    layer.zero_gradients()
    _conv_step(layer, xa, da)
    _conv_step(layer, xb, db_)
    (dwa, dba, _), (dwb, dbb, _) = gradients(xa, da), gradients(xb, db_)
    assert relative_error(_host(conv, conv.dw), dwa + dwb) <= 1e-12
    assert relative_error(_host(conv, conv.db), dba + dbb) <= 1e-12
    assert relative_error(_host(conv, conv.x_in), xb) == 0  # the last input
    layer.zero_gradients()
    assert not _host(conv, conv.dw).any() and not _host(conv, conv.db).any()
    _conv_step(layer, xa, da)  # after zero_gradients the next backward starts the sum anew
    assert relative_error(_host(conv, conv.dw), dwa) <= 1e-12


def test_update_parameters_is_sgd_on_the_summed_gradient(backend_name, rng):
    conv = _build(backend_name, "float64", lambda: Conv2D(2, 3, (2, 3), padding=(1, 0), rng=14))
    _with_bias(conv, rng)
    w, b = _host(conv, conv.w).copy(), _host(conv, conv.b).copy()
    x, d = rng.normal(size=(2, 2, 4, 5)), rng.normal(size=(2, 3, 5, 3))
    conv.zero_gradients()
    _conv_step(conv, x, d)
    _conv_step(conv, x, d)
    conv.update_parameters(0.1)
    dw, db, _ = conv_backward_reference(x, w, d, (1, 1), (1, 0))
    assert relative_error(_host(conv, conv.w), w - 0.1 * 2 * dw) <= 1e-12
    assert relative_error(_host(conv, conv.b), b - 0.1 * 2 * db) <= 1e-12


def test_no_input_gradient_returns_none_and_keeps_the_weight_gradients(backend_name, rng):
    def make():
        return (_with_bias(Conv2D(3, 4, 3, padding=1, rng=15), rng), MaxPool2D(2),
                Network([Conv2D(3, 4, 3, padding=1, rng=15), ReLU()], input_gradient=False),
                Network([Conv2D(3, 4, 3, padding=1, rng=15), ReLU(), MaxPool2D(2)], input_gradient=False))

    conv, pool, *fused = _build(backend_name, "float64", make)
    x, d = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(2, 4, 6, 6))
    conv.zero_gradients()
    conv.forward(x)
    assert conv.backward(d, input_gradient=False) is None
    dw, db, _ = conv_backward_reference(x, _host(conv, conv.w), d, (1, 1), (1, 1))
    assert relative_error(_host(conv, conv.dw), dw) <= 1e-12
    assert relative_error(_host(conv, conv.db), db) <= 1e-12
    pool.forward(x)
    assert pool.backward(rng.normal(size=(2, 3, 3, 3)), input_gradient=False) is None
    for net, d_out in zip(fused, (d, d[:, :, ::2, ::2])):
        net.zero_gradients()
        net.forward(x)
        assert net.backward(d_out) is None
        with_dx = _host(net, net.layers[0].dw).copy()
        net.zero_gradients()
        assert net.backward(d_out, input_gradient=True).shape == x.shape
        assert numpy.array_equal(_host(net, net.layers[0].dw), with_dx)  # the same weight gradient


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_steps_match_unfused(backend_name, dtype, rng):
    def make(fuse):
        return Network([
            Reshape((3, 8, 7)), Conv2D(3, 6, 3, padding=1, rng=16), ReLU(), MaxPool2D(2),
            Conv2D(6, 5, (3, 2), stride=(1, 2), rng=17), ReLU(), Flatten(), Linear(10, 4, rng=18),
        ], fuse=fuse, input_gradient=True)

    fused, plain = (_build(backend_name, dtype, lambda fuse=fuse: make(fuse)) for fuse in (True, False))
    for net in (fused, plain):
        for layer in net.leaves():
            if isinstance(layer, Conv2D):
                layer.b = numpy.random.default_rng(layer.out_channels).normal(0, 0.3, (1, layer.out_channels))
    x, target = rng.normal(size=(3, 168)), numpy.eye(4)[[0, 2, 3]]
    outputs = []
    for net in (fused, plain):
        net.zero_gradients()
        p = net.forward(x)
        cost = MeanSquareError()
        dx = net.backward(cost.gradient(cost.estimate(target, p)))
        outputs.append([p, dx, net.layers[5].x_out] + [parameter.gradient for parameter in net.parameters()])
    # Both fused steps ran (Conv2D + ReLU + MaxPool2D, then Conv2D + ReLU): their ReLU never sees the
    # pre-activation. After pooling, the first ReLU shows the pooled output.
    assert fused.layers[2].x_in is None and fused.layers[5].x_in is None and plain.layers[2].x_in is not None
    pooled = maxpool_reference(_host(plain, plain.layers[2].x_out), (2, 2), (2, 2))[0]
    outputs[0].append(fused.layers[2].x_out)
    outputs[1].append(pooled)
    assert 0 < (pooled == 0).mean() < 1  # the ReLU clips some values, not all
    for k, (a, b) in enumerate(zip(*outputs)):
        assert a.shape == b.shape and a.dtype == numpy.dtype(dtype)
        error = relative_error(_host(fused, a), _host(plain, b))
        assert error <= TOLERANCE[dtype], f"output {k}: relative error {error:.3g}"


@pytest.mark.parametrize("backend_name", [name for name in AVAILABLE_BACKENDS if name != "numpy"])
def test_float32_matches_the_numpy_backend(backend_name, rng):
    nets = [_build(name, "float32", lambda: _small_cnn()) for name in ("numpy", backend_name)]
    x, target = rng.normal(size=(5, 126)), numpy.eye(4)[rng.integers(0, 4, 5)]
    outputs = []
    for net in nets:
        net.zero_gradients()
        p = net.forward(x)
        cost = SoftmaxCrossEntropy()
        dx = net.backward(cost.gradient(cost.estimate(target, p)), input_gradient=True)
        outputs.append([net.backend.to_numpy(a) for a in [p, dx] + [q.gradient for q in net.parameters()]])
    for k, (ours, theirs) in enumerate(zip(outputs[1], outputs[0])):
        assert ours.dtype == numpy.float32 and relative_error(ours, theirs) <= 1e-5, f"array {k}"


# ------------------------------------------------------------------------------------ errors


def _after_forward(layer, x, method, *arguments):
    layer.forward(x)
    return getattr(layer, method)(*arguments)


@pytest.mark.parametrize("call, error, message", [
    (lambda: Conv2D(1, 4, 3).forward(numpy.ones((600, 784))), ValueError,
     r"Conv2D\(1, 4, 3\) expected input of shape \(batch, 1, height, width\), got \(600, 784\).*Reshape"),
    (lambda: Conv2D(3, 4, 3).forward(numpy.ones((2, 2, 8, 8))), ValueError,
     r"Conv2D\(3, 4, 3\) expected input of shape \(batch, 3, height, width\), got \(2, 2, 8, 8\)"),
    (lambda: Conv2D(1, 2, 3).forward(numpy.ones((1, 1, 5, 5, 1))), ValueError, r"got \(1, 1, 5, 5, 1\)"),
    (lambda: Conv2D(3, 4, 5).forward(numpy.ones((2, 3, 4, 8))), ValueError,
     r"Conv2D\(3, 4, 5\) got images of 4 x 8 pixels, smaller than its 5 x 5 window"),
    (lambda: MaxPool2D(3).forward(numpy.ones((2, 3, 8, 2))), ValueError,
     r"MaxPool2D\(3\) got images of 8 x 2 pixels, smaller than its 3 x 3 window"),
    (lambda: MaxPool2D(2).forward(numpy.ones((2, 8))), ValueError,
     r"MaxPool2D\(2\) expected input of shape \(batch, channels, height, width\), got \(2, 8\)"),
    (lambda: _after_forward(Conv2D(3, 4, 3), numpy.ones((2, 3, 8, 8)), "backward", numpy.ones((2, 4, 6, 5))),
     ValueError, r"Conv2D\(3, 4, 3\)\.backward expected a gradient of shape \(2, 4, 6, 6\) .* "
     r"got \(2, 4, 6, 5\)"),
    (lambda: _after_forward(MaxPool2D(2), numpy.ones((2, 3, 8, 8)), "backward", numpy.ones((2, 3, 4))),
     ValueError, r"MaxPool2D\(2\)\.backward expected a gradient of shape \(2, 3, 4, 4\) .* got \(2, 3, 4\)"),
    (lambda: _after_forward(Flatten(), numpy.ones((2, 3, 4)), "backward", numpy.ones((2, 11))), ValueError,
     r"Flatten\(\)\.backward expected a gradient of shape \(2, 12\) .* got \(2, 11\)"),
    (lambda: _after_forward(Reshape((1, 28, 28)), numpy.ones((2, 784)), "backward", numpy.ones((2, 784))),
     ValueError, r"Reshape\(\(1, 28, 28\)\)\.backward expected a gradient of shape \(2, 1, 28, 28\)"),
    (lambda: Reshape((1, 28, 28)).forward(numpy.ones((2, 783))), ValueError,
     r"Reshape\(\(1, 28, 28\)\) expected input of shape \(batch, \.\.\.\) with 784 values per sample, "
     r"got \(2, 783\)"),
    (lambda: Conv2D(3, 4, 3).backward(numpy.ones((2, 4, 6, 6))), RuntimeError,
     r"Conv2D\(3, 4, 3\)\.backward was called before forward"),
    (lambda: MaxPool2D(2).backward(numpy.ones((2, 3, 4, 4))), RuntimeError,
     r"MaxPool2D\(2\)\.backward was called before forward"),
    (lambda: Flatten().backward(numpy.ones((2, 3))), RuntimeError,
     r"Flatten\(\)\.backward was called before forward"),
    (lambda: Network([Conv2D(1, 2, 3), ReLU()]).backward(numpy.ones((1, 2, 3, 3))), RuntimeError,
     r"Conv2D\(1, 2, 3\) \+ ReLU\(\): backward was called before forward"),
    (lambda: Network([Conv2D(1, 2, 3), ReLU(), MaxPool2D(2)]).backward(numpy.ones((1, 2, 2, 2))),
     RuntimeError, r"Conv2D\(1, 2, 3\) \+ ReLU\(\) \+ MaxPool2D\(2\): backward was called before forward"),
    (lambda: Conv2D(3, 4, 0), ValueError,
     r"Conv2D needs kernel_size as a positive integer or a pair of them, got 0"),
    (lambda: Conv2D(3, 4, (3, 2, 1)), ValueError, r"Conv2D needs kernel_size .* got \(3, 2, 1\)"),
    (lambda: Conv2D(3, 4, 3, padding=-1), ValueError,
     r"Conv2D needs padding as a non-negative integer or a pair of them, got -1"),
    (lambda: Conv2D(3, 4, 3, stride=(1, 0)), ValueError,
     r"Conv2D needs stride as a positive integer .* got \(1, 0\)"),
    (lambda: Conv2D(0, 4, 3), ValueError, r"Conv2D needs a positive integer in_channels, got 0"),
    (lambda: Conv2D(3, 4, 3, init="bogus"), ValueError,
     r"Conv2D got init='bogus'; choose one of 'normal', 'xavier', 'he'"),
    (lambda: Conv2D(3, 4, 3, initial_sigma=-1), ValueError,
     r"Conv2D needs a finite initial_sigma >= 0, got -1"),
    (lambda: MaxPool2D(0), ValueError,
     r"MaxPool2D needs size as a positive integer or a pair of them, got 0"),
    (lambda: MaxPool2D(2, stride=0), ValueError, r"MaxPool2D needs stride as a positive integer"),
    (lambda: Reshape((1, 0, 28)), ValueError, r"Reshape needs a positive integer size in shape, got 0"),
])
def test_bad_input_gets_one_clear_error(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert raised.match(message)
    assert "\n" not in str(raised.value)


# ------------------------------------------------------------------------------------ checkpoints and moves


def _images(n, side=28, seed=3):
    return numpy.random.default_rng(seed).random((n, side * side))


def test_cnn_checkpoint_round_trip_gives_identical_outputs(backend_name, tmp_path, rng):
    with fastprop.use_backend(backend_name, dtype="float32"):
        net = cnn_network(rng=0)
    for layer in net.leaves():
        if isinstance(layer, (Conv2D, Linear)):
            layer.b = rng.normal(0, 0.1, tuple(layer.b.shape))
    path = fastprop.save(net, tmp_path / "cnn.npz")
    with fastprop.use_backend(backend_name):
        loaded = fastprop.load(path)
    assert repr(loaded) == repr(net) and loaded.backend is net.backend and loaded.dtype == net.dtype
    for a, b in zip(loaded.parameters(), net.parameters()):
        assert numpy.array_equal(loaded.backend.to_numpy(a.value), net.backend.to_numpy(b.value))
    x = _images(4)
    numpy.testing.assert_array_equal(fastprop.predict(loaded, x), fastprop.predict(net, x))


def test_conv2d_with_pairs_round_trips(tmp_path, rng):
    with fastprop.use_backend("numpy", dtype="float64"):
        conv = _with_bias(Conv2D(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), init="xavier", rng=19), rng)
        net = Network([conv, ReLU(), MaxPool2D((2, 1), stride=(1, 2)), Flatten()], fuse=False)
    loaded = fastprop.load(fastprop.save(net, tmp_path / "pairs.npz"))
    conv = loaded.layers[0]
    assert (conv.kernel_size, conv.stride, conv.padding, conv.init) == ((3, 2), (2, 1), (1, 0), "xavier")
    assert (loaded.layers[2].size, loaded.layers[2].stride) == ((2, 1), (1, 2)) and not loaded.fuse
    x = rng.normal(size=(2, 3, 9, 8))
    numpy.testing.assert_array_equal(_host(loaded, loaded.forward(x)), _host(net, net.forward(x)))


@pytest.mark.skipif("numba" not in AVAILABLE_BACKENDS, reason="the numba backend is not available here")
def test_to_backend_keeps_outputs(rng):
    with fastprop.use_backend("numpy", dtype="float64"):
        net = _small_cnn()
    x = rng.normal(size=(3, 126))
    expected = _host(net, net.forward(x))
    for name in ("numba", "numpy"):
        net.to_backend(name)
        assert net.backend is fastprop.backends.load_backend(name)
        assert all(net.backend.is_native(array) for p in net.parameters() for array in (p.value, p.gradient))
        assert relative_error(_host(net, net.forward(x)), expected) <= 1e-12
    net.to_backend(dtype="float32")
    y = net.forward(x)
    assert y.dtype == numpy.float32 and relative_error(_host(net, y), expected) <= 1e-5
