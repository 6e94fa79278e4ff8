"""``train``, ``validate`` and ``predict``: the notebook's loop, its output, and its fixed bugs."""

from __future__ import annotations

import copy
import re

import numpy
import pytest

import fastprop
from fastprop import Linear, MeanSquareError, Network, Sigmoid, SoftmaxCrossEntropy, ReLU, train, validate, predict


def _separable(n, seed=0):
    """A learnable 10-class problem: class k lights up features 4k..4k+3."""
    rng = numpy.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    x = rng.random((n, 40)) * 0.3
    for k in range(10):
        x[labels == k, 4 * k : 4 * k + 4] += 1
    return x, numpy.eye(10)[labels]


def _data(n_train=1000, n_val=300):
    x, t = _separable(n_train + n_val)
    return x[:n_train], t[:n_train], x[n_train:], t[n_train:]


def test_training_prints_the_notebook_lines_and_learns(backend_name, capsys):
    with fastprop.use_backend(backend_name):
        net = Network([Linear(40, 10, rng=0), Sigmoid()])
    history = train(net, MeanSquareError(), 3, 100, 0.05, data=_data(), quiet=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, cost, accuracy in zip(lines, history.cost, history.accuracy):
        assert re.fullmatch(r"cost=\d+\.\d{6}, accuracy=\d\.\d{6}", line)
        assert line == "cost=%5.6f, accuracy=%2.6f" % (cost, accuracy)
    assert history.cost[-1] < history.cost[0]
    assert history.accuracy[-1] > 0.9
    assert len(history.seconds) == 3 and min(history.samples_per_second) > 0


def test_reported_cost_is_the_mean_over_every_batch_not_the_last():
    x, t, xv, tv = _data(250, 50)
    net = Network([Linear(40, 10, rng=1), Sigmoid()])
    reference = Network([Linear(40, 10, rng=1), Sigmoid()])
    history = train(net, MeanSquareError(), 1, 100, 0.01, data=(x, t, xv, tv), quiet=True, verbose=False, seed=4)
    order = numpy.random.default_rng((4, 1)).permutation(250)  # train shuffles epoch e with (seed, e)
    total = 0.0
    for start in range(0, 250, 100):  # batches of 100, 100 and 50
        index = order[start : start + 100]
        reference.zero_gradients()
        p = reference.forward(x[index])
        total += float(MeanSquareError().estimate(p, t[index]).sum())
        reference.backward(MeanSquareError().gradient(p, t[index]))
        reference.update_parameters(0.01)
    assert history.cost[0] == pytest.approx(total / 250, rel=1e-6)
    assert numpy.array_equal(net.layers[0].weights, reference.layers[0].weights)


def test_seeded_training_is_reproducible_and_seeds_differ(backend_name):
    def run(seed):
        with fastprop.use_backend(backend_name):
            net = Network([Linear(40, 10, rng=0), ReLU(), Linear(10, 10, rng=1), Sigmoid()])
        return train(net, MeanSquareError(), 2, 64, 0.05, data=_data(), seed=seed, quiet=True, verbose=False)

    assert run(1).cost == run(1).cost
    assert run(1).cost != run(2).cost


def test_validate_and_predict():
    x, t, _, _ = _data(200, 0)
    net = Network([Linear(40, 10, rng=0), ReLU(), Linear(10, 10, rng=1)])
    outputs = predict(net, x, batch_size=64)
    assert outputs.shape == (200, 10) and isinstance(outputs, numpy.ndarray)
    expected = float((outputs.argmax(1) == t.argmax(1)).mean())
    assert validate(net, x, t, 64) == pytest.approx(expected)
    assert validate(net, x, t.argmax(1), 64) == pytest.approx(expected)  # integer labels work too


def test_soft_max_network_trains_with_softmax_cross_entropy():
    net = Network([Linear(40, 32, init="he", rng=0), ReLU(), Linear(32, 10, init="xavier", rng=1)])
    history = train(net, SoftmaxCrossEntropy(), 3, 50, 0.01, data=_data(), quiet=True, verbose=False)
    assert history.accuracy[-1] > 0.95


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"number_epochs": 0}, r"positive integer number_epochs, got 0"),
        ({"batch_size": 2.5}, r"positive integer batch_size, got 2.5"),
        ({"learning_rate": float("nan")}, r"positive finite learning_rate, got nan"),
        ({"data": (numpy.zeros((3, 40)), numpy.zeros((2, 10)), numpy.zeros((1, 40)), numpy.zeros((1, 10)))},
         r"3 training images but 2 training labels"),
    ],
)
def test_bad_training_arguments(kwargs, message):
    arguments = {"number_epochs": 1, "batch_size": 10, "learning_rate": 0.1, "data": _data(20, 10)}
    arguments.update(kwargs)
    net = Network([Linear(40, 10), Sigmoid()])
    with pytest.raises(ValueError, match=message):
        train(net, MeanSquareError(), quiet=True, verbose=False, **arguments)


