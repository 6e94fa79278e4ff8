"""``Linear``: the fully connected layer ``z = x W^T + b``."""

from __future__ import annotations

import math
import numbers


from .. import seeding
from .base import Layer

#: Initialisers: each maps ``(n_in, n_out, initial_sigma)`` to ``(weight sigma, bias sigma)``.
INITIALISERS = {
    "normal": lambda n_in, n_out, sigma: (sigma, sigma),
    "xavier": lambda n_in, n_out, sigma: (math.sqrt(2.0 / (n_in + n_out)), 0.0),
    "he": lambda n_in, n_out, sigma: (math.sqrt(2.0 / n_in), 0.0),
}


class Linear(Layer):
    """Fully connected layer with weights ``(n_out, n_in)`` and bias ``(1, n_out)``.

    ``initial_sigma`` is the standard deviation of the notebook's normal initialisation of both
    weights and bias. ``init="xavier"`` (Glorot) or ``init="he"`` use the usual fan-based scales
    instead, with a zero bias. ``rng`` (a seed or ``numpy.random.Generator``) makes the draw
    reproducible; without it the generator seeded by :func:`fastprop.seed` is used.
    """

    parameter_names = ("weights", "bias")

    def __init__(self, n_in, n_out, initial_sigma=0.1, *, init="normal", rng=None):
        super().__init__()
        for label, value in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"Linear needs a positive integer {label}, got {value!r}.")
        if init not in INITIALISERS:
            raise ValueError(
                f"Linear got init={init!r}; choose one of {', '.join(map(repr, INITIALISERS))}."
            )
        if not initial_sigma >= 0:
            raise ValueError(f"Linear needs initial_sigma >= 0, got {initial_sigma!r}.")
        self.n_in, self.n_out, self.init = int(n_in), int(n_out), init
        rng = seeding.generator(rng)
        weight_sigma, bias_sigma = INITIALISERS[init](self.n_in, self.n_out, initial_sigma)
        be, dtype = self.backend, self.dtype
        self.weights = be.random_normal(rng, (self.n_out, self.n_in), weight_sigma, dtype)
        self.bias = be.random_normal(rng, (1, self.n_out), bias_sigma, dtype)
        self.weights_gradient = be.zeros((self.n_out, self.n_in), dtype)
        self.bias_gradient = be.zeros((1, self.n_out), dtype)

    def __repr__(self) -> str:
        return f"Linear({self.n_in}, {self.n_out})"

    def forward(self, x):
        self._saved_input = x = self._checked_input(x)
        return self.backend.linear_forward(x, self.weights, self.bias)

    def backward(self, gradient, input_gradient=True):
        x = self._saved("_saved_input")
        gradient = self._checked_gradient(gradient, x.shape[0])
        dx = self.backend.linear_backward(
            x, self.weights, gradient, self.weights_gradient, self.bias_gradient,
            accumulate=not self._fresh_gradients, need_dx=input_gradient,
        )
        self._fresh_gradients = False
        return dx

    # -- the fused Linear+Sigmoid path that Network uses ----------------------------------------

    def forward_sigmoid(self, x, sigmoid):
        """``sigmoid.forward(self.forward(x))`` in one backend kernel; ``sigmoid`` keeps its output."""
        self._saved_input = x = self._checked_input(x)
        p = self.backend.linear_sigmoid_forward(x, self.weights, self.bias)
        sigmoid._saved_output = p
        return p

    def backward_sigmoid(self, gradient, sigmoid, input_gradient=True):
        """Backward of :meth:`forward_sigmoid`, through the sigmoid and this layer in one kernel."""
        x = self._saved("_saved_input")
        p = sigmoid._saved("_saved_output")
        gradient = self._checked_gradient(gradient, x.shape[0])
        dx = self.backend.linear_sigmoid_backward(
            x, self.weights, p, gradient, self.weights_gradient, self.bias_gradient,
            accumulate=not self._fresh_gradients, need_dx=input_gradient,
        )
        self._fresh_gradients = False
        return dx

    # -- boundary checks --------------------------------------------------------------------------

    def _checked_input(self, x):
        x = self._accept(x)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(
                f"{self!r} expected input of shape (batch, {self.n_in}), got {tuple(x.shape)}; "
                "give one row per sample (reshape a single sample with .reshape(1, -1))."
            )
        return x

    def _checked_gradient(self, gradient, batch):
        gradient = self._accept(gradient, "gradient")
        if tuple(gradient.shape) != (batch, self.n_out):
            raise ValueError(
                f"{self!r}.backward expected a gradient of shape ({batch}, {self.n_out}) matching its "
                f"last output, got {tuple(gradient.shape)}."
            )
        return gradient
