"""Costs: ``estimate`` returns the per-element cost, ``gradient`` its derivative by the prediction.

A cost is stateless; it computes on the backend that owns the prediction (the current backend
when it does, so the Numba backend's kernels are used when Numba is current). Targets may be host
NumPy arrays of any numeric dtype: they are converted to the prediction's backend and dtype.
"""

from __future__ import annotations

from .backends import BackendError, get_backend, load_backend, backend_names
from .layers.base import accept_array


class Cost:
    """Base class: ``estimate(prediction, target)`` and ``gradient(prediction, target)``.

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

    def estimate(self, prediction, target):
        """Per-element cost, same shape as ``prediction``; its sum is the batch's total cost."""
        raise NotImplementedError(f"{type(self).__name__} does not implement estimate")

    def gradient(self, prediction, target):
        """Derivative of the summed cost with respect to each element of ``prediction``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement gradient")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()" if self.reduction == "sum" else f"{type(self).__name__}(reduction='mean')"

    def _reduced(self, values):
        """``values`` (a fresh array) divided by the batch size when ``reduction="mean"``."""
        if self.reduction == "mean" and values.shape[0]:
            values *= 1.0 / values.shape[0]
        return values

    def _prepare(self, prediction, target):
        """The backend owning ``prediction``, and ``target`` converted to match it, shape checked."""
        backend = _owner(prediction, self)
        target = accept_array(backend, prediction.dtype, target, f"{self!r} target")
        if target.shape != prediction.shape:
            raise ValueError(
                f"{self!r} got a target of shape {tuple(target.shape)} for a prediction of shape "
                f"{tuple(prediction.shape)}; give one target row per sample with one column per "
                "output (one-hot rows for class labels, e.g. fastprop.vectorize(labels))."
            )
        return backend, target


def _owner(prediction, cost):
    backend = get_backend()
    if backend.is_native(prediction):
        return backend
    for name in backend_names():
        try:
            candidate = load_backend(name)
        except Exception:  # unavailable backends own nothing
            continue
        if candidate.is_native(prediction):
            return candidate
    raise BackendError(
        f"{cost!r} got a prediction of type {type(prediction).__module__}.{type(prediction).__name__}, "
        "which no fastprop backend owns; pass the output of a fastprop layer."
    )


class MeanSquareError(Cost):
    """The seed's squared error: ``estimate = 1/2 (t - p)^2``, ``gradient = p - t``."""

    def estimate(self, prediction, target):
        _, target = self._prepare(prediction, target)
        difference = target - prediction
        difference *= difference
        difference *= 0.5
        return self._reduced(difference)

    def gradient(self, prediction, target):
        _, target = self._prepare(prediction, target)
        return self._reduced(prediction - target)


class CrossEntropy(Cost):
    """The seed's cross-entropy on probabilities: ``-t log(p + eps)``, gradient ``-t / (p + eps)``.

    Pair it with a ``SoftMax`` layer; :class:`SoftmaxCrossEntropy` on logits is the stable choice.
    """

    def __init__(self, eps=1e-12, reduction="sum"):
        super().__init__(reduction)
        self.eps = eps

    def __repr__(self) -> str:
        return f"CrossEntropy(eps={self.eps}, reduction={self.reduction!r})"

    def estimate(self, prediction, target):
        backend, target = self._prepare(prediction, target)
        return self._reduced(-target * backend.xp.log(prediction + self.eps))

    def gradient(self, prediction, target):
        _, target = self._prepare(prediction, target)
        return self._reduced(-target / (prediction + self.eps))


class SoftmaxCrossEntropy(Cost):
    """Cross-entropy of ``softmax(logits)`` against the targets, computed from the logits.

    The network's last layer stays linear; ``estimate`` uses a log-sum-exp that cannot overflow and
    ``gradient`` is ``softmax(logits) - t`` for one-hot targets, in one backend kernel each.
    """

    def estimate(self, prediction, target):
        backend, target = self._prepare(prediction, target)
        return self._reduced(backend.softmax_cross_entropy(prediction, target))

    def gradient(self, prediction, target):
        backend, target = self._prepare(prediction, target)
        return self._reduced(backend.softmax_cross_entropy_gradient(prediction, target))
