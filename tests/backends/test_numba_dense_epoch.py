"""The Numba backend's whole-epoch program for dense stacks on softmax cross-entropy
(``backends/numba/kernels/dense_epoch.py``): the same training as the step loop, on any thread count,
offered only where it applies."""

from __future__ import annotations

import numpy
import pytest

from fastprop.lowering import lower

numba = pytest.importorskip("numba", reason="numba is not installed (pip install 'fastprop[numba]')")

import fastprop  # noqa: E402
from fastprop import Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftmaxCrossEntropy  # noqa: E402
from fastprop.backends import load_backend  # noqa: E402
from fastprop.models import mlp_network  # noqa: E402
from fastprop.training.epochs import EpochRunner  # noqa: E402
from tests.conftest import relative_error  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    backend = load_backend("numba")
    if backend._products.kernel_calls(numpy.float32) is None:
        pytest.skip("the program runs on oneMKL's products (pip install 'fastprop[mkl]'); "
                    "NumPy's BLAS is in use")
    return backend


#: Layer stacks: (widths, whether each hidden layer has a ReLU).
STACKS = {
    "784-64-48-10 ReLU": ((784, 64, 48, 10), True),
    "13-7-5 linear hidden": ((13, 7, 5), False),
    "5-3 softmax regression": ((5, 3), False),
    "30-200-1 ReLU": ((30, 200, 1), True),
}


def _network(widths, relu, dtype, seed=0):
    layers, rng = [], numpy.random.default_rng(seed)
    with fastprop.use_backend("numba", dtype=dtype):
        for n_in, n_out in zip(widths, widths[1:]):
            layers.append(Linear(n_in, n_out, initial_sigma=0.1, rng=rng))
            if relu and n_out != widths[-1]:
                layers.append(ReLU())
        net = Network(layers)
    for layer in net.leaves():  # nonzero biases, so that a bias left out would show
        if isinstance(layer, Linear):
            layer.b[...] = rng.normal(0, 0.1, layer.b.shape)
    return net


def _data(n, n_in, n_out, dtype, pixels, seed=1):
    rng = numpy.random.default_rng(seed)
    if pixels:
        images = rng.integers(0, 256, (n, n_in), dtype=numpy.uint8).astype(dtype) / dtype(255)
    else:
        images = rng.normal(0, 1, (n, n_in)).astype(dtype)
    targets = numpy.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    return images, targets, rng.permutation(n)


def _step_loop(net, images, targets, order, batch, rate):
    """The notebook's loop, written out: summed costs over full batches and over a shorter last one."""
    totals, cost_function = numpy.zeros(2), SoftmaxCrossEntropy()
    for start in range(0, len(order), batch):
        index = order[start:start + batch]
        net.zero_gradients()
        cost = cost_function.estimate(targets[index], net.forward(images[index]))
        totals[0 if len(index) == min(batch, len(order)) else 1] += float(cost.sum(dtype=numpy.float64))
        net.backward(cost_function.gradient(cost))
        net.update_parameters(rate)
    return totals


@pytest.mark.parametrize("pixels", [False, True], ids=["floats", "pixels"])
@pytest.mark.parametrize("dtype, tolerance", [(numpy.float64, 1e-11), (numpy.float32, 5e-5)])
@pytest.mark.parametrize("stack, n, batch", [("784-64-48-10 ReLU", 1001, 300),
                                             ("13-7-5 linear hidden", 203, 67),
                                             ("5-3 softmax regression", 9, 4), ("30-200-1 ReLU", 50, 50)])
def test_epoch_program_trains_as_the_step_loop(backend, dtype, tolerance, pixels, stack, n, batch):
    widths, relu = STACKS[stack]
    images, targets, order = _data(n, widths[0], widths[-1], dtype, pixels)
    fast, steps = _network(widths, relu, dtype), _network(widths, relu, dtype)
    run = backend.compile_epoch(lower(fast, SoftmaxCrossEntropy()), images, targets, batch)
    assert run is not None
    for rate in (0.005, 0.001):  # two epochs: the second starts from what the first left
        costs = run(order, rate)
        expected = _step_loop(steps, images, targets, order, batch, rate)
        assert isinstance(costs, numpy.ndarray) and costs.dtype == numpy.float64 and costs.shape == (2,)
        assert costs[0] == pytest.approx(expected[0], rel=tolerance)
        assert costs[1] == pytest.approx(expected[1], rel=tolerance, abs=0.0)  # 0 without a shorter batch
        for a, b in zip(fast.parameters(), steps.parameters()):
            assert relative_error(a.value, b.value) <= tolerance, a.name
            assert relative_error(a.gradient, b.gradient) <= 10 * tolerance, a.name  # the last batch's
    assert (n % batch == 0) == (costs[1] == 0)


