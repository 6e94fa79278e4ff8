"""``Network`` on every available backend: whole networks (fused, unfused, nested) against finite
differences, the input gradient, the very list it is given, nesting, dtypes, moving backends, and one
layer object in two places refused."""

from __future__ import annotations

import copy

import numpy
import pytest

import fastprop
from fastprop import (
    CrossEntropy, Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftMax, SoftmaxCrossEntropy, Tanh,
)
from tests.conftest import relative_error
from tests.helpers import RNG, random_batch


MODELS = {
    "linear": (lambda: Linear(5, 3), MeanSquareError),
    "linear+sigmoid": (lambda: Network([Linear(5, 3), Sigmoid()]), MeanSquareError),
    # seeded weights and inputs (below): every ReLU input stays >= 2e-3 away from the kink at 0
    "relu": (lambda: Network([Linear(5, 4, rng=1), ReLU(), Linear(4, 3, rng=2)]), MeanSquareError),
    "wide relu (product, then bias and ReLU in one pass)": (
        lambda: Network([Linear(5, 40, rng=1), ReLU(), Linear(40, 3, rng=2)]), MeanSquareError),
    "relu unfused": (
        lambda: Network([Linear(5, 40, rng=1), ReLU(), Linear(40, 3, rng=2)], fuse=False), MeanSquareError),
    "tanh": (lambda: Network([Linear(5, 4), Tanh(), Linear(4, 3)]), MeanSquareError),
    "softmax+cross-entropy": (lambda: Network([Linear(5, 3), SoftMax()]), CrossEntropy),
    "softmax-cross-entropy on logits": (
        lambda: Network([Linear(5, 4), Sigmoid(), Linear(4, 3)]),
        SoftmaxCrossEntropy,
    ),
    "nested": (
        lambda: Network([Network([Linear(5, 4), Sigmoid()]), Network([Linear(4, 3), Sigmoid()])]),
        MeanSquareError,
    ),
    "unfused": (
        lambda: Network([Linear(5, 4), Sigmoid(), Linear(4, 3), Sigmoid()], fuse=False),
        MeanSquareError,
    ),
}


@pytest.mark.parametrize("model", MODELS)
def test_every_layer_passes_gradcheck(backend_name, model):
    build, cost = MODELS[model]
    with fastprop.use_backend(backend_name, dtype="float64"):
        net = build()
    x, target = random_batch(7, 5, 3, one_hot="relu" not in model, rng=numpy.random.default_rng(3))
    result = fastprop.gradcheck(net, cost(), x, target, max_entries=40)
    assert result.passed(1e-6), f"{model} on {backend_name}:\n{result}"
    assert len(result.errors) == len(net.parameters()) + 1


@pytest.mark.parametrize("fuse", [True, False])
def test_network_backward_returns_the_input_gradient(fuse):
    with fastprop.use_backend("numpy", dtype="float64"):
        net = Network([Linear(6, 3), Sigmoid()], fuse=fuse)
    x, target = random_batch(4, 6, 3)
    p = net.forward(x)
    d = RNG.normal(size=(4, 3))
    dx = net.backward(d)
    assert dx.shape == (4, 6)
    expected = (d * p * (1 - p)) @ net.layers[0].w  # the notebook's Sigmoid then Linear backward
    assert relative_error(dx, expected) < 1e-12
    assert net.backward(d, input_gradient=False) is None  # training skips it: it is not needed
    with fastprop.use_backend("numpy", dtype="float64"):
        quiet = Network([Linear(6, 3), Sigmoid()], fuse=fuse, input_gradient=False)
    quiet.forward(x)
    assert quiet.backward(d) is None
    assert quiet.backward(d, input_gradient=True).shape == (4, 6)


def test_network_keeps_the_very_list_it_is_given():
    layers = [Linear(4, 3), Sigmoid()]
    net = Network(layers)
    assert net.layers is layers
    layers.append(Linear(3, 2))  # the notebook's list: changing it changes the network
    assert net.forward(numpy.ones((2, 4))).shape == (2, 2)


def test_network_nests_and_lists_parameters_in_order():
    inner = Network([Linear(4, 3), Sigmoid()])
    net = Network([inner, Linear(3, 2)])
    names = [(parameter.layer, parameter.name) for parameter in net.parameters()]
    assert names == [
        (inner.layers[0], "w"), (inner.layers[0], "b"),
        (net.layers[1], "w"), (net.layers[1], "b"),
    ]
    assert net.leaves() == [inner.layers[0], inner.layers[1], net.layers[1]]
    assert net.forward(numpy.ones((2, 4))).shape == (2, 2)


