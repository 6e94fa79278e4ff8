"""``Dropout``: inverted dropout, active in training mode and the identity in evaluation mode."""

from __future__ import annotations

import math

from .. import seeding
from ..checks import is_real
from .base import Layer

#: What ``Dropout.mask`` holds after a forward pass that dropped nothing (evaluation mode, rate 0).
IDENTITY = "identity"


class Dropout(Layer):
    """Zero each input with probability ``rate`` and scale the survivors by ``1 / (1 - rate)``.

    The scaling keeps every output's expectation equal to its input, so evaluation mode
    (``net.eval()``, used by ``validate`` and ``predict``) is simply the identity. ``backward``
    applies the ``mask`` of the last ``forward``. Masks are drawn from ``rng`` (a seed or
    ``numpy.random.Generator``; without it the generator of :func:`fastprop.seed`) on the host, so
    a seeded network drops the same units on every backend.
    """

    batch_attributes = ("mask",)
    checkpoint_arguments = ("rate",)
    mask = None

    def __init__(self, rate=0.5, *, rng=None):
        super().__init__()
        if not (is_real(rate) and math.isfinite(rate) and 0 <= rate < 1):
            raise ValueError(
                f"Dropout needs a rate in [0, 1), the probability of zeroing an input, got {rate!r}."
            )
        self.rate = float(rate)
        self.rng = seeding.generator(rng)

    def __repr__(self) -> str:
        return f"Dropout({self.rate})"

    def forward(self, x_in):
        x = self._accept(x_in)
        if not self.training or self.rate == 0.0:
            self.mask = IDENTITY
            return x
        mask = self.backend.random_uniform(self.rng, x.shape, self.dtype)  # a fresh array: reused in place
        self.backend.xp.greater_equal(mask, self.rate, out=mask)
        mask *= 1.0 / (1.0 - self.rate)
        self.mask = mask
        return x * mask

    def backward(self, d_out, input_gradient=True):
        mask = self._saved("mask")
        d_out = self._accept(d_out, "gradient")
        if mask is not IDENTITY and d_out.shape != mask.shape:
            raise ValueError(
                f"{self!r}.backward expected a gradient of shape {tuple(mask.shape)} matching its last "
                f"output, got {tuple(d_out.shape)}."
            )
        if not input_gradient:
            return None
        return d_out if mask is IDENTITY else d_out * mask
