"""``TrainingDiverged`` (``fastprop.training.epochs``): a diverged run stops with the last finite
parameters, names the epoch and batch, keeps the checkpoint of the last whole epoch, and its replay
draws the same dropout masks."""

from __future__ import annotations

import copy
import re

import numpy
import pytest

import fastprop
from fastprop import (
    Adam, Linear, MeanSquareError, Network, ReLU, Sigmoid, TrainingDiverged, train, train_epoch,
)
from tests.helpers import host_values, quiet_options, relu_net, same_values, sigmoid_net, split_problem


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_stops_with_the_last_finite_parameters(tmp_path):
    # Data holding inf is refused before training (tests/training/test_data.py); a learning rate
    # far too large makes the cost overflow instead: in the fourth batch of 100 (batch 3, counted from 0
    # as the epochs are), before the first epoch ends.
    net = Network([Linear(40, 16, rng=0), ReLU(), Linear(16, 10, rng=1)])
    path = tmp_path / "run.npz"
    with pytest.raises(fastprop.TrainingDiverged,
                       match=r"e=0, batch 3: the cost became inf at learning rate 10000"):
        train(net, MeanSquareError(), 3, 100, 1e4, data=split_problem(400, 50), quiet=True, verbose=False,
              checkpoint=path)
    assert all(numpy.isfinite(parameter.value).all() for parameter in net.parameters())
    assert not path.exists()  # no checkpoint was written from a diverged epoch


def _all_finite(net):
    return all(numpy.isfinite(value).all() for value in host_values(net))


def _diverged_at(error):
    match = re.search(r"e=(\d+), batch (\d+)", str(error))
    assert match, str(error)
    return int(match.group(1)), int(match.group(2))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_adam_with_an_underflowing_eps_leaves_the_last_finite_parameters(backend_name, tmp_path):
    x, t, xv, tv = split_problem()
    x[:, 0] = 0.0  # an always-zero input pixel (as MNIST's borders): its weights' gradient is exactly 0
    net = sigmoid_net(backend_name)
    assert net.dtype == numpy.float32 and numpy.float32(1e-300) == 0  # eps=1e-300 is 0 in float32: 0/0
    before = host_values(net)
    path = tmp_path / "run.npz"
    with pytest.raises(TrainingDiverged,
                       match=r"e=0, batch 0: its update made a parameter infinite or NaN") as error:
        train(net, MeanSquareError(), 2, 50, None, data=(x, t, xv, tv), optimizer=Adam(1e-3, eps=1e-300),
              checkpoint=path, **quiet_options())
    assert "last finite step" in str(error.value)
    assert _all_finite(net)
    assert same_values(host_values(net), before)  # the first step was the offending one
    assert not path.exists()
    # the cause really is the zero column: the same run with a live pixel 0 trains
    x[:, 0] = 0.5
    train(sigmoid_net(backend_name), MeanSquareError(), 1, 50, None, data=(x, t, xv, tv),
          optimizer=Adam(1e-3, eps=1e-300), **quiet_options())


def _reference(build, data, batches, rate, full_epochs=0, first_rate=None):
    """The network after ``full_epochs`` epochs at ``first_rate`` and then ``batches`` batches of 50 at
    ``rate``, those taken by the step loop (plain SGD as an optimizer), as train's replay of a diverged
    epoch takes them (a backend's whole-epoch program may sum in another order)."""
    x, t = data[0], data[1]
    net = build()
    for e in range(full_epochs):
        train_epoch(e, net, x, t, MeanSquareError(), 50, first_rate, quiet=True)
    if batches:
        train_epoch(full_epochs, net, x[: 50 * batches], t[: 50 * batches], MeanSquareError(), 50, rate,
                    quiet=True, optimizer=fastprop.SGD())
    return host_values(net)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "build, rate, cause",
    [
        (relu_net, 1e3, "the cost became inf"),
        (sigmoid_net, 1e38, "its update made a parameter infinite or NaN"),
    ],
    ids=["relu-cost-overflows", "sigmoid-weights-overflow"],
)
def test_a_huge_learning_rate_leaves_the_last_finite_parameters(backend_name, build, rate, cause):
    data = split_problem()
    net = build(backend_name)
    with pytest.raises(TrainingDiverged, match=rf"e=0, batch \d+: {cause} at learning rate") as error:
        train(net, MeanSquareError(), 3, 50, rate, data=data, **quiet_options())
    assert _all_finite(net)
    e, batch = _diverged_at(error.value)
    assert e == 0
    assert same_values(host_values(net), _reference(lambda: build(backend_name), data, batch, rate))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_in_a_later_epoch_keeps_that_epochs_last_finite_step(backend_name, tmp_path):
    data = split_problem()
    path = tmp_path / "run.npz"
    net = relu_net(backend_name)
    schedule = lambda epoch: 1.0 if epoch == 1 else 1e5  # noqa: E731  (0.01, then 1e3)
    with pytest.raises(TrainingDiverged,
                       match=r"e=1, batch \d+: the cost became inf at learning rate 1000") as error:
        train(net, MeanSquareError(), 3, 50, 0.01, data=data, schedule=schedule, checkpoint=path,
              **quiet_options())
    assert _all_finite(net)
    _, batch = _diverged_at(error.value)
    build = lambda: relu_net(backend_name)  # noqa: E731
    assert same_values(host_values(net), _reference(build, data, batch, 1e3, full_epochs=1, first_rate=0.01))
    saved = fastprop.load_checkpoint(path, backend=backend_name)  # the checkpoint holds epoch 1, intact
    assert saved.epoch == 1
    assert same_values(host_values(saved.net),
                       _reference(build, data, 0, None, full_epochs=1, first_rate=0.01))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_the_divergence_replay_draws_the_same_dropout_masks():
    from fastprop.training import EpochRunner

    x, t, _, _ = split_problem(400, 1)
    order = numpy.random.default_rng(0).permutation(400)
    x[order[250]] = numpy.inf  # in the third batch of 100
    net = Network([Linear(40, 20, rng=0), fastprop.Dropout(0.5, rng=5), Linear(20, 10, rng=1), Sigmoid()])
    expected = copy.deepcopy(net)  # the same parameters and the same dropout generator state
    EpochRunner(expected, MeanSquareError(), x[order[:200]], t[order[:200]], 100, None).run(None, 0.05)
    with pytest.raises(fastprop.TrainingDiverged, match=r"e=0, batch 2:"):  # the third batch, counted from 0
        EpochRunner(net, MeanSquareError(), x, t, 100, None).epoch(order, 0.05, 0, True)
    for replayed, straight in zip(net.parameters(), expected.parameters()):
        assert numpy.array_equal(replayed.value, straight.value)
