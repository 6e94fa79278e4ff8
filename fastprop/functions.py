"""The notebook's helper functions, on NumPy arrays."""

from __future__ import annotations

import numpy

from .datasets import one_hot


def sigmoid_function(var):
    """The logistic function ``1 / (1 + exp(-var))``, elementwise."""
    var = numpy.asarray(var)
    with numpy.errstate(over="ignore"):
        return 1.0 / (1.0 + numpy.exp(-var))


def sigmoid_derivative(z):
    """Derivative of the logistic function at ``z``: ``sigmoid(z) * (1 - sigmoid(z))``."""
    s = sigmoid_function(z)
    return s * (1 - s)


def vectorize(j, n_classes=10, dtype=numpy.float64):
    """One-hot rows for class labels, as the notebook's: one label ``j`` gives shape ``(1, n_classes)``,
    N labels give ``(N, n_classes)``. Labels may be integers or integral floats (``3.0``)."""
    labels = numpy.asarray(j)
    if labels.dtype.kind == "f":
        if not numpy.all(numpy.isfinite(labels) & (labels == numpy.round(labels))):
            raise ValueError(
                f"vectorize needs whole-number class labels, got {j!r}; pass integers such as 3 or 3.0."
            )
        labels = labels.astype(numpy.int64)
    elif labels.dtype.kind == "b":
        raise ValueError(f"vectorize needs integer class labels, got booleans {j!r}.")
    return one_hot(labels.reshape(-1), n_classes, dtype)
