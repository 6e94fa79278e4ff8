"""``train``, ``validate`` and ``predict``: the notebook's loop, its output, and its fixed bugs."""

from __future__ import annotations

import copy
import re

import numpy
import pytest

import fastprop
from tests.conftest import separable_problem
from fastprop import (
    Linear, MeanSquareError, Network, Sigmoid, SoftmaxCrossEntropy, ReLU, train, validate, predict,
)


def _data(n_train=1000, n_val=300):
    x, t = separable_problem(n_train + n_val)
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
    x, t, xv, tv = _data(250, 50)
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
    x, t, _, _ = _data(250, 0)
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
        return train(net, MeanSquareError(), 2, 64, 0.05, data=_data(), shuffle=shuffle, seed=seed,
                     quiet=True, verbose=False)

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


def test_bars_count_epochs_from_zero_and_quiet_hides_them(capsys):
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    train(net, MeanSquareError(), 2, 100, 0.05, data=_data(300, 100))
    bars = capsys.readouterr().err
    for bar in ("training, e=0", "validation, e=0", "training, e=1", "validation, e=1"):
        assert bar in bars
    assert "e=2" not in bars
    train(net, MeanSquareError(), 1, 100, 0.05, data=_data(300, 100), quiet=True)
    assert "training" not in capsys.readouterr().err


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


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_stops_with_the_last_finite_parameters(tmp_path):
    # Data holding inf is refused before training (tests/test_resume_and_divergence.py); a learning rate
    # far too large makes the cost overflow instead: in the fourth batch of 100 (batch 3, counted from 0
    # as the epochs are), before the first epoch ends.
    net = Network([Linear(40, 16, rng=0), ReLU(), Linear(16, 10, rng=1)])
    path = tmp_path / "run.npz"
    with pytest.raises(fastprop.TrainingDiverged,
                       match=r"e=0, batch 3: the cost became inf at learning rate 10000"):
        train(net, MeanSquareError(), 3, 100, 1e4, data=_data(400, 50), quiet=True, verbose=False,
              checkpoint=path)
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
    history = train(resumed, MeanSquareError(), 4, 50, 0.05, data=data, quiet=True, verbose=False,
                    checkpoint=path)
    assert len(history) == 4
    assert history.cost == pytest.approx(expected.cost, rel=1e-6)
    assert numpy.array_equal(resumed.layers[0].w, straight.layers[0].w)


def test_resume_refuses_a_checkpoint_of_another_network(tmp_path):
    data = _data(100, 20)
    path = tmp_path / "run.npz"
    train(Network([Linear(40, 10), Sigmoid()]), MeanSquareError(), 1, 50, 0.05, data=data, quiet=True,
          verbose=False, checkpoint=path)
    other = Network([Linear(40, 12), ReLU(), Linear(12, 10)])
    with pytest.raises(fastprop.CheckpointError,
                       match=r"holds 2 layers, but the network being trained holds 3 "
                             r".*use another checkpoint path"):
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
    before = net.layers[0].w.copy()
    train(net, MeanSquareError(), 1, 50, 0.05, data=data, quiet=True, verbose=False, schedule=lambda e: 0.0)
    assert numpy.array_equal(before, net.layers[0].w)
    with pytest.raises(ValueError, match=r"schedule .* gave -1 for epoch 1"):
        train(net, MeanSquareError(), 1, 50, 0.05, data=data, quiet=True, verbose=False,
              schedule=lambda e: -1)


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
    kept = int(re.search(r"kept the parameters of e=(\d+)", capsys.readouterr().out).group(1))  # e from 0
    resumed = 2  # the checkpoint's two epochs ran without patience: early stopping watches the rest
    best = resumed + int(numpy.argmax(history.accuracy[resumed:]))  # the first of the best (strictly better)
    assert kept == best and len(history) == best + 1 + 2  # stopped patience = 2 epochs after the best
    assert validate(net, data[2], data[3]) == pytest.approx(history.accuracy[kept])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_the_divergence_replay_draws_the_same_dropout_masks():
    from fastprop.training import EpochRunner

    x, t, _, _ = _data(400, 1)
    order = numpy.random.default_rng(0).permutation(400)
    x[order[250]] = numpy.inf  # in the third batch of 100
    net = Network([Linear(40, 20, rng=0), fastprop.Dropout(0.5, rng=5), Linear(20, 10, rng=1), Sigmoid()])
    expected = copy.deepcopy(net)  # the same parameters and the same dropout generator state
    EpochRunner(expected, MeanSquareError(), x[order[:200]], t[order[:200]], 100, None).run(None, 0.05)
    with pytest.raises(fastprop.TrainingDiverged, match=r"e=0, batch 2:"):  # the third batch, counted from 0
        EpochRunner(net, MeanSquareError(), x, t, 100, None).epoch(order, 0.05, 0, True)
    for replayed, straight in zip(net.parameters(), expected.parameters()):
        assert numpy.array_equal(replayed.value, straight.value)


def _epochs_on(backend_name, x, t, epochs, forget):
    """Parameters after ``epochs`` calls of train_epoch on the same arrays; ``forget`` drops what the
    earlier calls prepared, so every call prepares its data anew."""
    from fastprop.training import PREPARED, train_epoch

    with fastprop.use_backend(backend_name):
        net = Network([Linear(40, 10, rng=0), Sigmoid()])
    cost = MeanSquareError()
    for e in range(epochs):
        if forget:
            PREPARED.clear()
        train_epoch(e, net, x, t, cost, 100, 0.05, quiet=True)
    return [p.value.copy() for p in net.parameters()]


def test_train_epoch_prepares_its_arrays_once_and_again_when_they_change(backend_name, monkeypatch):
    """The notebook's epoch loop pays the conversions, checks and the backend's preparation once per
    array on backends with a fast checksum; a change made in place is seen at the next call."""
    from fastprop import training
    from fastprop.training import data

    x, t = (a.astype(numpy.float64) for a in separable_problem(700))
    prepared = []
    original = data.prepare_training_data
    monkeypatch.setattr(data, "prepare_training_data", lambda *a: prepared.append(1) or original(*a))
    kept = _epochs_on(backend_name, x, t, 3, forget=False)
    fresh = _epochs_on(backend_name, x, t, 3, forget=True)
    assert all(numpy.array_equal(a, b) for a, b in zip(kept, fresh))  # the same bits either way
    reused = fastprop.backends.load_backend(backend_name).fast_checksum
    assert len(prepared) == (1 if reused else 3) + 3
    if not reused:
        return

    with fastprop.use_backend(backend_name):
        net = Network([Linear(40, 10, rng=0), Sigmoid()])
    cost = MeanSquareError()
    training.train_epoch(0, net, x, t, cost, 100, 0.05, quiet=True)
    for array, row in ((x, 5), (t, 7)):
        count = len(prepared)
        array[row] = array[row][::-1]  # in place: the same object, other contents
        training.train_epoch(1, net, x, t, cost, 100, 0.05, quiet=True)
        assert len(prepared) == count + 1, "a changed array must be prepared again"
        before = [p.value.copy() for p in net.parameters()]
        training.train_epoch(2, net, x, t, cost, 100, 0.05, quiet=True)
        assert len(prepared) == count + 1  # and then kept again
        reference = copy.deepcopy(net)
        for parameter, value in zip(reference.parameters(), before):
            parameter.value[...] = value
        training.PREPARED.clear()
        training.train_epoch(2, reference, x.copy(), t.copy(), MeanSquareError(), 100, 0.05, quiet=True)
        pairs = zip(net.parameters(), reference.parameters())
        assert all(numpy.array_equal(a.value, b.value) for a, b in pairs)
