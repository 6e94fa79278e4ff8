"""The backend contract: every public method of :class:`Backend`, on every available backend and dtype.

One case table, ``CASES``, names each contract method with inputs that exercise it: shapes that take
an accelerated backend's fast paths (the Numba kernels take C-contiguous float arrays with at least
one row and, for dense layers, at most ``SMALL_LAYER`` outputs) and shapes that fall back to the
reference (more outputs, strided and Fortran-ordered views, zero rows). Every case runs on every
backend :func:`fastprop.available_backends` reports here (those off the CPU are marked ``gpu``), in
float32 and float64, against the NumPy reference :class:`Backend` computed in float64 on the same
rounded inputs. What a method writes in place is compared after the call; every other argument, and
the parent of a view outside the view, must come back bit for bit. Returned arrays are the backend's
own, of the working dtype (index arrays, such as max pooling's argmax, of the reference's integer dtype
and equal to its indices exactly), and share no memory with the arguments. Methods that are not arithmetic
(transfers, random draws, ``compile_epoch``) have a check of their own in the table.
"""

from __future__ import annotations

import inspect
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy
import pytest

import fastprop
from fastprop import Linear, MeanSquareError, Network, Sigmoid
from fastprop.backends import Backend, load_backend
from fastprop.lowering import lower
from tests.conftest import relative_error

REFERENCE = Backend()
TOLERANCE = {numpy.float32: 1e-5, numpy.float64: 1e-12}  # norm-wise relative error


@dataclass(frozen=True)
class View:
    """An argument passed as a non-contiguous view: ``"strided"`` takes every other entry along the
    last axis of a NaN-padded parent (a kernel that reads the padding sees NaN), ``"fortran"`` is a
    transpose (all axes reversed)."""

    value: numpy.ndarray
    layout: str


@dataclass(frozen=True)
class Case:
    """One call of a contract method, or (``check``) a method's own check."""

    method: str
    label: str
    make: Callable[[numpy.random.Generator], tuple] | None = None  # positional arguments, host values
    keywords: dict = field(default_factory=dict)
    updates: tuple[int, ...] = ()  # arguments written in place, compared with the reference's
    scratch: tuple[int, ...] = ()  # arguments whose contents are undefined afterwards
    returns: int | None = None  # the argument that must be returned (take_rows's out)
    exact: bool = False  # copies and fills: the same bits as the reference, no tolerance
    check: Callable[[Backend, type], None] | None = None
    slow: bool = False  # a whole MNIST batch: tenths of a second, left out of pytest -m "not slow"

    def __str__(self):
        return f"{self.method}: {self.label}" if self.label else self.method


# ------------------------------------------------------------------------------------ inputs


def _logits(rng, shape):
    """Widely spread values, with +-1000 (where exp overflows) in the first row."""
    z = rng.normal(size=shape) * 20
    if shape[0] and shape[1] >= 2:
        z[0, :2] = 1000, -1000
    return z


def _softmax_rows(rng, shape):
    return REFERENCE.softmax(rng.normal(size=shape) * 3)


def _one_hot(rng, shape):
    return numpy.eye(shape[1])[rng.integers(0, shape[1], shape[0])]


ELEMENTWISE = {  # method, label -> (rng, shape) -> arguments
    ("sigmoid", ""): lambda r, s: (_logits(r, s),),
    ("sigmoid_backward", ""): lambda r, s: (r.random(s), r.normal(size=s)),
    ("relu", ""): lambda r, s: (_logits(r, s),),
    ("relu_backward", ""): lambda r, s: (numpy.maximum(r.normal(size=s), 0), r.normal(size=s)),
    ("tanh", ""): lambda r, s: (_logits(r, s) / 10,),
    ("tanh_backward", ""): lambda r, s: (numpy.tanh(r.normal(size=s)), r.normal(size=s)),
    ("softmax", ""): lambda r, s: (_logits(r, s),),
    ("softmax_backward", ""): lambda r, s: (_softmax_rows(r, s), r.normal(size=s)),
    ("log_softmax", ""): lambda r, s: (_logits(r, s),),
    ("softmax_cross_entropy", "one-hot targets"): lambda r, s: (_logits(r, s), _one_hot(r, s)),
    ("softmax_cross_entropy", "soft targets"): lambda r, s: (_logits(r, s), r.random(s)),
    ("softmax_cross_entropy_gradient", "one-hot targets"): lambda r, s: (_logits(r, s), _one_hot(r, s)),
    ("softmax_cross_entropy_gradient", "soft targets"): lambda r, s: (_logits(r, s), r.random(s)),
}
# Contiguous batches (one row, rows not a multiple of 4, several of the kernels' 64-row chunks, more
# than 32 columns), then the fallbacks: views and an empty batch.
ELEMENTWISE_SHAPES = [((n, m), None) for n, m in ((1, 10), (7, 10), (601, 10), (1000, 10), (9, 5), (37, 13),
                                                  (37, 45))]
ELEMENTWISE_SHAPES += [((13, 9), "strided"), ((13, 9), "fortran"), ((0, 10), None)]

