"""Training state: early stopping keeps the best parameters, a resumed run is the
uninterrupted run bit for bit, a diverged run leaves finite parameters, and a non-finite value in
the data is reported with its array and row before training starts."""

from __future__ import annotations

import re

import numpy
import pytest

import fastprop
from tests.conftest import separable_problem
from fastprop import (
    Adam, CosineLR, Dropout, Linear, MeanSquareError, Network, ReLU, SGD, Sigmoid, SoftmaxCrossEntropy,
    StepLR, TrainingDiverged, train, train_epoch, validate,
)


def _data(n_train=300, n_val=100):
    x, t = separable_problem(n_train + n_val)
    return x[:n_train].copy(), t[:n_train].copy(), x[n_train:].copy(), t[n_train:].copy()


def _sigmoid_net(backend_name):
    """The notebook's network (Numba runs it through its whole-epoch kernel)."""
    with fastprop.use_backend(backend_name):
        return Network([Linear(40, 10, rng=0), Sigmoid()])


def _relu_net(backend_name):
    """A network that takes the step-by-step path on every backend."""
    with fastprop.use_backend(backend_name):
        return Network([Linear(40, 16, rng=0), ReLU(), Linear(16, 10, rng=1)])


def _dropout_net(backend_name):
    with fastprop.use_backend(backend_name):
        return Network([Linear(40, 20, rng=0), Dropout(0.5, rng=7), Linear(20, 10, rng=1), Sigmoid()])


def _values(net):
    """Host copies of every parameter, in order."""
    return [numpy.array(net.backend.to_numpy(parameter.value)) for parameter in net.parameters()]


def _same_values(a, b):
    return len(a) == len(b) and all(numpy.array_equal(x, y) for x, y in zip(a, b))


def _quiet(**kwargs):
    return {"quiet": True, "verbose": False, **kwargs}


@pytest.fixture
def scripted_accuracy(monkeypatch):
    """Make train's validation return ``script[e]`` for epoch e (from 0): deterministic accuracies."""

    def install(script):
        def validate_epoch(e, net, images, labels, batch_size, *, quiet=False, communicator=None):
            return script[e]

        monkeypatch.setattr(fastprop.training.api, "validate_epoch", validate_epoch)

    return install


# -- early stopping keeps the best parameters, whether or not it fires ----------------------------


def _after_epochs(backend_name, epochs, data):
    net = _sigmoid_net(backend_name)
    train(net, MeanSquareError(), epochs, 50, 0.05, data=data, **_quiet())
    return _values(net)


def test_early_stopping_that_never_fires_still_keeps_the_best_epoch(backend_name, scripted_accuracy):
    data = _data()
    scripted_accuracy([0.03, 0.01, 0.01, 0.01])
    epoch_1, epoch_4 = _after_epochs(backend_name, 1, data), _after_epochs(backend_name, 4, data)
    assert not _same_values(epoch_1, epoch_4)  # the runs below can tell the two apart
    net = _sigmoid_net(backend_name)
    history = train(net, MeanSquareError(), 4, 50, 0.05, data=data, patience=10, **_quiet())
    assert history.accuracy == [0.03, 0.01, 0.01, 0.01]  # all four epochs ran: patience=10 never fired
    assert _same_values(_values(net), epoch_1)


def test_early_stopping_that_fires_keeps_the_best_epoch(backend_name, scripted_accuracy):
    data = _data()
    scripted_accuracy([0.03, 0.01, 0.01, 0.01, 0.5, 0.5, 0.5, 0.5])
    net = _sigmoid_net(backend_name)
    history = train(net, MeanSquareError(), 8, 50, 0.05, data=data, patience=2, **_quiet())
    assert history.accuracy == [0.03, 0.01, 0.01]  # stopped after two epochs without improvement
    assert _same_values(_values(net), _after_epochs(backend_name, 1, data))


def test_early_stopping_keeps_the_last_epoch_when_it_is_the_best(backend_name, scripted_accuracy):
    data = _data()
    scripted_accuracy([0.01, 0.02, 0.03, 0.04])
    net = _sigmoid_net(backend_name)
    train(net, MeanSquareError(), 4, 50, 0.05, data=data, patience=10, **_quiet())
    assert _same_values(_values(net), _after_epochs(backend_name, 4, data))


