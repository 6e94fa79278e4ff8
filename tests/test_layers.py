"""Layers on every available backend: gradients against finite differences, fusion, boundaries."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import (
    CrossEntropy, Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftMax, SoftmaxCrossEntropy, Tanh,
)
from tests.conftest import relative_error

RNG = numpy.random.default_rng(42)


def _data(batch, n_in, n_out, one_hot=True):
    x = RNG.normal(size=(batch, n_in))
    if one_hot:
        target = numpy.eye(n_out)[RNG.integers(0, n_out, batch)]
    else:
        target = RNG.random((batch, n_out))
    return x, target


MODELS = {
    "linear": (lambda: Linear(5, 3), MeanSquareError),
    "linear+sigmoid": (lambda: Network([Linear(5, 3), Sigmoid()]), MeanSquareError),
    "relu": (lambda: Network([Linear(5, 4), ReLU(), Linear(4, 3)]), MeanSquareError),
    "tanh": (lambda: Network([Linear(5, 4), Tanh(), Linear(4, 3)]), MeanSquareError),
    "softmax+cross-entropy": (lambda: Network([Linear(5, 3), SoftMax()]), CrossEntropy),
    "softmax-cross-entropy on logits": (lambda: Network([Linear(5, 4), Sigmoid(), Linear(4, 3)]), SoftmaxCrossEntropy),
    "nested": (
        lambda: Network([Network([Linear(5, 4), Sigmoid()]), Network([Linear(4, 3), Sigmoid()])]),
        MeanSquareError,
    ),
    "unfused": (lambda: Network([Linear(5, 4), Sigmoid(), Linear(4, 3), Sigmoid()], fuse=False), MeanSquareError),
}


@pytest.mark.parametrize("model", MODELS)
def test_every_layer_passes_gradcheck(backend_name, model):
    build, cost = MODELS[model]
    with fastprop.use_backend(backend_name, dtype="float64"):
        net = build()
    x, target = _data(7, 5, 3, one_hot=model != "relu")
    result = fastprop.gradcheck(net, cost(), x, target, max_entries=40)
    assert result.passed(1e-6), f"{model} on {backend_name}:\n{result}"
    assert len(result.errors) == len(net.parameters()) + 1


@pytest.mark.parametrize("activation", [Sigmoid, ReLU, Tanh, SoftMax])
def test_activation_alone_passes_gradcheck(backend_name, activation):
    with fastprop.use_backend(backend_name, dtype="float64"):
        layer = activation()
    x, target = _data(6, 4, 4, one_hot=False)
    result = fastprop.gradcheck(layer, MeanSquareError(), x, target)
    assert result.passed(1e-6), str(result)


def test_gradcheck_catches_a_wrong_gradient():
    class Doubled(Sigmoid):
        def backward(self, gradient, input_gradient=True):
            return 2 * super().backward(gradient, input_gradient)

    with fastprop.use_backend("numpy", dtype="float64"):
        net = Network([Linear(4, 3), Doubled()], fuse=False)
    x, target = _data(5, 4, 3)
    result = fastprop.gradcheck(net, MeanSquareError(), x, target)
    assert not result.passed(1e-3)
    assert result.errors["0 Linear(4, 3).weights"] > 0.4


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_linear_sigmoid_matches_unfused(backend_name, dtype, tolerance):
    with fastprop.use_backend(backend_name, dtype=dtype):
        fused = Network([Linear(20, 8, rng=3), Sigmoid(), Linear(8, 4, rng=4), Sigmoid()], input_gradient=True)
        plain = Network([Linear(20, 8, rng=3), Sigmoid(), Linear(8, 4, rng=4), Sigmoid()], fuse=False, input_gradient=True)
    x, target = _data(33, 20, 4)
    outputs = []
    for net in (fused, plain):
        net.zero_gradients()
        p = net.forward(x)
        dx = net.backward(MeanSquareError().gradient(p, target))
        outputs.append([p, dx] + [parameter.gradient for parameter in net.parameters()])
    backend = fused.backend
    for a, b in zip(*outputs):
        assert relative_error(backend.to_numpy(a), backend.to_numpy(b)) <= tolerance


def test_network_skips_the_first_input_gradient_unless_asked():
    net = Network([Linear(6, 3), Sigmoid()])
    x, target = _data(4, 6, 3)
    p = net.forward(x)
    assert net.backward(MeanSquareError().gradient(p, target)) is None
    dx = net.backward(MeanSquareError().gradient(p, target), input_gradient=True)
    assert dx.shape == (4, 6)


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
    expected = ga.T @ xa + gb.T @ xb
    assert relative_error(to_host(layer.weights_gradient), expected) < 1e-12
    assert relative_error(to_host(layer.bias_gradient), ga.sum(0, keepdims=True) + gb.sum(0, keepdims=True)) < 1e-12
    layer.zero_gradients()
    assert not to_host(layer.weights_gradient).any() and not to_host(layer.bias_gradient).any()


def test_update_parameters_is_sgd_on_the_summed_gradient(backend_name):
    with fastprop.use_backend(backend_name, dtype="float64"):
        layer = Linear(3, 2)
    to_host = layer.backend.to_numpy
    weights = to_host(layer.weights).copy()
    x, g = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 2))
    layer.zero_gradients()
    layer.forward(x)
    layer.backward(g)
    layer.update_parameters(0.1)
    assert relative_error(to_host(layer.weights), weights - 0.1 * g.T @ x) < 1e-12


def test_linear_shapes_and_notebook_initialisation():
    fastprop.seed(0)
    layer = Linear(784, 10)
    assert layer.weights.shape == (10, 784) and layer.bias.shape == (1, 10)
    assert layer.weights.dtype == numpy.float32
    assert 0.095 < float(layer.weights.std()) < 0.105
    he = Linear(400, 300, init="he")
    assert abs(float(he.weights.std()) - numpy.sqrt(2 / 400)) < 0.003
    assert not numpy.asarray(he.bias).any()


def test_seeded_layers_are_identical_and_unseeded_differ():
    assert numpy.array_equal(Linear(4, 3, rng=7).weights, Linear(4, 3, rng=7).weights)
    fastprop.seed(1)
    first = Linear(4, 3).weights
    fastprop.seed(1)
    assert numpy.array_equal(first, Linear(4, 3).weights)
    assert not numpy.array_equal(first, Linear(4, 3).weights)


def test_float32_network_stays_float32_on_float64_input(backend_name):
    with fastprop.use_backend(backend_name, dtype="float32"):
        net = Network([Linear(784, 30), ReLU(), Linear(30, 10), Sigmoid()])
    x = numpy.random.rand(12, 784)  # float64, as the notebook feeds it
    p = net.forward(x)
    assert p.dtype == numpy.float32
    cost = MeanSquareError()
    t = numpy.eye(10)[numpy.arange(12) % 10]
    assert cost.estimate(p, t).dtype == numpy.float32
    net.backward(cost.gradient(p, t))
    assert all(parameter.gradient.dtype == numpy.float32 for parameter in net.parameters())


def test_to_backend_moves_parameters_and_changes_dtype():
    net = Network([Linear(4, 3, rng=0), Sigmoid()])
    weights = numpy.asarray(net.layers[0].weights, dtype=numpy.float64)
    net.to_backend("numpy", dtype="float64")
    assert net.dtype == numpy.float64
    assert net.layers[0].weights.dtype == numpy.float64
    assert net.layers[0].weights_gradient.dtype == numpy.float64
    assert numpy.array_equal(net.layers[0].weights, weights)


def test_network_nests_and_lists_parameters_in_order():
    inner = Network([Linear(4, 3), Sigmoid()])
    net = Network([inner, Linear(3, 2)])
    names = [(parameter.layer, parameter.name) for parameter in net.parameters()]
    assert names == [
        (inner.layers[0], "weights"), (inner.layers[0], "bias"),
        (net.layers[1], "weights"), (net.layers[1], "bias"),
    ]
    assert net.leaves() == [inner.layers[0], inner.layers[1], net.layers[1]]
    assert net.forward(numpy.ones((2, 4))).shape == (2, 2)


class _ForeignArray:
    """Stands for an array of another library (a CuPy array given to a NumPy layer)."""

    shape, ndim, dtype = (2, 4), 2, numpy.float32


def test_foreign_array_fails_naming_the_layer_and_the_fix():
    layer = Linear(4, 3)
    with pytest.raises(fastprop.BackendError, match=r"Linear\(4, 3\) input .*_ForeignArray.*'numpy' backend.*to_backend"):
        layer.forward(_ForeignArray())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Linear(4, 3).forward(numpy.ones((2, 5))), r"Linear\(4, 3\) expected input of shape \(batch, 4\), got \(2, 5\)"),
        (lambda: Linear(4, 3).forward(numpy.ones(4)), r"got \(4,\); .*reshape\(1, -1\)"),
        (lambda: Linear(4, 3).backward(numpy.ones((2, 3))), r"backward was called before forward"),
        (lambda: Linear(0, 3), r"positive integer n_in, got 0"),
        (lambda: Linear(4, 3, init="magic"), r"init='magic'; choose one of 'normal', 'xavier', 'he'"),
        (lambda: Network([Linear(4, 3), "sigmoid"]), r"Network layer 1 is a str, not a fastprop Layer"),
        (lambda: Linear(4, 3).forward(numpy.array([["a"] * 4])), r"dtype <U1, but fastprop needs real numbers"),
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