# Dense layers: batch sizes x (inputs, outputs) the Numba kernels take (up to SMALL_LAYER = 32
# outputs, in blocks of 4 rows x 5 outputs and chunks of 64 rows), more outputs (BLAS), odd sizes.
DENSE_SHAPES = [(n, n_in, n_out) for n in (1, 7, 601, 1000)
                for n_in, n_out in ((784, 10), (13, 3), (5, 32), (9, 40))]
DENSE_SHAPES += [(9, 7, 5), (37, 29, 13), (37, 29, 1)]


def _dense(n, n_in, n_out, head, layout=None):
    """Arguments of a dense method: ``head`` names them (x, W, b, dz, p, dp, y, dy, dW, db; ``y`` is a
    ReLU's output, half of it zero).

    ``layout="views"`` passes ``x`` strided and ``W`` in Fortran order (gradient buffers stay
    contiguous: they are a layer's own arrays)."""

    def make(rng):
        arrays = {"x": rng.random((n, n_in)), "W": rng.normal(0, 0.1, (n_out, n_in)),
                  "b": rng.normal(0, 0.1, (1, n_out)), "dz": rng.normal(size=(n, n_out)),
                  "p": rng.random((n, n_out)), "dp": rng.normal(size=(n, n_out)),
                  "dW": rng.normal(size=(n_out, n_in)), "db": rng.normal(size=(1, n_out)),
                  "y": numpy.maximum(rng.normal(size=(n, n_out)), 0), "dy": rng.normal(size=(n, n_out))}
        if layout == "views":
            arrays["x"], arrays["W"] = View(arrays["x"], "strided"), View(arrays["W"], "fortran")
        return tuple(arrays[name] for name in head)

    return make


def _dense_cases():
    shapes = [(shape, None, f"{shape[0]} rows, {shape[1]}->{shape[2]}") for shape in DENSE_SHAPES]
    shapes += [((33, 20, 6), "views", "strided x, Fortran W"), ((0, 13, 7), None, "zero rows")]
    for (n, n_in, n_out), layout, label in shapes:
        slow = n_in == 784 and n >= 601  # MNIST's first layer on hundreds of rows
        for method in ("linear_forward", "linear_sigmoid_forward", "linear_relu_forward"):
            yield Case(method, label, _dense(n, n_in, n_out, ("x", "W", "b"), layout), slow=slow)
        for method, head in (("linear_backward", ("x", "W", "dz")),
                             ("linear_sigmoid_backward", ("x", "W", "p", "dp")),
                             ("linear_relu_backward", ("x", "W", "y", "dy"))):
            make = _dense(n, n_in, n_out, head + ("dW", "db"), layout)
            for accumulate in (True, False):
                for need_dx in (True, False):
                    flags = f"{'accumulate' if accumulate else 'overwrite'}{'' if need_dx else ', no dx'}"
                    keywords = {"accumulate": accumulate, "need_dx": need_dx}
                    gradients = (len(head), len(head) + 1)  # dW and db, written in place
                    yield Case(method, f"{label}, {flags}", make, keywords, updates=gradients, slow=slow)


def _elementwise_cases():
    for (method, kind), make in ELEMENTWISE.items():
        for shape, layout in ELEMENTWISE_SHAPES:
            label = ", ".join(filter(None, (f"{shape[0]}x{shape[1]}", layout, kind)))

            def arguments(rng, make=make, shape=shape, layout=layout):
                return tuple(a if layout is None else View(a, layout) for a in make(rng, shape))

            yield Case(method, label, arguments)


def _normal(rng, shape, layout=None):
    """Normal samples of ``shape``, passed as a ``layout`` view when one is named."""
    values = rng.normal(size=shape)
    return values if layout is None else View(values, layout)


def _update_cases():
    for label, shape, layout in (("weights", (10, 784), None), ("bias", (1, 10), None),
                                 ("wide layer, updated in parallel", (512, 784), None),
                                 ("strided param", (9, 7), "strided"), ("empty", (0, 5), None)):
        def sgd(r, shape=shape, layout=layout):
            return _normal(r, shape, layout), _normal(r, shape), 0.25

        yield Case("sgd_update", label, sgd, updates=(0,))

    for label, nesterov, decay, layout in (
            ("plain", False, 0.0, None), ("nesterov", True, 0.0, None), ("weight decay", False, 0.01, None),
            ("nesterov, weight decay", True, 0.01, None),
            ("strided param and velocity", False, 0.01, "strided")):
        def momentum(r, layout=layout):
            return _normal(r, (10, 13), layout), _normal(r, (10, 13)), _normal(r, (10, 13), layout), 0.1, 0.9

        yield Case("momentum_update", label, momentum, {"nesterov": nesterov, "weight_decay": decay},
                   updates=(0, 2))

    for label, step, decay, decoupled in (("step 1", 1, 0.0, False),
                                          ("step 7, L2 weight decay", 7, 0.01, False),
                                          ("step 3, decoupled weight decay", 3, 0.01, True)):
        def adam(r, step=step):
            param, grad, first, scratch = (_normal(r, (10, 13)) for _ in range(4))
            second = r.random((10, 13))  # a second moment is never negative
            return param, grad, first, second, scratch, 0.1, 0.9, 0.999, 1e-8, step  # lr, betas, eps, step

        yield Case("adam_update", label, adam, {"weight_decay": decay, "decoupled": decoupled},
                   updates=(0, 2, 3), scratch=(4,))

    for label, value, shape, layout in (("zero", 0.0, (10, 13), None), ("2.5", 2.5, (10, 13), None),
                                        ("strided, zero", 0.0, (9, 7), "strided"),
                                        ("strided, -3", -3.0, (9, 7), "strided"),
                                        ("empty", 1.0, (0, 4), None)):
        def fill(r, value=value, shape=shape, layout=layout):
            return _normal(r, shape, layout), value

        yield Case("fill", label, fill, updates=(0,), exact=True)


