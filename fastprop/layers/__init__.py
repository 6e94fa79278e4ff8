"""Layers: one small module each, all written against the backend contract."""

from .activations import Activation, ReLU, Sigmoid, SoftMax, Tanh
from .base import Layer, Parameter
from .linear import Linear
from .network import Network

__all__ = ["Activation", "Layer", "Linear", "Network", "Parameter", "ReLU", "Sigmoid", "SoftMax", "Tanh"]
