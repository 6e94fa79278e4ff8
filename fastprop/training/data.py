"""Training data made ready once: converted to the network's backend and dtype, checked, labels as
targets; and what :func:`train_epoch` keeps per array."""

from __future__ import annotations

import math
import weakref

import numpy

from fastprop.backends.arrays import accept_array

from ..checks import is_real, is_whole, positive_integer
from ..layers.base import leaves_of
from .epochs import EpochRunner
from .trainee import Trainee


def _check_arguments(number_epochs, batch_size, learning_rate, patience, where="train"):
    """The loop's hyper-parameters as Python numbers, or one clear error naming ``where``."""
    number_epochs = positive_integer(number_epochs, "number_epochs", where)
    batch_size = positive_integer(batch_size, "batch_size", where)
    if not (is_real(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"{where} needs a positive finite learning_rate, got {learning_rate!r}.")
    if patience is not None and not (is_whole(patience) and patience >= 1):
        raise ValueError(f"train needs patience to be a positive number of epochs or None, got {patience!r}.")
    return number_epochs, batch_size, float(learning_rate), None if patience is None else int(patience)


def _check_lengths(name, images, labels):
    if len(images) != len(labels):
        raise ValueError(
            f"train got {len(images)} {name} images but {len(labels)} {name} labels; "
            "give exactly one label row per image."
        )


def prepare_training_data(net, images, labels, what):
    """``(images, targets)`` on the network's backend and dtype, checked: same number of rows, every
    value finite, and labels given as class ids ``(N,)`` / ``(N, 1)`` turned into one-hot rows.
    ``net`` is a network or its :class:`Trainee`."""
    trainee = Trainee.of(net)
    backend, dtype = trainee.backend, trainee.dtype
    images = _checked_images(backend, dtype, images, f"{what} images")
    _check_lengths(what, images, labels)
    labels = labels if backend.is_native(labels) else backend.asarray(numpy.asarray(labels))
    n_classes = _output_width(trainee, images)
    if n_classes == 1 and labels.ndim == 1:
        labels = labels.reshape(-1, 1)  # one output: the target is the label itself (0/1 for a classifier)
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1 and n_classes != 1):
        ids = class_ids(backend, labels, n_classes, f"{what} labels")
        targets = backend.zeros((len(ids), n_classes), dtype)
        targets[backend.xp.arange(len(ids)), ids] = 1
        return images, targets
    if labels.ndim != 2 or labels.shape[1] != n_classes:
        raise ValueError(
            f"{what} labels have shape {tuple(labels.shape)}, but the network has {n_classes} outputs; "
            f"give one target row of {n_classes} values per image (one-hot rows for classes), or class "
            "ids of shape (N,) or (N, 1)."
        )
    return images, _checked_images(backend, dtype, labels, f"{what} labels")


def class_ids(backend, labels, n_classes, what):
    """Integer class ids from one-hot rows ``(N, C)`` or ids ``(N,)`` / ``(N, 1)``, checked to lie in
    ``[0, n_classes)``; ``what`` names the array in errors."""
    xp = backend.xp
    labels = labels if backend.is_native(labels) else backend.asarray(numpy.asarray(labels))
    if labels.dtype.kind == "f":
        _check_finite(backend, labels, what)
    if labels.ndim == 2 and labels.shape[1] == n_classes and n_classes > 1:
        return labels.argmax(axis=1)
    if not (labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)):
        raise ValueError(
            f"{what} have shape {tuple(labels.shape)}, but the network has {n_classes} outputs; give "
            f"class ids of shape (N,) or (N, 1), or one-hot rows of shape (N, {n_classes})."
        )
    ids = labels.reshape(-1)
    if ids.dtype.kind == "f":
        whole = ids == xp.round(ids)
        if ids.size and not bool(whole.all()):
            row = int(xp.argmin(whole))
            raise ValueError(
                f"{what} hold {float(ids[row])} in row {row}, not a whole number; give integer class ids."
            )
    elif ids.dtype.kind not in "iu":
        raise ValueError(f"{what} have dtype {ids.dtype}; give integer class ids or one-hot rows.")
    if ids.size:
        low, high = int(ids.min()), int(ids.max())
        if n_classes == 1 and (low < 0 or high > 1):
            raise ValueError(
                f"{what} hold the class {low if low < 0 else high}, but a network with one output is a "
                "binary classifier whose labels are 0 or 1; give 0/1 labels, or give the network one "
                "output per class."
            )
        if n_classes > 1 and (low < 0 or high >= n_classes):
            bad = low if low < 0 else high
            raise ValueError(
                f"{what} hold the class {bad}, outside [0, {n_classes}) for a network with {n_classes} "
                "outputs; number the classes from 0 (subtract 1 from labels counted from 1)."
            )
    return ids.astype(numpy.int64)


