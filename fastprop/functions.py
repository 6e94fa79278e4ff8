"""The seed notebook's helper functions, on NumPy arrays."""

from __future__ import annotations

import numpy


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
    if labels.dtype.kind not in "iu" or labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"vectorize needs integer labels in [0, {n_classes}), got dtype {labels.dtype} "
            f"with values in [{labels.min() if labels.size else '-'}, {labels.max() if labels.size else '-'}]."
        )
    return numpy.eye(n_classes, dtype=dtype)[labels]
