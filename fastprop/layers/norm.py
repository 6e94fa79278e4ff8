"""Batch normalisation: ``BatchNorm1D`` for rows of features, ``BatchNorm2D`` for image channels."""

from __future__ import annotations

import math

import numpy

from ..checks import is_real, positive_integer
from .base import BackendArray, Layer


def _checked(value, name, where, low, high):
    if not (is_real(value) and math.isfinite(value) and low < value <= high):
        raise ValueError(f"{where} needs {low} < {name} <= {high}, got {value!r}.")
    return float(value)


class BatchNorm(Layer):
    """Normalise each feature over the batch, then scale by ``gamma`` and shift by ``beta``.

    In training mode (``net.train()``) each feature is normalised with the batch's mean and variance,
    and the running statistics ``running_mean``, ``running_var`` move towards them by ``momentum``
    (PyTorch's rule: ``running = (1 - momentum) * running + momentum * batch``, the variance unbiased);
    in evaluation mode (``net.eval()``, as ``validate`` and ``predict`` run) the running statistics
    are used instead. ``eps`` is added to the variance. ``gamma`` starts at one and ``beta`` at zero;
    their gradients ``dgamma``, ``dbeta`` are summed until ``zero_gradients``, as ``Linear``'s are.
    The running statistics are buffers: checkpoints hold them and a resume restores them exactly.
    Under data-parallel training every rank normalises with its own share of the batch (as PyTorch's
    DistributedDataParallel does without SyncBatchNorm).
    """

    parameter_names = ("gamma", "beta")
    buffer_names = ("running_mean", "running_var")
    batch_attributes = ("x_in", "_rows", "_mu", "_inverse_std", "_trained")
    gamma, beta = BackendArray(), BackendArray()
    dgamma, dbeta = BackendArray(gradient_of="gamma"), BackendArray(gradient_of="beta")
    x_in = _rows = _mu = _inverse_std = _trained = None

    def _setup(self, features, eps, momentum):
        super().__init__()
        name = type(self).__name__
        self.features = positive_integer(features, self._size_name, name)
        self.eps = _checked(eps, "eps", name, 0.0, math.inf)
        self.momentum = _checked(momentum, "momentum", name, 0.0, 1.0)
        self.gamma, self.beta = numpy.ones(self.features), numpy.zeros(self.features)
        self.dgamma, self.dbeta = numpy.zeros(self.features), numpy.zeros(self.features)
        self.running_mean = self.backend.asarray(numpy.zeros(self.features), dtype=self.dtype)
        self.running_var = self.backend.asarray(numpy.ones(self.features), dtype=self.dtype)

    @classmethod
    def parameter_shapes(cls, **arguments):
        features = arguments[cls._size_name]
        return {"gamma": (features,), "beta": (features,)}

    @classmethod
    def buffer_shapes(cls, **arguments):
        features = arguments[cls._size_name]
        return {"running_mean": (features,), "running_var": (features,)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.features})"

    def forward(self, x_in):
        return self.normalize(x_in)[0]

    def backward(self, d_out, input_gradient=True):
        return self.backpropagate(d_out, input_gradient)

    def normalize(self, x_in, relu=False):
        """``(output, output as (rows, features))`` for ``x_in``; with ``relu`` (a ``ReLU`` fused after
        this layer, :mod:`fastprop.layers.fused`) the output is ``max(output, 0)``."""
        x = self._accept(x_in)
        rows = self._as_rows(x)
        if self.training and rows.shape[0] < 2:
            raise ValueError(
                f"{self!r} got {rows.shape[0]} value per feature in training mode, where the batch's "
                "variance needs at least 2; train on batches of 2 rows or more, or call net.eval() first."
            )
        y, mu, inverse_std = self.backend.batch_norm_forward(
            rows, self.gamma, self.beta, self.running_mean, self.running_var, training=self.training,
            momentum=self.momentum, eps=self.eps, relu=relu)
        self.x_in, self._rows, self._mu, self._inverse_std = x, rows, mu, inverse_std
        self._trained = self.training
        return self._from_rows(y, x.shape), y

    def backpropagate(self, d_out, input_gradient=True, relu_rows=None):
        """``backward``; ``relu_rows`` is the fused ``ReLU``'s output as :meth:`normalize` gave it."""
        rows = self._saved("_rows")
        d_out = self._accept(d_out, "gradient")
        if tuple(d_out.shape) != tuple(self.x_in.shape):
            raise ValueError(
                f"{self!r}.backward expected a gradient of shape {tuple(self.x_in.shape)} matching its last "
                f"output, got {tuple(d_out.shape)}."
            )
        dx = self.backend.batch_norm_backward(
            rows, self._mu, self._inverse_std, self.gamma, self._as_rows(d_out), self.dgamma, self.dbeta,
            relu_rows, training=self._trained, accumulate=not self.gradients_fresh(), need_dx=input_gradient)
        self.gradients_written()
        return None if dx is None else self._from_rows(dx, self.x_in.shape)

    def folded(self, weight, bias):
        """``(weight, bias)`` of the layer before (a ``Linear`` or ``Conv2D``, output features first in
        ``weight``, ``bias`` of shape ``(1, features)``) with this layer's evaluation-mode transform
        folded in: the layer's output then equals this layer's output on the original one's."""
        xp = self.backend.xp
        scale = self.gamma / xp.sqrt(self.running_var + self.eps)
        shape = (-1,) + (1,) * (weight.ndim - 1)
        folded_bias = ((bias[0] - self.running_mean) * scale + self.beta).reshape(1, -1)
        return (weight * scale.reshape(shape)).astype(weight.dtype), folded_bias.astype(bias.dtype)


class BatchNorm1D(BatchNorm):
    """Batch normalisation of ``n`` features, for batches of shape ``(batch, n)`` (after a ``Linear``)."""

    _size_name = "n"
    checkpoint_arguments = ("n", "eps", "momentum")

    def __init__(self, n, eps=1e-5, momentum=0.1):
        self._setup(n, eps, momentum)

    @property
    def n(self) -> int:
        return self.features

    def _as_rows(self, x):
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(
                f"{self!r} expected input of shape (batch, {self.features}), got {tuple(x.shape)}; "
                "give one row per sample (BatchNorm2D normalises image channels)."
            )
        return x

    def _from_rows(self, rows, shape):
        return rows


class BatchNorm2D(BatchNorm):
    """Batch normalisation of ``channels`` image channels, for batches of shape ``(batch, channels,
    height, width)`` (after a ``Conv2D``): each channel's statistics are over the batch and every
    pixel. It computes on the channels-last memory ``Conv2D`` gives and hands on the same layout."""

    _size_name = "channels"
    checkpoint_arguments = ("channels", "eps", "momentum")

    def __init__(self, channels, eps=1e-5, momentum=0.1):
        self._setup(channels, eps, momentum)

    @property
    def channels(self) -> int:
        return self.features

    def _as_rows(self, x):
        if x.ndim != 4 or x.shape[1] != self.features:
            raise ValueError(
                f"{self!r} expected input of shape (batch, {self.features}, height, width), got "
                f"{tuple(x.shape)}; BatchNorm1D normalises rows of features."
            )
        last = self.backend.xp.ascontiguousarray(x.transpose(0, 2, 3, 1))  # no copy for Conv2D's output
        return last.reshape(-1, self.features)

    def _from_rows(self, rows, shape):
        n, c, h, w = shape
        return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)
