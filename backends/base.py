"""The backend contract: every array operation fastprop's layers need, as NumPy reference code.

A backend is an object with an array module ``xp`` (``numpy``, ``cupy``, ...) and the methods below.
The methods here are written once on ``self.xp`` and are the reference implementations: a new
backend subclasses :class:`Backend`, sets ``xp``, and overrides only the kernels it speeds up,
calling ``super()`` for the cases (dtypes, shapes) its kernels do not handle.

Conventions for every method:

* Arrays are row-major batches: ``x`` is ``(batch, n_in)``, weights ``W`` are ``(n_out, n_in)``,
  biases ``b`` are ``(1, n_out)``, outputs ``(batch, n_out)``.
* Every array passed in already belongs to this backend and has the working dtype (float32 or
  float64); methods never change the dtype of what they are given.
* ``dW`` and ``db`` arguments are gradient buffers owned by a layer. With ``accumulate=True`` the
  method adds into them (the notebook's "gradients accumulate until ``zero_gradients``"); with
  ``accumulate=False`` it overwrites them, which saves a pass right after ``zero_gradients``.
* Input gradients are computed only when ``need_dx`` is true; otherwise the method returns ``None``.

The convolution and pooling methods (channels-last images) are in ``backends/convolution.py``
(:class:`~.convolution.ConvolutionReference`, a base of :class:`Backend`).
"""

from __future__ import annotations

import math

import numpy

from .convolution import ConvolutionReference


