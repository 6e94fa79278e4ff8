"""Image layers: ``Conv2D`` and ``MaxPool2D`` on batches of shape ``(batch, channels, height, width)``.

The arrays the layers return are ``(batch, channels, height, width)`` views of channels-last memory
(``(batch, height, width, channels)``, PyTorch's ``channels_last`` format): the backend kernels work
channels-last, where a convolution is one matrix product over contiguous rows, and consecutive image
layers hand each other their arrays without a copy. Anything else with the right shape is accepted
and copied to channels-last once.
"""

from __future__ import annotations


import numpy

from fastprop.backends.convolution import window_output

from .. import seeding
from ..checks import is_whole, positive_integer
from .base import Layer, WeightedLayer
from .linear import INITIALISERS, checked_init, checked_sigma


def _pair(value, name, where, minimum=1):
    """``value`` (an integer or two) as a ``(rows, columns)`` pair of integers >= ``minimum``."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(is_whole(v) and v >= minimum for v in values):
        kind = "positive" if minimum else "non-negative"
        raise ValueError(f"{where} needs {name} as a {kind} integer or a pair of them, got {value!r}.")
    return int(values[0]), int(values[1])


class ImageLayer(Layer):
    """Shared boundary of the image layers: inputs ``(batch, channels, height, width)`` (one image
    ``(channels, height, width)`` is a batch of one), kept channels-last for the kernels."""

    batch_attributes = ("x_in", "_images")
    x_in = _images = None
    #: Channels the input must have (``None``: any).
    channels = None

    def _window(self):
        """``(kernel, stride, padding)`` pairs of the layer's sliding window."""
        raise NotImplementedError

    def _expected(self) -> str:
        channels = "channels" if self.channels is None else self.channels
        return f"(batch, {channels}, height, width)"

    def images_in(self, x_in):
        """``x_in`` checked, as ``(x_in, channels-last contiguous copy or view)``."""
        x = self._accept(x_in)
        if x.ndim == 3:
            x = x.reshape((1,) + tuple(x.shape))
        if x.ndim != 4 or (self.channels is not None and x.shape[1] != self.channels):
            hint = " (put Reshape((1, 28, 28)) first for rows of 784 pixels)" if x.ndim == 2 else ""
            raise ValueError(
                f"{self!r} expected input of shape {self._expected()}, got {tuple(x.shape)}; "
                f"give a batch of images{hint}."
            )
        self.check_fits(x.shape[2], x.shape[3])
        return x, self.backend.xp.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def keep_input(self, x_in):
        """Check ``x_in`` and keep it for the backward pass (``x_in`` as given, and its channels-last
        images); return the images. Fused steps call it: the layer's state stays its own."""
        self.x_in, self._images = self.images_in(x_in)
        return self._images

    def kept_images(self):
        """The channels-last images of the last input (for the backward pass of a fused step)."""
        return self._saved("_images")

    def check_fits(self, height, width):
        """One clear error unless images of ``height`` x ``width`` pixels fit the window."""
        (kh, kw), _, (ph, pw) = self._window()
        if height + 2 * ph < kh or width + 2 * pw < kw:
            raise ValueError(
                f"{self!r} got images of {height} x {width} pixels, smaller than its {kh} x {kw} window; "
                "give larger images or a smaller window."
            )

    def output_channels(self, channels):
        """Channels of the output for inputs of ``channels`` (the same for pooling)."""
        return channels

    def output_shape(self, images):
        """The channels-last output shape for channels-last ``images``."""
        n, H, W, C = images.shape
        return n, *window_output(H, W, *self._window()), self.output_channels(C)

    def gradient_in(self, d_out, output_shape=None, where=None):
        """``d_out`` checked against the last output (of channels-last ``output_shape``, this layer's
        by default), as a channels-last contiguous array; ``where`` names the step in the error."""
        n, ho, wo, k = output_shape or self.output_shape(self._saved("_images"))
        d = self._accept(d_out, "gradient")
        if d.ndim == 3 and n == 1:
            d = d.reshape((1,) + tuple(d.shape))
        if tuple(d.shape) != (n, k, ho, wo):
            raise ValueError(
                f"{where or repr(self)}.backward expected a gradient of shape {(n, k, ho, wo)} matching its "
                f"last output, got {tuple(d.shape)}."
            )
        return self.backend.xp.ascontiguousarray(d.transpose(0, 2, 3, 1))


