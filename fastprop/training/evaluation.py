"""Forward passes without training: ``validate``, ``validate_epoch`` and ``predict``."""

from __future__ import annotations


import numpy

from fastprop.backends.arrays import accept_array

from ..checks import positive_integer, whole_number
from ..distributed import shard
from .data import class_ids
from .trainee import Trainee
from .progress import progress_bar


def validate_epoch(e, net, images, labels, batch_size, *, quiet=False, communicator=None):
    """The notebook's ``validate_epoch``: the accuracy on ``images``, with a ``validation, e=<e>`` bar."""
    whole_number(e, "epoch number e", "validate_epoch")
    positive_integer(batch_size, "batch_size", "validate_epoch")
    return validate(net, images, labels, batch_size, quiet=quiet, desc=f"validation, e={e}",
                    communicator=communicator)


def predict(net, images, batch_size=10000):
    """The network's outputs for ``images`` as a host NumPy array, computed in evaluation mode.

    Zero rows give an array of shape ``(0, outputs)``, as N rows give ``(N, outputs)``.
    """
    batch_size = positive_integer(batch_size, "batch_size", "predict")
    trainee = Trainee.of(net)
    outputs = [trainee.backend.to_numpy(y) for y in forward_batches(trainee, images, batch_size, True, None)]
    return numpy.concatenate(outputs)


def validate(net, images, labels, batch_size=600, *, quiet=True, desc="validation", communicator=None):
    """Fraction of ``images`` whose largest output is at the label's class (0.0 for no rows).

    ``labels`` are one-hot rows ``(N, C)`` or class ids ``(N,)`` / ``(N, 1)`` in ``[0, C)`` for a
    network with ``C`` outputs. A network with one output is a binary classifier: its output is read
    as the probability of class 1 (class 1 above 0.5, as Keras's binary accuracy reads it; end a
    network that gives logits with a ``Sigmoid``), and the labels are 0 or 1. Counting happens on
    the backend; only the final count crosses to the host. A non-finite output is an error naming
    its row (and the input, when that is where the non-finite value is), never a silent wrong guess.
    """
    batch_size = positive_integer(batch_size, "batch_size", "validate")
    if len(images) != len(labels):
        raise ValueError(
            f"validate got {len(images)} images but {len(labels)} labels; give one label per image."
        )
    trainee = Trainee.of(net)
    backend = trainee.backend
    xp, classes, correct, start, finite = backend.xp, None, 0, 0, True
    total, offset = len(images), 0
    if communicator is not None and communicator.size > 1:  # each rank counts its share of the rows
        offset, last = shard(0, total, communicator)
        images, labels = images[offset:last], labels[offset:last]
        quiet = quiet or not communicator.is_root
    for outputs in forward_batches(trainee, images, batch_size, quiet, desc):
        outputs = outputs if backend.is_native(outputs) else backend.asarray(outputs)
        if classes is None:
            classes = class_ids(backend, labels, int(outputs.shape[1]), "validation labels")
        stop = start + outputs.shape[0]
        finite = finite & xp.isfinite(outputs).all()  # looked at once, after the loop: no sync per batch
        guesses = outputs.argmax(axis=1) if outputs.shape[1] > 1 else (outputs[:, 0] > 0.5)
        correct += xp.count_nonzero(guesses == classes[start:stop])
        start = stop
    if not bool(finite):
        _report_non_finite(trainee, images, batch_size, backend, offset)
    correct = int(correct)
    if communicator is not None and communicator.size > 1:
        correct = int(communicator.allreduce(numpy.array([correct], numpy.int64))[0])
    return correct / max(total, 1)


def _report_non_finite(trainee, images, batch_size, backend, offset):
    """Raise the error for the first row whose output is not finite (``offset``: the row of ``images[0]``)."""
    xp, start = backend.xp, 0
    for inputs, outputs in forward_batches(trainee, images, batch_size, True, None, with_inputs=True):
        outputs = outputs if backend.is_native(outputs) else backend.asarray(outputs)
        rows = xp.isfinite(outputs).all(axis=1)
        if not bool(rows.all()):
            row = int(xp.argmin(rows))
            inputs = inputs if backend.is_native(inputs) else backend.asarray(inputs)
            where = offset + start + row
            if not bool(xp.isfinite(inputs[row]).all()):
                cause = f"validation images hold a non-finite value in row {where}; repair or drop that row"
            else:
                cause = ("its input is finite, so the network's parameters are not: retrain with a lower "
                         "learning rate or load a checkpoint")
            raise ValueError(f"validate got a non-finite output for row {where}: {cause}.")
        start += outputs.shape[0]


def forward_batches(net, images, batch_size, quiet, desc, with_inputs=False):
    """Yield the network's outputs batch by batch (or ``(inputs, outputs)``), in evaluation mode
    (restored afterwards). No rows still run one empty batch, so the outputs have their shape.
    ``net`` is a network or its :class:`Trainee`."""
    trainee = Trainee.of(net)
    if not trainee.backend.is_native(images):
        images = accept_array(trainee.backend, trainee.dtype, images, "the images")
    if images.ndim == 1:  # one sample is one row, as Linear.forward takes it
        images = images.reshape(1, -1)
    with trainee.evaluating() as net:
        starts = range(0, max(len(images), 1), batch_size)
        with progress_bar(total=len(starts), desc=desc, disable=quiet) as bar:
            for start in starts:
                batch = images[start : start + batch_size]
                outputs = net.forward(batch)
                yield (batch, outputs) if with_inputs else outputs
                bar.update()
