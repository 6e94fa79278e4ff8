"""Costs: the notebook's protocol (``estimate(target, prediction)``, ``gradient(cost)``), the seed's
values and gradients, stability, target handling at the boundary, zero and one rows, and a cost computing
on the backend of the network that made the prediction."""

from __future__ import annotations

import math
import warnings

import numpy
import pytest

import fastprop
from fastprop import (
    CrossEntropy, Linear, MeanSquareError, Network, Sigmoid, SoftmaxCrossEntropy, gradcheck, train,
    train_epoch,
)
from fastprop.backends import Backend, registry
from tests.conftest import AVAILABLE_BACKENDS, relative_error
from tests.helpers import DTYPES, assert_one_sentence, one_hot_rows, small_problem


def _prediction(backend_name, values, dtype="float64"):
    """A backend array holding ``values``, made the way a layer would make it."""
    with fastprop.use_backend(backend_name, dtype=dtype) as backend:
        return backend.asarray(numpy.asarray(values), dtype=fastprop.get_dtype()), backend


def test_mean_square_error_is_half_the_squared_difference(backend_name):
    p, backend = _prediction(backend_name, [[0.2, 0.9], [0.5, 0.1]])
    t = numpy.array([[0.0, 1.0], [1.0, 0.0]])
    cost_function = MeanSquareError()
    assert cost_function.target is None and cost_function.prediction is None
    with fastprop.use_backend(backend_name):
        cost = cost_function.estimate(t, p)  # the notebook's order: target first
        gradient = backend.to_numpy(cost_function.gradient(cost))
    estimate = backend.to_numpy(cost)
    assert numpy.allclose(estimate, [[0.02, 0.005], [0.125, 0.005]])
    # prediction - target: the sign shows which argument was taken as the prediction
    assert numpy.allclose(gradient, [[0.2, -0.1], [-0.5, 0.1]])
    assert numpy.allclose(backend.to_numpy(cost_function.target), t)
    assert numpy.allclose(backend.to_numpy(cost_function.prediction), backend.to_numpy(p))


def test_gradient_is_taken_at_the_stored_prediction_whatever_it_is_given(backend_name):
    p, backend = _prediction(backend_name, [[0.2, 0.9], [0.5, 0.1]])
    t = numpy.array([[0.0, 1.0], [1.0, 0.0]])
    with fastprop.use_backend(backend_name):
        for cost_function in (MeanSquareError(), CrossEntropy(), SoftmaxCrossEntropy()):
            cost = cost_function.estimate(t, p)
            expected = backend.to_numpy(cost_function.gradient(cost))
            assert numpy.array_equal(backend.to_numpy(cost_function.gradient(None)), expected)
            assert numpy.array_equal(backend.to_numpy(cost_function.gradient(2 * cost)), expected)


def test_gradient_before_estimate_fails_clearly():
    with pytest.raises(RuntimeError, match=r"MeanSquareError\(\).gradient was called before estimate"):
        MeanSquareError().gradient(None)


def test_cross_entropy_uses_eps_and_its_gradient(backend_name):
    p, backend = _prediction(backend_name, [[0.0, 1.0], [0.25, 0.75]])
    t = numpy.array([[1.0, 0.0], [0.0, 1.0]])
    cost_function = CrossEntropy()
    assert cost_function.eps == 1e-12
    assert cost_function.target is None and cost_function.x_in is None
    with fastprop.use_backend(backend_name):
        cost = cost_function.estimate(t, p)
        gradient = backend.to_numpy(cost_function.gradient(cost))
    estimate = backend.to_numpy(cost)
    assert numpy.allclose(estimate, [[-numpy.log(1e-12), 0], [0, -numpy.log(0.75 + 1e-12)]])
    assert numpy.allclose(gradient, [[-1e12, 0], [0, -1 / (0.75 + 1e-12)]])
    assert numpy.array_equal(backend.to_numpy(cost_function.x_in), backend.to_numpy(p))
    assert numpy.array_equal(backend.to_numpy(cost_function.target), t)