def _take_rows_cases():
    rows = {
        "a permutation": lambda r: r.permutation(50)[:30],
        "negative indices": lambda r: numpy.array([-1, 0, -50, 49, 2, -1, 7]),
        "int32 indices": lambda r: r.permutation(50)[:30].astype(numpy.int32),
        "no rows": lambda r: numpy.zeros(0, numpy.int64),
    }
    for label, indices in rows.items():
        for table in ("", "strided table"):
            name = ", ".join(filter(None, (label, table)))

            def arguments(r, indices=indices, table=table):
                values = r.normal(size=(50, 9))
                return View(values, "strided") if table else values, indices(r)

            yield Case("take_rows", name, arguments, exact=True)
            for out in ("", "strided out"):
                def into(r, arguments=arguments, out=out):
                    values, index = arguments(r)
                    garbage = r.normal(size=(len(index), 9))
                    return values, index, View(garbage, "strided") if out else garbage

                yield Case("take_rows", ", ".join(filter(None, (name, "into out", out))), into,
                           updates=(2,), returns=2, exact=True)


def _image_label(n, image, **window):
    """``"3x7x9x5, kernel 3x2, stride 2x1"``: a batch of images, then the window's ``(rows, columns)``
    settings."""
    pairs = "".join(f", {name} {a}x{b}" for name, (a, b) in window.items())
    return f"{n}x{'x'.join(map(str, image))}{pairs}"


# Convolutions on channels-last images ``(n, H, W, C)``: MNIST's layers (28 x 28 x 1 -> 32 and
# 14 x 14 x 32 -> 64, 3 x 3, padding 1) the Numba kernels take, with batches of one, of several chunks
# (8 images at a time for small windows, 2 MiB of columns for large ones) and a part-filled last
# chunk; odd windows, strides and paddings; then the fallbacks: a strided x and dy with a
# Fortran-ordered W, and an empty batch.
CONV_SHAPES = [  # n, (H, W, C), K, kernel, stride, padding
    *((n, (28, 28, 1), 32, (3, 3), (1, 1), (1, 1)) for n in (1, 3, 8, 17)),
    *((n, (14, 14, 32), 64, (3, 3), (1, 1), (1, 1)) for n in (1, 10)),
    (3, (7, 9, 5), 7, (5, 5), (1, 1), (2, 2)),
    (3, (9, 8, 3), 5, (3, 3), (2, 2), (1, 1)),
    (3, (8, 7, 3), 5, (3, 2), (2, 1), (0, 1)),
    (2, (5, 5, 2), 3, (5, 5), (1, 1), (0, 0)),  # one window: a 1 x 1 output
    (2, (6, 7, 4), 1, (1, 1), (1, 1), (0, 0)),  # a 1 x 1 kernel into one channel
]


def _conv(shape, head, relu=False, layout=None):
    """Arguments of a convolution method: ``head`` names the arrays (x, W, b, y, dy, dW, db), then
    ``stride`` and ``padding``. ``y`` is the ReLU forward's output with ``relu``, else ``None`` (the
    layer passes none: a backend must not read it). ``layout="views"`` passes ``x`` and ``dy``
    strided and ``W`` in Fortran order (gradient buffers are a layer's own contiguous arrays)."""
    n, (H, Wd, C), K, kernel, stride, padding = shape

    def make(rng):
        x, W = rng.normal(size=(n, H, Wd, C)), rng.normal(0, (C * math.prod(kernel)) ** -0.5, (K, C, *kernel))
        b = rng.normal(0, 0.1, (1, K))
        out = REFERENCE.conv2d_forward(x, W, b, stride, padding, relu=True)
        arrays = {"x": x, "W": W, "b": b, "y": out if relu else None, "dy": rng.normal(size=out.shape),
                  "dW": rng.normal(size=W.shape), "db": rng.normal(size=b.shape)}
        if layout == "views":
            arrays["x"], arrays["dy"] = View(x, "strided"), View(arrays["dy"], "strided")
            arrays["W"] = View(W, "fortran")
        return tuple(arrays[name] for name in head) + (stride, padding)

    return make


