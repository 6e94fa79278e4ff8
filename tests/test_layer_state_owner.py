"""Layers own their state: fused stages hand batch arrays over (``Layer.hold``), gradients are rebound
through their parameter (``Parameter.rebind_gradient``)."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import Linear, Network, ReLU, Sigmoid


def test_hold_sets_only_the_batch_attributes_a_layer_declares():
    with fastprop.use_backend("numpy", "float64"):
        sigmoid, linear = Sigmoid(), Linear(2, 2, rng=0)
    x = numpy.ones((3, 2))
    sigmoid.hold(x_in=x, x_out=None)
    assert sigmoid.x_in is x and sigmoid.x_out is None
    with pytest.raises(AttributeError, match=r"keeps x_in for its backward pass, not w"):
        linear.hold(w=x)
    assert not numpy.array_equal(linear.w, x[:2])


@pytest.mark.parametrize("activation", [Sigmoid, ReLU])
def test_a_fused_stage_leaves_the_notebook_attributes_an_unfused_pair_would(activation):
    x = numpy.random.default_rng(1).normal(size=(4, 3))
    with fastprop.use_backend("numpy", "float64"):
        fused = Network([Linear(3, 2, rng=2), activation()])
        plain = Network([Linear(3, 2, rng=2), activation()], fuse=False)
    assert numpy.array_equal(fused.forward(x), plain.forward(x))
    (linear, act), (plain_linear, plain_act) = fused.layers, plain.layers
    assert numpy.array_equal(linear.x_in, plain_linear.x_in)
    assert numpy.array_equal(act.x_out, plain_act.x_out)


def test_rebind_gradient_keeps_the_values_and_counts_a_replacement():
    with fastprop.use_backend("numpy", "float64"):
        layer = Linear(3, 2, rng=0)
    weight = layer.parameters()[0]
    weight.gradient[...] = 2.0
    buffer = numpy.zeros(10)
    view = buffer[2:8].reshape(2, 3)
    version = weight.version
    weight.rebind_gradient(view)
    assert layer.dw is view and numpy.all(buffer[2:8] == 2.0) and weight.version == version + 1
    with pytest.raises(ValueError, match=r"cannot take a gradient of shape \(3, 2\)"):
        weight.rebind_gradient(numpy.zeros((3, 2)))
