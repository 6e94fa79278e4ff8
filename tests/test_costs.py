"""Costs: the seed's values and gradients, stability, and target handling at the boundary."""

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
    with fastprop.use_backend(backend_name):
        estimate = backend.to_numpy(MeanSquareError().estimate(p, t))
        gradient = backend.to_numpy(MeanSquareError().gradient(p, t))
    assert numpy.allclose(estimate, [[0.02, 0.005], [0.125, 0.005]])
    assert numpy.allclose(gradient, [[0.2, -0.1], [-0.5, 0.1]])


def test_cross_entropy_uses_eps_and_its_gradient(backend_name):
    p, backend = _prediction(backend_name, [[0.0, 1.0], [0.25, 0.75]])
    t = numpy.array([[1.0, 0.0], [0.0, 1.0]])
    cost = CrossEntropy()
    assert cost.eps == 1e-12
    with fastprop.use_backend(backend_name):
        estimate = backend.to_numpy(cost.estimate(p, t))
        gradient = backend.to_numpy(cost.gradient(p, t))
    assert numpy.allclose(estimate, [[-numpy.log(1e-12), 0], [0, -numpy.log(0.75 + 1e-12)]])
    assert numpy.allclose(gradient, [[-1e12, 0], [0, -1 / (0.75 + 1e-12)]])


def test_softmax_cross_entropy_is_stable_for_huge_logits(backend_name):
    z, backend = _prediction(backend_name, [[1000.0, -1000.0, 0.0], [-5.0, 800.0, 800.0]], "float32")
    t = numpy.array([[1.0, 0, 0], [0, 1.0, 0]])
    with fastprop.use_backend(backend_name):
        estimate = backend.to_numpy(SoftmaxCrossEntropy().estimate(z, t))
        gradient = backend.to_numpy(SoftmaxCrossEntropy().gradient(z, t))
    assert numpy.isfinite(estimate).all() and numpy.isfinite(gradient).all()
    assert numpy.allclose(estimate.sum(axis=1), [0.0, numpy.log(2)], atol=1e-5)
    assert numpy.allclose(gradient, [[0, 0, 0], [0, -0.5, 0.5]], atol=1e-6)


def test_softmax_cross_entropy_matches_softmax_then_cross_entropy():
    rng = numpy.random.default_rng(3)
    z = rng.normal(size=(6, 4))
    t = numpy.eye(4)[rng.integers(0, 4, 6)]
    softmax = numpy.exp(z) / numpy.exp(z).sum(axis=1, keepdims=True)
    combined = SoftmaxCrossEntropy().estimate(z, t).sum()
    assert relative_error(combined, (-t * numpy.log(softmax)).sum()) < 1e-12
    assert relative_error(SoftmaxCrossEntropy().gradient(z, t), softmax - t) < 1e-12


def test_targets_are_converted_to_the_prediction_dtype():
    p = Linear(3, 2).forward(numpy.ones((4, 3)))
    target = numpy.zeros((4, 2), dtype=numpy.int64)
    assert MeanSquareError().gradient(p, target).dtype == numpy.float32


def test_target_shape_mismatch_explains_one_hot():
    p = Linear(3, 10).forward(numpy.ones((4, 3)))
    with pytest.raises(ValueError, match=r"MeanSquareError\(\) got a target of shape \(4,\) for a prediction of shape \(4, 10\);.*vectorize"):
        MeanSquareError().estimate(p, numpy.arange(4))


def test_foreign_prediction_is_refused():
    class Foreign:
        dtype = numpy.float32

    with pytest.raises(fastprop.BackendError, match=r"no fastprop backend owns"):
        MeanSquareError().gradient(Foreign(), numpy.zeros((1, 1)))


@pytest.mark.parametrize("cost", [MeanSquareError, CrossEntropy, SoftmaxCrossEntropy])
def test_mean_reduction_divides_estimate_and_gradient_by_the_batch(backend_name, cost):
    rng = numpy.random.default_rng(2)
    p, backend = _prediction(backend_name, rng.random((6, 4)) * 0.8 + 0.1)
    t = numpy.eye(4)[rng.integers(0, 4, 6)]
    with fastprop.use_backend(backend_name):
        summed, mean = cost(), cost(reduction="mean")
        for method in ("estimate", "gradient"):
            expected = backend.to_numpy(getattr(summed, method)(p, t)) / 6
            assert relative_error(backend.to_numpy(getattr(mean, method)(p, t)), expected) < 1e-12


def test_mean_reduction_reports_the_same_cost_per_sample_in_train():
    rng = numpy.random.default_rng(0)
    x, t = rng.random((120, 5)), numpy.eye(3)[rng.integers(0, 3, 120)]
    data = (x[:100], t[:100], x[100:], t[100:])
    runs = []
    for reduction, rate in (("sum", 0.01), ("mean", 0.01 * 50)):  # same steps: batch 50
        net = fastprop.Network([Linear(5, 3, rng=0), fastprop.Sigmoid()])
        runs.append(fastprop.train(net, MeanSquareError(reduction=reduction), 2, 50, rate, data=data, quiet=True, verbose=False))
    assert runs[0].cost == pytest.approx(runs[1].cost, rel=1e-5)


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match=r"reduction='avg'; choose 'sum' .* or 'mean'"):
        MeanSquareError(reduction="avg")