def _conv_cases():
    shapes = [((n, image, K, kernel, stride, padding), None,
               _image_label(n, image, kernel=kernel, stride=stride, padding=padding) + f" -> {K}")
              for n, image, K, kernel, stride, padding in CONV_SHAPES]
    shapes += [((3, (7, 6, 5), 4, (3, 3), (1, 1), (1, 1)), "views", "strided x and dy, Fortran W"),
               ((0, (6, 6, 3), 4, (3, 3), (1, 1), (1, 1)), None, "empty batch")]
    for shape, layout, label in shapes:
        slow = shape[1] in ((28, 28, 1), (14, 14, 32)) and shape[0] >= 8  # MNIST's layers on many images
        for relu in (False, True):
            activation = ", relu" if relu else ""
            yield Case("conv2d_forward", label + activation, _conv(shape, ("x", "W", "b"), layout=layout),
                       {"relu": relu}, slow=slow)
            make = _conv(shape, ("x", "W", "y", "dy", "dW", "db"), relu, layout)
            for accumulate in (True, False):
                for need_dx in (True, False):
                    flags = f"{'accumulate' if accumulate else 'overwrite'}{'' if need_dx else ', no dx'}"
                    keywords = {"relu": relu, "accumulate": accumulate, "need_dx": need_dx}
                    yield Case("conv2d_backward", f"{label}{activation}, {flags}", make, keywords,
                               updates=(4, 5), slow=slow)  # dW and db


# Max pooling: the layers of the MNIST network, odd sides (rows and columns that fit no window),
# overlapping windows (3, stride 2), gaps between windows, one window; values distinct unless ties
# are the point (the first of equal values wins), NaNs that must win; strided views, an empty batch.
POOL_SHAPES = [  # n, (H, W, C), size, stride
    (1, (28, 28, 32), (2, 2), (2, 2)),
    (8, (28, 28, 32), (2, 2), (2, 2)),
    (3, (14, 14, 64), (2, 2), (2, 2)),
    (3, (7, 9, 5), (2, 2), (2, 2)),
    (3, (7, 9, 5), (3, 3), (2, 2)),
    (3, (8, 7, 3), (3, 2), (2, 1)),
    (2, (6, 7, 3), (2, 2), (3, 3)),
    (2, (5, 5, 1), (5, 5), (1, 1)),
    (2, (7, 8, 3), (3, 3), (3, 3)),  # windows that tile the image but for a row and two columns
    (2, (5, 6, 3), (2, 2), (1, 1)),  # overlapping 2x2 windows
]


def _pool_values(rng, shape, values):
    if values == "ties":
        return rng.integers(0, 3, shape).astype(numpy.float64)
    x = rng.permutation(numpy.prod(shape)).reshape(shape) - numpy.prod(shape) / 2  # exact in float32
    if values == "NaNs":
        x[rng.random(shape) < 0.05] = numpy.nan
    return x


def _pool(shape, method, values="distinct", layout=None):
    n, image, size, stride = shape

    def make(rng):
        x = _pool_values(rng, (n, *image), values)
        if method == "maxpool2d_forward":
            return (View(x, layout) if layout else x), size, stride
        y, argmax = REFERENCE.maxpool2d_forward(x, size, stride)
        dy = rng.normal(size=y.shape)
        return argmax, (View(dy, layout) if layout else dy), size, stride, x.shape

    return make


def _pool_cases():
    shapes = [(shape, "distinct", None, "") for shape in POOL_SHAPES]
    shapes += [(POOL_SHAPES[4], "ties", None, "ties"), (POOL_SHAPES[3], "ties", None, "ties"),
               (POOL_SHAPES[3], "NaNs", None, "NaNs"), (POOL_SHAPES[5], "NaNs", None, "NaNs"),
               ((3, (7, 6, 5), (2, 2), (2, 2)), "distinct", "strided", "strided"),
               ((0, (6, 6, 3), (2, 2), (2, 2)), "distinct", None, "empty batch")]
    for shape, values, layout, kind in shapes:
        n, image, size, stride = shape
        label = ", ".join(filter(None, (_image_label(n, image, size=size, stride=stride), kind)))
        yield Case("maxpool2d_forward", label, _pool(shape, "maxpool2d_forward", values, layout), exact=True)
        if values != "NaNs":  # argmax is the input here, and a NaN's place is an index like any other
            yield Case("maxpool2d_backward", label, _pool(shape, "maxpool2d_backward", values, layout))


# A convolution, ReLU and max pooling as one method: MNIST's two layers and odd windows (overlapping
# pools, strides, one pooled output). Small integers make the convolution exact in every dtype, so
# the places of the maxima (ties included: the first wins) are the reference's exactly.
FUSED_SHAPES = [  # n, (H, W, C), K, kernel, stride, padding, pool size, pool stride
    (3, (28, 28, 1), 32, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2)),
    (2, (14, 14, 32), 64, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2)),
    (3, (9, 8, 3), 5, (3, 2), (1, 2), (1, 0), (3, 2), (2, 1)),
    (2, (7, 7, 6), 4, (3, 3), (2, 2), (1, 1), (4, 4), (1, 1)),
    (19, (10, 9, 2), 40, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2)),  # direct, several chunks of images
]


