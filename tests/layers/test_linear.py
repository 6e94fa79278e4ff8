"""``Linear`` on every available backend: the notebook's initialisation and attributes, gradients that
accumulate, the SGD update, assignable parameters, one sample as one row, and an input beyond float32
refused."""

from __future__ import annotations

import warnings

import numpy
import pytest

import fastprop
from fastprop import Linear
from tests.conftest import relative_error
from tests.helpers import DTYPES, RNG, assert_one_sentence


def test_linear_shapes_and_notebook_initialisation():
    fastprop.seed(0)
    layer = Linear(784, 10)
    assert (layer.n_in, layer.n_out) == (784, 10)
    assert layer.w.shape == (10, 784) and layer.b.shape == (1, 10)
    assert layer.dw.shape == (10, 784) and layer.db.shape == (1, 10)
    assert layer.w.dtype == layer.b.dtype == numpy.float32
    assert layer.x_in is None
    assert 0.095 < float(layer.w.std()) < 0.105
    assert not numpy.asarray(layer.b).any()  # the notebook's bias starts at zero
    assert not numpy.asarray(layer.dw).any() and not numpy.asarray(layer.db).any()
    he = Linear(400, 300, init="he")
    assert abs(float(he.w.std()) - numpy.sqrt(2 / 400)) < 0.003
    assert not numpy.asarray(he.b).any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_come_from_numpy_global_generator_as_in_the_notebook(backend_name, dtype):
    numpy.random.seed(5)
    with fastprop.use_backend(backend_name, dtype=dtype):
        layer, sigma = Linear(7, 4), Linear(3, 2, initial_sigma=0.5)
    after = numpy.random.randn()  # the layers consumed exactly 4 * 7 + 2 * 3 normals
    numpy.random.seed(5)
    expected_w = 0.1 * numpy.random.randn(4, 7)
    expected_sigma = 0.5 * numpy.random.randn(2, 3)
    assert numpy.random.randn() == after
    numpy.testing.assert_array_equal(layer.backend.to_numpy(layer.w), expected_w.astype(dtype))
    numpy.testing.assert_array_equal(sigma.backend.to_numpy(sigma.w), expected_sigma.astype(dtype))
    assert not layer.backend.to_numpy(layer.b).any()


def test_gradients_accumulate_until_zero_gradients(backend_name):
    with fastprop.use_backend(backend_name, dtype="float64"):
        layer = Linear(5, 3)
    to_host = layer.backend.to_numpy
    xa, ga = RNG.normal(size=(4, 5)), RNG.normal(size=(4, 3))
    xb, gb = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 3))
    layer.zero_gradients()
    layer.forward(xa)
    layer.backward(ga)
    layer.forward(xb)
    layer.backward(gb)
    assert relative_error(to_host(layer.x_in), xb) < 1e-12  # the last input
    expected = ga.T @ xa + gb.T @ xb
    assert relative_error(to_host(layer.dw), expected) < 1e-12
    assert relative_error(to_host(layer.db), ga.sum(0, keepdims=True) + gb.sum(0, keepdims=True)) < 1e-12
    layer.zero_gradients()
    assert not to_host(layer.dw).any() and not to_host(layer.db).any()


def test_update_parameters_is_sgd_on_the_summed_gradient(backend_name):
    with fastprop.use_backend(backend_name, dtype="float64"):
        layer = Linear(3, 2)
    to_host = layer.backend.to_numpy
    layer.b = RNG.normal(size=(1, 2))  # a non-zero bias, so its update is visible
    weights, bias = to_host(layer.w).copy(), to_host(layer.b).copy()
    x, g = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 2))
    layer.zero_gradients()
    layer.forward(x)
    layer.backward(g)
    layer.update_parameters(0.1)
    assert relative_error(to_host(layer.w), weights - 0.1 * g.T @ x) < 1e-12
    assert relative_error(to_host(layer.b), bias - 0.1 * g.sum(0, keepdims=True)) < 1e-12


def test_parameters_are_assignable_and_converted(backend_name):
    with fastprop.use_backend(backend_name, dtype="float32"):
        layer = Linear(3, 2)
    values = numpy.arange(6, dtype=numpy.float64).reshape(2, 3)
    layer.w = values
    assert layer.backend.is_native(layer.w) and layer.w.dtype == numpy.float32
    numpy.testing.assert_array_equal(layer.backend.to_numpy(layer.w), values)
    layer.w -= 1  # updates in place stay in the layer: the caller's array is a copy
    assert values[0, 0] == 0
    layer.b = [[1.0, -1.0]]
    y = layer.backend.to_numpy(layer.forward(numpy.ones((1, 3))))
    numpy.testing.assert_array_equal(y, [[1 + 0.0, 9 - 1.0]])
    with pytest.raises(ValueError, match=r"Linear\(3, 2\)\.w must keep its shape \(2, 3\)"):
        layer.w = numpy.ones((3, 2))


def test_one_sample_is_one_row(backend_name):
    with fastprop.use_backend(backend_name, dtype="float64"):
        layer = Linear(4, 3)
    layer.b = [[1.0, 2.0, 3.0]]
    x = numpy.arange(4.0)
    y = layer.forward(x)
    assert y.shape == (1, 3)
    to_host = layer.backend.to_numpy
    assert relative_error(to_host(y), x @ to_host(layer.w).T + [[1.0, 2.0, 3.0]]) < 1e-12
    d_in = layer.backward(numpy.ones(3))  # a gradient for that one row may be 1-D as well
    assert d_in.shape == (1, 4)
    assert relative_error(to_host(layer.dw), numpy.ones((3, 1)) * x) < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_gradient_of_one_row_is_the_outer_product(backend_name, dtype):
    x = numpy.array([[1.0, -2.0, 0.5, 3.0]])
    d = numpy.array([[0.25, -1.0, 2.0]])
    with fastprop.use_backend(backend_name, dtype):
        layer = Linear(4, 3, rng=0)
    layer.zero_gradients()
    layer.forward(x[0])  # one 1-D sample is one row
    assert layer.x_in.shape == (1, 4)
    layer.backward(d)
    numpy.testing.assert_allclose(numpy.asarray(layer.dw), d.T @ x, rtol=1e-6)
    numpy.testing.assert_allclose(numpy.asarray(layer.db), d, rtol=1e-6)


def test_linear_refuses_a_float64_input_beyond_float32(backend_name):
    with fastprop.use_backend(backend_name, "float32"):
        layer = Linear(3, 2, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as caught:
            layer.forward(numpy.array([[1e300, 0, 0]]))
    assert_one_sentence(str(caught.value), "Linear(3, 2)", "float32")
    with fastprop.use_backend(backend_name, "float64"):
        layer = Linear(3, 2, rng=0)
    assert numpy.asarray(layer.forward(numpy.array([[1e300, 0, 0]]))).shape == (1, 2)