def test_early_stopping_keeps_the_best_measured_accuracy(backend_name):
    """Real accuracies: a rate 60 times larger after epoch 1 makes them fall; patience never fires."""
    x, t, xv, tv = data = _data()
    net = _sigmoid_net(backend_name)
    history = train(net, MeanSquareError(), 4, 50, 0.05, data=data, patience=10,
                    schedule=lambda epoch: 1.0 if epoch == 1 else 60.0, **_quiet())
    assert len(history) == 4 and history.accuracy[0] > max(history.accuracy[1:])
    assert validate(net, xv, tv) == history.accuracy[0]


# -- a resumed run is the uninterrupted run, bit for bit ------------------------------------------


def _compare_resumed(tmp_path, build, number_epochs, stop_after, *, cost=MeanSquareError, optimizer=None,
                     learning_rate=0.01, data=None, before_resume=None, **kwargs):
    """Train ``number_epochs`` straight; then ``stop_after`` epochs into a checkpoint and resume with a
    freshly built network (and optimizer); the two must agree exactly. Returns both histories."""
    data = _data() if data is None else data
    make_optimizer = optimizer or (lambda: None)
    state = numpy.random.get_state()
    straight = build()
    expected = train(straight, cost(), number_epochs, 50, learning_rate, data=data,
                     optimizer=make_optimizer(), **_quiet(**kwargs))
    numpy.random.set_state(state)  # the interrupted run starts where the straight one did
    path = tmp_path / "run.npz"
    first = build()
    train(first, cost(), stop_after, 50, learning_rate, data=data, optimizer=make_optimizer(),
          checkpoint=path, **_quiet(**kwargs))
    if before_resume is not None:
        before_resume()
    resumed = build()
    history = train(resumed, cost(), number_epochs, 50, learning_rate, data=data, optimizer=make_optimizer(),
                    checkpoint=path, **_quiet(**kwargs))
    assert history.cost == expected.cost
    assert history.accuracy == expected.accuracy
    assert _same_values(_values(resumed), _values(straight))
    return expected, history


@pytest.mark.parametrize("build", [_sigmoid_net, _relu_net], ids=["linear-sigmoid", "relu"])
def test_resume_restores_the_parameters(backend_name, tmp_path, build):
    expected, _ = _compare_resumed(tmp_path, lambda: build(backend_name), 4, 2)
    assert len(expected) == 4 and expected.cost[3] < expected.cost[1]  # epochs 3 and 4 really trained


@pytest.mark.parametrize(
    "optimizer",
    [lambda: Adam(1e-2), lambda: SGD(0.01, momentum=0.9), lambda: SGD(0.01, momentum=0.9, nesterov=True)],
    ids=["adam", "sgd-momentum", "sgd-nesterov"],
)
def test_resume_restores_the_optimizer_slots(backend_name, tmp_path, optimizer):
    _compare_resumed(tmp_path, lambda: _relu_net(backend_name), 4, 2, cost=SoftmaxCrossEntropy,
                     optimizer=optimizer, learning_rate=None)


@pytest.mark.parametrize(
    "schedule", [StepLR(1, gamma=0.5), CosineLR(4, min_factor=0.1)], ids=["step", "cosine"]
)
def test_resume_continues_the_schedule_where_it_stopped(backend_name, tmp_path, schedule):
    _compare_resumed(tmp_path, lambda: _relu_net(backend_name), 4, 2, schedule=schedule)
    # with Adam too: the schedule scales the optimizer's rate
    (tmp_path / "adam").mkdir()
    _compare_resumed(tmp_path / "adam", lambda: _relu_net(backend_name), 4, 2, cost=SoftmaxCrossEntropy,
                     optimizer=lambda: Adam(1e-2), learning_rate=None, schedule=schedule)


