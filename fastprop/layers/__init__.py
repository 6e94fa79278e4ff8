"""Layers: one small module each, all written against the backend contract."""

from .activations import Activation, ReLU, Sigmoid, SoftMax, Tanh
from .base import Layer, Parameter
from .conv import Conv2D, MaxPool2D
from .dropout import Dropout
from .linear import Linear
from .network import Network
from .norm import BatchNorm1D, BatchNorm2D
from .shape import Flatten, Reshape

__all__ = [
    "Activation", "BatchNorm1D", "BatchNorm2D", "Conv2D", "Dropout", "Flatten", "Layer", "Linear",
    "MaxPool2D", "Network", "Parameter", "ReLU", "Reshape", "Sigmoid", "SoftMax", "Tanh",
]
