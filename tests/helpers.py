"""Helpers that several test modules share (fixtures are in ``tests/conftest.py``): small problems and
networks, runs compared bit for bit, one-sentence errors, and scripts run in a fresh interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy
import pytest

import fastprop
from fastprop import Linear, MeanSquareError, Network, ReLU, Sigmoid, train
from tests.conftest import separable_problem

REPO = Path(__file__).resolve().parents[1]
NAN, INF = float("nan"), float("inf")
DTYPES = ["float32", "float64"]
RNG = numpy.random.default_rng(42)  # one stream for the layer tests' random batches


# -- a small classification problem: class ids, one network, runs compared bit for bit -------------


def small_problem(n_train=40, n_validation=20, n_in=6, n_classes=3, seed=0):
    """A small classification set: images, class ids, validation images, validation class ids."""
    rng = numpy.random.default_rng(seed)
    return (rng.random((n_train, n_in)), rng.integers(0, n_classes, n_train),
            rng.random((n_validation, n_in)), rng.integers(0, n_classes, n_validation))


def one_hot_rows(ids, n_classes=3):
    """Class ids as one-hot rows."""
    return numpy.eye(n_classes)[ids]


def small_problem_net(backend_name="numpy", dtype="float64", n_in=6, n_out=3, activation=Sigmoid):
    """``Linear(n_in, n_out, rng=1)`` and ``activation`` (none if None): the same network every call."""
    with fastprop.use_backend(backend_name, dtype):
        layers = [Linear(n_in, n_out, rng=1)]
        if activation is not None:
            layers.append(activation())
        return Network(layers)


def parameter_copies(net):
    """Copies of every parameter's value, in order."""
    return [numpy.array(parameter.value, copy=True) for parameter in net.parameters()]


def train_small_problem(backend_name, labels=None, validation_labels=None, *, cost=MeanSquareError, epochs=3,
                        batch_size=7, learning_rate=0.5, dtype="float64", data=None, **options):
    """Train a fresh, identically initialised network; return ``(history, parameters)``."""
    x, y, vx, vy = small_problem()
    if data is None:
        data = (x, one_hot_rows(y) if labels is None else labels, vx,
                one_hot_rows(vy) if validation_labels is None else validation_labels)
    net = small_problem_net(backend_name, dtype)
    history = train(net, cost(), epochs, batch_size, learning_rate, data=data, quiet=True, verbose=False,
                    **options)
    return history, parameter_copies(net)


def assert_same_run(first, second):
    """Two ``(history, parameters)`` runs agree bit for bit."""
    (history_a, parameters_a), (history_b, parameters_b) = first, second
    assert history_a.cost == history_b.cost
    assert history_a.accuracy == history_b.accuracy
    assert len(parameters_a) == len(parameters_b)
    for a, b in zip(parameters_a, parameters_b):
        assert a.dtype == b.dtype and numpy.array_equal(a, b)


def assert_one_sentence(message, *words):
    """The message is one line naming every word in ``words``."""
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not named in: {message}"


# -- the separable problem split for training and validation, and networks that learn it -----------


def split_problem(n_train=300, n_val=100):
    """``(x, t, x_valid, t_valid)``: copies of the first ``n_train`` rows of :func:`separable_problem` and
    of the ``n_val`` after them."""
    x, t = separable_problem(n_train + n_val)
    return x[:n_train].copy(), t[:n_train].copy(), x[n_train:].copy(), t[n_train:].copy()


def sigmoid_net(backend_name):
    """The notebook's network (Numba runs it through its whole-epoch kernel)."""
    with fastprop.use_backend(backend_name):
        return Network([Linear(40, 10, rng=0), Sigmoid()])


def relu_net(backend_name):
    """A network that takes the step-by-step path on every backend."""
    with fastprop.use_backend(backend_name):
        return Network([Linear(40, 16, rng=0), ReLU(), Linear(16, 10, rng=1)])


def host_values(net):
    """Host copies of every parameter, in order."""
    return [numpy.array(net.backend.to_numpy(parameter.value)) for parameter in net.parameters()]


def same_values(a, b):
    """Two lists of parameter values are equal, array for array."""
    return len(a) == len(b) and all(numpy.array_equal(x, y) for x, y in zip(a, b))


def quiet_options(**kwargs):
    """``train``'s keyword arguments for a run that prints nothing."""
    return {"quiet": True, "verbose": False, **kwargs}


def values_after_epochs(backend_name, epochs, data):
    """The parameters of :func:`sigmoid_net` after ``epochs`` epochs on ``data``, without early stopping."""
    net = sigmoid_net(backend_name)
    train(net, MeanSquareError(), epochs, 50, 0.05, data=data, **quiet_options())
    return host_values(net)


# -- random batches --------------------------------------------------------------------------------


def random_batch(batch, n_in, n_out, one_hot=True, rng=None):
    """``(x, target)`` drawn from ``rng`` (default :data:`RNG`, whose draws depend on the tests run
    before in the same process): normal inputs and one-hot (or uniform) targets."""
    rng = RNG if rng is None else rng
    x = rng.normal(size=(batch, n_in))
    if one_hot:
        target = numpy.eye(n_out)[rng.integers(0, n_out, batch)]
    else:
        target = rng.random((batch, n_out))
    return x, target


# -- processes -------------------------------------------------------------------------------------


def numba_available():
    """Whether the Numba backend runs here."""
    return fastprop.available_backends()["numba"].available


def run_python(script, env_changes, timeout=120):
    """Run ``script`` in a fresh interpreter in its own session; on a timeout kill that session (the
    interpreter and any pool children it left) and fail the test instead of hanging the suite."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY", "FASTPROP_BACKEND")}
    env.update(env_changes)
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the script hung for {timeout} s (killed); stderr: {err[-2000:]}")
    return process.returncode, out, err


def on_one_and_two_threads(compute):
    """``(compute() on one Numba thread, compute() on two)``; skips where Numba has fewer threads."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba runs on one thread here; set NUMBA_NUM_THREADS=2 or more to test this")
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = compute()
        numba.set_num_threads(2)
        return one, compute()
    finally:
        numba.set_num_threads(saved)
