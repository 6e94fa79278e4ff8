"""The seed notebook's checks, and a script written like the notebook, run against fastprop."""

from __future__ import annotations

import re

import numpy
import pytest

import fastprop


@pytest.fixture(autouse=True)
def _weights_from_numpy_global_generator():
    """The notebook draws its weights from np.random: undo any fastprop.seed of an earlier test."""
    fastprop.seed(None)
    yield

# The notebook's cells for tasks 2f and 3b, as written there (two epochs instead of 100).
NOTEBOOK_SCRIPT = """
import numpy as np
from fastprop import Network, Linear, Sigmoid, MeanSquareError, train

np.random.seed(0)
input_size = 28**2
label_size = 10
batch_size = 600
learning_rate = 0.0001
number_epochs = 2

random_input = np.random.rand(batch_size, input_size)
random_label = np.random.rand(batch_size, label_size)

linear_layer = Linear(input_size, label_size)
sigmoid_layer = Sigmoid()
cost_function = MeanSquareError()

act=linear_layer.forward(random_input)
pred=sigmoid_layer.forward(act)

cost=cost_function.estimate(random_label,pred)
grad=cost_function.gradient(cost)

d=sigmoid_layer.backward(grad)
d_in=linear_layer.backward(d)

linear_layer.update_parameters(learning_rate)

linear_layer_1 = Linear(input_size, label_size)
sigmoid_layer = Sigmoid()
net = Network([linear_layer_1, sigmoid_layer])
history = train(net, cost_function, number_epochs, batch_size, learning_rate)
"""


def _reference_run(folder):
    """The notebook's own code (its Linear, Sigmoid, MeanSquareError and train_epoch), in float64 NumPy,
    fed the same random numbers as NOTEBOOK_SCRIPT; returns the per-epoch (cost, accuracy)."""
    sigmoid = lambda z: 1.0 / (1.0 + numpy.exp(-z))  # noqa: E731
    numpy.random.seed(0)
    numpy.random.rand(600, 784)
    numpy.random.rand(600, 10)
    numpy.random.randn(10, 784)  # task 2f's linear_layer
    w, b = 0.1 * numpy.random.randn(10, 784), numpy.zeros((1, 10))
    images, labels, _, _ = fastprop.load_data(path=folder)  # permuted with np.random, as the notebook
    train_x, validation_x, train_t, validation_t = images[:1000], images[1000:], labels[:1000], labels[1000:]
    results = []
    for _ in range(2):
        batch_costs = []
        for i in range(0, 1000, 600):
            x, t = train_x[i : i + 600], train_t[i : i + 600]
            p = sigmoid(x @ w.T + b)
            batch_costs.append(numpy.mean(0.5 * (t - p) ** 2))
            dz = (p - t) * p * (1 - p)
            w, b = w - 1e-4 * dz.T @ x, b - 1e-4 * dz.sum(0, keepdims=True)
        predictions = sigmoid(validation_x @ w.T + b)
        accuracy = numpy.mean(predictions.argmax(1) == validation_t.argmax(1))
        results.append((numpy.mean(batch_costs), accuracy))
    return results