def test_softmax_cross_entropy_is_stable_for_huge_logits(backend_name):
    z, backend = _prediction(backend_name, [[1000.0, -1000.0, 0.0], [-5.0, 800.0, 800.0]], "float32")
    t = numpy.array([[1.0, 0, 0], [0, 1.0, 0]])
    cost_function = SoftmaxCrossEntropy()
    with fastprop.use_backend(backend_name):
        cost = cost_function.estimate(t, z)
        gradient = backend.to_numpy(cost_function.gradient(cost))
    estimate = backend.to_numpy(cost)
    assert numpy.isfinite(estimate).all() and numpy.isfinite(gradient).all()
    assert numpy.allclose(estimate.sum(axis=1), [0.0, numpy.log(2)], atol=1e-5)
    assert numpy.allclose(gradient, [[0, 0, 0], [0, -0.5, 0.5]], atol=1e-6)


def test_softmax_cross_entropy_matches_softmax_then_cross_entropy():
    rng = numpy.random.default_rng(3)
    z = rng.normal(size=(6, 4))
    t = numpy.eye(4)[rng.integers(0, 4, 6)]
    softmax = numpy.exp(z) / numpy.exp(z).sum(axis=1, keepdims=True)
    cost_function = SoftmaxCrossEntropy()
    cost = cost_function.estimate(t, z)
    assert relative_error(cost.sum(), (-t * numpy.log(softmax)).sum()) < 1e-12
    assert relative_error(cost_function.gradient(cost), softmax - t) < 1e-12


def test_softmax_cross_entropy_gradient_scales_softmax_by_the_target_mass():
    rng = numpy.random.default_rng(4)
    z, t = rng.normal(size=(5, 3)), rng.random((5, 3))  # soft targets: rows do not sum to 1
    softmax = numpy.exp(z) / numpy.exp(z).sum(axis=1, keepdims=True)
    cost_function = SoftmaxCrossEntropy()
    cost = cost_function.estimate(t, z)
    assert relative_error(cost, -t * numpy.log(softmax)) < 1e-12
    assert relative_error(cost_function.gradient(cost), softmax * t.sum(1, keepdims=True) - t) < 1e-12


def test_targets_are_converted_to_the_prediction_dtype():
    p = Linear(3, 2).forward(numpy.ones((4, 3)))
    target = numpy.zeros((4, 2), dtype=numpy.int64)
    cost_function = MeanSquareError()
    cost = cost_function.estimate(target, p)
    assert cost.dtype == numpy.float32 and cost_function.target.dtype == numpy.float32
    assert cost_function.gradient(cost).dtype == numpy.float32


def test_target_shape_mismatch_explains_one_hot():
    p = Linear(3, 10).forward(numpy.ones((4, 3)))
    with pytest.raises(ValueError, match=r"MeanSquareError\(\) got a target of shape \(4,\) "
                                         r"for a prediction of shape \(4, 10\);.*vectorize"):
        MeanSquareError().estimate(numpy.arange(4), p)


def test_foreign_prediction_is_refused():
    class Foreign:
        dtype = numpy.float32

    with pytest.raises(fastprop.BackendError, match=r"no fastprop backend owns"):
        MeanSquareError().estimate(numpy.zeros((1, 1)), Foreign())


@pytest.mark.parametrize("cost", [MeanSquareError, CrossEntropy, SoftmaxCrossEntropy])
def test_mean_reduction_divides_estimate_and_gradient_by_the_batch(backend_name, cost):
    rng = numpy.random.default_rng(2)
    p, backend = _prediction(backend_name, rng.random((6, 4)) * 0.8 + 0.1)
    t = numpy.eye(4)[rng.integers(0, 4, 6)]
    with fastprop.use_backend(backend_name):
        summed, mean = cost(), cost(reduction="mean")
        summed_cost, mean_cost = summed.estimate(t, p), mean.estimate(t, p)
        pairs = ((summed_cost, mean_cost), (summed.gradient(summed_cost), mean.gradient(mean_cost)))
        for expected, actual in pairs:
            assert relative_error(backend.to_numpy(actual), backend.to_numpy(expected) / 6) < 1e-12


