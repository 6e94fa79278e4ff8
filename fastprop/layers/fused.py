"""Fused stages of a ``Network``: ``LinearSigmoid``, ``LinearReLU``, ``Conv2DReLU``, ``Conv2DReLUMaxPool``,
``BatchNormReLU`` and ``WeightedBatchNormReLU``."""

from __future__ import annotations


def _saved(value, *layers):
    """``value``, what a fused stage kept from its forward pass, or one error naming its layers."""
    if value is None:
        raise RuntimeError(
            f"{' + '.join(map(repr, layers))}: backward was called before forward; call forward on the batch "
            "first."
        )
    return value


class LinearActivation:
    """One stage of a :class:`~fastprop.Network` that runs a ``Linear`` and the activation after it
    through the backend's fused kernels (``forward_kernel``, ``backward_kernel``).

    It keeps what its backward pass needs (the input and the activation's output) itself; the
    parameters and their gradients stay the ``Linear``'s. After each ``forward`` the ``Linear``
    shows its input as ``x_in`` and the activation its output as ``x_out`` (:meth:`show`).
    """

    forward_kernel = backward_kernel = ""

    def __init__(self, linear, activation):
        self.linear, self.activation = linear, activation
        self.saved = None  # (input, output) of the last forward

    def forward(self, x_in):
        linear = self.linear
        x = linear.checked_input(x_in)
        result = getattr(linear.backend, self.forward_kernel)(x, linear.w, linear.b)
        output = self.show(x, result)
        self.saved = (x, output)
        return output

    def show(self, x, result):
        """Set the layers' notebook attributes from the input and the fused kernel's result; return
        the stage's output."""
        self.linear.hold(x_in=x)
        self.activation.hold(x_in=None, x_out=result)
        return result

    def backward(self, d_out, input_gradient=True):
        linear, (x, output) = self.linear, _saved(self.saved, self.linear, self.activation)
        d_out = linear.checked_gradient(d_out, x.shape[0])
        d_in = getattr(linear.backend, self.backward_kernel)(
            x, linear.w, output, d_out, linear.dw, linear.db,
            accumulate=not linear.gradients_fresh(), need_dx=input_gradient,
        )
        linear.gradients_written()
        return d_in


class LinearSigmoid(LinearActivation):
    """A ``Linear`` and a ``Sigmoid``. Both layers show the notebook's attributes as an unfused pair
    would: ``linear.x_in`` the input, ``sigmoid.x_in`` the pre-activation, ``sigmoid.x_out`` the output."""

    forward_kernel, backward_kernel = "linear_sigmoid_forward", "linear_sigmoid_backward"

    def show(self, x, result):
        z, p = result
        self.linear.hold(x_in=x)
        self.activation.hold(x_in=z, x_out=p)
        return p


class LinearReLU(LinearActivation):
    """A ``Linear`` and a ``ReLU``: the bias and the ReLU are one pass after the product, and the
    ReLU's slope masks the gradient in the same pass that sums the bias gradient. The ``ReLU`` shows
    its output as ``x_out``; its ``x_in`` (the pre-activation, which is never kept) is ``None``."""

    forward_kernel, backward_kernel = "linear_relu_forward", "linear_relu_backward"


class Conv2DReLU:
    """One stage of a :class:`~fastprop.Network` that runs a ``Conv2D`` and the ``ReLU`` after it as one
    kernel call: the ReLU is the convolution's epilogue, and its slope masks the gradient inside the
    convolution's backward.

    After each ``forward`` the ``ReLU`` shows its output as ``x_out``; its ``x_in`` (the
    pre-activation, which never exists in memory here) is ``None``.
    """

    def __init__(self, conv, relu):
        self.conv, self.relu = conv, relu
        self.output = None  # the last channels-last output

    def forward(self, x_in):
        self.output = y = self.conv.convolve(x_in, relu=True)
        output = y.transpose(0, 3, 1, 2)
        self.relu.hold(x_in=None, x_out=output)
        return output

    def backward(self, d_out, input_gradient=True):
        output = _saved(self.output, self.conv, self.relu)
        dx = self.conv.convolve_backward(self.conv.gradient_in(d_out), input_gradient, output)
        return None if dx is None else dx.transpose(0, 3, 1, 2)


