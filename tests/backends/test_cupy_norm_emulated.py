"""The CuPy backend's batch-normalisation kernels (``cuda/norm_kernels.cu``) on the host CUDA emulator.

Each case runs ``batch_norm_forward`` and ``batch_norm_backward`` of the CuPy backend under every
thread and block order (the results must have the same bits: the column sums are made in a fixed
order, with no atomics) and compares them with the definitions written here in float64: PyTorch's
batch norm, its running statistics with the unbiased variance, and the gradients of the contract.
The shapes cover one and several chunks of rows (``kernels.CHUNK_ROWS``), a column group that is
full, one that is not, and several. What only a GPU shows is in ``tests/cuda_emulation/README.md``.
"""

from __future__ import annotations

import functools
import itertools
import types

import numpy
import pytest

import fastprop
from fastprop import BatchNorm1D, Linear, MeanSquareError, Network, ReLU
from tests.backends.test_cupy_emulated import DTYPES, REFERENCE, close, under_every_order
from tests.cuda_emulation import emulated_cupy_backend, host_module

pytestmark = pytest.mark.skipif(host_module.available() is not None,
                                reason=f"the CUDA emulation needs g++ and nm: {host_module.available()}")

#: rows x columns: 2 and 3 rows (the fewest training takes), 37, 300 (one chunk), 1100 (three chunks of
#: 512 rows, the last short); 1 and 5 columns (one column group, mostly idle), 64 (two full groups), 65.
SHAPES = [(rows, cols) for rows in (2, 3, 37, 300) for cols in (1, 5, 64, 65)] + [(1100, 5), (1100, 65)]
MOMENTUM, EPS = 0.1, 1e-5


@pytest.fixture(scope="module")
def emulated():
    """The CuPy backend on the stand-in cupy: ``.backend``, ``.kernels`` (its kernels module), ``.cupy``."""
    with emulated_cupy_backend() as (backend, kernels, cupy):
        yield types.SimpleNamespace(backend=backend, kernels=kernels, cupy=cupy)


def _inputs(rows, cols, dtype):
    """x far from zero (mean 50, spread 3: a variance formula that cancels would show), parameters of
    either sign, running statistics, and an output gradient."""
    rng = numpy.random.default_rng(rows * 1000 + cols)
    x = rng.normal(size=(rows, cols)) * 3 + 50
    gamma, beta = rng.normal(size=cols), rng.normal(size=cols)
    mean, var = rng.normal(size=cols) + 50, rng.random(cols) + 5
    dy = rng.normal(size=(rows, cols))
    return [a.astype(dtype) for a in (x, gamma, beta, mean, var, dy)]


def _forward_definition(x, gamma, beta, mean, var, training, relu):
    """``(y, mu, inverse_std, new running mean, new running var)`` in float64."""
    x, gamma, beta, mean, var = (a.astype(numpy.float64) for a in (x, gamma, beta, mean, var))
    rows = x.shape[0]
    if training:
        mu, v = x.mean(axis=0), x.var(axis=0)
        mean = (1 - MOMENTUM) * mean + MOMENTUM * mu
        var = (1 - MOMENTUM) * var + MOMENTUM * v * rows / (rows - 1)
    else:
        mu, v = mean, var
    inverse_std = 1 / numpy.sqrt(v + EPS)
    y = (x - mu) * inverse_std * gamma + beta
    return (numpy.maximum(y, 0) if relu else y), mu, inverse_std, mean, var


def _backward_definition(x, mu, inverse_std, gamma, dy, y, training):
    """``(dgamma, dbeta, dx)`` in float64; ``y`` is the fused ReLU's output, or None."""
    x, mu, inverse_std, gamma, dy = (a.astype(numpy.float64) for a in (x, mu, inverse_std, gamma, dy))
    g = dy if y is None else numpy.where(y > 0, dy, 0.0)
    x_hat = (x - mu) * inverse_std
    dbeta, dgamma = g.sum(axis=0), (g * x_hat).sum(axis=0)
    if training:
        g = g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0)
    return dgamma, dbeta, gamma * inverse_std * g


@pytest.fixture
def launches(emulated, monkeypatch):
    """The names of the norm kernels launched, in order (so a test can see the fast path was taken)."""
    names, launch = [], emulated.kernels._norm_launch

    def recorded(name, *arguments):
        names.append(name)
        return launch(name, *arguments)

    monkeypatch.setattr(emulated.kernels, "_norm_launch", recorded)
    return names