def test_history_exports_csv_and_json(tmp_path):
    history = fastprop.History()
    history.append(cost=0.5, accuracy=0.8, seconds=1.5, samples_per_second=100.0)
    history.append(cost=0.25, accuracy=0.9, seconds=1.0, samples_per_second=150.0)
    csv_text = history.to_csv(tmp_path / "h.csv")
    assert csv_text.splitlines() == [
        "epoch,cost,accuracy,seconds,samples_per_second", "1,0.5,0.8,1.5,100.0", "2,0.25,0.9,1.0,150.0",
    ]
    history.to_json(tmp_path / "h.json")
    assert fastprop.History.from_dict(__import__("json").loads((tmp_path / "h.json").read_text())) == history


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_divergence_stops_with_the_last_finite_parameters(tmp_path):
    x, t, xv, tv = _data(400, 50)
    x[350] = numpy.inf  # the fourth batch of 100 (in shuffled order) holds this row somewhere
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    path = tmp_path / "run.npz"
    with pytest.raises(fastprop.TrainingDiverged, match=r"epoch 1, batch \d+: the cost became nan at learning rate 0.01"):
        train(net, MeanSquareError(), 3, 100, 0.01, data=(x, t, xv, tv), quiet=True, verbose=False, checkpoint=path)
    assert all(numpy.isfinite(parameter.value).all() for parameter in net.parameters())
    assert not path.exists()  # no checkpoint was written from a diverged epoch


def test_checkpoint_resume_continues_the_history(tmp_path):
    data = _data(300, 100)
    path = tmp_path / "run.npz"
    straight = Network([Linear(40, 10, rng=0), Sigmoid()])
    expected = train(straight, MeanSquareError(), 4, 50, 0.05, data=data, quiet=True, verbose=False)
    first = Network([Linear(40, 10, rng=0), Sigmoid()])
    train(first, MeanSquareError(), 2, 50, 0.05, data=data, quiet=True, verbose=False, checkpoint=path)
    resumed = Network([Linear(40, 10, rng=9), Sigmoid()])  # other initial values: resume must overwrite them
    history = train(resumed, MeanSquareError(), 4, 50, 0.05, data=data, quiet=True, verbose=False, checkpoint=path)
    assert len(history) == 4
    assert history.cost == pytest.approx(expected.cost, rel=1e-6)
    assert numpy.array_equal(resumed.layers[0].weights, straight.layers[0].weights)


def test_resume_refuses_a_checkpoint_of_another_network(tmp_path):
    data = _data(100, 20)
    path = tmp_path / "run.npz"
    train(Network([Linear(40, 10), Sigmoid()]), MeanSquareError(), 1, 50, 0.05, data=data, quiet=True, verbose=False, checkpoint=path)
    other = Network([Linear(40, 12), ReLU(), Linear(12, 10)])
    with pytest.raises(fastprop.CheckpointError, match=r"parameter shapes .* use another checkpoint path"):
        train(other, MeanSquareError(), 2, 50, 0.05, data=data, quiet=True, verbose=False, checkpoint=path)


def test_early_stopping_restores_the_best_parameters():
    data = _data(300, 100)
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


def test_schedule_scales_the_rate_and_bad_factors_are_refused():
    data = _data(100, 20)
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    before = net.layers[0].weights.copy()
    train(net, MeanSquareError(), 1, 50, 0.05, data=data, quiet=True, verbose=False, schedule=lambda e: 0.0)
    assert numpy.array_equal(before, net.layers[0].weights)
    with pytest.raises(ValueError, match=r"schedule .* gave -1 for epoch 1"):
        train(net, MeanSquareError(), 1, 50, 0.05, data=data, quiet=True, verbose=False, schedule=lambda e: -1)


def test_adam_through_train_uses_its_own_learning_rate():
    net = Network([Linear(40, 32, init="he", rng=0), ReLU(), Linear(32, 10, init="xavier", rng=1)])
    history = train(net, SoftmaxCrossEntropy(), 3, 50, None, data=_data(), quiet=True, verbose=False,
                    optimizer=fastprop.Adam(1e-2))
    assert history.accuracy[-1] > 0.95


def test_early_stopping_after_a_resume_keeps_the_parameters_it_names(tmp_path, capsys):
    data = _data(300, 100)
    path = tmp_path / "run.npz"
    rates = lambda epoch: 1.0 if epoch <= 2 else 60.0  # noqa: E731  (destructive after epoch 2)
    train(Network([Linear(40, 10, rng=0), Sigmoid()]), MeanSquareError(), 2, 50, 0.05, data=data,
          quiet=True, verbose=False, checkpoint=path)
    net = Network([Linear(40, 10, rng=9), Sigmoid()])
    history = train(net, MeanSquareError(), 30, 50, 0.05, data=data, quiet=True, checkpoint=path,
                    schedule=rates, patience=2)
    kept = int(re.search(r"kept the parameters of epoch (\d+)", capsys.readouterr().out).group(1))
    assert 2 <= kept < len(history) < 30
    assert validate(net, data[2], data[3]) == pytest.approx(history.accuracy[kept - 1])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_the_divergence_replay_draws_the_same_dropout_masks():
    from fastprop.training import _StepLoop

    x, t, _, _ = _data(400, 1)
    order = numpy.random.default_rng(0).permutation(400)
    x[order[250]] = numpy.inf  # in the third batch of 100
    net = Network([Linear(40, 20, rng=0), fastprop.Dropout(0.5, rng=5), Linear(20, 10, rng=1), Sigmoid()])
    expected = copy.deepcopy(net)  # the same parameters and the same dropout generator state
    _StepLoop(expected, MeanSquareError(), x[order[:200]], t[order[:200]], 100, None).run(numpy.arange(200), 0.05)
    with pytest.raises(fastprop.TrainingDiverged, match=r"epoch 1, batch 3:"):
        _StepLoop(net, MeanSquareError(), x, t, 100, None).epoch(order, 0.05, None, 1)
    for replayed, straight in zip(net.parameters(), expected.parameters()):
        assert numpy.array_equal(replayed.value, straight.value)
