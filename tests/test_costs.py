"""Costs: the notebook's protocol (``estimate(target, prediction)``, ``gradient(cost)``), the seed's
values and gradients, stability, and target handling at the boundary."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import CrossEntropy, Linear, MeanSquareError, SoftmaxCrossEntropy
from tests.conftest import relative_error


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
