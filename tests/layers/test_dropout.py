"""Dropout on every available backend: statistics of the mask, modes, backward, seeding, errors."""

from __future__ import annotations

import math

import numpy
import pytest

import fastprop
from fastprop import Linear, MeanSquareError, Network, Sigmoid
from fastprop.layers.dropout import Dropout

RATE = 0.3


@pytest.fixture(autouse=True)
def _default_generators_afterwards():
    """fastprop.seed switches later layers and masks to fastprop's generator; undo it after each test."""
    yield
    fastprop.seed(None)


def _dropout(backend_name, rate=RATE, rng=0, dtype="float64"):
    with fastprop.use_backend(backend_name, dtype=dtype):
        return Dropout(rate, rng=rng)


def _host(layer, array):
    return layer.backend.to_numpy(array)


def test_survivors_are_scaled_so_the_mean_is_preserved(backend_name):
    layer = _dropout(backend_name)
    x = numpy.random.default_rng(1).uniform(0.5, 1.5, size=(400, 500))
    y = _host(layer, layer.forward(x))
    kept = y != 0
    numpy.testing.assert_allclose(y[kept], x[kept] / (1 - RATE), rtol=1e-12)
    # Each output is x / (1 - p) with probability 1 - p, else 0: variance x^2 p / (1 - p).
    standard_error = math.sqrt((x**2).mean() * RATE / (1 - RATE) / x.size)
    assert abs(y.mean() - x.mean()) < 4 * standard_error


def test_number_of_zeros_is_binomial(backend_name):
    layer = _dropout(backend_name, rng=7)
    x = numpy.ones((300, 300))
    for _ in range(3):  # every call draws a new mask
        zeros = int((_host(layer, layer.forward(x)) == 0).sum())
        n = x.size
        assert abs(zeros - n * RATE) < 4 * math.sqrt(n * RATE * (1 - RATE)), zeros


def test_backward_applies_the_forward_mask(backend_name):
    layer = _dropout(backend_name, rate=0.5, rng=3)
    y = _host(layer, layer.forward(numpy.ones((20, 30))))
    gradient = numpy.random.default_rng(2).normal(size=(20, 30))
    dx = _host(layer, layer.backward(gradient))
    numpy.testing.assert_array_equal(dx, gradient * y)  # y is exactly the scaled mask here
    assert 0 < (dx == 0).mean() < 1
    assert layer.backward(gradient, input_gradient=False) is None


def test_evaluation_mode_and_rate_zero_are_the_identity(backend_name):
    x = numpy.random.default_rng(4).normal(size=(6, 5))
    for layer in (_dropout(backend_name).eval(), _dropout(backend_name, rate=0.0)):
        numpy.testing.assert_array_equal(_host(layer, layer.forward(x)), x)
        numpy.testing.assert_array_equal(_host(layer, layer.backward(2 * x)), 2 * x)


def test_network_eval_switches_dropout_off(backend_name):
    with fastprop.use_backend(backend_name, dtype="float64"):
        net = Network([Linear(4, 6, rng=1), Dropout(0.5, rng=2), Linear(6, 2, rng=3)])
    x = numpy.random.default_rng(5).normal(size=(8, 4))
    first, second = (_host(net, net.forward(x)) for _ in range(2))
    assert not numpy.array_equal(first, second)
    net.eval()
    first, second = (_host(net, net.forward(x)) for _ in range(2))
    numpy.testing.assert_array_equal(first, second)
    numpy.testing.assert_array_equal(first, fastprop.predict(net, x))


def test_seeded_masks_repeat_and_match_the_numpy_backend(backend_name):
    x = numpy.ones((10, 12))
    masks = [_host(layer, layer.forward(x)) for layer in (
        _dropout(backend_name, rng=11), _dropout(backend_name, rng=11), _dropout("numpy", rng=11),
        _dropout(backend_name, rng=12),
    )]
    numpy.testing.assert_array_equal(masks[0], masks[1])
    numpy.testing.assert_array_equal(masks[0], masks[2])
    assert not numpy.array_equal(masks[0], masks[3])


def test_shared_generator_follows_fastprop_seed(backend_name):
    outputs = []
    for _ in range(2):
        fastprop.seed(21)
        layer = _dropout(backend_name, rng=None)
        outputs.append(_host(layer, layer.forward(numpy.ones((5, 5)))))
    numpy.testing.assert_array_equal(*outputs)


def test_dtype_is_kept(backend_name):
    layer = _dropout(backend_name, dtype="float32")
    y = layer.forward(numpy.ones((4, 4), dtype=numpy.float32))
    assert y.dtype == numpy.float32
    assert layer.backward(numpy.ones((4, 4), dtype=numpy.float32)).dtype == numpy.float32


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_invalid_rate_is_refused(rate):
    with pytest.raises(ValueError, match=r"Dropout needs a rate in \[0, 1\)"):
        Dropout(rate)


def test_backward_before_forward_and_wrong_gradient_shape_fail_clearly(backend_name):
    layer = _dropout(backend_name)
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        layer.backward(numpy.ones((2, 2)))
    layer.forward(numpy.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Dropout\(0.3\).backward expected a gradient of shape \(2, 3\)"):
        layer.backward(numpy.ones((3, 2)))


def test_gradcheck_in_evaluation_mode(backend_name):
    with fastprop.use_backend(backend_name, dtype="float64"):
        net = Network([Linear(4, 5, rng=1), Sigmoid(), Dropout(0.4, rng=2), Linear(5, 3, rng=3), Sigmoid()])
    rng = numpy.random.default_rng(6)
    result = fastprop.gradcheck(net, MeanSquareError(), rng.normal(size=(7, 4)), rng.random((7, 3)))
    assert result.passed(1e-6), str(result)