def _fused(shape, method, layout=None):
    n, (H, Wd, C), K, kernel, stride, padding, size, pool_stride = shape
    window = (stride, padding, size, pool_stride)

    def make(rng):
        x = rng.integers(-2, 3, (n, H, Wd, C)).astype(float)
        W, b = rng.integers(-2, 3, (K, C, *kernel)).astype(float), rng.integers(-3, 4, (1, K)).astype(float)
        if method == "conv2d_relu_maxpool_forward":
            return ((View(x, layout) if layout else x), W, b, *window)
        y, argmax = REFERENCE.conv2d_relu_maxpool_forward(x, W, b, *window)
        dy = rng.normal(size=y.shape)
        return (x, W, y, argmax, (View(dy, layout) if layout else dy), rng.normal(size=W.shape),
                rng.normal(size=b.shape), *window)

    return make


def _fused_cases():
    shapes = [(shape, None, "") for shape in FUSED_SHAPES] + [(FUSED_SHAPES[2], "strided", "strided")]
    for shape, layout, kind in shapes:
        n, image, K, kernel, stride, padding, size, pool_stride = shape
        label = ", ".join(filter(None, (_image_label(n, image, kernel=kernel, stride=stride, padding=padding,
                                                     pool=size, pool_stride=pool_stride) + f" -> {K}", kind)))
        yield Case("conv2d_relu_maxpool_forward", label, _fused(shape, "conv2d_relu_maxpool_forward", layout),
                   exact=True)
        for accumulate in (True, False):
            for need_dx in (True, False):
                flags = f"{'accumulate' if accumulate else 'overwrite'}{'' if need_dx else ', no dx'}"
                yield Case("conv2d_relu_maxpool_backward", f"{label}, {flags}",
                           _fused(shape, "conv2d_relu_maxpool_backward", layout),
                           {"accumulate": accumulate, "need_dx": need_dx}, updates=(5, 6))


# Batch normalisation on (rows, C): two rows (the least training takes; forward only: two rows'
# input gradient is zero up to rounding, which no relative error can compare), rows not a multiple
# of anything, several of the Numba kernels' 512-row chunks, wide and narrow; data far from zero.
NORM_SHAPES = [(2, 3), (7, 5), (1300, 32), (37, 13)]


def _norm(rows, columns, method, training, relu=False, layout=None):
    def make(rng):
        x = rng.normal(size=(rows, columns)) * 3 + 50
        gamma, beta = rng.normal(size=columns), rng.normal(size=columns)
        if method == "batch_norm_forward":
            mean, var = rng.normal(size=columns) + 50, rng.random(columns) + 5
            return (View(x, layout) if layout else x), gamma, beta, mean, var
        mean, var = x.mean(axis=0), x.var(axis=0)
        y, mu, inverse_std = REFERENCE.batch_norm_forward(
            x, gamma, beta, mean.copy(), var.copy(), training=training, momentum=0.1, eps=1e-5, relu=relu)
        dy = rng.normal(size=x.shape)
        return (x, mu, inverse_std, gamma, (View(dy, layout) if layout else dy), rng.normal(size=columns),
                rng.normal(size=columns), y if relu else None)

    return make


def _norm_cases():
    shapes = [(shape, None, f"{shape[0]}x{shape[1]}") for shape in NORM_SHAPES]
    shapes += [((37, 13), "strided", "37x13, strided")]
    for (rows, columns), layout, label in shapes:
        for training in (True, False):
            for relu in (False, True):
                kind = f"{label}, {'training' if training else 'evaluation'}{', relu' if relu else ''}"
                keywords = {"training": training, "momentum": 0.1, "eps": 1e-5, "relu": relu}
                yield Case("batch_norm_forward", kind, _norm(rows, columns, "batch_norm_forward", training,
                                                              relu, layout), keywords, updates=(3, 4))
                for accumulate in (True, False):
                    for need_dx in (True, False) if rows > 2 else ():
                        flags = f"{'accumulate' if accumulate else 'overwrite'}{'' if need_dx else ', no dx'}"
                        yield Case("batch_norm_backward", f"{kind}, {flags}",
                                   _norm(rows, columns, "batch_norm_backward", training, relu, layout),
                                   {"training": training, "accumulate": accumulate, "need_dx": need_dx},
                                   updates=(5, 6))
    yield Case("batch_norm_forward", "no rows, evaluation", lambda r: (
        numpy.zeros((0, 4)), r.normal(size=4), r.normal(size=4), r.normal(size=4), r.random(4) + 1),
        {"training": False, "momentum": 0.1, "eps": 1e-5})


# ------------------------------------------------------------------------------------ own checks


