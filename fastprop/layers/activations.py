"""Parameter-free activation layers: ``Sigmoid``, ``ReLU``, ``Tanh`` and the seed's ``SoftMax``.

Each keeps its output from ``forward`` because its derivative is cheapest written in the output.
"""

from __future__ import annotations

from .base import Layer


class Activation(Layer):
    """``y = f(x)`` elementwise (or row-wise), computed by two named backend kernels."""

    #: Backend method computing ``f(x)``.
    kernel = ""
    #: Backend method computing ``dL/dx`` from ``(y, dL/dy)``.
    backward_kernel = ""

    def forward(self, x):
        x = self._accept(x)
        self._saved_output = y = getattr(self.backend, self.kernel)(x)
        return y

    def backward(self, gradient, input_gradient=True):
        y = self._saved("_saved_output")
        gradient = self._accept(gradient, "gradient")
        if gradient.shape != y.shape:
            raise ValueError(
                f"{self!r}.backward expected a gradient of shape {tuple(y.shape)} matching its last "
                f"output, got {tuple(gradient.shape)}."
            )
        return getattr(self.backend, self.backward_kernel)(y, gradient)


class Sigmoid(Activation):
    """The logistic function ``1 / (1 + exp(-x))``."""

    kernel, backward_kernel = "sigmoid", "sigmoid_backward"


class ReLU(Activation):
    """``max(x, 0)``."""

    kernel, backward_kernel = "relu", "relu_backward"


class Tanh(Activation):
    """The hyperbolic tangent."""

    kernel, backward_kernel = "tanh", "tanh_backward"


class SoftMax(Activation):
    """Row-wise softmax; ``backward`` is the exact Jacobian-vector product.

    For classification, prefer a plain output layer with the :class:`~fastprop.SoftmaxCrossEntropy`
    cost: it is the same model, numerically stable, and cheaper.
    """

    kernel, backward_kernel = "softmax", "softmax_backward"
