"""The seed notebook's helper functions, on NumPy arrays."""

from __future__ import annotations

import numpy

from .datasets import one_hot


def sigmoid_function(x):
    """The logistic function ``1 / (1 + exp(-x))``, elementwise."""
    x = numpy.asarray(x)
    with numpy.errstate(over="ignore"):
        return 1.0 / (1.0 + numpy.exp(-x))


def sigmoid_derivative(x):
    """Derivative of the logistic function at ``x``: ``sigmoid(x) * (1 - sigmoid(x))``."""
    s = sigmoid_function(x)
    return s * (1.0 - s)


def vectorize(labels, n_classes=10, dtype=numpy.float64):
    """One-hot rows for integer class labels: an int gives shape ``(n_classes,)``, N labels ``(N, n_classes)``."""
    labels = numpy.asarray(labels)
    encoded = one_hot(labels.reshape(-1), n_classes, dtype)
    return encoded[0] if labels.ndim == 0 else encoded