def _check_info(backend, dtype):
    info = backend.info()
    assert isinstance(info, dict) and isinstance(info["version"], str) and isinstance(info["device"], str)


def _check_synchronize(backend, dtype):
    backend.linear_forward(*(backend.zeros(shape, dtype) for shape in ((3, 4), (2, 4), (1, 2))))
    assert backend.synchronize() is None


def _check_warmup(backend, dtype):
    seconds = backend.warmup(dtype)
    assert isinstance(seconds, float) and seconds >= 0


def _check_compile_epoch(backend, dtype):
    """Only the type of the answer: the training tests compare compiled epochs with the step loop."""
    with fastprop.use_backend(backend.name, dtype=dtype):
        net = Network([Linear(6, 3, rng=0), Sigmoid()])
    rng = numpy.random.default_rng(0)
    images = backend.asarray(rng.random((10, 6)), dtype=dtype)
    targets = backend.asarray(_one_hot(rng, (10, 3)), dtype=dtype)
    run = backend.compile_epoch(lower(net, MeanSquareError()), images, targets, 4)
    assert run is None or callable(run)


def _check_is_native(backend, dtype):
    assert backend.is_native(backend.zeros((2, 3), dtype))
    assert backend.is_native(backend.asarray(numpy.ones(3), dtype=dtype))
    assert backend.is_native(numpy.zeros(3)) == (backend.xp is numpy)
    assert not backend.is_native([1.0, 2.0]) and not backend.is_native(1.0)

    class DeviceArray(numpy.ndarray):  # a device array that happens to subclass NumPy's
        __cuda_array_interface__ = {"version": 3}

    if backend.xp is numpy:
        assert not backend.is_native(numpy.zeros(3).view(DeviceArray))


def _check_asarray(data, keep_dtype=False):
    def check(backend, dtype):
        array = backend.asarray(data) if keep_dtype else backend.asarray(data, dtype=dtype)
        expected = numpy.asarray(data) if keep_dtype else numpy.asarray(data).astype(dtype)
        assert backend.is_native(array) and array.dtype == expected.dtype and array.shape == expected.shape
        assert numpy.array_equal(backend.to_numpy(array), expected)

    return check


def _check_to_numpy(backend, dtype):
    host = numpy.random.default_rng(1).normal(size=(6, 5)).astype(dtype)
    for array, expected in ((backend.asarray(host), host), (backend.asarray(host)[:, ::2], host[:, ::2])):
        copy = backend.to_numpy(array)
        assert type(copy) is numpy.ndarray and copy.dtype == dtype and numpy.array_equal(copy, expected)
    assert backend.to_numpy(host) is host  # no copy when it already is one


def _check_zeros(backend, dtype):
    for shape in ((3, 4), (0, 5), (7,)):
        array = backend.zeros(shape, dtype)
        assert backend.is_native(array) and array.dtype == dtype and array.shape == shape
        assert not backend.to_numpy(array).any()


def _check_draws(method, *arguments):
    """The same draws as the reference: a seeded network is identical on every backend."""

    def check(backend, dtype):
        ours = getattr(backend, method)(numpy.random.default_rng(7), *arguments, dtype)
        theirs = getattr(REFERENCE, method)(numpy.random.default_rng(7), *arguments, dtype)
        assert backend.is_native(ours) and ours.dtype == dtype and ours.shape == theirs.shape
        assert numpy.array_equal(backend.to_numpy(ours), theirs)

    return check


def _check_permutation(backend, dtype):
    def draw(seed, n):
        order = backend.permutation(numpy.random.default_rng(seed), n)
        assert backend.is_native(order) and order.shape == (n,)
        return backend.to_numpy(order)

    for n in (50, 1, 0):
        order = draw(5, n)
        assert order.dtype.kind in "iu" and numpy.array_equal(numpy.sort(order), numpy.arange(n))
        assert numpy.array_equal(order, draw(5, n))  # a seed gives one order
    assert not numpy.array_equal(draw(5, 50), draw(6, 50))


def _check_take_rows_refuses_rows_out_of_range(backend, dtype):
    table = backend.asarray(numpy.arange(20.0).reshape(5, 4), dtype=dtype)
    out = backend.asarray(numpy.full((3, 4), -7.0), dtype=dtype)
    for bad in ([0, 5, 2], [-6, 1, 2], [2, 1, 100]):
        for index_dtype in (numpy.int64, numpy.int32):
            indices = backend.asarray(numpy.array(bad, dtype=index_dtype))
            with pytest.raises(IndexError):
                backend.take_rows(table, indices)
            with pytest.raises(IndexError):
                backend.take_rows(table, indices, out=out)
    assert (backend.to_numpy(out) == -7).all()  # nothing half-written


def _check_fused_z(backend, dtype):
    """The fused forward's ``z`` is the unfused forward's, bit for bit (what ``Sigmoid.x_in`` holds)."""
    rng = numpy.random.default_rng(2)
    for n, n_in, n_out in ((1000, 784, 10), (7, 13, 3), (601, 9, 40)):
        x, W, b = (backend.asarray(a, dtype=dtype) for a in _dense(n, n_in, n_out, ("x", "W", "b"))(rng))
        z, _ = backend.linear_sigmoid_forward(x, W, b)
        assert numpy.array_equal(backend.to_numpy(z), backend.to_numpy(backend.linear_forward(x, W, b)))