def test_a_notebook_style_script_runs_unchanged(tiny_mnist, monkeypatch, capsys):
    monkeypatch.setenv("FASTPROP_DATA", str(tiny_mnist.parent))
    namespace = {}
    exec(compile(NOTEBOOK_SCRIPT, "notebook", "exec"), namespace)
    captured = capsys.readouterr()
    history = namespace["history"]
    assert len(history) == 2 and 0.0 <= history.accuracy[-1] <= 1.0
    # the notebook's lines, one per epoch, showing what History holds
    assert captured.out.strip().splitlines() == [
        "cost=%5.6f, accuracy=%2.6f" % (cost, accuracy)
        for cost, accuracy in zip(history.cost, history.accuracy)
    ]
    # the notebook's bars, counted from e=0
    bars = set(re.findall(r"(training|validation), e=(\d+)", captured.err))
    assert bars == {("training", "0"), ("training", "1"), ("validation", "0"), ("validation", "1")}
    # task 2f's cell left what the notebook's classes leave
    assert namespace["d_in"].shape == (600, 784)
    assert namespace["sigmoid_layer"] is namespace["net"].layers[1]
    assert namespace["net"].layers[0].x_in.shape == (200, 784)  # the last forward: the 200 validation rows
    # and the numbers are the notebook's: mean over batches of np.mean(cost), the same weights
    for (cost, accuracy), (expected_cost, expected_accuracy) in zip(
        zip(history.cost, history.accuracy), _reference_run(tiny_mnist)
    ):
        assert cost == pytest.approx(expected_cost, rel=1e-4)
        assert accuracy == pytest.approx(expected_accuracy, abs=0.011)


def test_task_2f_sigmoid_derivative_matches_finite_differences():
    from fastprop import Sigmoid, sigmoid_derivative, sigmoid_function

    x = numpy.linspace(-6, 6, 25)
    h = 1e-6
    numeric = (sigmoid_function(x + h) - sigmoid_function(x - h)) / (2 * h)
    assert numpy.allclose(sigmoid_derivative(x), numeric, atol=1e-9)
    layer = Sigmoid()
    gradient = numpy.random.default_rng(0).normal(size=(1, 25))
    layer.forward(x.reshape(1, -1))
    assert numpy.allclose(layer.x_in, x.reshape(1, -1), atol=1e-6)  # the notebook's Sigmoid keeps x_in
    assert numpy.allclose(layer.backward(gradient), gradient * sigmoid_derivative(x), atol=1e-6)


def test_task_3b_one_sgd_step_on_mean_square_error_lowers_the_cost():
    from fastprop import Linear, MeanSquareError, Network, Sigmoid, vectorize

    rng = numpy.random.default_rng(0)
    net = Network([Linear(20, 10, rng=1), Sigmoid()])
    x, t = rng.random((60, 20)), vectorize(rng.integers(0, 10, 60))
    cost_function = MeanSquareError()
    net.zero_gradients()
    cost = cost_function.estimate(t, net.forward(x))
    before = float(cost.sum())
    net.backward(cost_function.gradient(cost))
    net.update_parameters(1e-2)
    assert float(cost_function.estimate(t, net.forward(x)).sum()) < before


def test_task_6e_softmax_and_cross_entropy_backpropagate_p_minus_t():
    from fastprop import CrossEntropy, SoftMax

    rng = numpy.random.default_rng(1)
    z = rng.normal(size=(8, 10))
    t = numpy.eye(10)[rng.integers(0, 10, 8)]
    softmax = SoftMax()
    p = softmax.forward(z)
    assert numpy.allclose(p.sum(axis=1), 1)
    assert softmax.x_out is p
    cost_function = CrossEntropy()
    cost = cost_function.estimate(t, p)
    assert numpy.allclose(cost.sum(axis=1), -numpy.log(p[t == 1]), rtol=1e-5)
    dz = softmax.backward(cost_function.gradient(cost))
    assert numpy.allclose(dz, p - t, atol=1e-5)


def test_vectorize_makes_one_hot_rows():
    from fastprop import vectorize

    expected = [[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]]
    assert vectorize(3).shape == (1, 10) and vectorize(3).tolist() == expected  # the notebook's (1, 10) row
    assert vectorize(3.0).tolist() == expected
    assert vectorize(numpy.int64(3)).tolist() == expected
    assert vectorize([1, 0], n_classes=3).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert vectorize(numpy.arange(10)).shape == (10, 10)
    with pytest.raises(ValueError, match=r"labels from 0 to 9"):
        vectorize([10])
    with pytest.raises(ValueError, match=r"whole-number class labels"):
        vectorize(3.5)
