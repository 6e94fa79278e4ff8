"""What every layer checks at its boundary (``fastprop.layers.base``): foreign arrays, bad input and
bad gradient shapes in one clear error, and zero or one rows giving what N rows give."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import Linear, Network, ReLU, Sigmoid, SoftMax, Tanh
from tests.helpers import DTYPES


class _ForeignArray:
    """Stands for an array of another library (a CuPy array given to a NumPy layer)."""

    shape, ndim, dtype = (2, 4), 2, numpy.float32


def test_foreign_array_fails_naming_the_layer_and_the_fix():
    layer = Linear(4, 3)
    with pytest.raises(fastprop.BackendError,
                       match=r"Linear\(4, 3\) input .*_ForeignArray.*'numpy' backend.*to_backend"):
        layer.forward(_ForeignArray())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Linear(4, 3).forward(numpy.ones((2, 5))),
         r"Linear\(4, 3\) expected input of shape \(batch, 4\), got \(2, 5\)"),
        (lambda: Linear(4, 3).forward(numpy.ones(5)),
         r"expected input of shape \(batch, 4\), got \(5,\); give one row per sample"),
        (lambda: Linear(4, 3).backward(numpy.ones((2, 3))), r"backward was called before forward"),
        (lambda: Linear(0, 3), r"positive integer n_in, got 0"),
        (lambda: Linear(4, 3, init="magic"), r"init='magic'; choose one of 'normal', 'xavier', 'he'"),
        (lambda: Network([Linear(4, 3), "sigmoid"]),
         r"Network layer 1 is a str, which has no forward, backward, zero_gradients and update_parameters"),
        (lambda: Linear(4, 3).forward(numpy.array([["a"] * 4])),
         r"dtype <U1, but fastprop needs real numbers"),
    ],
)
def test_bad_input_gets_one_clear_error(call, message):
    with pytest.raises((ValueError, TypeError, RuntimeError)) as error:
        call()
    assert error.match(message)
    assert "\n" not in str(error.value)


def test_backward_checks_the_gradient_shape():
    layer = Linear(4, 3)
    layer.forward(numpy.ones((2, 4)))
    with pytest.raises(ValueError, match=r"expected a gradient of shape \(2, 3\) .* got \(2, 4\)"):
        layer.backward(numpy.ones((2, 4)))
    sigmoid = Sigmoid()
    sigmoid.forward(numpy.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Sigmoid\(\).backward expected a gradient of shape \(2, 3\)"):
        sigmoid.backward(numpy.ones((3, 3)))


# -- zero rows and one row keep their meaning ------------------------------------------------------


LAYERS = {
    "Linear": (lambda: Linear(4, 3, rng=0), 4, 3),
    "Sigmoid": (Sigmoid, 3, 3),
    "ReLU": (ReLU, 3, 3),
    "Tanh": (Tanh, 3, 3),
    "SoftMax": (SoftMax, 3, 3),
    "Network[Linear, Sigmoid] fused": (lambda: Network([Linear(4, 3, rng=0), Sigmoid()]), 4, 3),
    "Network[Linear, Sigmoid] unfused": (lambda: Network([Linear(4, 3, rng=0), Sigmoid()], fuse=False), 4, 3),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_layers_on_zero_and_one_rows_give_what_n_rows_give(backend_name, dtype, layer_name):
    make, n_in, n_out = LAYERS[layer_name]
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((5, n_in))
    d_out = rng.standard_normal((5, n_out))
    with fastprop.use_backend(backend_name, dtype):
        reference = make()
        layers = {n: make() for n in (0, 1)}
    tolerance = 1e-6 if dtype == "float32" else 1e-12
    reference.zero_gradients()
    y5 = reference.forward(x)
    dx5 = reference.backward(d_out)
    assert y5.shape == (5, n_out) and dx5.shape == (5, n_in)
    for n, layer in layers.items():
        layer.zero_gradients()
        y = layer.forward(x[:n])
        assert type(y) is type(y5) and y.dtype == y5.dtype == numpy.dtype(dtype)
        assert y.shape == (n, n_out)
        dx = layer.backward(d_out[:n])
        assert type(dx) is type(dx5) and dx.dtype == dx5.dtype and dx.shape == (n, n_in)
        if n == 1:  # one row gives the first row of the N-row result
            numpy.testing.assert_allclose(numpy.asarray(y), numpy.asarray(y5)[:1],
                                          rtol=tolerance, atol=tolerance)
            numpy.testing.assert_allclose(numpy.asarray(dx), numpy.asarray(dx5)[:1],
                                          rtol=1e-5, atol=tolerance)
        for parameter, reference_parameter in zip(layer.parameters(), reference.parameters()):
            gradient = numpy.asarray(parameter.gradient)
            assert gradient.shape == reference_parameter.gradient.shape
            assert gradient.dtype == reference_parameter.gradient.dtype
            if n == 0:  # a sum over no rows is zero, not NaN and not stale
                assert numpy.array_equal(gradient, numpy.zeros_like(gradient))


# -- layers own their state: fused stages hand arrays over, gradients are rebound through the parameter


def test_hold_sets_only_the_batch_attributes_a_layer_declares():
    with fastprop.use_backend("numpy", "float64"):
        sigmoid, linear = Sigmoid(), Linear(2, 2, rng=0)
    x = numpy.ones((3, 2))
    sigmoid.hold(x_in=x, x_out=None)
    assert sigmoid.x_in is x and sigmoid.x_out is None
    with pytest.raises(AttributeError, match=r"keeps x_in for its backward pass, not w"):
        linear.hold(w=x)
    assert not numpy.array_equal(linear.w, x[:2])


@pytest.mark.parametrize("activation", [Sigmoid, ReLU])
def test_a_fused_stage_leaves_the_notebook_attributes_an_unfused_pair_would(activation):
    x = numpy.random.default_rng(1).normal(size=(4, 3))
    with fastprop.use_backend("numpy", "float64"):
        fused = Network([Linear(3, 2, rng=2), activation()])
        plain = Network([Linear(3, 2, rng=2), activation()], fuse=False)
    assert numpy.array_equal(fused.forward(x), plain.forward(x))
    (linear, act), (plain_linear, plain_act) = fused.layers, plain.layers
    assert numpy.array_equal(linear.x_in, plain_linear.x_in)
    assert numpy.array_equal(act.x_out, plain_act.x_out)


def test_rebind_gradient_keeps_the_values_and_counts_a_replacement():
    with fastprop.use_backend("numpy", "float64"):
        layer = Linear(3, 2, rng=0)
    weight = layer.parameters()[0]
    weight.gradient[...] = 2.0
    buffer = numpy.zeros(10)
    view = buffer[2:8].reshape(2, 3)
    version = weight.version
    weight.rebind_gradient(view)
    assert layer.dw is view and numpy.all(buffer[2:8] == 2.0) and weight.version == version + 1
    with pytest.raises(ValueError, match=r"cannot take a gradient of shape \(3, 2\)"):
        weight.rebind_gradient(numpy.zeros((3, 2)))


class _DeviceArray(numpy.ndarray):
    """A device array that subclasses NumPy's (as the test suite's stand-in CuPy's does)."""

    __cuda_array_interface__ = {"version": 3}


def test_a_device_array_is_refused_by_a_host_layer_even_when_it_subclasses_numpy():
    with fastprop.use_backend("numpy", "float32"):
        layer = Linear(4, 3, rng=0)
    with pytest.raises(fastprop.BackendError, match=r"input is a .*_DeviceArray.*'numpy' backend"):
        layer.forward(numpy.ones((2, 4), numpy.float32).view(_DeviceArray))
