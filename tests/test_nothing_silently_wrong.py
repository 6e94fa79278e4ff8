"""Inputs that peer projects got silently wrong, each tried as a family: evaluation arguments,
one-output classifiers, early stopping without validation, a layer in two places, what a
checkpoint cannot hold, resuming with other optimizer settings, and processes without a terminal."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy
import pytest

import fastprop
from fastprop import (
    Adam, Linear, MeanSquareError, Network, ReLU, SGD, Sigmoid, SoftmaxCrossEntropy, predict, train,
    train_epoch, validate, validate_epoch,
)
from fastprop.checkpoint import CheckpointError
from tests.conftest import separable_problem


def _values(net):
    return [numpy.array(net.backend.to_numpy(p.value)) for p in net.parameters()]


# -- every public function's numeric arguments are checked ---------------------------------------

EVALUATIONS = {
    "validate": lambda net, x, t, size: validate(net, x, t, size),
    "validate_epoch": lambda net, x, t, size: validate_epoch(0, net, x, t, size, quiet=True),
    "predict": lambda net, x, t, size: predict(net, x, size),
    "train_epoch": lambda net, x, t, size: train_epoch(0, net, x, t, MeanSquareError(), size, 0.1,
                                                       quiet=True),
}


@pytest.mark.parametrize("size", [0, -5, 60.0, True, "600", None])
@pytest.mark.parametrize("name", EVALUATIONS)
def test_batch_sizes_are_checked_and_named(name, size):
    x, t = separable_problem(20)
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    before = _values(net)
    with pytest.raises(ValueError, match=rf"^{name} needs a positive integer batch_size, got {size!r}\.$"):
        EVALUATIONS[name](net, x, t, size)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, _values(net)))


@pytest.mark.parametrize("name, call", [
    ("train_epoch", lambda net, x, t: train_epoch(1.5, net, x, t, MeanSquareError(), 10, 0.1, quiet=True)),
    ("validate_epoch", lambda net, x, t: validate_epoch("0", net, x, t, 10, quiet=True)),
])
def test_epoch_numbers_are_checked(name, call):
    x, t = separable_problem(20)
    with pytest.raises(ValueError, match=rf"^{name} needs an integer epoch number e"):
        call(Network([Linear(40, 10, rng=0), Sigmoid()]), x, t)


# -- a classifier with one output --------------------------------------------------------------

def _binary(n, seed=0):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(numpy.int64)


@pytest.mark.parametrize("shape", ["(N,)", "(N, 1)"])
def test_one_sigmoid_output_trains_and_validates_as_a_binary_classifier(backend_name, shape):
    x, labels = _binary(600)
    if shape == "(N, 1)":
        labels = labels.reshape(-1, 1)
    with fastprop.use_backend(backend_name, "float64"):
        net = Network([Linear(6, 8, rng=1), ReLU(), Linear(8, 1, rng=2), Sigmoid()])
    history = train(net, MeanSquareError(), 15, 50, 0.1, data=(x[:500], labels[:500], x[500:], labels[500:]),
                    quiet=True, verbose=False)
    accuracy = validate(net, x[500:], labels[500:])
    expected = numpy.mean((predict(net, x[500:])[:, 0] > 0.5) == labels[500:].reshape(-1))
    assert accuracy == history.accuracy[-1] == expected
    assert accuracy > 0.9


def test_binary_labels_other_than_0_and_1_are_refused_with_a_true_remedy():
    x, labels = _binary(50)
    net = Network([Linear(6, 1, rng=0), Sigmoid()])
    for bad in (labels + 1, labels * 2 - 1):
        with pytest.raises(ValueError, match="a network with one output is a binary classifier whose labels "
                                             "are 0 or 1; give 0/1 labels"):
            validate(net, x, bad)


def test_one_linear_output_still_regresses_on_real_targets():
    x = numpy.random.default_rng(3).normal(size=(200, 4))
    y = x @ numpy.array([1.0, -2.0, 0.5, 0.0])
    net = Network([Linear(4, 1, rng=0)])
    for e in range(30):
        train_epoch(e, net, x, y, MeanSquareError(), 20, 0.01, quiet=True)
    assert numpy.abs(predict(net, x)[:, 0] - y).max() < 0.05


# -- early stopping needs validation rows ---------------------------------------------------------

def test_patience_without_validation_rows_is_refused_before_training():
    x, t = separable_problem(100)
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    before = _values(net)
    with pytest.raises(ValueError, match="train got patience=2 but no validation rows"):
        train(net, MeanSquareError(), 6, 10, 0.1, data=(x, t, x[:0], t[:0]), patience=2, quiet=True)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, _values(net)))
    history = train(net, MeanSquareError(), 2, 10, 0.1, data=(x, t, x[:0], t[:0]), quiet=True, verbose=False)
    assert len(history) == 2  # without patience, no validation rows is fine


# -- one layer object in two places ---------------------------------------------------------------

def _tied():
    shared = Linear(4, 4, rng=0)
    return shared, [shared, ReLU(), shared]


@pytest.mark.parametrize("make", [
    lambda: Network(_tied()[1]),
    lambda: Network([Linear(4, 4, rng=0), (relu := ReLU()), Linear(4, 4, rng=1), relu]),
    lambda: Network([(inner := Network([Linear(4, 4, rng=0), Sigmoid()])), inner]),
    lambda: Network([(layer := Linear(4, 4, rng=0)), Network([Sigmoid(), layer])]),
], ids=["linear twice", "activation twice", "network twice", "nested"])
def test_a_layer_object_in_two_places_is_refused(make):
    with pytest.raises(ValueError, match=r"Network got the same .* object at layers .* and .*; .* cannot "
                                         r"sit in two places: give each place its own layer \(copy.deepcopy"):
        make()


def test_a_layer_added_twice_after_building_is_refused_at_the_next_pass():
    layers = [Linear(4, 4, rng=0), ReLU()]
    net = Network(layers)
    layers.append(layers[0])
    with pytest.raises(ValueError, match="the same Linear"):
        net.forward(numpy.ones((2, 4)))
    layers[-1] = copy.deepcopy(layers[0])  # a copy is its own layer
    assert net.forward(numpy.ones((2, 4))).shape == (2, 4)


# -- what a checkpoint cannot hold is said before the first step -----------------------------------

class Unsaved(fastprop.Layer):
    """A layer with no checkpoint_arguments: checkpoints cannot rebuild it."""

    def forward(self, x_in):
        return x_in

    def backward(self, d_out, input_gradient=True):
        return d_out


def test_a_layer_checkpoints_cannot_hold_stops_train_before_any_step(tmp_path):
    x, t = separable_problem(60)
    net = Network([Linear(40, 10, rng=0), Unsaved(), Sigmoid()])
    before = _values(net)
    with pytest.raises(CheckpointError, match="Unsaved, which checkpoints do not know; .* declares "
                                              "checkpoint_arguments"):
        train(net, MeanSquareError(), 2, 20, 0.1, data=(x, t, x, t), checkpoint=tmp_path / "run.npz",
              quiet=True)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, _values(net)))
    assert not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="the folder .*missing does not exist"):
        train(Network([Linear(40, 10, rng=0), Sigmoid()]), MeanSquareError(), 2, 20, 0.1, data=(x, t, x, t),
              checkpoint=tmp_path / "missing" / "run.npz", quiet=True)


def test_a_class_defined_again_is_named_truly(monkeypatch):
    """A notebook cell run twice defines the class again: the old layer's class is not the one kept."""
    from fastprop.layer_types import CHECKPOINT_LAYERS

    monkeypatch.setitem(CHECKPOINT_LAYERS, "Scaled", None)  # the registration is undone afterwards
    namespace = {"fastprop": fastprop}
    source = textwrap.dedent("""
        class Scaled(fastprop.Layer):
            checkpoint_arguments = ()
            def forward(self, x_in):
                return 2 * x_in
            def backward(self, d_out, input_gradient=True):
                return 2 * d_out
    """)
    exec(source, namespace)
    old = namespace["Scaled"]()
    exec(source, namespace)  # the cell again
    with pytest.raises(CheckpointError, match="whose class was defined again after this layer was made"):
        fastprop.checkpoint.check_savable(Network([Linear(3, 3, rng=0), old]), "x.npz")
    fastprop.checkpoint.check_savable(Network([Linear(3, 3, rng=0), namespace["Scaled"]()]), "x.npz")