def _output_width(trainee, images):
    """How many outputs the network gives per row, from one row in evaluation mode (draws nothing)."""
    with trainee.evaluating() as net:
        return int(net.forward(images[:1]).shape[1])


def _checked_images(backend, dtype, array, what, allow_empty=False):
    """``array`` on the backend in ``dtype``, with at least one row (unless ``allow_empty``) and every
    value finite; an error names the array and the first bad row."""
    if not backend.is_native(array):
        array = numpy.asarray(array)
        if array.dtype.kind not in "fiub":
            raise ValueError(f"{what} have dtype {array.dtype}; give real numbers.")
    if array.ndim == 0:
        raise ValueError(f"{what} must have one row per sample, got a scalar.")
    if len(array) == 0 and not allow_empty:
        raise ValueError(f"train got no {what}; give at least one row.")
    array = accept_array(backend, dtype, array, what)
    _check_finite(backend, array, what)
    return array


def _check_finite(backend, array, what):
    xp = backend.xp
    finite = xp.isfinite(array)
    if array.size and not bool(finite.all()):
        rows = finite.reshape(len(array), -1).all(axis=1)
        row = int(xp.argmin(rows))
        flat = array[row].reshape(-1)
        column = int(xp.argmin(xp.isfinite(flat)))
        raise ValueError(
            f"{what} hold a non-finite value ({float(flat[column])}) in row {row} (flat column {column}); "
            f"repair or drop that row (numpy.isfinite(array).all(axis=1) marks the good rows)."
        )


class PreparedEpochs:
    """The :class:`EpochRunner` of the last :func:`train_epoch` call on each images array, kept while
    that array lives: the data converted to the backend and dtype, checked, and prepared by the
    backend (``compile_epoch``). A later call reuses it when everything it was made from is the same
    (the network's layers, the labels, cost, batch size, optimizer, backend and dtype, and the arrays'
    contents, compared by the backend's checksum), and makes it again otherwise: an array changed in
    place between epochs is prepared again, never read stale.
    """

    def __init__(self):
        self._kept = {}  # id(images) -> (weak reference to images, key, checksums, runner)

    def runner(self, net, images, labels, cost_function, batch_size, optimizer):
        trainee = Trainee.of(net)
        net, backend, dtype = trainee.net, trainee.backend, trainee.dtype
        if not (backend.fast_checksum and isinstance(images, numpy.ndarray | backend.xp.ndarray)):
            return self._made(trainee, images, labels, cost_function, batch_size, optimizer)
        key = (id(net), tuple(map(id, leaves_of(net))), id(labels), id(cost_function), batch_size,
               id(optimizer), backend, dtype, images.shape, images.dtype, getattr(labels, "shape", None))
        sums = (backend.checksum(images), _labels_checksum(backend, labels))
        kept = self._kept.get(id(images))
        if kept is not None and kept[0]() is images and kept[1] == key and kept[2] == sums:
            return kept[3]
        runner = self._made(trainee, images, labels, cost_function, batch_size, optimizer)
        self._kept[id(images)] = (weakref.ref(images, self._forget(id(images))), key, sums, runner)
        return runner

    @staticmethod
    def _made(trainee, images, labels, cost_function, batch_size, optimizer):
        images, targets = prepare_training_data(trainee, images, labels, "training")
        return EpochRunner(trainee, cost_function, images, targets, batch_size, optimizer)

    def _forget(self, key):
        return lambda _: self._kept.pop(key, None)

    def clear(self):
        """Drop every prepared epoch (their memory goes with them)."""
        self._kept.clear()


def _labels_checksum(backend, labels):
    try:
        return backend.checksum(labels if backend.is_native(labels) else numpy.asarray(labels))
    except (TypeError, ValueError):  # labels NumPy cannot view as bytes (objects): never reused
        return object()


#: What :func:`train_epoch` prepared, per images array.
PREPARED = PreparedEpochs()