class Conv2D(ImageLayer, WeightedLayer):
    """2-D convolution (cross-correlation, as in PyTorch and Keras) with a bias.

    Input ``(batch, in_channels, H, W)``, output ``(batch, out_channels, Ho, Wo)`` with
    ``Ho = (H + 2 * padding - kernel) // stride + 1`` (likewise ``Wo``): ``out[i, k, r, c] = b[0, k] +
    sum over j, p, q of xpad[i, j, r * stride + p, c * stride + q] * w[k, j, p, q]``, where ``xpad``
    is the input with ``padding`` zeros on each side. ``kernel_size``, ``stride`` and ``padding``
    are an integer or a ``(rows, columns)`` pair.

    Notebook-style attributes: ``w`` ``(out_channels, in_channels, kh, kw)``, ``b`` ``(1,
    out_channels)`` starting at zero, ``dw`` and ``db`` summed since ``zero_gradients``, ``x_in`` the
    last input. ``init="he"`` (the default) draws ``w`` from N(0, 2 / fan_in) with ``fan_in =
    in_channels * kh * kw``, the scale ReLU networks need; ``"xavier"`` uses ``2 / (fan_in + fan_out)``;
    ``"normal"`` uses ``initial_sigma`` as :class:`Linear` does. In a :class:`Network` a ``ReLU``
    right after a ``Conv2D`` runs in the convolution's epilogue, and a ``ReLU`` then ``MaxPool2D``
    with it in one step (:mod:`fastprop.layers.fused`).
    """

    checkpoint_arguments = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "init")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, initial_sigma=0.1, *,
                 init="he", rng=None):
        initial_sigma = checked_sigma(initial_sigma, "Conv2D")
        self._configure(in_channels, out_channels, kernel_size, stride, padding, init)
        (kh, kw), area = self.kernel_size, self.kernel_size[0] * self.kernel_size[1]
        sigma = INITIALISERS[init](self.in_channels * area, self.out_channels * area, initial_sigma)
        shape = (self.out_channels, self.in_channels, kh, kw)
        self._allocate(sigma * seeding.weights_generator(rng).standard_normal(shape),
                       numpy.zeros((1, self.out_channels)))

    def _configure(self, in_channels, out_channels, kernel_size, stride, padding, init):
        super().__init__()
        self.in_channels = positive_integer(in_channels, "in_channels", "Conv2D")
        self.out_channels = positive_integer(out_channels, "out_channels", "Conv2D")
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2D")
        self.stride = _pair(stride, "stride", "Conv2D")
        self.padding = _pair(padding, "padding", "Conv2D", minimum=0)
        self.init = checked_init(init, "Conv2D")
        self.channels = self.in_channels

    def _allocate(self, w, b):
        self.w, self.b = w, b
        self.dw, self.db = numpy.zeros(self.w.shape), numpy.zeros((1, self.out_channels))

    @classmethod
    def parameter_shapes(cls, in_channels, out_channels, kernel_size, stride, padding, init):
        kh, kw = _pair(kernel_size, "kernel_size", "Conv2D")
        return {"w": (out_channels, in_channels, kh, kw), "b": (1, out_channels)}

    def __repr__(self) -> str:
        settings = (("stride", self.stride, 1), ("padding", self.padding, 0))
        options = "".join(f", {name}={value[0] if value[0] == value[1] else value}"
                          for name, value, default in settings if value != (default, default))
        k = self.kernel_size
        return f"Conv2D({self.in_channels}, {self.out_channels}, {k[0] if k[0] == k[1] else k}{options})"

    def _window(self):
        return self.kernel_size, self.stride, self.padding

    def output_channels(self, channels):
        return self.out_channels

    def forward(self, x_in):
        return self.convolve(x_in).transpose(0, 3, 1, 2)

    def backward(self, d_out, input_gradient=True):
        dx = self.convolve_backward(self.gradient_in(d_out), input_gradient)
        return None if dx is None else dx.transpose(0, 3, 1, 2)

    def convolve(self, x_in, relu=False):
        """The channels-last output for ``x_in``; with ``relu`` (a ``ReLU`` fused after this layer)
        ``max(output, 0)``."""
        images = self.keep_input(x_in)
        return self.backend.conv2d_forward(images, self.w, self.b, self.stride, self.padding, relu=relu)

    def convolve_backward(self, dy, input_gradient, output=None):
        """The channels-last input gradient (or ``None``) for the checked channels-last gradient ``dy``
        (:meth:`gradient_in`); ``output`` is the fused ``ReLU``'s last channels-last output, whose
        zeros mask ``dy``."""
        dx = self.backend.conv2d_backward(
            self._images, self.w, output, dy, self.dw, self.db, self.stride, self.padding,
            relu=output is not None, accumulate=not self.gradients_fresh(), need_dx=input_gradient,
        )
        self.gradients_written()
        return dx


class MaxPool2D(ImageLayer):
    """Maximum over ``size`` windows moved by ``stride`` (``size`` when not given), no padding.

    Input ``(batch, channels, H, W)``, output ``(batch, channels, Ho, Wo)`` with ``Ho = (H - size) //
    stride + 1`` (rows and columns that fit no whole window are dropped, as in PyTorch). ``size`` and
    ``stride`` are an integer or a ``(rows, columns)`` pair. The place of each maximum is kept from
    ``forward``; ``backward`` sends each gradient there (the first of equal values; summed where
    windows overlap). NaN inputs propagate.
    """

    batch_attributes = ("x_in", "_images", "_argmax")
    checkpoint_arguments = ("size", "stride")
    _argmax = None

    def __init__(self, size, stride=None):
        super().__init__()
        self.size = _pair(size, "size", "MaxPool2D")
        self.stride = self.size if stride is None else _pair(stride, "stride", "MaxPool2D")

    def __repr__(self) -> str:
        size = self.size[0] if self.size[0] == self.size[1] else self.size
        stride = "" if self.stride == self.size else (
            f", stride={self.stride[0] if self.stride[0] == self.stride[1] else self.stride}")
        return f"MaxPool2D({size}{stride})"

    def _window(self):
        return self.size, self.stride, (0, 0)

    def forward(self, x_in):
        return self.pool(x_in).transpose(0, 3, 1, 2)

    def backward(self, d_out, input_gradient=True):
        dy = self.gradient_in(d_out)
        return self.unpool(dy).transpose(0, 3, 1, 2) if input_gradient else None

    def pool(self, x_in):
        """The channels-last pooled output for ``x_in`` (the places of the maxima are kept)."""
        self.x_in, self._images = self.images_in(x_in)
        y, self._argmax = self.backend.maxpool2d_forward(self._images, self.size, self.stride)
        return y

    def unpool(self, dy):
        """The channels-last input gradient for the checked channels-last gradient ``dy``."""
        return self.backend.maxpool2d_backward(self._argmax, dy, self.size, self.stride, self._images.shape)
