"""The ready-made models (``fastprop.models``) and the benchmark's workloads, which are model specs too."""

from __future__ import annotations

import dataclasses

import numpy
import pytest

import fastprop
from fastprop import bench
from fastprop.layers import BatchNorm1D, BatchNorm2D, Dropout
from fastprop.models import MODELS, RENAMED_MODELS, ModelSpec, cnn_network


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_a_network_that_trains_on_its_cost(name):
    spec = MODELS[name]
    with fastprop.use_backend("numpy", "float64"):
        net = spec.build(rng=0)
    x = numpy.random.default_rng(1).random((4, 784))
    y = net.forward(x)
    assert y.shape == (4, 10)
    cost = spec.cost()
    net.backward(cost.gradient(cost.estimate(numpy.eye(10)[[0, 1, 2, 3]], y)))
    optimizer = spec.optimizer(spec.learning_rate) if spec.optimizer else None
    assert optimizer is None or optimizer.learning_rate == spec.learning_rate
    assert spec.schedule is None or 0 < spec.schedule(spec.epochs)(1) <= 1


def test_former_names_lead_to_models_that_exist():
    assert RENAMED_MODELS == {"seed": "notebook"} and all(new in MODELS for new in RENAMED_MODELS.values())
    assert fastprop.models.seed_network is fastprop.models.notebook_network


def test_the_batch_normalised_recipe_normalises_every_hidden_layer():
    net = MODELS["cnn-bn"].build(rng=0)
    kinds = [type(leaf) for leaf in net.leaves()]
    assert kinds.count(BatchNorm2D) == 2 and kinds.count(BatchNorm1D) == 1 and Dropout not in kinds
    assert MODELS["cnn-bn"].augment is None and MODELS["cnn-bn"].learning_rate == 3e-3
    assert BatchNorm1D not in [type(leaf) for leaf in cnn_network(rng=0).leaves()]


def test_a_workload_is_a_model_spec_with_the_sizes_a_benchmark_times():
    w1, cnn = bench.WORKLOADS["W1"], bench.WORKLOADS["CNN"]
    assert w1.model is MODELS["notebook"] and isinstance(bench.WORKLOADS["W2"].model, ModelSpec)
    settings = (w1.cost, w1.learning_rate, w1.batch_size, w1.optimizer)
    assert settings == (fastprop.MeanSquareError, 1e-4, 600, None)
    recipe = MODELS["cnn"]
    assert dataclasses.replace(cnn.model, build=recipe.build, schedule=recipe.schedule) == recipe
    assert Dropout not in [type(leaf) for leaf in cnn.build(0).leaves()]  # the masks would differ per peer
    assert (cnn.inference_batch, cnn.rows) == (1_000, 2_560)