def test_float32_network_stays_float32_on_float64_input(backend_name):
    with fastprop.use_backend(backend_name, dtype="float32"):
        net = Network([Linear(784, 30), ReLU(), Linear(30, 10), Sigmoid()])
    x = numpy.random.rand(12, 784)  # float64, as the notebook feeds it
    p = net.forward(x)
    assert p.dtype == numpy.float32
    cost_function = MeanSquareError()
    t = numpy.eye(10)[numpy.arange(12) % 10]
    cost = cost_function.estimate(t, p)
    assert cost.dtype == numpy.float32
    assert net.backward(cost_function.gradient(cost)).dtype == numpy.float32
    assert all(parameter.gradient.dtype == numpy.float32 for parameter in net.parameters())


def test_to_backend_moves_parameters_and_changes_dtype():
    net = Network([Linear(4, 3, rng=0), Sigmoid()])
    weights = numpy.asarray(net.layers[0].w, dtype=numpy.float64)
    net.to_backend("numpy", dtype="float64")
    assert net.dtype == numpy.float64
    assert net.layers[0].w.dtype == net.layers[0].b.dtype == numpy.float64
    assert net.layers[0].dw.dtype == net.layers[0].db.dtype == numpy.float64
    assert numpy.array_equal(net.layers[0].w, weights)


# -- one layer object in two places ----------------------------------------------------------------


def _tied():
    shared = Linear(4, 4, rng=0)
    return shared, [shared, ReLU(), shared]


@pytest.mark.parametrize("make", [
    lambda: Network(_tied()[1]),
    lambda: Network([Linear(4, 4, rng=0), (relu := ReLU()), Linear(4, 4, rng=1), relu]),
    lambda: Network([(inner := Network([Linear(4, 4, rng=0), Sigmoid()])), inner]),
    lambda: Network([(layer := Linear(4, 4, rng=0)), Network([Sigmoid(), layer])]),
], ids=["linear twice", "activation twice", "network twice", "nested"])
def test_a_layer_object_in_two_places_is_refused(make):
    with pytest.raises(ValueError, match=r"Network got the same .* object at layers .* and .*; .* cannot "
                                         r"sit in two places: give each place its own layer \(copy.deepcopy"):
        make()


def test_a_layer_added_twice_after_building_is_refused_at_the_next_pass():
    layers = [Linear(4, 4, rng=0), ReLU()]
    net = Network(layers)
    layers.append(layers[0])
    with pytest.raises(ValueError, match="the same Linear"):
        net.forward(numpy.ones((2, 4)))
    layers[-1] = copy.deepcopy(layers[0])  # a copy is its own layer
    assert net.forward(numpy.ones((2, 4))).shape == (2, 4)


class _Recording(Linear):
    """A Linear that records the ``input_gradient`` each backward was asked for."""

    def backward(self, d_out, input_gradient=True):
        self.asked = getattr(self, "asked", []) + [input_gradient]
        return super().backward(d_out, input_gradient)


@pytest.mark.parametrize("fuse", [True, False])
def test_layers_before_the_first_that_learns_get_no_gradient_to_compute(fuse):
    from fastprop import Flatten, Reshape

    class Counted(Reshape):
        calls = 0

        def backward(self, d_out, input_gradient=True):
            Counted.calls += 1
            return super().backward(d_out, input_gradient)

    first, last = _Recording(12, 5), _Recording(5, 3)
    net = Network([Counted((3, 4, 1)), Flatten(), first, ReLU(), last], fuse=fuse)
    x = numpy.random.default_rng(0).normal(size=(6, 12))
    d_out = numpy.ones((6, 3))
    net.forward(x)
    assert net.backward(d_out, input_gradient=False) is None
    assert Counted.calls == 0 and first.asked == [False] and last.asked == [True]
    first_gradient = first.dw.copy()
    net.zero_gradients()
    net.forward(x)
    assert net.backward(d_out, input_gradient=True).shape == x.shape  # everything when asked for
    assert Counted.calls == 1 and first.asked[-1] is True
    numpy.testing.assert_array_equal(first.dw, first_gradient)  # the same weight gradients either way
