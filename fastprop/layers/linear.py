"""``Linear``: the notebook's fully connected layer ``x_out = x_in w^T + b``."""

from __future__ import annotations

import math

import numpy

from .. import seeding
from ..checks import is_real, positive_integer
from .base import WeightedLayer

#: Initialisers: each maps ``(n_in, n_out, initial_sigma)`` to the standard deviation of the weights.
INITIALISERS = {
    "normal": lambda n_in, n_out, sigma: sigma,
    "xavier": lambda n_in, n_out, sigma: math.sqrt(2.0 / (n_in + n_out)),
    "he": lambda n_in, n_out, sigma: math.sqrt(2.0 / n_in),
}


def checked_sigma(initial_sigma, where) -> float:
    """``initial_sigma`` as a float, or one error naming the layer ``where``."""
    if not (is_real(initial_sigma) and math.isfinite(initial_sigma) and initial_sigma >= 0):
        raise ValueError(f"{where} needs a finite initial_sigma >= 0, got {initial_sigma!r}.")
    return float(initial_sigma)


def checked_init(init, where) -> str:
    """``init`` when it names one of :data:`INITIALISERS`, or one error naming the layer ``where``."""
    if init not in INITIALISERS:
        raise ValueError(f"{where} got init={init!r}; choose one of {', '.join(map(repr, INITIALISERS))}.")
    return init


class Linear(WeightedLayer):
    """Fully connected layer: weights ``w`` of shape ``(n_out, n_in)``, bias ``b`` of shape ``(1, n_out)``.

    As in the notebook, ``w = initial_sigma * np.random.randn(n_out, n_in)`` from NumPy's global
    generator (``np.random.seed(k)`` first gives the notebook's weights) and ``b`` starts at zero;
    ``dw`` and ``db`` hold the gradients summed since ``zero_gradients``; ``x_in`` is the last input.
    ``init="xavier"`` (Glorot) or ``init="he"`` use the usual fan-based scales instead of
    ``initial_sigma``. ``rng`` (a seed or ``numpy.random.Generator``) draws from its own generator,
    as does every layer built after :func:`fastprop.seed`. ``w``, ``b``, ``dw``, ``db`` may be
    assigned (``layer.w = array``): the value is converted to the layer's backend and dtype.
    """

    batch_attributes = ("x_in",)
    checkpoint_arguments = ("n_in", "n_out", "init")

    def __init__(self, n_in, n_out, initial_sigma=0.1, *, init="normal", rng=None):
        initial_sigma = checked_sigma(initial_sigma, "Linear")
        self._configure(n_in, n_out, init)
        sigma = INITIALISERS[init](self.n_in, self.n_out, initial_sigma)
        self._allocate(sigma * seeding.weights_generator(rng).standard_normal((self.n_out, self.n_in)),
                       numpy.zeros((1, self.n_out)))

    def _configure(self, n_in, n_out, init):
        super().__init__()
        n_in, n_out = positive_integer(n_in, "n_in", "Linear"), positive_integer(n_out, "n_out", "Linear")
        self.n_in, self.n_out, self.init = int(n_in), int(n_out), checked_init(init, "Linear")

    def _allocate(self, w, b):
        self.w, self.b = w, b
        self.dw = numpy.zeros((self.n_out, self.n_in))
        self.db = numpy.zeros((1, self.n_out))
        self.x_in = None

    @classmethod
    def parameter_shapes(cls, n_in, n_out, init):
        return {"w": (n_out, n_in), "b": (1, n_out)}

    def __repr__(self) -> str:
        return f"Linear({self.n_in}, {self.n_out})"

    def forward(self, x_in):
        self.x_in = x = self.checked_input(x_in)
        return self.backend.linear_forward(x, self.w, self.b)

    def backward(self, d_out, input_gradient=True):
        x = self._saved("x_in")
        d_out = self.checked_gradient(d_out, x.shape[0])
        d_in = self.backend.linear_backward(
            x, self.w, d_out, self.dw, self.db,
            accumulate=not self.gradients_fresh(), need_dx=input_gradient,
        )
        self.gradients_written()
        return d_in

    # -- boundary checks, shared with the fused Linear+Sigmoid step -------------------------------

    def checked_input(self, x_in):
        """``x_in`` on this layer's backend as ``(batch, n_in)``; one sample ``(n_in,)`` is one row."""
        x = self._accept(x_in)
        if x.ndim == 1 and x.shape[0] == self.n_in:
            x = x.reshape(1, self.n_in)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(
                f"{self!r} expected input of shape (batch, {self.n_in}), got {tuple(x.shape)}; "
                "give one row per sample."
            )
        return x

    def checked_gradient(self, d_out, batch):
        """``d_out`` on this layer's backend, checked against the last output's shape ``(batch, n_out)``."""
        d_out = self._accept(d_out, "gradient")
        if d_out.ndim == 1 and batch == 1 and d_out.shape[0] == self.n_out:
            d_out = d_out.reshape(1, self.n_out)
        if tuple(d_out.shape) != (batch, self.n_out):
            raise ValueError(
                f"{self!r}.backward expected a gradient of shape ({batch}, {self.n_out}) matching its "
                f"last output, got {tuple(d_out.shape)}."
            )
        return d_out