# -- resuming with other optimizer settings ------------------------------------------------------

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
    before, settings = _values(net), repr(optimizer)
    message = (rf"train cannot resume {path}: it was written with .*, but this call trains with .*; resume "
               "with the optimizer and settings it was written")
    with pytest.raises(ValueError, match=message):
        train(net, SoftmaxCrossEntropy(), 3, 20, 1e-2, data=data, optimizer=optimizer, checkpoint=path,
              quiet=True)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, _values(net)))
    assert repr(optimizer) == settings


# -- processes without a terminal ------------------------------------------------------------------

@pytest.mark.parametrize("streams", ["closed", "devnull"])
def test_training_runs_with_closed_or_null_standard_streams(tmp_path, streams):
    """A job started without a terminal (cron, nohup, a service): bars and lines must not fail."""
    script = textwrap.dedent("""
        import sys
        import numpy, fastprop
        from tests.conftest import separable_problem
        x, t = separable_problem(200)
        net = fastprop.Network([fastprop.Linear(40, 10, rng=0), fastprop.Sigmoid()])
        history = fastprop.train(net, fastprop.MeanSquareError(), 2, 50, 0.1, data=(x, t, x, t))
        numpy.save(sys.argv[1], numpy.array(history.accuracy))
    """)
    out = tmp_path / "accuracy.npy"
    kind = subprocess.DEVNULL
    command = [sys.executable, "-c", script, str(out)]
    if streams == "closed":  # the child starts with stdout and stderr closed
        command = ["bash", "-c", f'exec {sys.executable} -c "$0" "$1" >&- 2>&-', script, str(out)]
    done = subprocess.run(command, stdin=kind, stdout=kind if streams == "devnull" else None,
                          stderr=kind if streams == "devnull" else None, timeout=300,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert done.returncode == 0
    assert numpy.load(out).shape == (2,)


# -- costs given extreme but legal values ------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("eps", [1e-300, 5e-324, 1e-12, 1e3])
def test_cross_entropy_stays_finite_for_any_legal_eps(backend_name, dtype, eps):
    from fastprop import CrossEntropy

    backend = fastprop.backends.load_backend(backend_name)
    prediction = backend.asarray(numpy.array([[0.0, 1.0], [0.5, 0.5]]), dtype=dtype)
    target = numpy.array([[1.0, 0.0], [0.0, 1.0]])
    cost = CrossEntropy(eps=eps)
    values, gradient = cost.estimate(target, prediction), None
    gradient = cost.gradient(values)
    for array in (values, gradient):
        assert bool(backend.xp.isfinite(array).all()), f"eps={eps} in {dtype} gave {array}"
    expected = -numpy.log(max(eps, numpy.finfo(dtype).tiny))  # what the notebook's formula means
    assert float(values[0, 0]) == pytest.approx(expected, rel=1e-6)


# -- forked worker processes draw their own masks --------------------------------------------------

def _mask_in_child(layer_and_queue):
    layer, queue = layer_and_queue
    queue.put(numpy.asarray(layer.forward(numpy.ones((4, 50)))))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
@pytest.mark.parametrize("seeded", [False, True], ids=["fresh entropy", "seeded"])
def test_forked_workers_draw_their_own_dropout_masks_unless_seeded(seeded):
    """Without fastprop.seed, each forked child draws new masks (not its parent's next ones); with a
    seed, every child repeats the seeded stream, as asked."""
    import multiprocessing

    from fastprop import Dropout

    fastprop.seed(11 if seeded else None)
    layer = Dropout(0.5)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_mask_in_child, args=((layer, queue),)) for _ in range(2)]
    for child in children:
        child.start()
    masks = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(60)
    mine = numpy.asarray(layer.forward(numpy.ones((4, 50))))
    same = [numpy.array_equal(masks[0], masks[1]), numpy.array_equal(masks[0], mine)]
    assert same == ([True, True] if seeded else [False, False])