@pytest.mark.parametrize("pixels", [False, True], ids=["floats", "pixels"])
def test_epoch_program_gives_the_same_bits_on_any_thread_count(backend, pixels):
    images, targets, order = _data(700, 784, 10, numpy.float32, pixels)
    saved, results = numba.get_num_threads(), []
    try:
        for threads in (1, saved, 1):
            numba.set_num_threads(threads)
            net = _network((784, 96, 10), True, numpy.float32)
            run = backend.compile_epoch(lower(net, SoftmaxCrossEntropy()), images, targets, 256)
            costs = run(order, 0.01)
            results.append([costs.copy()] + [p.value.copy() for p in net.parameters()]
                           + [p.gradient.copy() for p in net.parameters()])
    finally:
        numba.set_num_threads(saved)
    assert results[0][0][1] > 0  # 700 rows in batches of 256: a shorter last batch
    for result in results[1:]:
        for a, b in zip(result, results[0]):
            assert numpy.array_equal(a, b)


def test_pixel_images_are_gathered_from_their_codes(backend, monkeypatch):
    seen, program = [], backend.kernels.dense_epoch.dense_softmax_epoch
    monkeypatch.setattr(backend.kernels.dense_epoch, "dense_softmax_epoch",
                        lambda calls, images, codes, *rest: seen.append((len(images), len(codes)))
                        or program(calls, images, codes, *rest))
    for pixels in (True, False):
        images, targets, order = _data(40, 12, 4, numpy.float32, pixels)
        net = _network((12, 6, 4), True, numpy.float32)
        backend.compile_epoch(lower(net, SoftmaxCrossEntropy()), images, targets, 16)(order, 1e-3)
    assert seen == [(0, 40), (40, 0)]


def test_program_is_offered_only_where_it_applies(backend, monkeypatch):
    images, targets, _ = _data(50, 12, 4, numpy.float32, False)

    def program(layers, cost=None, images=images, targets=targets):
        cost = SoftmaxCrossEntropy() if cost is None else cost
        with fastprop.use_backend("numba"):
            net = Network(layers)
        return backend.compile_epoch(lower(net, cost), images, targets, 20)

    assert program([Linear(12, 6), ReLU(), Linear(6, 4)]) is not None
    assert program([Linear(12, 6), Sigmoid(), Linear(6, 4)]) is None  # a sigmoid between layers
    assert program([Linear(12, 6), ReLU(), Linear(6, 4), ReLU()]) is None  # an activation before the loss
    assert program([Linear(12, 6), ReLU(), Linear(6, 4)], SoftmaxCrossEntropy(reduction="mean")) is None
    assert program([Linear(12, 6), ReLU(), Linear(6, 4)], MeanSquareError()) is None
    assert program([Linear(12, 6), ReLU(), Linear(6, 4)], targets=targets[:, :3].copy()) is None
    assert program([Linear(12, 6), ReLU(), Linear(6, 4)], images=images.astype(numpy.float64)) is None
    assert program([Linear(12, 6), ReLU(), Linear(6, 4)], images=numpy.asfortranarray(images)) is None
    monkeypatch.setattr(backend._products, "kernel_calls", lambda dtype: None)  # NumPy's BLAS: the step loop
    assert program([Linear(12, 6), ReLU(), Linear(6, 4)]) is None


def test_training_runs_the_program_for_a_relu_network(backend):
    images, targets, _ = _data(64, 784, 10, numpy.float32, True)
    with fastprop.use_backend("numba"):
        net = mlp_network(numpy.random.default_rng(0), hidden=(32,))
    assert EpochRunner(net, SoftmaxCrossEntropy(), images, targets, 16, None).fast is not None
    assert EpochRunner(net, SoftmaxCrossEntropy(), images, targets, 16, None, fast=False).fast is None


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_masking_in_place_equals_masking_into_a_new_array(backend, dtype):
    mask_rows = backend.kernels.dense_epoch.mask_rows
    rng = numpy.random.default_rng(5)
    y, dy = (rng.normal(size=(37, 53)).astype(dtype) for _ in range(2))
    dz, sums, in_place_sums = numpy.full_like(dy, numpy.nan), numpy.empty(53, dtype), numpy.empty(53, dtype)
    mask_rows(y, dy, True, 3, 30, dz, sums)
    expected = numpy.where(y[3:30] > 0, dy[3:30], 0)
    assert numpy.array_equal(dz[3:30], expected) and numpy.isnan(dz[:3]).all() and numpy.isnan(dz[30:]).all()
    assert relative_error(sums, expected.sum(axis=0)) <= 10 * numpy.finfo(dtype).eps
    in_place = dy.copy()
    mask_rows(y, in_place, True, 3, 30, in_place, in_place_sums)
    assert numpy.array_equal(in_place[3:30], dz[3:30]) and numpy.array_equal(in_place_sums, sums)
    assert numpy.array_equal(in_place[:3], dy[:3]) and numpy.array_equal(in_place[30:], dy[30:])
