"""``validate``, ``validate_epoch`` and ``predict`` (``fastprop.training.evaluation``): their figures,
zero rows, one sample whatever the batch size, and a non-finite value reported with its row."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import Linear, Network, ReLU, Sigmoid, predict, validate, validate_epoch
from tests.helpers import DTYPES, relu_net, sigmoid_net, split_problem


def test_validate_and_predict():
    x, t, _, _ = split_problem(200, 0)
    net = Network([Linear(40, 10, rng=0), ReLU(), Linear(10, 10, rng=1)])
    outputs = predict(net, x, batch_size=64)
    assert outputs.shape == (200, 10) and isinstance(outputs, numpy.ndarray)
    expected = float((outputs.argmax(1) == t.argmax(1)).mean())
    assert validate(net, x, t, 64) == pytest.approx(expected)
    assert validate(net, x, t.argmax(1), 64) == pytest.approx(expected)  # integer labels work too


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_and_validate_on_zero_rows(backend_name, dtype):
    with fastprop.use_backend(backend_name, dtype):
        net = Network([Linear(784, 10, rng=0), Sigmoid()])
    outputs = predict(net, numpy.zeros((0, 784)))
    assert type(outputs) is numpy.ndarray and outputs.shape == (0, 10) and outputs.dtype == numpy.dtype(dtype)
    assert predict(net, numpy.zeros((3, 784))).shape == (3, 10)
    for labels in (
        numpy.zeros((0, 10)), numpy.zeros((0,), numpy.int64), numpy.zeros((0, 1), numpy.uint8), []
    ):
        accuracy = validate(net, numpy.zeros((0, 784)), labels)
        assert type(accuracy) is float and accuracy == 0.0
    assert validate_epoch(0, net, numpy.zeros((0, 784)), numpy.zeros((0, 10)), 600, quiet=True) == 0.0


def test_predict_of_one_sample_does_not_depend_on_the_batch_size(backend_name):
    """One 1-D sample is one row, as Linear.forward treats it, whatever batch size predict uses."""
    with fastprop.use_backend(backend_name, "float64"):
        net = Network([Linear(784, 10, rng=0), Sigmoid()])
    sample = numpy.random.default_rng(0).random(784)
    expected = predict(net, sample[None, :])
    for batch_size in (10000, 784, 100, 1):
        outputs = predict(net, sample, batch_size=batch_size)
        assert outputs.shape == (1, 10), batch_size
        numpy.testing.assert_array_equal(outputs, expected)


# -- a non-finite value is reported with its row ---------------------------------------------------


@pytest.mark.parametrize("build", [sigmoid_net, relu_net], ids=["linear-sigmoid", "relu"])
def test_validate_refuses_a_non_finite_image_with_its_row(backend_name, build):
    _, _, xv, tv = split_problem()
    net = build(backend_name)
    clean = validate(net, xv, tv, 50)
    xv[57, 2] = numpy.nan  # in the second batch of 50: the row is counted over the whole array
    with pytest.raises(ValueError, match=r"validation images .*row 57\b"):
        validate(net, xv, tv, 50)
    xv[57, 2] = 0.0
    assert validate(net, xv, tv, 50) == clean


def test_validate_refuses_a_non_finite_label_with_its_row(backend_name):
    _, _, xv, tv = split_problem()
    net = sigmoid_net(backend_name)
    tv[57, 3] = numpy.nan  # numpy's argmax would take the NaN for the class: a silent wrong count
    with pytest.raises(ValueError, match=r"validation labels .*row 57\b"):
        validate(net, xv, tv, 50)
