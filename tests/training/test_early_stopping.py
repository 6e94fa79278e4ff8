"""Early stopping (``patience``; ``fastprop.training.state``): it keeps the best epoch's parameters
whether or not it fires, after a resume too, and it needs validation rows."""

from __future__ import annotations

import re

import numpy
import pytest

from fastprop import Linear, MeanSquareError, Network, Sigmoid, train, validate
from tests.conftest import separable_problem
from tests.helpers import (
    host_values, quiet_options, same_values, sigmoid_net, split_problem, values_after_epochs,
)


def test_early_stopping_that_never_fires_still_keeps_the_best_epoch(backend_name, scripted_accuracy):
    data = split_problem()
    scripted_accuracy([0.03, 0.01, 0.01, 0.01])
    epoch_1, epoch_4 = values_after_epochs(backend_name, 1, data), values_after_epochs(backend_name, 4, data)
    assert not same_values(epoch_1, epoch_4)  # the runs below can tell the two apart
    net = sigmoid_net(backend_name)
    history = train(net, MeanSquareError(), 4, 50, 0.05, data=data, patience=10, **quiet_options())
    assert history.accuracy == [0.03, 0.01, 0.01, 0.01]  # all four epochs ran: patience=10 never fired
    assert same_values(host_values(net), epoch_1)


def test_early_stopping_that_fires_keeps_the_best_epoch(backend_name, scripted_accuracy):
    data = split_problem()
    scripted_accuracy([0.03, 0.01, 0.01, 0.01, 0.5, 0.5, 0.5, 0.5])
    net = sigmoid_net(backend_name)
    history = train(net, MeanSquareError(), 8, 50, 0.05, data=data, patience=2, **quiet_options())
    assert history.accuracy == [0.03, 0.01, 0.01]  # stopped after two epochs without improvement
    assert same_values(host_values(net), values_after_epochs(backend_name, 1, data))


def test_early_stopping_keeps_the_last_epoch_when_it_is_the_best(backend_name, scripted_accuracy):
    data = split_problem()
    scripted_accuracy([0.01, 0.02, 0.03, 0.04])
    net = sigmoid_net(backend_name)
    train(net, MeanSquareError(), 4, 50, 0.05, data=data, patience=10, **quiet_options())
    assert same_values(host_values(net), values_after_epochs(backend_name, 4, data))


def test_early_stopping_keeps_the_best_measured_accuracy(backend_name):
    """Real accuracies: a rate 60 times larger after epoch 1 makes them fall; patience never fires."""
    x, t, xv, tv = data = split_problem()
    net = sigmoid_net(backend_name)
    history = train(net, MeanSquareError(), 4, 50, 0.05, data=data, patience=10,
                    schedule=lambda epoch: 1.0 if epoch == 1 else 60.0, **quiet_options())
    assert len(history) == 4 and history.accuracy[0] > max(history.accuracy[1:])
    assert validate(net, xv, tv) == history.accuracy[0]


def test_early_stopping_restores_the_best_parameters():
    data = split_problem(300, 100)
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    calls = []

    def schedule(epoch):  # a rate that turns destructive after epoch 2
        calls.append(epoch)
        return 1.0 if epoch <= 2 else 60.0

    history = train(net, MeanSquareError(), 30, 50, 0.05, data=data, quiet=True, verbose=False,
                    schedule=schedule, patience=2)
    best = max(history.accuracy)
    assert len(history) < 30 and history.accuracy[-1] < best
    assert validate(net, data[2], data[3]) == pytest.approx(best)


def test_early_stopping_after_a_resume_keeps_the_parameters_it_names(tmp_path, capsys):
    data = split_problem(300, 100)
    path = tmp_path / "run.npz"
    rates = lambda epoch: 1.0 if epoch <= 2 else 60.0  # noqa: E731  (destructive after epoch 2)
    train(Network([Linear(40, 10, rng=0), Sigmoid()]), MeanSquareError(), 2, 50, 0.05, data=data,
          quiet=True, verbose=False, checkpoint=path)
    net = Network([Linear(40, 10, rng=9), Sigmoid()])
    history = train(net, MeanSquareError(), 30, 50, 0.05, data=data, quiet=True, checkpoint=path,
                    schedule=rates, patience=2)
    kept = int(re.search(r"kept the parameters of e=(\d+)", capsys.readouterr().out).group(1))  # e from 0
    resumed = 2  # the checkpoint's two epochs ran without patience: early stopping watches the rest
    best = resumed + int(numpy.argmax(history.accuracy[resumed:]))  # the first of the best (strictly better)
    assert kept == best and len(history) == best + 1 + 2  # stopped patience = 2 epochs after the best
    assert validate(net, data[2], data[3]) == pytest.approx(history.accuracy[kept])


def test_patience_without_validation_rows_is_refused_before_training():
    x, t = separable_problem(100)
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    before = host_values(net)
    with pytest.raises(ValueError, match="train got patience=2 but no validation rows"):
        train(net, MeanSquareError(), 6, 10, 0.1, data=(x, t, x[:0], t[:0]), patience=2, quiet=True)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, host_values(net)))
    history = train(net, MeanSquareError(), 2, 10, 0.1, data=(x, t, x[:0], t[:0]), quiet=True, verbose=False)
    assert len(history) == 2  # without patience, no validation rows is fine