def test_mean_reduction_takes_the_same_steps_in_train(backend_name):
    """Sum at rate r and mean at rate 50 r take the same steps on batches of 50; the printed figure
    is ``np.mean(cost)`` of what ``estimate`` returned, so the mean one is 50 times smaller."""
    rng = numpy.random.default_rng(0)
    x, t = rng.random((120, 5)), numpy.eye(3)[rng.integers(0, 3, 120)]
    data = (x[:100], t[:100], x[100:], t[100:])
    runs, nets = [], []
    for reduction, rate in (("sum", 0.01), ("mean", 0.01 * 50)):  # same steps: batch 50
        with fastprop.use_backend(backend_name):
            net = fastprop.Network([Linear(5, 3, rng=0), fastprop.Sigmoid()])
        runs.append(fastprop.train(net, MeanSquareError(reduction=reduction), 2, 50, rate, data=data,
                                   quiet=True, verbose=False))
        nets.append(net)
    assert runs[0].cost == pytest.approx([50 * c for c in runs[1].cost], rel=1e-5)
    assert runs[0].accuracy == runs[1].accuracy
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert relative_error(nets[0].backend.to_numpy(a.value), nets[1].backend.to_numpy(b.value)) < 1e-5


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match=r"reduction='avg'; choose 'sum' .* or 'mean'"):
        MeanSquareError(reduction="avg")


# -- targets beyond float32, zero and one rows, and any legal eps ----------------------------------


def test_a_cost_target_beyond_float32_is_refused():
    prediction = numpy.zeros((1, 2), numpy.float32)
    with pytest.raises(ValueError) as caught:
        MeanSquareError().estimate([[1e100, 0.0]], prediction)
    assert_one_sentence(str(caught.value), "MeanSquareError", "target", "float32")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("cost_class", [MeanSquareError, CrossEntropy, SoftmaxCrossEntropy])
def test_costs_on_zero_and_one_rows_give_what_n_rows_give(backend_name, dtype, reduction, cost_class):
    rng = numpy.random.default_rng(4)
    x = rng.random((5, 4))
    target = one_hot_rows(rng.integers(0, 3, 5))
    results = {}
    for n in (5, 1, 0):
        with fastprop.use_backend(backend_name, dtype):
            net = Network([Linear(4, 3, rng=0), Sigmoid()])
        cost = cost_class(reduction=reduction)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no division by zero rows, no NaN
            prediction = net.forward(x[:n])
            per_element = cost.estimate(target[:n], prediction)
            gradient = cost.gradient(per_element)
            d_in = net.backward(gradient)
        for array, shape in ((prediction, (n, 3)), (per_element, (n, 3)), (gradient, (n, 3)), (d_in, (n, 4))):
            assert type(array) is type(prediction)
            assert array.shape == shape and array.dtype == numpy.dtype(dtype)
        gradients = [numpy.asarray(p.gradient) for p in net.parameters()]
        assert all(numpy.isfinite(g).all() for g in gradients)
        if n == 0:
            assert all(not g.any() for g in gradients)
        results[n] = [numpy.asarray(a) for a in (per_element, gradient, d_in)]
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    scale = 5.0 if reduction == "mean" else 1.0  # the mean over 1 row is that row; over 5 rows, a fifth
    for one, five in zip(results[1], results[5]):
        numpy.testing.assert_allclose(one, five[:1] * scale, rtol=tolerance, atol=tolerance)


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


# -- a cost computes on the backend of the network that made the prediction ------------------------


class _Calls(dict):
    def reset(self):
        self.update(estimate=0, gradient=0)


