"""Layers: one small module each, all written against the backend contract."""

from .activations import Activation, ReLU, Sigmoid, SoftMax, Tanh
from .base import Layer, Parameter
from .dropout import Dropout
from .linear import Linear
from .network import Network

__all__ = [
    "Activation", "Dropout", "Layer", "Linear", "Network", "Parameter", "ReLU", "Sigmoid", "SoftMax", "Tanh",
]