def test_resume_restores_the_early_stopping_state(backend_name, tmp_path, scripted_accuracy):
    data = _data()
    scripted_accuracy([0.03, 0.01, 0.01, 0.01, 0.5, 0.5, 0.5, 0.5])
    epoch_1 = _after_epochs(backend_name, 1, data)
    expected, resumed = _compare_resumed(tmp_path, lambda: _sigmoid_net(backend_name), 8, 2, data=data,
                                         learning_rate=0.05, patience=2)
    assert expected.accuracy == resumed.accuracy == [0.03, 0.01, 0.01]  # both stop after three epochs
    net = _sigmoid_net(backend_name)  # resuming the stopped run again trains nothing, keeps epoch 1
    again = train(net, MeanSquareError(), 8, 50, 0.05, data=data, patience=2, checkpoint=tmp_path / "run.npz",
                  **_quiet())
    assert again.accuracy == [0.03, 0.01, 0.01]
    assert _same_values(_values(net), epoch_1)


def test_resumed_early_stopping_keeps_the_best_epochs_parameters(backend_name, tmp_path, scripted_accuracy):
    data = _data()
    scripted_accuracy([0.03, 0.01, 0.01, 0.01, 0.5, 0.5, 0.5, 0.5])
    path = tmp_path / "run.npz"
    train(_sigmoid_net(backend_name), MeanSquareError(), 2, 50, 0.05, data=data, patience=2, checkpoint=path,
          **_quiet())
    net = _sigmoid_net(backend_name)
    history = train(net, MeanSquareError(), 8, 50, 0.05, data=data, patience=2, checkpoint=path, **_quiet())
    assert len(history) == 3
    assert _same_values(_values(net), _after_epochs(backend_name, 1, data))


def test_resume_restores_the_dropout_generators(backend_name, tmp_path):
    _compare_resumed(tmp_path, lambda: _dropout_net(backend_name), 4, 2)


def _other_global_state():
    numpy.random.seed(99)


def test_resume_keeps_the_shuffle_drawn_from_the_global_generator(backend_name, tmp_path):
    numpy.random.seed(3)  # seed=None draws the run's shuffle seed from NumPy's global generator
    _compare_resumed(tmp_path, lambda: _relu_net(backend_name), 4, 2, shuffle=True,
                     before_resume=_other_global_state)  # a new process would have another global state


@pytest.mark.parametrize("resume_seed", [11, None], ids=["same-seed", "seed-None"])
def test_resume_keeps_an_explicit_shuffle_seed(backend_name, tmp_path, resume_seed):
    data = _data()
    path = tmp_path / "run.npz"
    straight = _dropout_net(backend_name)
    expected = train(straight, MeanSquareError(), 4, 50, 0.05, data=data, shuffle=True, seed=11, **_quiet())
    train(_dropout_net(backend_name), MeanSquareError(), 2, 50, 0.05, data=data, shuffle=True, seed=11,
          checkpoint=path, **_quiet())
    resumed = _dropout_net(backend_name)
    history = train(resumed, MeanSquareError(), 4, 50, 0.05, data=data, shuffle=True, seed=resume_seed,
                    checkpoint=path, **_quiet())
    assert history.cost == expected.cost and history.accuracy == expected.accuracy
    assert _same_values(_values(resumed), _values(straight))


def test_resume_with_another_shuffle_seed_is_refused(backend_name, tmp_path):
    data = _data()
    path = tmp_path / "run.npz"
    train(_relu_net(backend_name), MeanSquareError(), 2, 50, 0.05, data=data, shuffle=True, seed=11,
          checkpoint=path, **_quiet())
    saved = path.read_bytes()
    net = _relu_net(backend_name)
    with pytest.raises(ValueError, match=r"seed=12.*seed=11"):
        train(net, MeanSquareError(), 4, 50, 0.05, data=data, shuffle=True, seed=12, checkpoint=path,
              **_quiet())
    assert path.read_bytes() == saved  # the checkpoint is untouched
    assert fastprop.load_checkpoint(path).epoch == 2


# -- after TrainingDiverged the network holds finite parameters, always ----------------------------


def _all_finite(net):
    return all(numpy.isfinite(value).all() for value in _values(net))


