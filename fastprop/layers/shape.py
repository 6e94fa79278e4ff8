"""``Reshape`` and ``Flatten``: between the notebook's flat rows ``(batch, 784)`` and images
``(batch, channels, height, width)``."""

from __future__ import annotations

import math

from ..checks import positive_integer
from .base import Layer


class Reshape(Layer):
    """View each sample as ``shape``: ``(batch, *anything)`` -> ``(batch, *shape)``.

    ``Reshape((1, 28, 28))`` turns the notebook's rows of 784 pixels into one-channel 28 x 28 images
    for :class:`~fastprop.Conv2D`. The batch axis is kept; each sample must hold
    ``prod(shape)`` values, read in row-major order. ``backward`` gives the gradient back the shape
    of the last input. No copy is made where the input's memory allows a view.
    """

    batch_attributes = ("x_in",)
    checkpoint_arguments = ("shape",)
    x_in = None

    def __init__(self, shape):
        super().__init__()
        if isinstance(shape, int) or not hasattr(shape, "__iter__"):
            shape = (shape,)
        self.shape = tuple(positive_integer(size, "size in shape", "Reshape") for size in shape)

    def __repr__(self) -> str:
        return f"Reshape({self.shape})"

    def forward(self, x_in):
        self.x_in = x = self._accept(x_in)
        size = math.prod(self.shape)
        if x.ndim < 1 or math.prod(x.shape[1:]) != size:
            raise ValueError(
                f"{self!r} expected input of shape (batch, ...) with {size} values per sample, got "
                f"{tuple(x.shape)}; give one sample of {size} values per row."
            )
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, d_out, input_gradient=True):
        x = self._saved("x_in")
        d_out = self._accept(d_out, "gradient")
        expected = (x.shape[0],) + self.shape
        if tuple(d_out.shape) != expected:
            raise ValueError(
                f"{self!r}.backward expected a gradient of shape {expected} matching its last output, "
                f"got {tuple(d_out.shape)}."
            )
        return d_out.reshape(x.shape) if input_gradient else None


class Flatten(Reshape):
    """``(batch, channels, height, width)`` (or any ``(batch, ...)``) -> ``(batch, features)`` rows,
    in row-major order of the logical shape (channel by channel, as PyTorch's ``Flatten``)."""

    checkpoint_arguments = ()

    def __init__(self):
        Layer.__init__(self)
        self.shape = None

    def __repr__(self) -> str:
        return "Flatten()"

    def forward(self, x_in):
        self.x_in = x = self._accept(x_in)
        if x.ndim < 1:
            raise ValueError(f"{self!r} expected input of shape (batch, ...), got a scalar; give a batch.")
        return x.reshape(x.shape[0], -1)

    def backward(self, d_out, input_gradient=True):
        x = self._saved("x_in")
        d_out = self._accept(d_out, "gradient")
        expected = (x.shape[0], math.prod(x.shape[1:]))
        if tuple(d_out.shape) != expected:
            raise ValueError(
                f"{self!r}.backward expected a gradient of shape {expected} matching its last output, "
                f"got {tuple(d_out.shape)}."
            )
        return d_out.reshape(x.shape) if input_gradient else None