def _forward(emulated, device, mean, var, training, relu):
    """One forward on fresh copies of the running statistics: its results and the statistics after."""
    running_mean, running_var = emulated.cupy.asarray(mean.copy()), emulated.cupy.asarray(var.copy())
    y, mu, inverse_std = emulated.backend.batch_norm_forward(
        *device, running_mean, running_var, training=training, momentum=MOMENTUM, eps=EPS, relu=relu)
    return {"y": y, "mu": mu, "inverse_std": inverse_std, "mean": running_mean, "var": running_var}


def _backward(emulated, device, mask, start, **keywords):
    """One backward into fresh copies of the ``start`` gradients: them after, and dx (empty for None)."""
    gradients = [emulated.cupy.asarray(s.copy()) for s in start]
    dx = emulated.backend.batch_norm_backward(*device, *gradients, mask, **keywords)
    return {"dgamma": gradients[0], "dbeta": gradients[1], "dx": numpy.zeros(0) if dx is None else dx}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, cols", SHAPES, ids=lambda v: str(v))
def test_forward_and_running_statistics(emulated, launches, dtype, rows, cols):
    cupy = emulated.cupy
    x, gamma, beta, mean, var, _ = _inputs(rows, cols, dtype)
    device = [cupy.asarray(a) for a in (x, gamma, beta)]
    for training, relu in itertools.product((True, False), (False, True)):
        del launches[:]
        result = under_every_order(functools.partial(_forward, emulated, device, mean, var, training, relu))
        expected = dict(zip(("y", "mu", "inverse_std", "mean", "var"),
                            _forward_definition(x, gamma, beta, mean, var, training, relu)))
        for name, value in expected.items():
            assert result[name].dtype == dtype, name
            close(result[name], value, dtype, 16)
        if not training:  # evaluation leaves the running statistics alone and gives mu as a copy
            assert numpy.array_equal(result["mean"], mean) and numpy.array_equal(result["var"], var)
            assert numpy.array_equal(result["mu"], mean)
        if relu:
            assert (result["y"] >= 0).all() and (result["y"] == 0).any()
        kernels = {"norm_statistics", "norm_affine"} | ({"norm_chunk_sums"} if training else set())
        assert set(launches) == kernels, f"training={training}: launched {launches}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, cols", SHAPES, ids=lambda v: str(v))
def test_backward_sums_and_input_gradient(emulated, launches, dtype, rows, cols):
    backend, cupy = emulated.backend, emulated.cupy
    x, gamma, beta, mean, var, dy = _inputs(rows, cols, dtype)
    start = numpy.random.default_rng(rows + cols).normal(size=(2, cols)).astype(dtype)
    for training, relu in itertools.product((True, False), (False, True)):
        y, mu, inverse_std = (a.get() for a in backend.batch_norm_forward(
            *(cupy.asarray(a) for a in (x, gamma, beta, mean.copy(), var.copy())), training=training,
            momentum=MOMENTUM, eps=EPS, relu=relu))
        mask = y if relu else None
        dgamma, dbeta, dx = _backward_definition(x, mu, inverse_std, gamma, dy, mask, training)
        device = [cupy.asarray(a) for a in (x, mu, inverse_std, gamma, dy)]
        device_mask = None if mask is None else cupy.asarray(mask)
        for accumulate, need_dx in itertools.product((True, False), (True, False)):
            del launches[:]
            result = under_every_order(functools.partial(
                _backward, emulated, device, device_mask, start, training=training, accumulate=accumulate,
                need_dx=need_dx))
            what = f"training={training}, relu={relu}, accumulate={accumulate}, need_dx={need_dx}"
            base = start.astype(numpy.float64) if accumulate else numpy.zeros((2, cols))
            close(result["dgamma"], base[0] + dgamma, dtype, 16)
            close(result["dbeta"], base[1] + dbeta, dtype, 16)
            if need_dx:
                assert result["dx"].dtype == dtype, what
                scale = numpy.abs(gamma * inverse_std).max() * numpy.abs(dy).max()  # dx may cancel to ~0
                error = numpy.abs(result["dx"] - dx).max() / scale
                assert error <= 16 * (2e-6 if dtype == numpy.float32 else 1e-13), f"{what}: {error:.3g}"
            else:
                assert result["dx"].size == 0, f"{what}: dx returned without need_dx"
            assert launches[-1] == ("norm_input_gradient" if need_dx else "norm_gradient_sums"), what


