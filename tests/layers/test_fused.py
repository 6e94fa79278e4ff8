"""The fused Linear+Sigmoid and Linear+ReLU steps (``fastprop.layers.fused``) on every available
backend compute what the unfused layers compute, and keep what each layer keeps."""

from __future__ import annotations

import pytest

import fastprop
from fastprop import Linear, MeanSquareError, Network, ReLU, Sigmoid
from tests.conftest import relative_error
from tests.helpers import random_batch


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_linear_sigmoid_matches_unfused(backend_name, dtype, tolerance):
    with fastprop.use_backend(backend_name, dtype=dtype):
        fused = Network([Linear(20, 8, rng=3), Sigmoid(), Linear(8, 4, rng=4), Sigmoid()],
                        input_gradient=True)
        plain = Network([Linear(20, 8, rng=3), Sigmoid(), Linear(8, 4, rng=4), Sigmoid()],
                        fuse=False, input_gradient=True)
    x, target = random_batch(33, 20, 4)
    outputs = []
    for net in (fused, plain):
        net.zero_gradients()
        p = net.forward(x)
        cost_function = MeanSquareError()
        dx = net.backward(cost_function.gradient(cost_function.estimate(target, p)))
        # what each layer keeps is the notebook's, fused or not: Linear.x_in, Sigmoid.x_in and x_out
        kept = [net.layers[0].x_in, net.layers[1].x_in, net.layers[1].x_out,
                net.layers[2].x_in, net.layers[3].x_in, net.layers[3].x_out]
        outputs.append([p, dx] + kept + [parameter.gradient for parameter in net.parameters()])
    backend = fused.backend
    # x_in is z, not p
    assert relative_error(backend.to_numpy(outputs[0][3]), backend.to_numpy(outputs[0][4])) > 0.1
    for a, b in zip(*outputs):
        assert a.shape == b.shape
        assert relative_error(backend.to_numpy(a), backend.to_numpy(b)) <= tolerance


@pytest.mark.parametrize("width", [8, 40], ids=["fused kernel", "product and epilogue"])
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_linear_relu_matches_unfused(backend_name, dtype, tolerance, width):
    def build(fuse):
        with fastprop.use_backend(backend_name, dtype=dtype):
            return Network([Linear(20, width, rng=3), ReLU(), Linear(width, 4, rng=4), ReLU()], fuse=fuse,
                           input_gradient=True)

    x, target = random_batch(33, 20, 4)
    outputs = []
    for net in (build(True), build(False)):
        net.zero_gradients()
        for _ in range(2):  # the second backward adds to the gradients
            y = net.forward(x)
            cost_function = MeanSquareError()
            dx = net.backward(cost_function.gradient(cost_function.estimate(target, y)))
        assert net.layers[1].x_out is not None and net.layers[3].x_out is y
        outputs.append([y, dx, net.layers[0].x_in, net.layers[1].x_out, net.layers[2].x_in]
                       + [parameter.gradient for parameter in net.parameters()])
    backend = build(True).backend
    assert float(backend.to_numpy(outputs[0][3]).min()) == 0.0  # the ReLU cut something off
    for a, b in zip(*outputs):
        assert a.shape == b.shape
        assert relative_error(backend.to_numpy(a), backend.to_numpy(b)) <= tolerance
