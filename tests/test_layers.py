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


@pytest.fixture(autouse=True)
def _weights_from_numpy_global_generator():
    """fastprop.seed switches later layers to fastprop's generator; give the default back after each test."""
    yield
    fastprop.seed(None)


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
    "wide relu (product, then bias and ReLU in one pass)": (
        lambda: Network([Linear(5, 40), ReLU(), Linear(40, 3)]), MeanSquareError),
    "relu unfused": (lambda: Network([Linear(5, 40), ReLU(), Linear(40, 3)], fuse=False), MeanSquareError),
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
    x, target = _data(7, 5, 3, one_hot="relu" not in model)
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
        def backward(self, d_out, input_gradient=True):
            return 2 * super().backward(d_out, input_gradient)

    with fastprop.use_backend("numpy", dtype="float64"):
        net = Network([Linear(4, 3), Doubled()], fuse=False)
    x, target = _data(5, 4, 3)
    result = fastprop.gradcheck(net, MeanSquareError(), x, target)
    assert not result.passed(1e-3)
    assert result.errors["0 Linear(4, 3).w"] > 0.4


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_linear_sigmoid_matches_unfused(backend_name, dtype, tolerance):
    with fastprop.use_backend(backend_name, dtype=dtype):
        fused = Network([Linear(20, 8, rng=3), Sigmoid(), Linear(8, 4, rng=4), Sigmoid()],
                        input_gradient=True)
        plain = Network([Linear(20, 8, rng=3), Sigmoid(), Linear(8, 4, rng=4), Sigmoid()],
                        fuse=False, input_gradient=True)
    x, target = _data(33, 20, 4)
    outputs = []
    for net in (fused, plain):
        net.zero_gradients()
        p = net.forward(x)
        cost_function = MeanSquareError()
        dx = net.backward(cost_function.gradient(cost_function.estimate(target, p)))
        # what each layer keeps is the notebook's, fused or not: Linear.x_in, Sigmoid.x_in and x_out
        kept = [net.layers[0].x_in, net.layers[1].x_in, net.layers[1].x_out,
                net.layers[2].x_in, net.layers[3].x_in, net.layers[3].x_out]
        outputs.append([p, dx] + kept + [parameter.gradient for parameter in net.parameters()])
    backend = fused.backend
    # x_in is z, not p
    assert relative_error(backend.to_numpy(outputs[0][3]), backend.to_numpy(outputs[0][4])) > 0.1
    for a, b in zip(*outputs):
        assert a.shape == b.shape
        assert relative_error(backend.to_numpy(a), backend.to_numpy(b)) <= tolerance


@pytest.mark.parametrize("width", [8, 40], ids=["fused kernel", "product and epilogue"])
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_linear_relu_matches_unfused(backend_name, dtype, tolerance, width):
    def build(fuse):
        with fastprop.use_backend(backend_name, dtype=dtype):
            return Network([Linear(20, width, rng=3), ReLU(), Linear(width, 4, rng=4), ReLU()], fuse=fuse,
                           input_gradient=True)

    x, target = _data(33, 20, 4)
    outputs = []
    for net in (build(True), build(False)):
        net.zero_gradients()
        for _ in range(2):  # the second backward adds to the gradients
            y = net.forward(x)
            cost_function = MeanSquareError()
            dx = net.backward(cost_function.gradient(cost_function.estimate(target, y)))
        assert net.layers[1].x_out is not None and net.layers[3].x_out is y
        outputs.append([y, dx, net.layers[0].x_in, net.layers[1].x_out, net.layers[2].x_in]
                       + [parameter.gradient for parameter in net.parameters()])
    backend = build(True).backend
    assert float(backend.to_numpy(outputs[0][3]).min()) == 0.0  # the ReLU cut something off
    for a, b in zip(*outputs):
        assert a.shape == b.shape
        assert relative_error(backend.to_numpy(a), backend.to_numpy(b)) <= tolerance


@pytest.mark.parametrize("fuse", [True, False])
def test_network_backward_returns_the_input_gradient(fuse):
    with fastprop.use_backend("numpy", dtype="float64"):
        net = Network([Linear(6, 3), Sigmoid()], fuse=fuse)
    x, target = _data(4, 6, 3)
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


def test_seeded_layers_are_identical_and_unseeded_differ():
    assert numpy.array_equal(Linear(4, 3, rng=7).w, Linear(4, 3, rng=7).w)
    state = numpy.random.get_state()
    assert numpy.array_equal(Linear(4, 3, rng=numpy.random.default_rng(7)).w, Linear(4, 3, rng=7).w)
    assert numpy.array_equal(numpy.random.get_state()[1], state[1])  # rng= leaves np.random alone
    fastprop.seed(1)
    first = Linear(4, 3).w
    fastprop.seed(1)
    assert numpy.array_equal(first, Linear(4, 3).w)
    assert not numpy.array_equal(first, Linear(4, 3).w)
    fastprop.seed(None)  # back to NumPy's global generator
    numpy.random.seed(1)
    from_global = Linear(4, 3).w
    numpy.random.seed(1)
    assert numpy.array_equal(from_global, (0.1 * numpy.random.randn(3, 4)).astype(numpy.float32))


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


def test_backward_checks_the_gradient_shape():
    layer = Linear(4, 3)
    layer.forward(numpy.ones((2, 4)))
    with pytest.raises(ValueError, match=r"expected a gradient of shape \(2, 3\) .* got \(2, 4\)"):
        layer.backward(numpy.ones((2, 4)))
    sigmoid = Sigmoid()
    sigmoid.forward(numpy.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Sigmoid\(\).backward expected a gradient of shape \(2, 3\)"):
        sigmoid.backward(numpy.ones((3, 3)))