def test_the_chunk_sums_are_added_in_a_fixed_order(emulated):
    """Three chunks of rows: chunk sums that were added in block order (an atomic scheme) would differ
    between the block orders in the last bits; these must not, and must match the definition."""
    backend, cupy = emulated.backend, emulated.cupy
    rows = 3 * emulated.kernels.CHUNK_ROWS - 7
    rng = numpy.random.default_rng(4)
    x = (rng.normal(size=(rows, 3)) * numpy.array([1e-3, 1.0, 1e3]) + 7).astype(numpy.float32)
    ones, zeros = cupy.asarray(numpy.ones(3, numpy.float32)), cupy.asarray(numpy.zeros(3, numpy.float32))

    def run():
        statistics = zeros.copy(), ones.copy()
        _, mu, inverse_std = backend.batch_norm_forward(cupy.asarray(x), ones, zeros, *statistics,
                                                        training=True, momentum=MOMENTUM, eps=0.0)
        return {"mu": mu, "inverse_std": inverse_std}

    result = under_every_order(run)
    wide = x.astype(numpy.float64)
    close(result["mu"], wide.mean(axis=0), numpy.float32, 1)
    close(result["inverse_std"], 1 / wide.std(axis=0), numpy.float32, 1)


def test_what_the_kernels_do_not_take_goes_to_the_reference(emulated, launches):
    """float16, parameters of another dtype, a strided x, and no rows: the NumPy reference on the device
    arrays, with no norm kernel launched."""
    backend, cupy = emulated.backend, emulated.cupy
    x, gamma, beta, mean, var, _ = _inputs(6, 4, numpy.float64)
    wide = cupy.asarray(numpy.repeat(x, 2, axis=1))
    cases = {  # name: (x on the device, x on the host, the per-column vectors)
        "float16": (x.astype(numpy.float16), [a.astype(numpy.float16) for a in (gamma, beta, mean, var)]),
        "float64 gamma, float32 x": (x.astype(numpy.float32), [gamma, beta, mean, var]),
        "strided": (wide[:, ::2], [gamma, beta, mean, var]),
        "no rows": (x[:0], [gamma, beta, mean, var]),
    }
    for name, (x_given, columns) in cases.items():
        training = name != "no rows"
        strided = name == "strided"
        device = [x_given if strided else cupy.asarray(x_given)] + [cupy.asarray(c.copy()) for c in columns]
        host = x_given.get() if strided else x_given
        y, _, _ = backend.batch_norm_forward(*device, training=training, momentum=MOMENTUM, eps=EPS)
        expected = REFERENCE.batch_norm_forward(host, *(c.copy() for c in columns),
                                                training=training, momentum=MOMENTUM, eps=EPS)
        assert y.dtype == expected[0].dtype, name
        assert numpy.allclose(y.get(), expected[0], rtol=1e-3, atol=1e-3), name
        assert launches == [], f"{name}: launched {launches}"


#: The batch norm first: a bias before it has no gradient in training (the batch mean takes it away),
#: so finite differences of it are rounding noise, which no relative error can pass.
GRADCHECK_MODELS = {
    "batch norm, linear": lambda: Network([BatchNorm1D(6), Linear(6, 3, rng=2)]),
    "batch norm + relu (fused), linear": lambda: Network([BatchNorm1D(6), ReLU(), Linear(6, 3, rng=2)]),
}


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("model", GRADCHECK_MODELS)
def test_gradients_match_finite_differences(emulated, launches, model, training):
    with fastprop.use_backend("cupy", dtype="float64"):
        net = GRADCHECK_MODELS[model]()
    assert net.backend is emulated.backend
    rng = numpy.random.default_rng(3)
    x, target = rng.normal(size=(7, 6)), rng.random((7, 3))
    result = fastprop.gradcheck(net, MeanSquareError(), x, target, max_entries=24, training=training)
    assert result.passed(1e-6), f"{model}:\n{result}"
    assert {"norm_affine", "norm_gradient_sums", "norm_input_gradient"} <= set(launches)
