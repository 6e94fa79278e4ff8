"""The backend contract's convolutions and max pooling, as NumPy reference code (see ``backends/base.py``).

Images are channels-last, ``(batch, height, width, channels)``, in the kernels: a convolution is then
one matrix product over rows of ``kh * kw * channels`` contiguous values, and its output rows are
already the next layer's input. The layers show them as ``(batch, channels, height, width)`` views of
the same memory. Convolution weights are ``(out_channels, in_channels, kh, kw)``, biases ``(1,
out_channels)``. ``stride`` and ``padding`` are ``(rows, columns)`` pairs; padding adds zeros; an
output has ``(H + 2 * padding - kh) // stride + 1`` rows.

:class:`ConvolutionReference` holds these contract methods for :class:`.base.Backend`, which provides
what they call: ``xp``, ``relu``, ``relu_backward`` and ``_store_gradients``.
"""

from __future__ import annotations


def window_output(height, width, kernel, stride, padding=(0, 0)):
    """``(Ho, Wo)``: the positions of a ``kernel`` window moved by ``stride`` over ``height`` x ``width``
    images with ``padding`` zeros on each side (``(rows, columns)`` pairs), windows that do not fit
    dropped: ``Ho = (height + 2 * padding - kernel) // stride + 1``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1


class ConvolutionReference:
    """The convolution and pooling methods of the backend contract (mixed into :class:`.base.Backend`)."""

    def conv2d_forward(self, x, W, b, stride, padding, *, relu=False):
        """Cross-correlation of ``x`` ``(n, H, W, C)`` with ``W`` ``(K, C, kh, kw)`` plus ``b``:
        ``y[i, r, c, k] = b[0, k] + sum_{p, q, j} xpad[i, r * sh + p, c * sw + q, j] * W[k, j, p, q]``,
        ``(n, Ho, Wo, K)``; with ``relu`` the result is ``max(y, 0)`` (the convolution's epilogue)."""
        n, K = x.shape[0], W.shape[0]
        columns, (ho, wo) = self._im2col(x, W.shape[2:], stride, padding)
        y = columns @ self._weight_matrix(W).T
        y += b
        if relu:
            self.xp.maximum(y, 0, out=y)
        return y.reshape(n, ho, wo, K)

    def conv2d_backward(self, x, W, y, dy, dW, db, stride, padding, *, relu=False,
                        accumulate=True, need_dx=True):
        """Gradients of :meth:`conv2d_forward` given ``dy = dL/dy`` ``(n, Ho, Wo, K)``.

        With ``relu``, ``y`` is the forward's output and ``dy`` is first masked where ``y <= 0``
        (``y`` is not read otherwise). Adds (or with ``accumulate=False`` writes) the weight gradient
        into ``dW`` ``(K, C, kh, kw)`` and the bias gradient into ``db`` ``(1, K)``; returns ``dx``
        ``(n, H, W, C)`` when ``need_dx``, else ``None``.
        """
        xp, K, C, kh, kw = self.xp, *W.shape
        dz = dy * (y > 0) if relu else dy
        dz = dz.reshape(-1, K)
        columns, _ = self._im2col(x, (kh, kw), stride, padding)
        self._store_conv_gradients(dW, db, columns.T @ dz, dz.sum(axis=0, keepdims=True), accumulate)
        if not need_dx:
            return None
        d_columns = (dz @ self._weight_matrix(W)).reshape(*dy.shape[:3], kh, kw, C)
        (sh, sw), (ph, pw) = stride, padding
        n, H, Wd = x.shape[:3]
        dx = xp.zeros((n, H + 2 * ph, Wd + 2 * pw, C), dtype=dy.dtype)
        ho, wo = dy.shape[1:3]
        for p in range(kh):
            for q in range(kw):
                dx[:, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw] += d_columns[:, :, :, p, q]
        return dx[:, ph:ph + H, pw:pw + Wd]

    def _store_conv_gradients(self, dW, db, by_tap, bias_gradient, accumulate):
        """Add (or with ``accumulate=False`` write) a convolution's gradients: ``by_tap`` is the weight
        gradient as ``(kh * kw * C, K)``, rows ordered ``(p, q, channel)`` as :meth:`_im2col`'s columns."""
        K, C, kh, kw = dW.shape
        by_weight = by_tap.T.reshape(K, kh, kw, C).transpose(0, 3, 1, 2)
        self._store_gradients(((dW, by_weight), (db, bias_gradient)), accumulate)

    def _im2col(self, x, kernel, stride, padding):
        """Rows of ``kh * kw * C`` input values, one per output position: ``(n * Ho * Wo, kh * kw * C)``,
        ordered ``(p, q, channel)``, and ``(Ho, Wo)``."""
        xp, (kh, kw), (sh, sw), (ph, pw) = self.xp, kernel, stride, padding
        n, H, Wd, C = x.shape
        ho, wo = window_output(H, Wd, kernel, stride, padding)
        if ph or pw:
            padded = xp.zeros((n, H + 2 * ph, Wd + 2 * pw, C), dtype=x.dtype)
            padded[:, ph:ph + H, pw:pw + Wd] = x
            x = padded
        columns = xp.empty((n, ho, wo, kh, kw, C), dtype=x.dtype)
        for p in range(kh):
            for q in range(kw):
                columns[:, :, :, p, q] = x[:, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw]
        return columns.reshape(n * ho * wo, kh * kw * C), (ho, wo)

    def _weight_matrix(self, W):
        """``W`` ``(K, C, kh, kw)`` as ``(K, kh * kw * C)``, matching :meth:`_im2col`'s columns."""
        return W.transpose(0, 2, 3, 1).reshape(W.shape[0], -1)

    def maxpool2d_forward(self, x, size, stride):
        """Maximum over ``size`` windows (``(rows, columns)``) moved by ``stride`` of ``x`` ``(n, H, W,
        C)``: returns ``(y, argmax)``, ``y`` ``(n, Ho, Wo, C)`` with ``Ho = (H - kh) // sh + 1``, and
        ``argmax`` the same shape, an integer array holding each maximum's place in its window
        (``p * kw + q``; the first of equal values; a NaN wins, so NaNs propagate)."""
        xp, (kh, kw), (sh, sw) = self.xp, size, stride
        n, H, Wd, C = x.shape
        ho, wo = window_output(H, Wd, size, stride)
        y = argmax = None
        for p in range(kh):
            for q in range(kw):
                window = x[:, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw]
                if y is None:
                    y, argmax = window.copy(), xp.zeros(window.shape, dtype=xp.int32)
                    continue
                better = (window > y) | (xp.isnan(window) & ~xp.isnan(y))
                y[better] = window[better]
                argmax[better] = p * kw + q
        return y, argmax

    def maxpool2d_backward(self, argmax, dy, size, stride, input_shape):
        """Route ``dy`` ``(n, Ho, Wo, C)`` back to each window's maximum (``argmax`` from
        :meth:`maxpool2d_forward`), summing where windows overlap: returns ``dx`` of ``input_shape``."""
        xp, (kh, kw), (sh, sw) = self.xp, size, stride
        dx = xp.zeros(tuple(input_shape), dtype=dy.dtype)
        ho, wo = dy.shape[1:3]
        for p in range(kh):
            for q in range(kw):
                dx[:, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw] += dy * (argmax == p * kw + q)
        return dx

    def conv2d_relu_maxpool_forward(self, x, W, b, stride, padding, size, pool_stride):
        """A convolution, a ReLU and a max pooling as one step: ``(y, argmax)`` of
        :meth:`maxpool2d_forward` on ``max(conv2d_forward(x, W, b, stride, padding), 0)``.

        The ReLU runs after the pooling (``max(relu(a), relu(b)) = relu(max(a, b))``); ``argmax``
        holds the places of the maxima of the convolution's output (where a whole window is
        negative it may differ from the place in the ReLU's output, whose gradient is zero there).
        """
        y, argmax = self.maxpool2d_forward(self.conv2d_forward(x, W, b, stride, padding), size, pool_stride)
        return self.relu(y.reshape(-1, y.shape[-1])).reshape(y.shape), argmax  # rows: the 2-D kernels

    def conv2d_relu_maxpool_backward(self, x, W, y, argmax, dy, dW, db, stride, padding, size, pool_stride,
                                     *, accumulate=True, need_dx=True):
        """Gradients of :meth:`conv2d_relu_maxpool_forward` given its output ``y``, ``argmax`` and
        ``dy = dL/dy``: the weight and bias gradients into ``dW`` and ``db`` (added, or written with
        ``accumulate=False``); returns ``dx`` when ``need_dx``, else ``None``."""
        n, H, Wd = x.shape[:3]
        conv_shape = (n, *window_output(H, Wd, W.shape[2:], stride, padding), W.shape[0])
        rows = (-1, y.shape[-1])
        masked = self.relu_backward(y.reshape(rows), dy.reshape(rows)).reshape(y.shape)
        dz = self.maxpool2d_backward(argmax, masked, size, pool_stride, conv_shape)
        return self.conv2d_backward(x, W, None, dz, dW, db, stride, padding, accumulate=accumulate,
                                    need_dx=need_dx)
