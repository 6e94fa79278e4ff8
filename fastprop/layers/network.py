"""``Network``: layers applied in sequence, itself a ``Layer`` so networks nest."""

from __future__ import annotations

from ..backends import load_backend
from .activations import Sigmoid
from .base import Layer
from .linear import Linear


class _LinearSigmoid:
    """A ``Linear`` followed by a ``Sigmoid``, run through the backend's fused kernels."""

    def __init__(self, linear: Linear, sigmoid: Sigmoid):
        self.linear, self.sigmoid = linear, sigmoid

    def forward(self, x):
        return self.linear.forward_sigmoid(x, self.sigmoid)

    def backward(self, gradient, input_gradient=True):
        return self.linear.backward_sigmoid(gradient, self.sigmoid, input_gradient)


class Network(Layer):
    """Apply ``layers`` in order; ``backward`` runs them in reverse.

    With ``fuse=True`` (the default) each ``Linear`` directly followed by a ``Sigmoid`` runs through
    the backend's fused kernels; the numbers match the unfused path within float rounding.
    ``backward`` skips the input gradient of the first layer unless ``input_gradient=True`` is set
    here or passed to ``backward``: training never uses it, and it costs as much as a weight gradient.
    """

    def __init__(self, layers, *, fuse=True, input_gradient=False):
        self.layers = list(layers)
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Network layer {index} is a {type(layer).__name__}, not a fastprop Layer; "
                    "build networks from Layer instances such as Linear(784, 10) and Sigmoid()."
                )
        self.fuse, self.input_gradient = fuse, input_gradient
        self._plan_key = None

    @property
    def backend(self):
        return self.layers[0].backend if self.layers else load_backend("numpy")

    @property
    def dtype(self):
        return self.layers[0].dtype if self.layers else None

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Network([{inner}])"

    def _plan(self):
        key = (self.fuse, tuple(map(id, self.layers)))
        if key != self._plan_key:
            steps, layers, i = [], self.layers, 0
            while i < len(layers):
                pair = layers[i : i + 2]
                if self.fuse and len(pair) == 2 and type(pair[0]) is Linear and type(pair[1]) is Sigmoid:
                    steps.append(_LinearSigmoid(*pair))
                    i += 2
                else:
                    steps.append(layers[i])
                    i += 1
            self._steps, self._plan_key = steps, key
        return self._steps

    def forward(self, x):
        for step in self._plan():
            x = step.forward(x)
        return x

    def backward(self, gradient, input_gradient=None):
        if input_gradient is None:
            input_gradient = self.input_gradient
        steps = self._plan()
        for index in range(len(steps) - 1, -1, -1):
            gradient = steps[index].backward(gradient, input_gradient or index > 0)
        return gradient if input_gradient else None

    def zero_gradients(self):
        for layer in self.layers:
            layer.zero_gradients()

    def update_parameters(self, learning_rate):
        for layer in self.layers:
            layer.update_parameters(learning_rate)

    def parameters(self):
        return [parameter for layer in self.layers for parameter in layer.parameters()]

    def leaves(self):
        return [leaf for layer in self.layers for leaf in layer.leaves()]

    def to_backend(self, name=None, dtype=None):
        for layer in self.layers:
            layer.to_backend(name, dtype)
        return self

    def train(self, mode=True):
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

