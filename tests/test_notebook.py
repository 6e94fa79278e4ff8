"""The seed notebook's checks, and a script written like the notebook, run against fastprop."""

from __future__ import annotations

import numpy
import pytest

NOTEBOOK_SCRIPT = """
import numpy as np
from fastprop import Network, Linear, Sigmoid, MeanSquareError, train

net = Network([Linear(784, 10), Sigmoid()])
x = np.random.rand(5, 784)          # float64 host data, as the notebook fed its layers
assert net.forward(x).shape == (5, 10)
history = train(net, MeanSquareError(), 2, 600, 1e-4)
"""


def test_a_notebook_style_script_runs_unchanged(tiny_mnist, monkeypatch, capsys):
    monkeypatch.setenv("FASTPROP_DATA", str(tiny_mnist.parent))
    namespace = {}
    exec(compile(NOTEBOOK_SCRIPT, "notebook", "exec"), namespace)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(",")[0].split("=")[0] for line in lines] == ["cost", "cost"]
    assert len(namespace["history"]) == 2
    assert 0.0 <= namespace["history"].accuracy[-1] <= 1.0


def test_task_2f_sigmoid_derivative_matches_finite_differences():
    from fastprop import Sigmoid, sigmoid_derivative, sigmoid_function

    x = numpy.linspace(-6, 6, 25)
    h = 1e-6
    numeric = (sigmoid_function(x + h) - sigmoid_function(x - h)) / (2 * h)
    assert numpy.allclose(sigmoid_derivative(x), numeric, atol=1e-9)
    layer = Sigmoid()
    gradient = numpy.random.default_rng(0).normal(size=(1, 25))
    layer.forward(x.reshape(1, -1))
    assert numpy.allclose(layer.backward(gradient), gradient * sigmoid_derivative(x), atol=1e-6)


def test_task_3b_one_sgd_step_on_mean_square_error_lowers_the_cost():
    from fastprop import Linear, MeanSquareError, Network, Sigmoid, vectorize

    rng = numpy.random.default_rng(0)
    net = Network([Linear(20, 10, rng=1), Sigmoid()])
    x, t = rng.random((60, 20)), vectorize(rng.integers(0, 10, 60))
    cost = MeanSquareError()
    before = float(cost.estimate(net.forward(x), t).sum())
    net.zero_gradients()
    net.backward(cost.gradient(net.forward(x), t))
    net.update_parameters(1e-2)
    assert float(cost.estimate(net.forward(x), t).sum()) < before


def test_task_6e_softmax_and_cross_entropy_backpropagate_p_minus_t():
    from fastprop import CrossEntropy, SoftMax

    rng = numpy.random.default_rng(1)
    z = rng.normal(size=(8, 10))
    t = numpy.eye(10)[rng.integers(0, 10, 8)]
    softmax = SoftMax()
    p = softmax.forward(z)
    assert numpy.allclose(p.sum(axis=1), 1)
    dz = softmax.backward(CrossEntropy().gradient(p, t))
    assert numpy.allclose(dz, p - t, atol=1e-5)


def test_vectorize_makes_one_hot_rows():
    from fastprop import vectorize

    assert vectorize(3).tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert vectorize([1, 0], n_classes=3).tolist() == [[0, 1, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"labels from 0 to 9"):
        vectorize([10])
