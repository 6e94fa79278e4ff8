"""Activations on every available backend: each passes gradcheck alone; SoftMax refuses a float32
overflow instead of returning NaN and leaves infinities already in the data to the math."""

from __future__ import annotations

import warnings

import numpy
import pytest

import fastprop
from fastprop import MeanSquareError, ReLU, Sigmoid, SoftMax, Tanh
from tests.helpers import assert_one_sentence, random_batch


@pytest.mark.parametrize("activation", [Sigmoid, ReLU, Tanh, SoftMax])
def test_activation_alone_passes_gradcheck(backend_name, activation):
    with fastprop.use_backend(backend_name, dtype="float64"):
        layer = activation()
    # every |x| > 0.06, off ReLU's kink (the shared stream's draws depend on the tests run before)
    x, target = random_batch(6, 4, 4, one_hot=False, rng=numpy.random.default_rng(5))
    result = fastprop.gradcheck(layer, MeanSquareError(), x, target)
    assert result.passed(1e-6), str(result)


@pytest.mark.parametrize("value", [1e100, -1e100])
def test_softmax_refuses_float32_overflow_instead_of_returning_nan(backend_name, value):
    with fastprop.use_backend(backend_name, "float32"):
        layer = SoftMax()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy cast warning on the way: the refusal comes first
        with pytest.raises(ValueError) as caught:
            layer.forward([[1, 1, value]])
    assert_one_sentence(str(caught.value), "SoftMax", "float32", "1e+100")
    assert layer.x_out is None  # nothing was computed


def test_the_same_softmax_in_float64_works(backend_name):
    with fastprop.use_backend(backend_name, "float64"):
        layer = SoftMax()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = numpy.asarray(layer.forward([[1, 1, 1e100]]))
    assert output.dtype == numpy.float64 and numpy.isfinite(output).all()
    assert numpy.array_equal(output, [[0.0, 0.0, 1.0]])


def test_infinities_already_in_the_data_are_not_overflow(backend_name):
    """An inf in the data is a value, not a failed conversion: SoftMax leaves it to the math."""
    with fastprop.use_backend(backend_name, "float32"):
        layer = SoftMax()
    for data in (numpy.array([[1, 1, numpy.inf]], numpy.float32), numpy.array([[1, 1, -numpy.inf]])):
        with numpy.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = layer.forward(data)  # no ValueError
        assert output.shape == (1, 3) and output.dtype == numpy.float32
    assert numpy.array_equal(numpy.asarray(output), numpy.array([[0.5, 0.5, 0.0]], numpy.float32))