def _check_shift_images(backend, dtype):
    """Every move (past the edges too), with and without flips, on odd shapes: the reference's bits."""
    rng = numpy.random.default_rng(3)
    for shape in ((40, 1, 28, 28), (33, 3, 5, 7), (1, 2, 4, 4), (0, 1, 6, 6)):
        images = rng.normal(size=shape).astype(dtype)
        shifts, flips = rng.integers(-8, 9, (shape[0], 2)), rng.random(shape[0]) < 0.5
        moved = backend.shift_images(backend.asarray(images), shifts, flips)
        assert backend.is_native(moved) and moved.dtype == dtype and moved.shape == shape
        assert numpy.array_equal(backend.to_numpy(moved), REFERENCE.shift_images(images, shifts, flips))
    assert REFERENCE.shift_images(numpy.ones((1, 1, 3, 3)), numpy.array([[1, -1]]), numpy.array([False]))[
        0, 0].tolist() == [[0, 0, 0], [1, 1, 0], [1, 1, 0]]  # the reference itself, on a case by hand


def _check_checksum(backend, dtype):
    """The reference's bits on every layout and length; any changed or moved value changes it."""
    rng = numpy.random.default_rng(4)
    values = rng.normal(size=(301, 37)).astype(dtype)
    for host in (values, values[:, ::3], values.T, values[:0], numpy.arange(13, dtype=numpy.uint8),
                 (values * 100).astype(numpy.int64), numpy.zeros((2, 3), dtype)):
        ours = backend.checksum(backend.asarray(host) if host.dtype.kind == "f" else host)
        assert isinstance(ours, int) and ours == REFERENCE.checksum(host)
    first = REFERENCE.checksum(values)
    changed, moved = values.copy(), values.copy()
    changed[300, 36] = numpy.nextafter(changed[300, 36], dtype(1))
    moved[[0, 1]] = moved[[1, 0]]
    for other in (changed, moved, values.reshape(37, 301).T.copy()):
        assert backend.checksum(backend.asarray(other)) != first


PIXELS = numpy.arange(0, 256, 5, numpy.uint8).reshape(4, 13)  # 8-bit data: CuPy converts it on the device

CASES = [
    Case("info", "", check=_check_info),
    Case("synchronize", "", check=_check_synchronize),
    Case("warmup", "", check=_check_warmup),
    Case("compile_epoch", "None or a callable", check=_check_compile_epoch),
    Case("is_native", "", check=_check_is_native),
    Case("asarray", "floats", check=_check_asarray(numpy.random.default_rng(0).normal(size=(5, 3)))),
    Case("asarray", "uint8 pixels", check=_check_asarray(PIXELS)),
    Case("asarray", "nested lists", check=_check_asarray([[1.5, -2.0, 0.25], [3.0, 4.0, 1e-3]])),
    Case("asarray", "no dtype: int64 indices", check=_check_asarray(numpy.arange(-3, 9), keep_dtype=True)),
    Case("to_numpy", "", check=_check_to_numpy),
    Case("zeros", "", check=_check_zeros),
    Case("random_normal", "", check=_check_draws("random_normal", (7, 5), 0.1)),
    Case("random_uniform", "", check=_check_draws("random_uniform", (7, 5))),
    Case("permutation", "", check=_check_permutation),
    Case("checksum", "", check=_check_checksum),
    *_take_rows_cases(),
    Case("take_rows", "rows out of range", check=_check_take_rows_refuses_rows_out_of_range),
    *_dense_cases(),
    Case("linear_sigmoid_forward", "z is linear_forward's", check=_check_fused_z),
    *_elementwise_cases(),
    *_update_cases(),
    *_conv_cases(),
    *_pool_cases(),
    *_fused_cases(),
    *_norm_cases(),
    Case("shift_images", "", check=_check_shift_images),
]


# ------------------------------------------------------------------------------------ running a case


def _on_backend(backend, value, dtype):
    """``(argument, parent)``: the backend argument for a host value, and the array holding its memory."""
    if isinstance(value, View):
        data = value.value.astype(dtype)
        if value.layout == "strided":
            padded = numpy.full(data.shape[:-1] + (2 * data.shape[-1],), numpy.nan, dtype)
            padded[..., ::2] = data
            parent = backend.asarray(padded)
            return parent[..., ::2], parent
        parent = backend.asarray(numpy.ascontiguousarray(data.T))
        return parent.T, parent
    if isinstance(value, numpy.ndarray):
        array = backend.asarray(value.astype(dtype) if value.dtype.kind == "f" else value.copy())
        return array, array
    return value, None


