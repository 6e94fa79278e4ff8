"""The CuPy backend: gradients, the graph-replayed epoch, memory, and its convolution and pooling
kernels on odd shapes, ties and NaNs (all its kernels against the NumPy reference are also in
``test_contract.py``, with every other backend's).

The first test runs everywhere: it checks what fastprop reports where CuPy cannot be imported. Every
other test is marked ``gpu`` and skips, with the reason, where CuPy or a CUDA device is missing.
"""

from __future__ import annotations

import importlib
import itertools
import sys

import numpy
import pytest

from fastprop.lowering import lower

import fastprop
from fastprop import (
    Conv2D, CrossEntropy, Flatten, Linear, MaxPool2D, MeanSquareError, Network, ReLU, Reshape, Sigmoid,
    SoftMax, SoftmaxCrossEntropy, Tanh, train,
)
from fastprop import backends as backends_package
from fastprop.backends import Backend
from fastprop.backends import registry
from tests.conftest import relative_error


def test_without_cupy_the_backend_is_reported_unavailable(monkeypatch):
    for table in ("_factories", "_instances", "_failures"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now fails, as where it is not installed
    for module in ("cupy", "cupy.backend", "cupy.kernels", "cupy.epoch"):
        monkeypatch.delitem(sys.modules, f"fastprop.backends.{module}", raising=False)
    monkeypatch.delattr(backends_package, "cupy", raising=False)
    def create():
        return importlib.import_module("fastprop.backends.cupy").create()

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
    # seeded weights: every ReLU input of the batch stays away from the kink at 0
    "relu": (lambda: Network([Linear(6, 7, rng=4), ReLU(), Linear(7, 4, rng=5), ReLU(), Linear(4, 3, rng=6)]),
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


@gpu
def test_a_small_cnn_passes_gradcheck_in_float64():
    with fastprop.use_backend("cupy", dtype="float64"):  # the first Conv2D and its ReLU run fused
        net = Network([Reshape((3, 9, 8)), Conv2D(3, 4, (3, 2), padding=1, rng=7), ReLU(),
                       MaxPool2D(3, stride=2), Conv2D(4, 5, 3, stride=2, padding=1, rng=8), Flatten(),
                       Linear(20, 3, rng=9)])
    rng = numpy.random.default_rng(3)
    x, target = rng.normal(size=(2, 3 * 9 * 8)), rng.random((2, 3))
    result = fastprop.gradcheck(net, MeanSquareError(), x, target, max_entries=40)
    assert result.passed(1e-6), str(result)


# ------------------------------------------------------------------------------------ convolution and pooling

IMAGE_METHODS = ("conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward")


def _refuse_fallbacks(monkeypatch):
    """From now on the reference's image methods raise, so a CuPy method that falls back to them fails."""
    def refuse(*args, **kwargs):
        raise AssertionError("the CuPy backend fell back to the reference: its kernels did not take the case")

    for name in IMAGE_METHODS:
        monkeypatch.setattr(Backend, name, refuse)


CONV_CASES = {  # n, (H, W, C), K, kernel, stride, padding
    "batch 1, kernel 5, stride 2, padding 1": (1, (7, 6, 3), 4, (5, 5), (2, 2), (1, 1)),
    "kernel 3x2, stride 1x2, padding 1x0": (2, (9, 8, 5), 3, (3, 2), (1, 2), (1, 0)),
    "kernel 3x2, stride 2x1, padding 0x1": (3, (6, 11, 7), 6, (3, 2), (2, 1), (0, 1)),
    "kernel 5x4 over a padded 3x3 image": (2, (3, 3, 2), 2, (5, 4), (1, 1), (1, 1)),
}


def _convolve(backend, arrays, stride, padding, relu, accumulate, need_dx):
    """``[y, dW, db, dx]`` on host from ``backend``'s conv2d_forward and conv2d_backward; ``arrays``
    are host ``x, W, b, y, dy, dW, db`` (``y`` is the reference's ReLU output, so both mask alike)."""
    x, W, b, y, dy, dW, db = (backend.asarray(a.copy()) for a in arrays)
    out = backend.conv2d_forward(x, W, b, stride, padding, relu=relu)
    dx = backend.conv2d_backward(x, W, y if relu else None, dy, dW, db, stride, padding, relu=relu,
                                 accumulate=accumulate, need_dx=need_dx)
    return [backend.to_numpy(a) for a in (out, dW, db)] + [None if dx is None else backend.to_numpy(dx)]


@gpu
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("case", CONV_CASES)
def test_convolution_kernels_match_the_reference(monkeypatch, case, dtype, tolerance):
    n, image, K, kernel, stride, padding = CONV_CASES[case]
    rng, reference, backend = numpy.random.default_rng(5), Backend(), _cupy_backend()
    shapes = ((n, *image), (K, image[2], *kernel), (1, K))
    x, W, b = (rng.normal(size=shape).astype(dtype) for shape in shapes)
    y = reference.conv2d_forward(x, W, b, stride, padding, relu=True)
    arrays = (x, W, b, y, *(rng.normal(size=a.shape).astype(dtype) for a in (y, W, b)))
    flags = list(itertools.product((False, True), repeat=3))  # relu, accumulate, need_dx
    expected = [_convolve(reference, arrays, stride, padding, *f) for f in flags]
    _refuse_fallbacks(monkeypatch)
    for f, wanted in zip(flags, expected):
        actual = _convolve(backend, arrays, stride, padding, *f)
        for name, a, e in zip(("y", "dW", "db", "dx"), actual, wanted):
            if e is None:
                assert a is None, f"{name} with need_dx=False"
                continue
            assert a.dtype == dtype and a.shape == e.shape, name
            assert relative_error(a, e) <= tolerance, f"{name} with relu, accumulate, need_dx = {f}"


POOL_CASES = {  # n, (H, W, C), size, stride
    "overlapping 3x3, stride 2": (2, (9, 8, 5), (3, 3), (2, 2)),
    "batch 1, 3x2, stride 2x1": (1, (6, 11, 7), (3, 2), (2, 1)),
    "2x2 with gaps, stride 3": (3, (8, 7, 3), (2, 2), (3, 3)),
}


@gpu
@pytest.mark.parametrize("values", ["distinct", "ties", "NaNs"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pooling_kernels_match_the_reference_exactly(monkeypatch, case, dtype, values):
    n, image, size, stride = POOL_CASES[case]
    rng, reference, backend = numpy.random.default_rng(6), Backend(), _cupy_backend()
    x = rng.normal(size=(n, *image))
    if values != "distinct":  # many equal values in a window: the first wins
        x = rng.integers(0, 3, x.shape).astype(float)
    if values == "NaNs":  # a NaN wins over any number
        x[rng.random(x.shape) < 0.1] = numpy.nan
    x = x.astype(dtype)
    y, argmax = reference.maxpool2d_forward(x, size, stride)
    dy = rng.normal(size=y.shape).astype(dtype)
    dx = reference.maxpool2d_backward(argmax, dy, size, stride, x.shape)
    _refuse_fallbacks(monkeypatch)
    y_gpu, argmax_gpu = backend.maxpool2d_forward(backend.asarray(x), size, stride)
    assert y_gpu.dtype == dtype and argmax_gpu.dtype == numpy.int32
    assert numpy.array_equal(backend.to_numpy(y_gpu), y, equal_nan=True)
    assert numpy.array_equal(backend.to_numpy(argmax_gpu), argmax)
    dx_gpu = backend.maxpool2d_backward(argmax_gpu, backend.asarray(dy), size, stride, x.shape)
    assert dx_gpu.dtype == dtype
    assert numpy.array_equal(backend.to_numpy(dx_gpu), dx)  # the same sums in the same order


@gpu
def test_image_methods_fall_back_to_the_reference_for_views_and_other_dtypes():
    rng, reference, backend = numpy.random.default_rng(7), Backend(), _cupy_backend()
    images = rng.normal(size=(2, 5, 6, 3))
    x, view = images.transpose(0, 2, 1, 3), backend.asarray(images).transpose(0, 2, 1, 3)  # not contiguous
    W, b = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(1, 4))
    y = backend.conv2d_forward(view, backend.asarray(W), backend.asarray(b), (1, 1), (1, 1))
    assert relative_error(backend.to_numpy(y), reference.conv2d_forward(x, W, b, (1, 1), (1, 1))) <= 1e-12
    half = images.astype(numpy.float16)
    for data, host in ((view, x), (backend.asarray(half), half)):
        pooled, argmax = backend.maxpool2d_forward(data, (2, 2), (2, 2))
        expected, expected_argmax = reference.maxpool2d_forward(host, (2, 2), (2, 2))
        assert numpy.array_equal(backend.to_numpy(pooled), expected)
        assert numpy.array_equal(backend.to_numpy(argmax), expected_argmax)


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
    epoch = importlib.import_module("fastprop.backends.cupy.epoch")
    monkeypatch.setattr(epoch.EpochProgram, "max_steps_per_graph", 3)
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