@pytest.fixture
def spy(monkeypatch):
    """A backend "spy": the NumPy reference whose softmax cross-entropy kernels count their calls."""
    for table in ("_factories", "_instances", "_failures"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    calls = _Calls()
    calls.reset()

    class Spy(Backend):
        def softmax_cross_entropy(self, z, t):
            calls["estimate"] += 1
            return super().softmax_cross_entropy(z, t)

        def softmax_cross_entropy_gradient(self, z, t):
            calls["gradient"] += 1
            return super().softmax_cross_entropy_gradient(z, t)

    fastprop.register_backend("spy", Spy)
    yield calls


def test_train_computes_the_cost_on_the_network_backend_outside_any_block(spy):
    with fastprop.use_backend("spy"):
        net = Network([Linear(6, 3, rng=1)])
    assert net.backend is registry.load_backend("spy")
    assert fastprop.get_backend().name == "numpy"  # outside the block
    x, y, vx, vy = small_problem()
    batches = math.ceil(len(x) / 7)
    train(net, SoftmaxCrossEntropy(), 2, 7, 0.1, data=(x, one_hot_rows(y), vx, one_hot_rows(vy)), quiet=True,
          verbose=False)
    assert spy == {"estimate": 2 * batches, "gradient": 2 * batches}

    spy.reset()
    train_epoch(0, net, x, one_hot_rows(y), SoftmaxCrossEntropy(), 7, 0.1, quiet=True)
    assert spy == {"estimate": batches, "gradient": batches}

    spy.reset()
    with fastprop.use_backend("numpy", "float64"):  # another backend current: still the network's
        train(net, SoftmaxCrossEntropy(reduction="mean"), 1, 1000, 0.1,
              data=(x, one_hot_rows(y), vx, one_hot_rows(vy)), quiet=True, verbose=False)
    assert spy == {"estimate": 1, "gradient": 1}
    assert fastprop.get_backend().name == "numpy" and fastprop.get_dtype() == numpy.float32


def test_gradcheck_computes_the_cost_on_the_network_backend(spy):
    with fastprop.use_backend("spy"):
        net = Network([Linear(6, 3, rng=1)])
    x, y, _, _ = small_problem()
    max_entries = 5
    result = gradcheck(net, SoftmaxCrossEntropy(), x[:4], one_hot_rows(y[:4]), max_entries=max_entries)
    assert result.passed(1e-6)
    perturbed = sum(min(size, max_entries) for size in (3 * 6, 3, 4 * 6))  # w, b, input
    assert spy == {"estimate": 1 + 2 * perturbed, "gradient": 1}


BACKEND_PAIRS = [
    (net, current) for net in AVAILABLE_BACKENDS for current in AVAILABLE_BACKENDS if net != current
]


@pytest.mark.skipif(not BACKEND_PAIRS, reason="needs two available backends")
@pytest.mark.parametrize("backend_name, current", BACKEND_PAIRS or [("numpy", "numpy")],
                         ids=[f"{net} net, {current} current" for net, current in BACKEND_PAIRS] or ["none"])
def test_only_the_network_backend_kernels_run_whatever_backend_is_current(backend_name, current, monkeypatch):
    """The issue's case: a Numba network trained while NumPy is current (and the reverse)."""
    counts = {}
    for name in AVAILABLE_BACKENDS:
        instance = registry.load_backend(name)
        for kernel in ("softmax_cross_entropy", "softmax_cross_entropy_gradient"):
            original = getattr(instance, kernel)

            def counted(*arguments, _original=original, _key=(name, kernel), **keywords):
                counts[_key] = counts.get(_key, 0) + 1
                return _original(*arguments, **keywords)

            monkeypatch.setattr(instance, kernel, counted)
    with fastprop.use_backend(backend_name):
        net = Network([Linear(6, 3, rng=1)])
    x, y, vx, vy = small_problem()
    with fastprop.use_backend(current):  # an optimizer: the step loop, where the cost's kernels run
        train(net, SoftmaxCrossEntropy(), 2, 10, 0.1, data=(x, one_hot_rows(y), vx, one_hot_rows(vy)),
              quiet=True, verbose=False, optimizer=fastprop.SGD())
    assert counts == {
        (backend_name, "softmax_cross_entropy"): 8,
        (backend_name, "softmax_cross_entropy_gradient"): 8,
    }