def _reference_argument(value, dtype):
    """The float64 reference's copy of an argument: float arrays rounded to ``dtype`` first."""
    if isinstance(value, View):
        value = value.value
    if isinstance(value, numpy.ndarray) and value.dtype.kind == "f":
        return value.astype(dtype).astype(numpy.float64)
    return value.copy() if isinstance(value, numpy.ndarray) else value


def _assert_matches(backend, dtype, case, actual, expected, what):
    assert backend.is_native(actual), f"{what} is a {type(actual).__name__}, not a {backend.name} array"
    integers = expected.dtype.kind in "iu"  # indices (max pooling's argmax): the reference's dtype, exactly
    wanted = expected.dtype if integers else numpy.dtype(dtype)
    assert actual.dtype == wanted, f"{what} is {actual.dtype}, not {wanted}"
    assert actual.shape == expected.shape, f"{what} has shape {actual.shape}, not {expected.shape}"
    host = backend.to_numpy(actual)
    if integers:
        assert numpy.array_equal(host, expected), f"{what}: {numpy.sum(host != expected)} indices differ"
    elif case.exact:
        assert numpy.array_equal(host, expected.astype(dtype), equal_nan=True), what
    elif host.size:
        error = relative_error(host, expected)
        assert error <= TOLERANCE[dtype], f"{what}: relative error {error:.3g} > {TOLERANCE[dtype]:g}"


def _run(backend, dtype, case):
    rng = numpy.random.default_rng(zlib.crc32(str(case).encode()))  # each case its own fixed inputs
    values = case.make(rng)
    given, parents = zip(*(_on_backend(backend, v, dtype) for v in values))
    before = [None if p is None else backend.to_numpy(p).copy() for p in parents]
    reference = [_reference_argument(v, dtype) for v in values]
    expected = getattr(REFERENCE, case.method)(*reference, **case.keywords)
    with numpy.errstate(over="raise", divide="raise", invalid="raise"):
        result = getattr(backend, case.method)(*given, **case.keywords)

    if case.returns is not None:
        assert result is given[case.returns], f"{case.method} did not return argument {case.returns}"
        result, expected = None, None  # compared below, as an argument written in place
    if expected is None:
        assert result is None, f"{case.method} returned {type(result).__name__}, the contract returns None"
        results = []
    elif isinstance(expected, tuple):
        assert isinstance(result, tuple) and len(result) == len(expected), f"{case.method}: {result!r}"
        results = list(zip(result, expected))
    else:
        results = [(result, expected)]
    for k, (actual, wanted) in enumerate(results):
        _assert_matches(backend, dtype, case, actual, wanted, f"result {k}")
        for other, _ in results[:k]:
            assert not backend.xp.may_share_memory(actual, other), f"results {k} and earlier share memory"
        for i, parent in enumerate(parents):
            if parent is not None:
                assert not backend.xp.may_share_memory(actual, parent), f"result {k} shares argument {i}"

    for i, (argument, parent, old) in enumerate(zip(given, parents, before)):
        if parent is None or i in case.scratch:
            continue
        now = backend.to_numpy(parent)
        if i in case.updates:
            _assert_matches(backend, dtype, case, argument, reference[i], f"argument {i} (written in place)")
            if isinstance(values[i], View) and values[i].layout == "strided":  # the padding stays as it was
                padding = now[..., 1::2], old[..., 1::2]
                assert numpy.array_equal(*padding, equal_nan=True), f"argument {i}'s parent"
        else:
            assert numpy.array_equal(now, old, equal_nan=True), f"argument {i} was changed"


# ------------------------------------------------------------------------------------ tests


def _backends():
    for name, status in fastprop.available_backends().items():
        if status.available:
            yield pytest.param(name, id=name, marks=() if status.device == "cpu" else pytest.mark.gpu)


BACKENDS = list(_backends())


@pytest.fixture(params=BACKENDS, scope="module")
def backend(request):
    return load_backend(request.param)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.slow else c for c in CASES],
                         ids=str)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64], ids=["float32", "float64"])
def test_backend_keeps_the_contract(backend, dtype, case):
    if case.check is not None:
        case.check(backend, dtype)
    else:
        _run(backend, dtype, case)


def _public_methods(cls):
    return {name: function for name, function in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_every_contract_method_has_a_case():
    contract, covered = set(_public_methods(Backend)), {case.method for case in CASES}
    assert not contract - covered, f"contract methods without a case: {sorted(contract - covered)}"
    assert not covered - contract, f"cases for methods not in the contract: {sorted(covered - contract)}"
    assert len({str(case) for case in CASES}) == len(CASES), "two cases share a name"


def _parameters(function):
    """Names, kinds and defaults of a function's own parameters (annotations may differ)."""
    signature = inspect.signature(function, follow_wrapped=False)  # functools.wraps must not hide *args
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("name", BACKENDS)
def test_overrides_keep_the_contract_signatures(name):
    """An override accepts exactly what the contract's method accepts."""
    backend_type = type(load_backend(name))
    for method, reference in _public_methods(Backend).items():
        assert _parameters(getattr(backend_type, method)) == _parameters(reference), f"{name}.{method}"
