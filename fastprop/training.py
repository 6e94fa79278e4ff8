"""The notebook's training loop, made honest and fast: ``train``, ``validate``, ``predict``."""

from __future__ import annotations

import math
import time

import numpy
from tqdm.auto import tqdm

from .history import History


def _as_batches(n: int, batch_size: int):
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _check_data(name, images, labels, net):
    if len(images) != len(labels):
        raise ValueError(
            f"train got {len(images)} {name} images but {len(labels)} {name} labels; "
            "give exactly one label row per image."
        )
    if len(images) == 0:
        raise ValueError(f"train got an empty {name} set; give at least one {name} image.")


def _positive_int(name, value):
    if not isinstance(value, (int, numpy.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"train needs a positive integer {name}, got {value!r}.")


def train(
    net,
    cost_function,
    number_epochs=100,
    batch_size=600,
    learning_rate=1e-4,
    *,
    data=None,
    dataset="mnist",
    data_dir=None,
    seed=0,
    quiet=False,
    verbose=True,
    optimizer=None,
):
    """Train ``net`` with mini-batch gradient descent on ``cost_function``; return a :class:`History`.

    Each batch runs the notebook's step: ``zero_gradients``, ``forward``, ``estimate``,
    ``gradient``, ``backward``, ``update_parameters(learning_rate)`` (or ``optimizer.step``).
    After every epoch it prints ``cost=..., accuracy=...``: the mean cost per training sample over
    the whole epoch and the accuracy on the validation set.

    ``data`` is ``(train_images, train_labels, validation_images, validation_labels)``, labels
    one-hot; without it the notebook's split of ``dataset`` ("mnist" or "fashion-mnist") is
    loaded from ``data_dir`` or the usual places (see :mod:`fastprop.datasets`). The data goes to
    the network's backend once; batches are gathered there after a seeded shuffle each epoch.
    ``quiet`` hides the progress bars, ``verbose=False`` the per-epoch lines.
    """
    _positive_int("number_epochs", number_epochs)
    _positive_int("batch_size", batch_size)
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"train needs a positive finite learning_rate, got {learning_rate!r}.")
    if data is None:
        from .datasets import load_data

        data = load_data(dataset, data_dir, seed=seed)
    train_images, train_labels, validation_images, validation_labels = data
    _check_data("training", train_images, train_labels, net)
    _check_data("validation", validation_images, validation_labels, net)

    backend, dtype = net.backend, net.dtype
    images = backend.asarray(train_images, dtype=dtype)
    targets = backend.asarray(train_labels, dtype=dtype)
    validation_images = backend.asarray(validation_images, dtype=dtype)
    validation_labels = backend.asarray(validation_labels, dtype=dtype)
    n = images.shape[0]
    batches = _as_batches(n, batch_size)
    full = batches[0][1] - batches[0][0]
    image_buffer = backend.zeros((full,) + images.shape[1:], dtype)
    target_buffer = backend.zeros((full,) + targets.shape[1:], dtype)
    rng = numpy.random.default_rng(seed)
    step = optimizer.step if optimizer is not None else None
    fast_epoch = None
    if step is None:
        fast_epoch = backend.compile_epoch(net, cost_function, images, targets, batch_size)
    history = History()

    for epoch in range(1, number_epochs + 1):
        net.train()
        started = time.perf_counter()
        order = backend.permutation(rng, n)
        with tqdm(total=len(batches), desc=f"training, e={epoch}", disable=quiet, leave=False) as bar:
            if fast_epoch is not None:
                total = fast_epoch(order, learning_rate)
                bar.update(len(batches))
            else:
                total = 0.0
                for start, stop in batches:
                    index = order[start:stop]
                    whole = stop - start == full
                    x = backend.take_rows(images, index, out=image_buffer if whole else None)
                    t = backend.take_rows(targets, index, out=target_buffer if whole else None)
                    net.zero_gradients()
                    prediction = net.forward(x)
                    total += cost_function.estimate(prediction, t).sum(dtype=numpy.float64)
                    net.backward(cost_function.gradient(prediction, t))
                    if step is None:
                        net.update_parameters(learning_rate)
                    else:
                        step(net, learning_rate)
                    bar.update()
        backend.synchronize()
        seconds = time.perf_counter() - started
        cost = float(total) / n
        accuracy = validate(
            net, validation_images, validation_labels, batch_size,
            quiet=quiet, desc=f"validation, e={epoch}",
        )
        history.append(cost=cost, accuracy=accuracy, seconds=seconds, samples_per_second=n / seconds)
        if verbose:
            tqdm.write("cost=%5.6f, accuracy=%2.6f" % (cost, accuracy))
    return history


def predict(net, images, batch_size=10000):
    """The network's outputs for ``images`` as a host NumPy array, computed in evaluation mode."""
    backend = net.backend
    outputs = [backend.to_numpy(y) for y in _forward_batches(net, images, batch_size, True, None)]
    return numpy.concatenate(outputs) if outputs else numpy.zeros((0, 0))


def validate(net, images, labels, batch_size=600, *, quiet=True, desc="validation"):
    """Fraction of ``images`` whose largest output is at the label's class.

    ``labels`` are one-hot rows or integer class ids. Counting happens on the backend; only the
    final count crosses to the host.
    """
    if len(images) != len(labels):
        raise ValueError(
            f"validate got {len(images)} images but {len(labels)} labels; give one label per image."
        )
    backend = net.backend
    xp = backend.xp
    labels = backend.asarray(labels) if not backend.is_native(labels) else labels
    classes = labels.argmax(axis=1) if labels.ndim == 2 else labels
    correct = 0
    start = 0
    for outputs in _forward_batches(net, images, batch_size, quiet, desc):
        stop = start + outputs.shape[0]
        correct += xp.count_nonzero(outputs.argmax(axis=1) == classes[start:stop])
        start = stop
    return int(correct) / max(len(images), 1)


def _forward_batches(net, images, batch_size, quiet, desc):
    """Yield the network's outputs batch by batch, in evaluation mode (restored afterwards)."""
    was_training = getattr(net, "training", True)
    backend, dtype = net.backend, net.dtype
    images = backend.asarray(images, dtype=dtype) if not backend.is_native(images) else images
    net.eval()
    try:
        for start, stop in tqdm(
            _as_batches(len(images), batch_size), desc=desc, disable=quiet, leave=False
        ):
            yield net.forward(images[start:stop])
    finally:
        net.train(was_training)