def _diverged_at(error):
    match = re.search(r"e=(\d+), batch (\d+)", str(error))
    assert match, str(error)
    return int(match.group(1)), int(match.group(2))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_adam_with_an_underflowing_eps_leaves_the_last_finite_parameters(backend_name, tmp_path):
    x, t, xv, tv = _data()
    x[:, 0] = 0.0  # an always-zero input pixel (as MNIST's borders): its weights' gradient is exactly 0
    net = _sigmoid_net(backend_name)
    assert net.dtype == numpy.float32 and numpy.float32(1e-300) == 0  # eps=1e-300 is 0 in float32: 0/0
    before = _values(net)
    path = tmp_path / "run.npz"
    with pytest.raises(TrainingDiverged,
                       match=r"e=0, batch 0: its update made a parameter infinite or NaN") as error:
        train(net, MeanSquareError(), 2, 50, None, data=(x, t, xv, tv), optimizer=Adam(1e-3, eps=1e-300),
              checkpoint=path, **_quiet())
    assert "last finite step" in str(error.value)
    assert _all_finite(net)
    assert _same_values(_values(net), before)  # the first step was the offending one
    assert not path.exists()
    # the cause really is the zero column: the same run with a live pixel 0 trains
    x[:, 0] = 0.5
    train(_sigmoid_net(backend_name), MeanSquareError(), 1, 50, None, data=(x, t, xv, tv),
          optimizer=Adam(1e-3, eps=1e-300), **_quiet())


def _reference(build, data, batches, rate, full_epochs=0, first_rate=None):
    """The network after ``full_epochs`` epochs at ``first_rate`` and then ``batches`` batches of 50 at
    ``rate``."""
    x, t = data[0], data[1]
    net = build()
    for e in range(full_epochs):
        train_epoch(e, net, x, t, MeanSquareError(), 50, first_rate, quiet=True)
    if batches:
        train_epoch(full_epochs, net, x[: 50 * batches], t[: 50 * batches], MeanSquareError(), 50, rate,
                    quiet=True)
    return _values(net)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "build, rate, cause",
    [
        (_relu_net, 1e3, "the cost became inf"),
        (_sigmoid_net, 1e38, "its update made a parameter infinite or NaN"),
    ],
    ids=["relu-cost-overflows", "sigmoid-weights-overflow"],
)
def test_a_huge_learning_rate_leaves_the_last_finite_parameters(backend_name, build, rate, cause):
    data = _data()
    net = build(backend_name)
    with pytest.raises(TrainingDiverged, match=rf"e=0, batch \d+: {cause} at learning rate") as error:
        train(net, MeanSquareError(), 3, 50, rate, data=data, **_quiet())
    assert _all_finite(net)
    e, batch = _diverged_at(error.value)
    assert e == 0
    assert _same_values(_values(net), _reference(lambda: build(backend_name), data, batch, rate))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_in_a_later_epoch_keeps_that_epochs_last_finite_step(backend_name, tmp_path):
    data = _data()
    path = tmp_path / "run.npz"
    net = _relu_net(backend_name)
    schedule = lambda epoch: 1.0 if epoch == 1 else 1e5  # noqa: E731  (0.01, then 1e3)
    with pytest.raises(TrainingDiverged,
                       match=r"e=1, batch \d+: the cost became inf at learning rate 1000") as error:
        train(net, MeanSquareError(), 3, 50, 0.01, data=data, schedule=schedule, checkpoint=path, **_quiet())
    assert _all_finite(net)
    _, batch = _diverged_at(error.value)
    build = lambda: _relu_net(backend_name)  # noqa: E731
    assert _same_values(_values(net), _reference(build, data, batch, 1e3, full_epochs=1, first_rate=0.01))
    saved = fastprop.load_checkpoint(path, backend=backend_name)  # the checkpoint holds epoch 1, intact
    assert saved.epoch == 1
    assert _same_values(_values(saved.net), _reference(build, data, 0, None, full_epochs=1, first_rate=0.01))


# -- a non-finite value in the data is reported with its array and row ----------------------------


def _refused(backend_name, data, tmp_path, match):
    net = _sigmoid_net(backend_name)
    before = _values(net)
    path = tmp_path / "run.npz"
    with pytest.raises(ValueError, match=match) as error:
        train(net, MeanSquareError(), 2, 50, 0.05, data=data, checkpoint=path, **_quiet())
    assert not isinstance(error.value, TrainingDiverged)
    assert "learning rate" not in str(error.value)
    assert _same_values(_values(net), before)  # refused before any step
    assert not path.exists()
    return str(error.value)


