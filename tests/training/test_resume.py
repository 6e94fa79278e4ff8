"""Training with a checkpoint (``fastprop.training.state``): a resumed run is the uninterrupted run bit
for bit (parameters, optimizer slots, schedule, early stopping, dropout generators, shuffle seed, every
layer class), and a checkpoint that cannot be resumed, or a network it cannot hold, is refused before
the first step."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import (
    SGD, Adam, CosineLR, Dropout, Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftmaxCrossEntropy,
    StepLR, train,
)
from fastprop.checkpoint import CheckpointError
from tests.conftest import separable_problem
from tests.helpers import (
    host_values, quiet_options, relu_net, same_values, sigmoid_net, split_problem, values_after_epochs,
)


def _dropout_net(backend_name):
    with fastprop.use_backend(backend_name):
        return Network([Linear(40, 20, rng=0), Dropout(0.5, rng=7), Linear(20, 10, rng=1), Sigmoid()])


def _compare_resumed(tmp_path, build, number_epochs, stop_after, *, cost=MeanSquareError, optimizer=None,
                     learning_rate=0.01, data=None, before_resume=None, **kwargs):
    """Train ``number_epochs`` straight; then ``stop_after`` epochs into a checkpoint and resume with a
    freshly built network (and optimizer); the two must agree exactly. Returns both histories."""
    data = split_problem() if data is None else data
    make_optimizer = optimizer or (lambda: None)
    state = numpy.random.get_state()
    straight = build()
    expected = train(straight, cost(), number_epochs, 50, learning_rate, data=data,
                     optimizer=make_optimizer(), **quiet_options(**kwargs))
    numpy.random.set_state(state)  # the interrupted run starts where the straight one did
    path = tmp_path / "run.npz"
    first = build()
    train(first, cost(), stop_after, 50, learning_rate, data=data, optimizer=make_optimizer(),
          checkpoint=path, **quiet_options(**kwargs))
    if before_resume is not None:
        before_resume()
    resumed = build()
    history = train(resumed, cost(), number_epochs, 50, learning_rate, data=data, optimizer=make_optimizer(),
                    checkpoint=path, **quiet_options(**kwargs))
    assert history.cost == expected.cost
    assert history.accuracy == expected.accuracy
    assert same_values(host_values(resumed), host_values(straight))
    return expected, history


@pytest.mark.parametrize("build", [sigmoid_net, relu_net], ids=["linear-sigmoid", "relu"])
def test_resume_restores_the_parameters(backend_name, tmp_path, build):
    expected, _ = _compare_resumed(tmp_path, lambda: build(backend_name), 4, 2)
    assert len(expected) == 4 and expected.cost[3] < expected.cost[1]  # epochs 3 and 4 really trained


@pytest.mark.parametrize(
    "optimizer",
    [lambda: Adam(1e-2), lambda: SGD(0.01, momentum=0.9), lambda: SGD(0.01, momentum=0.9, nesterov=True)],
    ids=["adam", "sgd-momentum", "sgd-nesterov"],
)
def test_resume_restores_the_optimizer_slots(backend_name, tmp_path, optimizer):
    _compare_resumed(tmp_path, lambda: relu_net(backend_name), 4, 2, cost=SoftmaxCrossEntropy,
                     optimizer=optimizer, learning_rate=None)


@pytest.mark.parametrize(
    "schedule", [StepLR(1, gamma=0.5), CosineLR(4, min_factor=0.1)], ids=["step", "cosine"]
)
def test_resume_continues_the_schedule_where_it_stopped(backend_name, tmp_path, schedule):
    _compare_resumed(tmp_path, lambda: relu_net(backend_name), 4, 2, schedule=schedule)
    # with Adam too: the schedule scales the optimizer's rate
    (tmp_path / "adam").mkdir()
    _compare_resumed(tmp_path / "adam", lambda: relu_net(backend_name), 4, 2, cost=SoftmaxCrossEntropy,
                     optimizer=lambda: Adam(1e-2), learning_rate=None, schedule=schedule)


def test_resume_restores_the_early_stopping_state(backend_name, tmp_path, scripted_accuracy):
    data = split_problem()
    scripted_accuracy([0.03, 0.01, 0.01, 0.01, 0.5, 0.5, 0.5, 0.5])
    epoch_1 = values_after_epochs(backend_name, 1, data)
    expected, resumed = _compare_resumed(tmp_path, lambda: sigmoid_net(backend_name), 8, 2, data=data,
                                         learning_rate=0.05, patience=2)
    assert expected.accuracy == resumed.accuracy == [0.03, 0.01, 0.01]  # both stop after three epochs
    net = sigmoid_net(backend_name)  # resuming the stopped run again trains nothing, keeps epoch 1
    again = train(net, MeanSquareError(), 8, 50, 0.05, data=data, patience=2, checkpoint=tmp_path / "run.npz",
                  **quiet_options())
    assert again.accuracy == [0.03, 0.01, 0.01]
    assert same_values(host_values(net), epoch_1)


def test_resumed_early_stopping_keeps_the_best_epochs_parameters(backend_name, tmp_path, scripted_accuracy):
    data = split_problem()
    scripted_accuracy([0.03, 0.01, 0.01, 0.01, 0.5, 0.5, 0.5, 0.5])
    path = tmp_path / "run.npz"
    train(sigmoid_net(backend_name), MeanSquareError(), 2, 50, 0.05, data=data, patience=2, checkpoint=path,
          **quiet_options())
    net = sigmoid_net(backend_name)
    history = train(net, MeanSquareError(), 8, 50, 0.05, data=data, patience=2, checkpoint=path,
                    **quiet_options())
    assert len(history) == 3
    assert same_values(host_values(net), values_after_epochs(backend_name, 1, data))


def test_resume_restores_the_dropout_generators(backend_name, tmp_path):
    _compare_resumed(tmp_path, lambda: _dropout_net(backend_name), 4, 2)


def _other_global_state():
    numpy.random.seed(99)


def test_resume_keeps_the_shuffle_drawn_from_the_global_generator(backend_name, tmp_path):
    numpy.random.seed(3)  # seed=None draws the run's shuffle seed from NumPy's global generator
    _compare_resumed(tmp_path, lambda: relu_net(backend_name), 4, 2, shuffle=True,
                     before_resume=_other_global_state)  # a new process would have another global state


@pytest.mark.parametrize("resume_seed", [11, None], ids=["same-seed", "seed-None"])
def test_resume_keeps_an_explicit_shuffle_seed(backend_name, tmp_path, resume_seed):
    data = split_problem()
    path = tmp_path / "run.npz"
    straight = _dropout_net(backend_name)
    expected = train(straight, MeanSquareError(), 4, 50, 0.05, data=data, shuffle=True, seed=11,
                     **quiet_options())
    train(_dropout_net(backend_name), MeanSquareError(), 2, 50, 0.05, data=data, shuffle=True, seed=11,
          checkpoint=path, **quiet_options())
    resumed = _dropout_net(backend_name)
    history = train(resumed, MeanSquareError(), 4, 50, 0.05, data=data, shuffle=True, seed=resume_seed,
                    checkpoint=path, **quiet_options())
    assert history.cost == expected.cost and history.accuracy == expected.accuracy
    assert same_values(host_values(resumed), host_values(straight))


def test_resume_with_another_shuffle_seed_is_refused(backend_name, tmp_path):
    data = split_problem()
    path = tmp_path / "run.npz"
    train(relu_net(backend_name), MeanSquareError(), 2, 50, 0.05, data=data, shuffle=True, seed=11,
          checkpoint=path, **quiet_options())
    saved = path.read_bytes()
    net = relu_net(backend_name)
    with pytest.raises(ValueError, match=r"seed=12.*seed=11"):
        train(net, MeanSquareError(), 4, 50, 0.05, data=data, shuffle=True, seed=12, checkpoint=path,
              **quiet_options())
    assert path.read_bytes() == saved  # the checkpoint is untouched
    assert fastprop.load_checkpoint(path).epoch == 2


def test_checkpoint_resume_continues_the_history(tmp_path):
    data = split_problem(300, 100)
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


# -- what cannot be resumed or saved is refused before the first step ------------------------------


def test_resume_refuses_a_checkpoint_of_another_network(tmp_path):
    data = split_problem(100, 20)
    path = tmp_path / "run.npz"
    train(Network([Linear(40, 10), Sigmoid()]), MeanSquareError(), 1, 50, 0.05, data=data, quiet=True,
          verbose=False, checkpoint=path)
    other = Network([Linear(40, 12), ReLU(), Linear(12, 10)])
    with pytest.raises(fastprop.CheckpointError,
                       match=r"holds 2 layers, but the network being trained holds 3 "
                             r".*use another checkpoint path"):
        train(other, MeanSquareError(), 2, 50, 0.05, data=data, quiet=True, verbose=False, checkpoint=path)


@pytest.mark.parametrize("first, second", [
    (lambda: Adam(1e-2), lambda: Adam(1e-2, betas=(0.5, 0.9), weight_decay=0.5)),
    (lambda: Adam(1e-2), lambda: SGD(1e-2, momentum=0.9)),
    (lambda: None, lambda: Adam(1e-2)),
    (lambda: Adam(1e-2), lambda: None),
], ids=["other hyperparameters", "other optimizer", "optimizer added", "optimizer dropped"])
def test_resuming_with_other_optimizer_settings_is_refused_and_changes_nothing(tmp_path, first, second):
    x, t = separable_problem(120)
    data, path = (x[:100], t[:100], x[100:], t[100:]), tmp_path / "run.npz"
    train(Network([Linear(40, 10, rng=0)]), SoftmaxCrossEntropy(), 1, 20, 1e-2, data=data, optimizer=first(),
          checkpoint=path, quiet=True, verbose=False)
    net, optimizer = Network([Linear(40, 10, rng=0)]), second()
    before, settings = host_values(net), repr(optimizer)
    message = (rf"train cannot resume {path}: it was written with .*, but this call trains with .*; resume "
               "with the optimizer and settings it was written")
    with pytest.raises(ValueError, match=message):
        train(net, SoftmaxCrossEntropy(), 3, 20, 1e-2, data=data, optimizer=optimizer, checkpoint=path,
              quiet=True)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, host_values(net)))
    assert repr(optimizer) == settings


class Unsaved(fastprop.Layer):
    """A layer with no checkpoint_arguments: checkpoints cannot rebuild it."""

    def forward(self, x_in):
        return x_in

    def backward(self, d_out, input_gradient=True):
        return d_out


def test_a_layer_checkpoints_cannot_hold_stops_train_before_any_step(tmp_path):
    x, t = separable_problem(60)
    net = Network([Linear(40, 10, rng=0), Unsaved(), Sigmoid()])
    before = host_values(net)
    with pytest.raises(CheckpointError, match="Unsaved, which checkpoints do not know; .* declares "
                                              "checkpoint_arguments"):
        train(net, MeanSquareError(), 2, 20, 0.1, data=(x, t, x, t), checkpoint=tmp_path / "run.npz",
              quiet=True)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, host_values(net)))
    assert not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="the folder .*missing does not exist"):
        train(Network([Linear(40, 10, rng=0), Sigmoid()]), MeanSquareError(), 2, 20, 0.1, data=(x, t, x, t),
              checkpoint=tmp_path / "missing" / "run.npz", quiet=True)