class Conv2DReLUMaxPool:
    """One stage of a :class:`~fastprop.Network` for a ``Conv2D``, a ``ReLU`` and a ``MaxPool2D``,
    computed by the backend's fused kernels (:meth:`~fastprop.backends.Backend.conv2d_relu_maxpool_forward`).

    Max pooling commutes with the ReLU (``max(relu(a), relu(b)) = relu(max(a, b))``), so the ReLU
    runs on the pooled values and masks the pooled gradient; a backend may pool the convolution's
    output as it computes it and never keep it whole. Outputs and gradients are those of the three
    layers (where every value of a window is negative the maximum's place may differ, but its
    gradient is zero either way). After each ``forward`` the ``ReLU`` shows the stage's output as
    ``x_out``; the ``ReLU``'s ``x_in`` and the ``MaxPool2D``'s ``x_in``, which never exist here, are
    ``None``.
    """

    def __init__(self, conv, relu, pool):
        self.conv, self.relu, self.pool = conv, relu, pool
        self.saved = None  # (channels-last output, places of the maxima)

    def forward(self, x_in):
        conv, pool = self.conv, self.pool
        images = conv.keep_input(x_in)
        pool.check_fits(*conv.output_shape(images)[1:3])
        y, argmax = conv.backend.conv2d_relu_maxpool_forward(
            images, conv.w, conv.b, conv.stride, conv.padding, pool.size, pool.stride)
        self.saved = y, argmax
        pool.forget_input()
        output = y.transpose(0, 3, 1, 2)
        self.relu.hold(x_in=None, x_out=output)
        return output

    def backward(self, d_out, input_gradient=True):
        conv, pool, (y, argmax) = self.conv, self.pool, _saved(self.saved, self.conv, self.relu, self.pool)
        dy = conv.gradient_in(d_out, y.shape, f"{self.conv!r} + {self.relu!r} + {self.pool!r}")
        dx = conv.backend.conv2d_relu_maxpool_backward(
            conv.kept_images(), conv.w, y, argmax, dy, conv.dw, conv.db, conv.stride, conv.padding, pool.size,
            pool.stride, accumulate=not conv.gradients_fresh(), need_dx=input_gradient,
        )
        conv.gradients_written()
        return None if dx is None else dx.transpose(0, 3, 1, 2)


class BatchNormReLU:
    """One stage of a :class:`~fastprop.Network` for a ``BatchNorm1D`` or ``BatchNorm2D`` and the
    ``ReLU`` after it: the ReLU runs in the normalisation's pass, and its mask in the backward's.
    The ``ReLU`` shows its output as ``x_out``; its ``x_in`` (never kept) is ``None``."""

    def __init__(self, norm, relu):
        self.norm, self.relu = norm, relu
        self.output = None  # the last output as (rows, features), the mask of the backward

    def forward(self, x_in):
        output, self.output = self.norm.normalize(x_in, relu=True)
        self.relu.hold(x_in=None, x_out=output)
        return output

    def backward(self, d_out, input_gradient=True):
        return self.norm.backpropagate(d_out, input_gradient, _saved(self.output, self.norm, self.relu))


class WeightedBatchNormReLU:
    """One stage of a :class:`~fastprop.Network` for a ``Linear`` or ``Conv2D``, a batch norm and a
    ``ReLU``. In training it runs the weighted layer, then :class:`BatchNormReLU`. In evaluation mode
    the batch norm is an affine map of fixed statistics, folded into the weights and bias
    (:meth:`~fastprop.layers.norm.BatchNorm.folded`): one product with the ReLU as its epilogue, the
    usual inference form. A backward after an evaluation-mode forward (rare: gradient checks, frozen
    statistics) computes the weighted layer's output again to differentiate the three layers."""

    def __init__(self, weighted, norm, relu):
        self.weighted, self.norm, self.relu = weighted, norm, relu
        self.tail = BatchNormReLU(norm, relu)
        self.folded_input = None  # the input of an evaluation-mode forward

    def forward(self, x_in):
        weighted, norm = self.weighted, self.norm
        if norm.training:
            self.folded_input = None
            return self.tail.forward(weighted.forward(x_in))
        weight, bias = norm.folded(weighted.w, weighted.b)
        if hasattr(weighted, "convolve"):  # a Conv2D: channels-last images in and out
            images = weighted.keep_input(x_in)
            output = weighted.backend.conv2d_forward(images, weight, bias, weighted.stride, weighted.padding,
                                                     relu=True).transpose(0, 3, 1, 2)
        else:
            output = weighted.backend.linear_relu_forward(weighted.checked_input(x_in), weight, bias)
        norm.forget_input()
        self.relu.hold(x_in=None, x_out=output)
        self.folded_input, self.tail.output = x_in, None
        return output

    def backward(self, d_out, input_gradient=True):
        if self.folded_input is not None:  # differentiate the unfolded layers at the same input
            self.tail.forward(self.weighted.forward(self.folded_input))
        return self.weighted.backward(self.tail.backward(d_out, True), input_gradient)
