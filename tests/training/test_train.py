"""``train`` and ``train_epoch`` (``fastprop.training.api`` and ``epochs``): the notebook's loop, its
printed lines and figures, shuffling and seeds, loading the data when none is given, schedules and
optimizers, and batches larger than the data."""

from __future__ import annotations

import math
import re

import numpy
import pytest

import fastprop
from fastprop import (
    Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftmaxCrossEntropy, predict, train, train_epoch,
)
from tests.helpers import (
    INF, NAN, assert_one_sentence, assert_same_run, one_hot_rows, small_problem, small_problem_net,
    split_problem, train_small_problem,
)


def test_training_prints_the_notebook_lines_and_learns(backend_name, capsys):
    with fastprop.use_backend(backend_name):
        net = Network([Linear(40, 10, rng=0), Sigmoid()])
    history = train(net, MeanSquareError(), 3, 100, 0.05, data=split_problem(1000, 300), quiet=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, cost, accuracy in zip(lines, history.cost, history.accuracy):
        assert re.fullmatch(r"cost=\d+\.\d{6}, accuracy=\d\.\d{6}", line)
        assert line == "cost=%5.6f, accuracy=%2.6f" % (cost, accuracy)
    assert history.cost[-1] < history.cost[0]
    assert history.accuracy[-1] > 0.9
    assert len(history.seconds) == 3 and min(history.samples_per_second) > 0


def _notebook_epoch(net, x, t, order, batch_size, rate):
    """The notebook's step loop by hand over the batches of ``order``; returns the epoch figure train
    reports: the mean over batches of ``np.mean(cost)`` (the notebook summed those means)."""
    cost_function, means = MeanSquareError(), []
    for start in range(0, len(order), batch_size):  # batches of 100, 100 and 50 below
        index = order[start : start + batch_size]
        net.zero_gradients()
        prediction = net.forward(x[index])
        cost = cost_function.estimate(t[index], prediction)
        means.append(float(numpy.mean(cost)))
        net.backward(cost_function.gradient(cost))
        net.update_parameters(rate)
    return sum(means) / len(means), means


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_reported_cost_is_the_mean_over_every_batch_not_the_last(shuffle):
    x, t, xv, tv = split_problem(250, 50)
    net = Network([Linear(40, 10, rng=1), Sigmoid()])
    reference = Network([Linear(40, 10, rng=1), Sigmoid()])
    history = train(net, MeanSquareError(), 1, 100, 0.01, data=(x, t, xv, tv), quiet=True, verbose=False,
                    shuffle=shuffle, seed=4)
    # in order unless shuffle=True, which shuffles epoch e (counted from 1) with (seed, e)
    order = numpy.random.default_rng((4, 1)).permutation(250) if shuffle else numpy.arange(250)
    expected, means = _notebook_epoch(reference, x, t, order, 100, 0.01)
    # the three batch means differ: their mean is not the last
    assert len(means) == 3 and len(set(means)) == 3
    assert history.cost[0] == pytest.approx(expected, rel=1e-6)
    assert history.cost[0] != pytest.approx(means[-1], rel=1e-3)
    assert numpy.array_equal(net.layers[0].w, reference.layers[0].w)
    assert numpy.array_equal(net.layers[0].b, reference.layers[0].b)


def test_train_epoch_returns_the_same_figure_in_row_order():
    x, t, _, _ = split_problem(250, 0)
    net = Network([Linear(40, 10, rng=1), Sigmoid()])
    reference = Network([Linear(40, 10, rng=1), Sigmoid()])
    cost = fastprop.train_epoch(0, net, x, t, MeanSquareError(), 100, 0.01, quiet=True)
    expected, _ = _notebook_epoch(reference, x, t, numpy.arange(250), 100, 0.01)
    assert isinstance(cost, float) and cost == pytest.approx(expected, rel=1e-6)
    assert numpy.array_equal(net.layers[0].w, reference.layers[0].w)


def test_seeded_training_is_reproducible_and_seeds_differ(backend_name):
    def run(seed, shuffle=True):
        with fastprop.use_backend(backend_name):
            net = Network([Linear(40, 10, rng=0), ReLU(), Linear(10, 10, rng=1), Sigmoid()])
        return train(net, MeanSquareError(), 2, 64, 0.05, data=split_problem(1000, 300), shuffle=shuffle,
                     seed=seed, quiet=True, verbose=False)

    assert run(1).cost == run(1).cost
    assert run(1).cost != run(2).cost
    # Without shuffle=True the rows go in order (as in the notebook): the seed changes nothing.
    in_order = run(1, shuffle=False).cost
    assert in_order == run(2, shuffle=False).cost == run(None, shuffle=False).cost
    assert in_order != run(1).cost
    # shuffle=True with seed=None draws the seed from NumPy's global generator.
    numpy.random.seed(5)
    drawn = run(None).cost
    numpy.random.seed(5)
    assert run(None).cost == drawn


def test_without_data_train_loads_shuffles_and_splits_five_sixths(tiny_mnist):
    from fastprop.datasets import load_data

    numpy.random.seed(3)  # load_data shuffles with NumPy's global generator, as the notebook
    images, labels, image_size, label_size = load_data("mnist", tiny_mnist)
    assert (len(images), image_size, label_size) == (1200, 784, 10)
    data = images[:1000], labels[:1000], images[1000:], labels[1000:]  # 5/6 of 1,200 rows for training
    by_hand = train(Network([Linear(784, 10, rng=0), Sigmoid()]), MeanSquareError(), 2, 100, 0.01, data=data,
                    quiet=True, verbose=False)
    numpy.random.seed(3)
    loaded = train(Network([Linear(784, 10, rng=0), Sigmoid()]), MeanSquareError(), 2, 100, 0.01,
                   dataset="mnist", data_dir=tiny_mnist, quiet=True, verbose=False)
    assert loaded.cost == pytest.approx(by_hand.cost, rel=1e-6)
    assert loaded.accuracy == by_hand.accuracy
    assert all(a * 200 == round(a * 200) for a in loaded.accuracy)  # validated on the 200 other rows
    assert loaded.accuracy[-1] > 0.9


def test_soft_max_network_trains_with_softmax_cross_entropy():
    net = Network([Linear(40, 32, init="he", rng=0), ReLU(), Linear(32, 10, init="xavier", rng=1)])
    history = train(net, SoftmaxCrossEntropy(), 3, 50, 0.01, data=split_problem(1000, 300), quiet=True,
                    verbose=False)
    assert history.accuracy[-1] > 0.95


# -- schedules and optimizers ----------------------------------------------------------------------


def test_schedule_scales_the_rate_and_bad_factors_are_refused():
    data = split_problem(100, 20)
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    before = net.layers[0].w.copy()
    train(net, MeanSquareError(), 1, 50, 0.05, data=data, quiet=True, verbose=False, schedule=lambda e: 0.0)
    assert numpy.array_equal(before, net.layers[0].w)
    with pytest.raises(ValueError, match=r"schedule .* gave -1 for epoch 1"):
        train(net, MeanSquareError(), 1, 50, 0.05, data=data, quiet=True, verbose=False,
              schedule=lambda e: -1)


@pytest.mark.parametrize("factor", [-1.0, NAN, INF, "1"])
def test_a_schedule_giving_a_bad_factor_is_named(factor):
    with pytest.raises(ValueError, match="schedule") as caught:
        train_small_problem("numpy", epochs=1, schedule=lambda epoch: factor)
    assert_one_sentence(str(caught.value), "epoch 1")


def test_adam_through_train_uses_its_own_learning_rate():
    net = Network([Linear(40, 32, init="he", rng=0), ReLU(), Linear(32, 10, init="xavier", rng=1)])
    history = train(net, SoftmaxCrossEntropy(), 3, 50, None, data=split_problem(1000, 300), quiet=True,
                    verbose=False, optimizer=fastprop.Adam(1e-2))
    assert history.accuracy[-1] > 0.95


# -- batches larger than the data, one training row, no validation rows ----------------------------


@pytest.mark.parametrize("cost", [MeanSquareError, SoftmaxCrossEntropy])
def test_a_batch_larger_than_the_data_is_one_batch_of_every_row(backend_name, cost):
    exact = train_small_problem(backend_name, cost=cost, batch_size=40)
    for batch_size in (41, 1000):
        assert_same_run(train_small_problem(backend_name, cost=cost, batch_size=batch_size), exact)

    # The epoch's figure is the mean cost per element over the 40 rows, not over 1000.
    x, y, _, _ = small_problem()
    net = small_problem_net(backend_name)
    prediction = predict(net, x)
    expected = float(numpy.mean(0.5 * (one_hot_rows(y) - prediction) ** 2))
    figure = train_epoch(0, net, x, one_hot_rows(y), MeanSquareError(), 1000, 0.5, quiet=True)
    assert math.isclose(figure, expected, rel_tol=1e-12)


def test_a_batch_larger_than_the_data_runs_one_step_per_epoch(backend_name):
    class CountingMeanSquareError(MeanSquareError):
        shapes = []

        def estimate(self, target, prediction):
            self.shapes.append(tuple(prediction.shape))
            return super().estimate(target, prediction)

    x, y, vx, vy = small_problem()
    counting = CountingMeanSquareError()
    net = small_problem_net(backend_name)
    train(net, counting, 3, 1000, 0.5, data=(x, one_hot_rows(y), vx, one_hot_rows(vy)), quiet=True,
          verbose=False)
    assert counting.shapes == [(40, 3)] * 3


def test_one_training_row_and_an_empty_validation_set(backend_name):
    x, y, vx, vy = small_problem()
    history, _ = train_small_problem(backend_name, data=(x[:1], y[:1], vx[:0], vy[:0]), batch_size=600)
    assert len(history.cost) == 3 and all(math.isfinite(cost) for cost in history.cost)
    assert history.accuracy == [0.0, 0.0, 0.0]
    history, _ = train_small_problem(backend_name, data=(x[:1], y[:1], vx[:1], vy[:1]), batch_size=600)
    assert all(accuracy in (0.0, 1.0) for accuracy in history.accuracy)
