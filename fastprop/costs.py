"""Costs, the notebook's way: ``estimate(target, prediction)`` stores both and returns the cost per
element; ``gradient(cost)`` returns the gradient with respect to the stored prediction.

A cost computes on the backend that owns the prediction. Targets may be host NumPy arrays of any
numeric dtype: they are converted to the prediction's backend and dtype.
"""

from __future__ import annotations

import math

import numpy

from fastprop.backends import BackendError, owner_of
from fastprop.backends.arrays import accept_array

from .checks import is_real


class Cost:
    """Base class: ``estimate(target, prediction)`` then ``gradient(cost)``.

    ``reduction="sum"`` (the notebook's) makes the batch cost the sum over samples, so gradients,
    and with them the useful learning rate, grow with the batch size. ``reduction="mean"`` divides
    both by the number of rows: the batch cost is then the mean per sample, as in PyTorch and Keras.
    """

    REDUCTIONS = ("sum", "mean")
    reduction = "sum"

    def __init__(self, reduction="sum"):
        if reduction not in self.REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__} got reduction={reduction!r}; choose 'sum' (the notebook's) or 'mean'."
            )
        self.reduction = reduction

    def estimate(self, target, prediction):
        """Store ``target`` and ``prediction``; return the cost per element (``prediction``'s shape)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement estimate")

    def gradient(self, cost):
        """The derivative of the summed cost with respect to each element of the stored prediction."""
        raise NotImplementedError(f"{type(self).__name__} does not implement gradient")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}()"
            if self.reduction == "sum"
            else f"{type(self).__name__}(reduction='mean')"
        )

    def _reduced(self, values):
        """``values`` (a fresh array) divided by the batch size when ``reduction="mean"``."""
        if self.reduction == "mean" and values.ndim and values.shape[0]:
            values *= 1.0 / values.shape[0]
        return values

    def _prepare(self, target, prediction):
        """``(backend, target, prediction)``: the backend owning ``prediction``, ``target`` converted
        to match it, shapes checked."""
        prediction = _as_prediction(prediction, self)
        backend = _owner(prediction, self)
        target = accept_array(backend, prediction.dtype, target, f"{self!r} target")
        if target.shape != prediction.shape:
            raise ValueError(
                f"{self!r} got a target of shape {tuple(target.shape)} for a prediction of shape "
                f"{tuple(prediction.shape)}; give one target row per sample with one column per "
                "output (one-hot rows for class labels, e.g. fastprop.vectorize(labels))."
            )
        return backend, target, prediction

    def _stored(self, *names):
        values = [getattr(self, name, None) for name in names]
        if any(value is None for value in values):
            raise RuntimeError(
                f"{self!r}.gradient was called before estimate; call estimate(target, prediction) first."
            )
        return values


def _as_prediction(prediction, cost):
    """A prediction given as a list or scalar becomes a float64 NumPy array; arrays pass as they are."""
    if isinstance(prediction, (list, tuple, int, float, numpy.generic)):
        prediction = numpy.asarray(prediction, dtype=numpy.float64)
    elif isinstance(prediction, numpy.ndarray) and prediction.dtype.kind != "f":
        prediction = prediction.astype(numpy.float64)
    return prediction


def _owner(prediction, cost):
    backend = owner_of(prediction)
    if backend is None:
        raise BackendError(
            f"{cost!r} got a prediction of type {type(prediction).__module__}.{type(prediction).__name__}, "
            "which no fastprop backend owns; pass a NumPy array or the output of a fastprop layer."
        )
    return backend


class MeanSquareError(Cost):
    """The notebook's squared error: ``estimate`` gives ``1/2 (target - prediction)**2``, ``gradient``
    gives ``prediction - target``. Keeps ``target`` and ``prediction`` from the last ``estimate``."""

    def __init__(self, reduction="sum"):
        super().__init__(reduction)
        self.prediction = None
        self.target = None

    def estimate(self, target, prediction):
        _, self.target, self.prediction = self._prepare(target, prediction)
        difference = self.target - self.prediction
        difference *= difference
        difference *= 0.5
        return self._reduced(difference)

    def gradient(self, cost=None):
        prediction, target = self._stored("prediction", "target")
        return self._reduced(prediction - target)


class CrossEntropy(Cost):
    """The notebook's cross-entropy on probabilities: ``-target * log(x_in + eps)``, gradient
    ``-target / (x_in + eps)``. Keeps ``target`` and ``x_in`` from the last ``estimate``.

    Pair it with a ``SoftMax`` layer; :class:`SoftmaxCrossEntropy` on logits is the stable choice.
    """

    def __init__(self, eps=1e-12, reduction="sum"):
        super().__init__(reduction)
        if not (is_real(eps) and math.isfinite(eps) and eps > 0):
            raise ValueError(
                f"CrossEntropy needs a small positive eps (the notebook's is 1e-12), got {eps!r}; "
                "it keeps log(0) and the division by 0 out of the cost."
            )
        self.x_in = None
        self.target = None
        self.eps = float(eps)

    def __repr__(self) -> str:
        return f"CrossEntropy(eps={self.eps}, reduction={self.reduction!r})"

    def estimate(self, target, x_in):
        backend, self.target, self.x_in = self._prepare(target, x_in)
        return self._reduced(-self.target * backend.xp.log(self.x_in + self._eps_for(self.x_in)))

    def gradient(self, d_out=None):
        x_in, target = self._stored("x_in", "target")
        return self._reduced(-target / (x_in + self._eps_for(x_in)))

    def _eps_for(self, x_in):
        """``eps`` in ``x_in``'s dtype, at least its smallest normal number: an eps that rounds to zero
        there (1e-300 in float32) would let ``log(0)`` and ``1 / 0`` through."""
        return max(self.eps, float(numpy.finfo(x_in.dtype).tiny))


class SoftmaxCrossEntropy(Cost):
    """Cross-entropy of ``softmax(prediction)`` against the target, computed from the logits.

    The network's last layer stays linear; ``estimate`` uses a log-sum-exp that cannot overflow and
    ``gradient`` is ``softmax(prediction) - target`` for one-hot targets, in one backend kernel each.
    Keeps ``target`` and ``prediction`` from the last ``estimate``.
    """

    def __init__(self, reduction="sum"):
        super().__init__(reduction)
        self.prediction = None
        self.target = None
        self._backend = None

    def estimate(self, target, prediction):
        self._backend, self.target, self.prediction = self._prepare(target, prediction)
        return self._reduced(self._backend.softmax_cross_entropy(self.prediction, self.target))

    def gradient(self, cost=None):
        prediction, target = self._stored("prediction", "target")
        return self._reduced(self._backend.softmax_cross_entropy_gradient(prediction, target))
