"""Parameter-free activation layers: ``Sigmoid``, ``ReLU``, ``Tanh`` and the notebook's ``SoftMax``.

Each keeps its last input ``x_in`` (as the notebook's ``Sigmoid`` does) and its last output
``x_out`` (as the notebook's ``SoftMax`` does); the derivatives are computed from ``x_out``,
which is exact and cheaper.
"""

from __future__ import annotations

from .base import Layer


class Activation(Layer):
    """``x_out = f(x_in)`` elementwise (or row-wise), computed by two named backend kernels."""

    #: Backend method computing ``f(x)``.
    kernel = ""
    #: Backend method computing ``dL/dx`` from ``(x_out, d_out)``.
    backward_kernel = ""
    batch_attributes = ("x_in", "x_out")
    x_in = x_out = None

    def forward(self, x_in):
        self.x_in = x = self._accept(x_in)
        self.x_out = y = getattr(self.backend, self.kernel)(x)
        return y

    def backward(self, d_out, input_gradient=True):
        y = self._saved("x_out")
        d_out = self._accept(d_out, "gradient")
        if d_out.shape != y.shape:
            raise ValueError(
                f"{self!r}.backward expected a gradient of shape {tuple(y.shape)} matching its last "
                f"output, got {tuple(d_out.shape)}."
            )
        return getattr(self.backend, self.backward_kernel)(y, d_out) if input_gradient else None


class Sigmoid(Activation):
    """The logistic function ``1 / (1 + exp(-x_in))``; ``d_in = d_out * sigmoid_derivative(x_in)``."""

    kernel, backward_kernel = "sigmoid", "sigmoid_backward"
    checkpoint_arguments = ()


class ReLU(Activation):
    """``max(x_in, 0)``."""

    kernel, backward_kernel = "relu", "relu_backward"
    checkpoint_arguments = ()


class Tanh(Activation):
    """The hyperbolic tangent."""

    kernel, backward_kernel = "tanh", "tanh_backward"
    checkpoint_arguments = ()


class SoftMax(Activation):
    """Row-wise softmax, kept in ``x_out``; ``backward`` is the exact Jacobian-vector product.

    For classification, prefer a plain output layer with the :class:`~fastprop.SoftmaxCrossEntropy`
    cost: it is the same model, numerically stable, and cheaper.
    """

    kernel, backward_kernel = "softmax", "softmax_backward"
    checkpoint_arguments = ()