class Backend(ConvolutionReference):
    """NumPy reference implementation of the fastprop backend contract."""

    #: Registered name, set by :func:`fastprop.backends.register_backend`.
    name: str = "numpy"
    #: The array module the layers compute with.
    xp = numpy

    def __deepcopy__(self, memo):
        """Backends are shared: a copied layer keeps computing on the same backend object."""
        return self

    # ------------------------------------------------------------------ information and transfer

    def info(self) -> dict:
        """Return ``{"version": str, "device": str}`` describing what this backend runs on."""
        return {"version": f"numpy {numpy.__version__}", "device": "cpu"}

    def synchronize(self) -> None:
        """Block until queued work is done (a no-op on the CPU; GPU timings need it)."""

    def warmup(self, dtype) -> float:
        """Compile or load whatever this backend compiles for ``dtype``; return the seconds it took.

        The reference backend compiles nothing. JIT backends run their kernels once on tiny inputs
        here so that the first training step is not charged with compilation.
        """
        return 0.0

    def compile_epoch(self, plan, images, targets, batch_size):
        """An optional fast path that runs a whole training epoch without per-batch Python.

        ``plan`` is the network and cost lowered to an :class:`~fastprop.backends.plan.EpochPlan`
        (dense layers whose parameters are read live, and a loss).

        Return ``None`` (the reference does) to let :func:`fastprop.train` run its step loop, or a
        callable ``run(order, learning_rate) -> costs`` that performs the step loop's updates (the
        same math; results may differ by float rounding) for the batches
        ``order[i * batch_size:(i + 1) * batch_size]`` of the backend arrays ``images`` and
        ``targets``, leaving parameters and gradients as the step loop would (the caller marks the
        layers' gradients as written). ``costs`` is a float64 backend array of two summed costs:
        over the batches as long as the first, and over a shorter last batch (0 when there is
        none); the caller turns them into the mean over batches. Only used with plain SGD.
        """
        return None

    def is_native(self, array) -> bool:
        """True when ``array`` is this backend's own array type. A host backend never claims a device
        array (one offering ``__cuda_array_interface__``), even one that subclasses its array type."""
        if not isinstance(array, self.xp.ndarray):
            return False
        return self.xp is not numpy or not hasattr(array, "__cuda_array_interface__")

    def asarray(self, data, dtype=None):
        """Copy host data (NumPy arrays, lists, scalars) onto this backend, converted to ``dtype``."""
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array) -> numpy.ndarray:
        """Return ``array`` as a host NumPy array (no copy when it already is one)."""
        return numpy.asarray(array)

    def zeros(self, shape, dtype):
        """A new zero-filled array of ``shape`` and ``dtype``."""
        return self.xp.zeros(shape, dtype=dtype)

    def random_normal(self, rng: numpy.random.Generator, shape, sigma: float, dtype):
        """Normal(0, sigma) samples of ``shape`` drawn from the host generator ``rng``.

        Drawing on the host makes a seeded network identical on every backend.
        """
        return self.asarray(rng.normal(0.0, sigma, size=shape), dtype=dtype)

    def random_uniform(self, rng: numpy.random.Generator, shape, dtype):
        """Uniform[0, 1) samples of ``shape`` from the host generator ``rng`` (dropout masks)."""
        return self.asarray(rng.random(size=shape), dtype=dtype)

    def permutation(self, rng: numpy.random.Generator, n: int):
        """A random permutation of ``range(n)`` as a backend index array (epoch shuffling)."""
        return self.asarray(rng.permutation(n))

    def take_rows(self, array, indices, out=None):
        """``array[indices]`` along axis 0, written into ``out`` when given (batch gathering).

        Indices follow Python's rules (``-1`` is the last row); one out of range raises IndexError.
        With ``out`` the range is checked first and NumPy then takes with ``mode="wrap"``, which
        writes straight into ``out`` (its checking mode goes through a temporary copy).
        """
        if out is None:
            return self.xp.take(array, indices, axis=0)
        n = array.shape[0]
        if indices.size and not (-n <= int(indices.min()) and int(indices.max()) < n):
            raise IndexError(
                f"take_rows got row indices from {int(indices.min())} to {int(indices.max())} for an "
                f"array of {n} rows; give indices in [-{n}, {n})."
            )
        return self.xp.take(array, indices, axis=0, out=out, mode="wrap")

    #: Words per block of :meth:`checksum`'s reference (a few MiB of temporaries at a time).
    CHECKSUM_BLOCK = 2**18
    #: True where :meth:`checksum` costs much less than converting and checking the data again (the
    #: reference's NumPy passes do not): callers may then keep data they prepared once per array.
    fast_checksum = False

    def checksum(self, array) -> int:
        """A 64-bit checksum of ``array``'s values, to tell whether an array changed since it was last
        prepared (data kept once per array, not prepared again every epoch).

        The array's bytes in C order, as little-endian 64-bit words ``w[i]`` (the last one zero-padded),
        give ``sum(mix(w[i] ^ (i * 0x9E3779B97F4A7C15))) mod 2**64``, where ``mix`` is SplitMix64's
        finalizer: every bit of every word reaches the sum, and a word moved to another place gives
        another term, so a change of any value changes the checksum except with probability about
        ``2**-64``. A sum, so any order of the blocks gives the same bits. Not a cryptographic hash.
        """
        xp, words = self.xp, self._checksum_words(array)
        total = xp.zeros(1, xp.uint64)  # an array: its sums wrap around without a warning
        for start in range(0, words.size, self.CHECKSUM_BLOCK):
            block = words[start:start + self.CHECKSUM_BLOCK]
            place = xp.arange(start, start + block.size, dtype=xp.uint64) * xp.uint64(0x9E3779B97F4A7C15)
            mixed = block ^ place
            mixed ^= mixed >> xp.uint64(30)
            mixed *= xp.uint64(0xBF58476D1CE4E5B9)
            mixed ^= mixed >> xp.uint64(27)
            mixed *= xp.uint64(0x94D049BB133111EB)
            mixed ^= mixed >> xp.uint64(31)
            total += mixed.sum(dtype=xp.uint64, keepdims=True)
        return int(total[0])

    def _checksum_words(self, array):
        """``array``'s bytes in C order as uint64 words, the last one zero-padded (see :meth:`checksum`)."""
        xp = self.xp
        raw = xp.ascontiguousarray(array).reshape(-1).view(xp.uint8)
        whole = raw.size - raw.size % 8
        words = raw[:whole].view(xp.uint64)
        if whole < raw.size:
            tail = xp.zeros(8, xp.uint8)
            tail[:raw.size - whole] = raw[whole:]
            words = xp.concatenate([words, tail.view(xp.uint64)])
        return words

    # ------------------------------------------------------------------ linear layer

    def linear_forward(self, x, W, b):
        """Return ``z = x @ W.T + b`` with shape ``(batch, n_out)``."""
        z = x @ W.T
        z += b
        return z

    def linear_backward(self, x, W, dz, dW, db, *, accumulate=True, need_dx=True):
        """Given ``dz = dL/dz``, add ``dz.T @ x`` to ``dW`` and ``dz.sum(0)`` to ``db``.

        Returns ``dx = dz @ W`` of shape ``(batch, n_in)`` when ``need_dx``, else ``None``.
        """
        if accumulate:
            dW += dz.T @ x
            db += dz.sum(axis=0, keepdims=True)
        else:
            self.xp.matmul(dz.T, x, out=dW)
            self.xp.sum(dz, axis=0, keepdims=True, out=db)
        return dz @ W if need_dx else None

    # ------------------------------------------------------------------ activations

    def sigmoid(self, z):
        """Return ``1 / (1 + exp(-z))`` (no overflow warnings for large ``|z|``)."""
        xp = self.xp
        with numpy.errstate(over="ignore"):
            p = xp.exp(-z)
        p += 1
        return xp.reciprocal(p, out=p)

    def sigmoid_backward(self, p, dp):
        """Given the sigmoid's output ``p`` and ``dp = dL/dp``, return ``dL/dz = dp * (p * (1 - p))``."""
        return dp * (p * (1 - p))

    def relu(self, z):
        """Return ``max(z, 0)``."""
        return self.xp.maximum(z, 0)

    def relu_backward(self, y, dy):
        """Given the ReLU's output ``y`` and ``dy``, return ``dy`` where ``y > 0`` and 0 elsewhere."""
        return dy * (y > 0)

    def tanh(self, z):
        """Return ``tanh(z)``."""
        return self.xp.tanh(z)

    def tanh_backward(self, y, dy):
        """Given the tanh's output ``y`` and ``dy``, return ``dy * (1 - y**2)``."""
        return dy * (1 - y * y)

    def softmax(self, z):
        """Row-wise softmax of ``z`` (shifted by the row maximum, so it never overflows)."""
        xp = self.xp
        e = xp.exp(z - z.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        return e

    def softmax_backward(self, s, ds):
        """Exact Jacobian-vector product of the softmax: ``s * (ds - sum(ds * s, axis=1))``."""
        return s * (ds - (ds * s).sum(axis=1, keepdims=True))

    def log_softmax(self, z):
        """Row-wise ``log(softmax(z))`` computed without forming the softmax."""
        xp = self.xp
        shifted = z - z.max(axis=1, keepdims=True)
        shifted -= xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        return shifted

    # ------------------------------------------------------------------ fused kernels

    def linear_sigmoid_forward(self, x, W, b):
        """Fused forward of a Linear followed by a Sigmoid: return ``(z, p)`` with ``z = x @ W.T + b``
        and ``p = sigmoid(z)``, both ``(batch, n_out)`` (the layers keep both, as unfused ones do)."""
        z = self.linear_forward(x, W, b)
        return z, self.sigmoid(z.copy())

    def linear_sigmoid_backward(self, x, W, p, dp, dW, db, *, accumulate=True, need_dx=True):
        """Fused backward of Linear+Sigmoid: ``dz = dp * p * (1 - p)``, then as :meth:`linear_backward`."""
        return self.linear_backward(
            x, W, self.sigmoid_backward(p, dp), dW, db, accumulate=accumulate, need_dx=need_dx
        )

    def linear_relu_forward(self, x, W, b):
        """Fused forward of a Linear followed by a ReLU: return ``y = max(x @ W.T + b, 0)``, ``(batch,
        n_out)`` (the pre-activation is not kept: the backward pass needs ``y`` only)."""
        y = self.linear_forward(x, W, b)
        return self.xp.maximum(y, 0, out=y)

    def linear_relu_backward(self, x, W, y, dy, dW, db, *, accumulate=True, need_dx=True):
        """Fused backward of Linear+ReLU given the forward's output ``y``: ``dz = dy`` where ``y > 0``
        and 0 elsewhere, then as :meth:`linear_backward`."""
        return self.linear_backward(
            x, W, self.relu_backward(y, dy), dW, db, accumulate=accumulate, need_dx=need_dx
        )

    def softmax_cross_entropy(self, z, t):
        """Per-element cross-entropy of targets ``t`` against ``softmax(z)``: ``-t * log_softmax(z)``."""
        return -t * self.log_softmax(z)

    def softmax_cross_entropy_gradient(self, z, t):
        """Gradient of ``sum(-t * log_softmax(z))`` with respect to the logits ``z``.

        Equals ``softmax(z) - t`` for one-hot rows; written as ``softmax(z) * sum(t) - t`` so it is
        exact for any target rows.
        """
        return self.softmax(z) * t.sum(axis=1, keepdims=True) - t

    # ------------------------------------------------------------------ batch normalisation
    #
    # The statistics are per column of a ``(rows, C)`` matrix: a BatchNorm1D's batch, or a BatchNorm2D's
    # channels-last images with their ``n * H * W`` pixels as rows. ``gamma``, ``beta``, ``mean`` and
    # ``var`` (the running statistics) have shape ``(C,)``.

    def batch_norm_forward(self, x, gamma, beta, mean, var, *, training, momentum, eps, relu=False):
        """``y = (x - mu) * inverse_std * gamma + beta`` per column (then ``max(y, 0)`` with ``relu``,
        a ``ReLU`` fused after the batch norm), with ``inverse_std = 1 / sqrt(v + eps)``.

        In training ``mu`` and ``v`` are the batch's column mean and (biased) variance, and the running
        ``mean`` and ``var`` move in place towards them: ``mean = (1 - momentum) mean + momentum mu``,
        ``var = (1 - momentum) var + momentum v rows / (rows - 1)`` (the unbiased variance, as PyTorch
        keeps it); ``rows`` must be at least 2. Otherwise ``mu, v = mean, var``. Returns ``(y, mu,
        inverse_std)``, what :meth:`batch_norm_backward` takes (``mu`` a new array)."""
        xp, rows = self.xp, x.shape[0]
        if training:
            mu = x.mean(axis=0)
            centered = x - mu
            v = (centered * centered).mean(axis=0)
            mean *= 1.0 - momentum
            mean += momentum * mu
            var *= 1.0 - momentum
            var += (momentum * rows / (rows - 1)) * v
        else:
            mu, v = mean.copy(), var
            centered = x - mu
        inverse_std = 1.0 / xp.sqrt(v + eps)
        y = centered * (inverse_std * gamma) + beta
        if relu:
            xp.maximum(y, 0, out=y)
        return y.astype(x.dtype, copy=False), mu, inverse_std.astype(x.dtype, copy=False)

    def batch_norm_backward(self, x, mu, inverse_std, gamma, dy, dgamma, dbeta, relu_output=None, *, training,
                            accumulate=True, need_dx=True):
        """Gradients of :meth:`batch_norm_forward` for the output gradient ``dy`` ``(rows, C)`` (with a
        fused ``ReLU``, ``relu_output`` is the forward's output and ``dy`` counts only where it is
        positive):
        ``dbeta (+)= sum(dy)``, ``dgamma (+)= sum(dy * x_hat)`` per column (``x_hat = (x - mu) *
        inverse_std``; summed into the buffers when ``accumulate``), and returns ``dx``, or ``None``
        unless ``need_dx``. In training the batch statistics depend on ``x``: ``dx = gamma *
        inverse_std * (dy - mean(dy) - x_hat * mean(dy * x_hat))`` per column; otherwise ``dx = gamma *
        inverse_std * dy``."""
        if relu_output is not None:
            dy = dy * (relu_output > 0)
        x_hat = (x - mu) * inverse_std
        bias_gradient = dy.sum(axis=0)
        scale_gradient = (dy * x_hat).sum(axis=0)
        self._store_gradients(((dbeta, bias_gradient), (dgamma, scale_gradient)), accumulate)
        if not need_dx:
            return None
        scale = gamma * inverse_std
        if not training:
            return (dy * scale).astype(x.dtype, copy=False)
        rows = x.shape[0]
        dx = dy - bias_gradient / rows
        dx -= x_hat * (scale_gradient / rows)
        dx *= scale
        return dx.astype(x.dtype, copy=False)

    # ------------------------------------------------------------------ data augmentation

    def shift_images(self, images, shifts, flips):
        """A new array of ``images`` ``(n, C, H, W)``, each flipped left to right where ``flips[i]``,
        then moved down by ``shifts[i, 0]`` rows and right by ``shifts[i, 1]`` columns, with zeros
        where nothing moved in (a crop of the image padded with zeros). ``shifts`` ``(n, 2)`` integers
        and ``flips`` ``(n,)`` booleans are host NumPy arrays."""
        xp = self.xp
        height, width = images.shape[2:]
        out = xp.zeros_like(images)
        keys = numpy.stack([shifts[:, 0], shifts[:, 1], flips.astype(numpy.int64)], axis=1)
        unique, group = numpy.unique(keys, axis=0, return_inverse=True)
        for index, (down, right, flip) in enumerate(unique):  # one copy per distinct move
            members = xp.asarray(numpy.flatnonzero(group.reshape(-1) == index))
            source = images[members]
            if flip:
                source = source[..., ::-1]
            (to_rows, from_rows), (to_columns, from_columns) = _moved(down, height), _moved(right, width)
            moved = xp.zeros_like(source)
            moved[:, :, to_rows, to_columns] = source[:, :, from_rows, from_columns]
            out[members] = moved
        return out

    # ------------------------------------------------------------------ parameter updates

    def sgd_update(self, param, grad, learning_rate: float) -> None:
        """In place: ``param -= learning_rate * grad``."""
        param -= learning_rate * grad

    def momentum_update(self, param, grad, velocity, learning_rate, momentum, *,
                        nesterov=False, weight_decay=0.0):
        """In place: one SGD step with momentum, PyTorch's formulation.

        ``velocity = momentum * velocity + g`` with ``g = grad + weight_decay * param``, then
        ``param -= learning_rate * velocity``, or with ``nesterov``
        ``param -= learning_rate * (g + momentum * velocity)``. All arrays share ``param``'s shape and
        dtype; ``grad`` is not modified.
        """
        velocity *= momentum
        velocity += grad
        if weight_decay:
            velocity += weight_decay * param
        if nesterov:
            # param -= lr (grad + weight_decay param + momentum velocity), one term at a time.
            if weight_decay:
                param *= 1.0 - learning_rate * weight_decay
            self.sgd_update(param, grad, learning_rate)
            self.sgd_update(param, velocity, learning_rate * momentum)
        else:
            self.sgd_update(param, velocity, learning_rate)

    def adam_update(self, param, grad, first_moment, second_moment, scratch, learning_rate,
                    beta1, beta2, eps, step, *, weight_decay=0.0, decoupled=False):
        """In place: one Adam step (AdamW when ``decoupled``) with bias correction, PyTorch's formulation.

        ``g = grad + weight_decay * param`` (L2; with ``decoupled`` instead ``param *= 1 -
        learning_rate * weight_decay`` first), ``m = beta1 m + (1 - beta1) g``,
        ``v = beta2 v + (1 - beta2) g**2``, then ``param -= learning_rate / (1 - beta1**step) * m /
        (sqrt(v) / sqrt(1 - beta2**step) + eps)``. ``step`` counts from 1. ``scratch`` is a work buffer
        shaped like ``param`` whose contents are undefined afterwards; ``grad`` is not modified.
        """
        xp = self.xp
        g = grad
        if weight_decay and decoupled:
            param *= 1.0 - learning_rate * weight_decay
        elif weight_decay:
            g = xp.multiply(param, weight_decay, out=scratch)
            g += grad
        # m = g + beta1 (m - g) is beta1 m + (1 - beta1) g without a temporary.
        first_moment -= g
        first_moment *= beta1
        first_moment += g
        square = xp.multiply(g, g, out=scratch)
        square *= 1.0 - beta2
        second_moment *= beta2
        second_moment += square
        denominator = xp.sqrt(second_moment, out=scratch)
        denominator *= 1.0 / math.sqrt(1.0 - beta2**step)
        denominator += eps
        ratio = xp.divide(first_moment, denominator, out=scratch)
        ratio *= learning_rate / (1.0 - beta1**step)
        param -= ratio

    def fill(self, array, value: float) -> None:
        """In place: set every element of ``array`` to ``value``."""
        array.fill(value)

    @staticmethod
    def _store_gradients(pairs, accumulate):
        """For each ``(buffer, gradient)``: ``buffer += gradient``, or with ``accumulate=False``
        ``buffer[...] = gradient`` (the layer's gradient buffers are written in place either way)."""
        for buffer, gradient in pairs:
            if accumulate:
                buffer += gradient
            else:
                buffer[...] = gradient


def _moved(offset, size):
    """``(target slice, source slice)`` of an axis of ``size`` moved by ``offset`` (positive: towards
    the end), each of ``max(size - |offset|, 0)`` elements."""
    offset, length = int(offset), max(size - abs(int(offset)), 0)
    target, source = (max(offset, 0), max(-offset, 0)) if length else (0, 0)
    return slice(target, target + length), slice(source, source + length)
