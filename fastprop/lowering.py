"""Lowering a model to what a backend's whole-epoch program takes (:mod:`fastprop.backends.plan`).

This is the one place that matches fastprop's layer and cost classes for the backends: a network
whose leaves are ``Linear`` layers, each optionally followed by a ``Sigmoid`` or ``ReLU``, trained on
the summed ``MeanSquareError`` or ``SoftmaxCrossEntropy``, becomes an :class:`EpochPlan`; anything
else lowers to ``None`` and trains through the step loop.
"""

from __future__ import annotations

from fastprop.backends.plan import Activation, DenseLayer, EpochPlan, Loss

from .costs import MeanSquareError, SoftmaxCrossEntropy
from .layers.activations import ReLU, Sigmoid
from .layers.base import Layer, is_native, same_device
from .layers.linear import Linear

ACTIVATIONS = {Sigmoid: Activation.SIGMOID, ReLU: Activation.RELU}
LOSSES = {MeanSquareError: Loss.SQUARED_ERROR, SoftmaxCrossEntropy: Loss.SOFTMAX_CROSS_ENTROPY}


def lower(net, cost_function):
    """The :class:`EpochPlan` of ``net`` trained on ``cost_function``, or ``None`` when it has none."""
    loss = LOSSES.get(type(cost_function))
    if loss is None or getattr(cost_function, "reduction", "sum") != "sum" or not isinstance(net, Layer):
        return None
    layers = []
    for leaf in net.leaves():
        if type(leaf) is Linear and is_native(leaf):
            weight, bias = leaf.parameters()
            layers.append(DenseLayer(weight, bias))
        elif (type(leaf) in ACTIVATIONS and layers and layers[-1].activation is Activation.NONE
              and same_device(layers[-1].weight.layer, leaf)):
            layers[-1] = DenseLayer(layers[-1].weight, layers[-1].bias, ACTIVATIONS[type(leaf)])
        else:
            return None
    if not layers or any(layer.weight.layer.backend is not net.backend for layer in layers):
        return None
    return EpochPlan(tuple(layers), loss)
