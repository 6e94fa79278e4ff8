"""The CuPy backend: gradients, the graph-replayed epoch, memory (its kernels against the NumPy
reference are in ``test_backend_contract.py``, with every other backend's).

The first test runs everywhere: it checks what fastprop reports where CuPy cannot be imported. Every
other test is marked ``gpu`` and skips, with the reason, where CuPy or a CUDA device is missing.
"""

from __future__ import annotations

import importlib
import sys

import numpy
import pytest

from fastprop.lowering import lower

import fastprop
from fastprop import (
    CrossEntropy, Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftMax, SoftmaxCrossEntropy, Tanh, train,
)
from fastprop import backends as backends_package
from fastprop.backends import registry
from tests.conftest import relative_error


def test_without_cupy_the_backend_is_reported_unavailable(monkeypatch):
    for table in ("_factories", "_instances", "_failures"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now fails, as where it is not installed
    for module in ("cupy_backend", "cupy_kernels"):
        monkeypatch.delitem(sys.modules, f"fastprop.backends.{module}", raising=False)
        monkeypatch.delattr(backends_package, module, raising=False)
    def create():
        return importlib.import_module("fastprop.backends.cupy_backend").create()

    registry.register_backend("cupy", create)

    status = fastprop.available_backends()["cupy"]
    assert not status.available
    assert "CuPy is not importable" in status.reason and "pip install cupy-cuda12x" in status.reason
    with pytest.raises(fastprop.BackendUnavailableError, match=r"Backend 'cupy' is unavailable: CuPy is not"):
        fastprop.set_backend("cupy")


def _gpu_skip_reason():
    try:
        import cupy
    except Exception as error:
        return f"CuPy is not installed ({error}); the GPU tests run on a machine with an NVIDIA GPU"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        return f"CuPy sees no CUDA device ({error}); the GPU tests run on a machine with an NVIDIA GPU"
    return None if count else "CuPy sees no CUDA device; the GPU tests run on a machine with an NVIDIA GPU"


SKIP_REASON = _gpu_skip_reason()


def gpu(test):
    """Mark ``test`` as a GPU test, skipped with the reason where CuPy or a CUDA device is missing."""
    return pytest.mark.gpu(pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")(test))


def _cupy_backend():
    return registry.load_backend("cupy")


# ------------------------------------------------------------------------------------ device


@gpu
def test_info_names_the_device_and_the_memory_pool():
    status = fastprop.available_backends()["cupy"]
    assert status.available and status.version.startswith("cupy ") and "CUDA device" in status.device
    info = _cupy_backend().info()
    assert 0 <= info["memory_used_bytes"] <= info["memory_total_bytes"]


@gpu
def test_a_cupy_array_given_to_a_numpy_layer_is_refused():
    xp = _cupy_backend().xp
    with fastprop.use_backend("numpy"):
        layer = Linear(4, 3)
    with pytest.raises(fastprop.BackendError, match=r"Linear\(4, 3\) input is a cupy.*'numpy' backend"):
        layer.forward(xp.ones((2, 4), dtype=xp.float32))


# ------------------------------------------------------------------------------------ gradients

GRADCHECK_MODELS = {
    "linear+sigmoid": (lambda: Network([Linear(6, 5), Sigmoid()]), MeanSquareError, 5, False),
    "relu": (lambda: Network([Linear(6, 7), ReLU(), Linear(7, 4), ReLU(), Linear(4, 3)]),
             MeanSquareError, 3, False),
    "softmax+cross-entropy": (lambda: Network([Linear(6, 3), SoftMax()]), CrossEntropy, 3, True),
    "softmax-cross-entropy": (lambda: Network([Linear(6, 8), Sigmoid(), Linear(8, 3)]),
                              SoftmaxCrossEntropy, 3, True),
}


@gpu
@pytest.mark.parametrize("model", GRADCHECK_MODELS)
def test_gradients_match_finite_differences_in_float64(model):
    build, cost, n_out, one_hot = GRADCHECK_MODELS[model]
    with fastprop.use_backend("cupy", dtype="float64"):
        net = build()
    rng = numpy.random.default_rng(3)
    x = rng.normal(size=(9, 6))
    target = numpy.eye(n_out)[rng.integers(0, n_out, 9)] if one_hot else rng.random((9, n_out))
    result = fastprop.gradcheck(net, cost(), x, target, max_entries=40)
    assert result.passed(1e-6), f"{model}:\n{result}"


# ------------------------------------------------------------------------------------ epochs


def _dataset(n, n_in, n_out, seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.random((n, n_in)), numpy.eye(n_out)[rng.integers(0, n_out, n)]


def _step_loop(net, cost_function, images, targets, order, batch_size, learning_rate):
    """The notebook's step loop over the batches of ``order``; returns ``[(rows, summed cost)]``, one
    pair per batch."""
    backend, batches = net.backend, []
    for start in range(0, images.shape[0], batch_size):
        index = order[start : start + batch_size]
        x, t = backend.take_rows(images, index), backend.take_rows(targets, index)
        net.zero_gradients()
        prediction = net.forward(x)
        cost = cost_function.estimate(t, prediction)  # the notebook's order: target first
        batches.append((x.shape[0], float(cost.sum(dtype=numpy.float64))))
        net.backward(cost_function.gradient(cost))
        net.update_parameters(learning_rate)
    return batches


def _summed_costs(batches, batch_size):
    """What a compiled epoch returns: the summed cost over the full batches, and over a shorter last one."""
    full = sum(total for rows, total in batches if rows == batch_size)
    last = sum(total for rows, total in batches if rows != batch_size)
    return full, last


def _mean_cost(batches, n_outputs):
    """``train``'s figure: the mean over batches of ``np.mean(cost)``."""
    return float(numpy.mean([total / (rows * n_outputs) for rows, total in batches]))


EPOCH_MODELS = {  # each covers other kernels: narrow (<= 32 outputs) and dense layers, fused costs
    "narrow sigmoid, squared error": (lambda: [Linear(40, 10, rng=0), Sigmoid()], MeanSquareError),
    "wide layers, squared error": (
        lambda: [Linear(40, 48, rng=0), ReLU(), Linear(48, 37, rng=1), Sigmoid()], MeanSquareError),
    "tiny layers, squared error": (
        lambda: [Linear(40, 6, rng=0), ReLU(), Linear(6, 5, rng=1), Sigmoid()], MeanSquareError),
    "relu, softmax cross-entropy": (
        lambda: [Linear(40, 64, rng=0), ReLU(), Linear(64, 10, rng=1)], SoftmaxCrossEntropy),
    "mixed widths, softmax cross-entropy": (
        lambda: [Linear(40, 33, rng=0), Sigmoid(), Linear(33, 20, rng=1), ReLU(), Linear(20, 12, rng=2)],
        SoftmaxCrossEntropy),
    "wide output, softmax cross-entropy": (
        lambda: [Linear(40, 24, rng=0), Sigmoid(), Linear(24, 45, rng=1)], SoftmaxCrossEntropy),
}


def _compare_epochs(model, dtype, tolerance, n=1037, batch_size=100, epochs=2):
    build, cost_type = EPOCH_MODELS[model]
    with fastprop.use_backend("cupy", dtype=dtype):
        fast, slow = Network(build()), Network(build())
    backend = fast.backend
    linears = [layer for layer in fast.leaves() if isinstance(layer, Linear)]
    x, t = _dataset(n, linears[0].n_in, linears[-1].n_out)
    images, targets = backend.asarray(x, dtype=dtype), backend.asarray(t, dtype=dtype)
    run = backend.compile_epoch(lower(fast, cost_type()), images, targets, batch_size)
    assert run is not None
    rng = numpy.random.default_rng(7)
    for learning_rate in (0.05, 0.02)[:epochs]:  # a new rate needs no new capture
        order = backend.permutation(rng, n)
        totals = backend.to_numpy(run(order, learning_rate))
        assert totals.shape == (2,) and totals.dtype == numpy.float64
        batches = _step_loop(slow, cost_type(), images, targets, order, batch_size, learning_rate)
        full, last = _summed_costs(batches, batch_size)
        assert totals[0] == pytest.approx(full, rel=10 * tolerance)
        assert totals[1] == pytest.approx(last, rel=10 * tolerance, abs=0.0)  # 0 without a short batch
        for a, b in zip(fast.parameters(), slow.parameters()):
            name = f"{a.layer!r}.{a.name}"
            assert relative_error(backend.to_numpy(a.value), backend.to_numpy(b.value)) <= tolerance, name
            gradients = backend.to_numpy(a.gradient), backend.to_numpy(b.gradient)
            assert relative_error(*gradients) <= 10 * tolerance, name
    assert not any(p.fresh for layer in linears for p in layer.parameters())  # as after a backward
    return run


@gpu
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("model", EPOCH_MODELS)
def test_graph_replayed_epoch_equals_the_step_loop(model, dtype, tolerance):
    run = _compare_epochs(model, dtype, tolerance)
    assert run.mode == "graph"


@gpu
@pytest.mark.parametrize("n", [1037, 900])  # with and without a partial last batch
def test_long_epochs_replay_a_graph_with_a_device_cursor(monkeypatch, n):
    kernels = importlib.import_module("fastprop.backends.cupy_kernels")
    monkeypatch.setattr(kernels.EpochProgram, "max_steps_per_graph", 3)
    run = _compare_epochs("relu, softmax cross-entropy", "float64", 1e-12, n=n)
    assert run.mode == "graph" and run._repeats == 3


@gpu
@pytest.mark.parametrize("shuffle", [False, True])
def test_train_runs_the_graph_epoch_and_matches_a_manual_loop(monkeypatch, shuffle):
    x, t = _dataset(1037, 40, 10)
    validation = _dataset(200, 40, 10, seed=1)
    with fastprop.use_backend("cupy"):
        net = Network([Linear(40, 10, rng=0), Sigmoid()])
        reference = Network([Linear(40, 10, rng=0), Sigmoid()])
    backend, programs = net.backend, []
    compile_epoch = backend.compile_epoch
    monkeypatch.setattr(backend, "compile_epoch",
                        lambda *args: programs.append(compile_epoch(*args)) or programs[-1])
    history = train(net, MeanSquareError(), 1, 100, 0.05, data=(x, t, *validation), quiet=True, verbose=False,
                    shuffle=shuffle, seed=4)
    assert programs and programs[0] is not None and programs[0].mode == "graph"
    if shuffle:  # train's shuffle: seed 4, epoch 1
        order = backend.permutation(numpy.random.default_rng((4, 1)), 1037)
    else:  # the notebook's loop: the rows in order
        order = backend.asarray(numpy.arange(1037))
    images, targets = backend.asarray(x, dtype=numpy.float32), backend.asarray(t, dtype=numpy.float32)
    batches = _step_loop(reference, MeanSquareError(), images, targets, order, 100, 0.05)
    assert len(batches) == 11 and batches[-1][0] == 37
    assert history.cost[0] == pytest.approx(_mean_cost(batches, 10), rel=1e-5)
    for a, b in zip(net.parameters(), reference.parameters()):
        assert relative_error(backend.to_numpy(a.value), backend.to_numpy(b.value)) <= 1e-5


@gpu
@pytest.mark.parametrize("path", ["graph", "step"])
def test_memory_stays_flat_over_twenty_epochs(monkeypatch, path):
    backend = _cupy_backend()
    pool, used = backend.xp.get_default_memory_pool(), []
    permutation = backend.permutation  # with shuffle=True, train draws one order at the start of every epoch

    def measured_permutation(rng, n):
        used.append(pool.used_bytes())
        return permutation(rng, n)

    monkeypatch.setattr(backend, "permutation", measured_permutation)
    if path == "step":
        monkeypatch.setattr(backend, "compile_epoch", lambda *args: None)
    with fastprop.use_backend("cupy"):
        net = Network([Linear(40, 64, rng=0), ReLU(), Linear(64, 10, rng=1)])
    x, t = _dataset(1037, 40, 10)
    train(net, SoftmaxCrossEntropy(), 20, 100, 0.01, data=(x, t, x[:100], t[:100]), quiet=True, verbose=False,
          shuffle=True)
    assert len(used) == 20
    assert used[-1] <= used[1] and max(used[1:]) - min(used[1:]) < 1 << 20, used


class _Scaled(Linear):
    """Not a plain Linear: the epoch compiler must not assume it behaves like one."""


@gpu
@pytest.mark.parametrize("layers, cost", [
    (lambda: [Linear(6, 4), Tanh()], MeanSquareError),
    (lambda: [Linear(6, 4), SoftMax()], CrossEntropy),
    (lambda: [Linear(6, 4), Sigmoid()], CrossEntropy),
    (lambda: [Sigmoid(), Linear(6, 4)], MeanSquareError),
    (lambda: [Linear(6, 4), Sigmoid(), Sigmoid()], MeanSquareError),
    (lambda: [_Scaled(6, 4), Sigmoid()], MeanSquareError),
])
def test_other_models_keep_the_step_loop(layers, cost):
    backend = _cupy_backend()
    with fastprop.use_backend("cupy"):
        net = Network(layers())
    images, targets = (backend.asarray(numpy.ones(shape), numpy.float32) for shape in ((10, 6), (10, 4)))
    assert backend.compile_epoch(lower(net, cost()), images, targets, 5) is None
