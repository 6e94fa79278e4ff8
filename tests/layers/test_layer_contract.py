"""The layer contract, the counterpart of the backend contract table: every layer class that
checkpoints know (fastprop's own), on every available backend, passes a gradient check in float64,
gives outputs of the working dtype and shape in float32 and float64, computes the same after
``to_backend`` from the NumPy reference, and comes back from a checkpoint computing the same.
A layer class without a case fails ``test_every_layer_class_has_a_case``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy
import pytest

import fastprop
from fastprop import (
    BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten, Linear, MaxPool2D, MeanSquareError, Network, ReLU,
    Reshape, Sigmoid, SoftMax, Tanh,
)
from fastprop.layer_types import CHECKPOINT_LAYERS
from tests.conftest import relative_error


@dataclass(frozen=True)
class LayerCase:
    build: Callable  # a fresh layer, on the current backend and dtype
    input_shape: tuple


CASES = {
    "Linear": LayerCase(lambda: Linear(5, 4, rng=0), (3, 5)),
    "Sigmoid": LayerCase(Sigmoid, (3, 4)),
    "ReLU": LayerCase(ReLU, (3, 4)),
    "Tanh": LayerCase(Tanh, (3, 4)),
    "SoftMax": LayerCase(SoftMax, (3, 4)),
    "Dropout": LayerCase(lambda: Dropout(0.3, rng=1), (3, 4)),
    "Reshape": LayerCase(lambda: Reshape((1, 2, 3)), (3, 6)),
    "Flatten": LayerCase(Flatten, (3, 2, 2, 2)),
    "Conv2D": LayerCase(lambda: Conv2D(2, 3, (3, 2), stride=(1, 2), padding=(1, 0), rng=0), (2, 2, 5, 6)),
    "MaxPool2D": LayerCase(lambda: MaxPool2D((2, 2)), (2, 3, 4, 4)),
    "BatchNorm1D": LayerCase(lambda: BatchNorm1D(4, eps=1e-3), (3, 4)),
    "BatchNorm2D": LayerCase(lambda: BatchNorm2D(3, momentum=0.5), (2, 3, 4, 5)),
    "Network": LayerCase(lambda: Network([Linear(5, 4, rng=0), ReLU(), Linear(4, 3, rng=1), Sigmoid()]),
                         (3, 5)),
}


def _built(name, backend_name, dtype):
    with fastprop.use_backend(backend_name, dtype):
        layer = CASES[name].build()
    return layer.eval()  # dropout: the same output on every call


def _input(name):
    return numpy.random.default_rng(7).normal(size=CASES[name].input_shape)


def test_every_layer_class_has_a_case():
    own = {name for name, cls in CHECKPOINT_LAYERS.items() if cls.__module__.startswith("fastprop.")}
    assert own - set(CASES) == set(), f"layer classes without a case: {sorted(own - set(CASES))}"
    assert set(CASES) - own == set(), f"cases for unknown layer classes: {sorted(set(CASES) - own)}"


@pytest.mark.parametrize("name", CASES)
def test_layer_passes_gradcheck(backend_name, name):
    layer, x = _built(name, backend_name, "float64"), _input(name)
    output = layer.backend.to_numpy(layer.forward(x))
    target = numpy.random.default_rng(8).random(output.shape)
    result = fastprop.gradcheck(layer, MeanSquareError(), x, target, max_entries=30)
    assert result.passed(1e-6), f"{name} on {backend_name}:\n{result}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CASES)
def test_layer_computes_in_the_working_dtype(backend_name, name, dtype):
    layer = _built(name, backend_name, dtype)
    output = layer.forward(_input(name))  # float64 host input, converted at the boundary
    assert layer.backend.is_native(output) and output.dtype == numpy.dtype(dtype)
    reference = _built(name, "numpy", "float64").forward(_input(name))
    assert output.shape == reference.shape
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    assert relative_error(layer.backend.to_numpy(output), reference) <= tolerance


@pytest.mark.parametrize("name", CASES)
def test_layer_computes_the_same_after_moving_backends(backend_name, name):
    layer, x = _built(name, "numpy", "float64"), _input(name)
    before = layer.forward(x)
    layer.to_backend(backend_name, "float64")
    after = layer.backend.to_numpy(layer.forward(x))
    assert layer.backend is fastprop.backends.load_backend(backend_name)
    assert relative_error(after, before) <= 1e-12


@pytest.mark.parametrize("name", CASES)
def test_layer_comes_back_from_a_checkpoint(backend_name, name, tmp_path):
    layer, x = _built(name, backend_name, "float64"), _input(name)
    layer.save(tmp_path / "layer.npz")
    with fastprop.use_backend(backend_name, "float64"):
        loaded = fastprop.load(tmp_path / "layer.npz").eval()
    assert type(loaded) is type(layer)
    outputs = [model.backend.to_numpy(model.forward(x)) for model in (layer, loaded)]
    assert numpy.array_equal(*outputs)