def _class_ids_with_a_nan(x, t, xv, tv):
    ids = t.argmax(1).astype(numpy.float64)
    ids[57] = numpy.nan
    return x, ids, xv, tv


def _with(array, index, value):
    """``(x, t, xv, tv)`` -> the same data with ``value`` at ``index`` of array number ``array``."""

    def spoil(*data):
        data[array][index] = value
        return data

    return spoil


NON_FINITE_DATA = {  # id -> (spoil the data, what the error must name)
    "training pixel nan": (_with(0, (57, 13), numpy.nan), r"training images .*row 57\b"),
    "training pixel inf": (_with(0, (57, 13), numpy.inf), r"training images .*row 57\b"),
    "training pixel -inf": (_with(0, (57, 13), -numpy.inf), r"training images .*row 57\b"),
    "one-hot training label": (_with(1, (57, 3), numpy.nan), r"training labels .*row 57\b"),
    "class-id training label": (_class_ids_with_a_nan, r"training labels .*row 57\b"),
    "validation image": (_with(2, (57, 2), numpy.nan), r"validation images .*row 57\b"),
    "validation label": (_with(3, (57, 3), numpy.nan), r"validation labels .*row 57\b"),
}


@pytest.mark.parametrize("spoil, match", NON_FINITE_DATA.values(), ids=NON_FINITE_DATA)
def test_non_finite_data_is_refused_with_its_array_and_row(backend_name, tmp_path, spoil, match):
    _refused(backend_name, spoil(*_data()), tmp_path, match)


@pytest.mark.parametrize("build", [_sigmoid_net, _relu_net], ids=["linear-sigmoid", "relu"])
def test_validate_refuses_a_non_finite_image_with_its_row(backend_name, build):
    _, _, xv, tv = _data()
    net = build(backend_name)
    clean = validate(net, xv, tv, 50)
    xv[57, 2] = numpy.nan  # in the second batch of 50: the row is counted over the whole array
    with pytest.raises(ValueError, match=r"validation images .*row 57\b"):
        validate(net, xv, tv, 50)
    xv[57, 2] = 0.0
    assert validate(net, xv, tv, 50) == clean


def test_validate_refuses_a_non_finite_label_with_its_row(backend_name):
    _, _, xv, tv = _data()
    net = _sigmoid_net(backend_name)
    tv[57, 3] = numpy.nan  # numpy's argmax would take the NaN for the class: a silent wrong count
    with pytest.raises(ValueError, match=r"validation labels .*row 57\b"):
        validate(net, xv, tv, 50)


# -- every layer class resumes, its constructor arguments back with their types --------------------

def _every_layer_net(backend_name):
    """One network holding every layer class a checkpoint knows, with tuple arguments where a layer
    takes them (they come back from the file's JSON as lists)."""
    from fastprop import BatchNorm1D, BatchNorm2D, Conv2D, Flatten, MaxPool2D, Reshape, SoftMax, Tanh

    with fastprop.use_backend(backend_name, "float64"):
        return Network([
            Reshape((1, 5, 8)), Conv2D(1, 2, (3, 3), stride=(1, 2), padding=(1, 1), rng=0), BatchNorm2D(2),
            ReLU(), MaxPool2D((2, 2)), Flatten(), Network([Linear(8, 12, rng=1), Tanh()], fuse=False),
            Dropout(0.25, rng=3), Linear(12, 10, rng=2), BatchNorm1D(10, momentum=0.2), Sigmoid(),
            Linear(10, 10, rng=4), SoftMax(),
        ])


def test_every_checkpoint_layer_class_has_a_resume_case():
    from fastprop.layer_types import CHECKPOINT_LAYERS

    covered = {type(leaf) for leaf in _every_layer_net("numpy").leaves()} | {Network}
    missing = set(CHECKPOINT_LAYERS.values()) - covered
    assert not missing, f"layer classes without a resume case: {sorted(c.__name__ for c in missing)}"


def test_a_network_of_every_layer_class_resumes_exactly(backend_name, tmp_path):
    from fastprop import CrossEntropy

    _compare_resumed(tmp_path, lambda: _every_layer_net(backend_name), 3, 1, cost=CrossEntropy, shuffle=True,
                     seed=5)
