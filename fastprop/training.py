"""The notebook's training loop, made honest and fast: ``train``, ``validate``, ``predict``."""

from __future__ import annotations

import math
import os
import time

import numpy
from tqdm.auto import tqdm

from .history import History


class TrainingDiverged(FloatingPointError):
    """The training cost became infinite or NaN; the network holds the last finite step."""


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
    schedule=None,
    checkpoint=None,
    patience=None,
):
    """Train ``net`` with mini-batch gradient descent on ``cost_function``; return a :class:`History`.

    Each batch runs the notebook's step: ``zero_gradients``, ``forward``, ``estimate``,
    ``gradient``, ``backward``, ``update_parameters(learning_rate)`` (or ``optimizer.step``).
    After every epoch it prints ``cost=..., accuracy=...``: the mean cost per training sample over
    the whole epoch and the accuracy on the validation set.

    ``data`` is ``(train_images, train_labels, validation_images, validation_labels)``, labels
    one-hot; without it the notebook's split of ``dataset`` ("mnist" or "fashion-mnist") is
    loaded from ``data_dir`` or the usual places (see :mod:`fastprop.datasets`). The data goes to
    the network's backend once; batches are gathered there after a shuffle seeded by ``seed`` and
    the epoch number. ``quiet`` hides the progress bars, ``verbose=False`` the per-epoch lines.

    Beyond the notebook: ``optimizer`` (e.g. :class:`~fastprop.Adam`; ``learning_rate=None`` then
    uses the optimizer's own rate), ``schedule(epoch) -> factor`` scales the rate per epoch,
    ``checkpoint`` is a path saved after every epoch and resumed from when it exists, and
    ``patience`` stops after that many epochs without a better validation accuracy, restoring the
    best parameters. A non-finite cost raises :class:`TrainingDiverged` with the network left at
    its last finite step.
    """
    if learning_rate is None:
        learning_rate = getattr(optimizer, "learning_rate", None) or 1e-4
    _check_arguments(number_epochs, batch_size, learning_rate, patience)
    if data is None:
        from .datasets import load_data

        data = load_data(dataset, data_dir, seed=seed)
    backend, dtype = net.backend, net.dtype
    images, targets, validation_images, validation_labels = (
        backend.asarray(_checked(name, array), dtype=dtype)
        for name, array in zip(("training images", "training labels", "validation images", "validation labels"), data)
    )
    _check_lengths("training", images, targets)
    _check_lengths("validation", validation_images, validation_labels)

    history, first_epoch = History(), 1
    if checkpoint is not None and os.path.exists(checkpoint):
        history, first_epoch = _resume(checkpoint, net, optimizer)
    loop = _StepLoop(net, cost_function, images, targets, batch_size, optimizer)
    # The best epoch whose parameters we hold: after a resume, the saved epoch to start with.
    best_accuracy, best_epoch, best = -1.0, 0, None
    if patience and len(history):
        best_accuracy, best_epoch, best = history.accuracy[-1], len(history), _snapshot(net)

    for epoch in range(first_epoch, number_epochs + 1):
        rate = learning_rate * _factor(schedule, epoch)
        order = backend.permutation(epoch_generator(seed, epoch), len(images))
        started = time.perf_counter()
        with tqdm(total=len(loop.batches), desc=f"training, e={epoch}", disable=quiet, leave=False) as bar:
            total = loop.epoch(order, rate, bar, epoch)
        seconds = time.perf_counter() - started
        cost = total / len(images)
        accuracy = validate(net, validation_images, validation_labels, batch_size,
                            quiet=quiet, desc=f"validation, e={epoch}")
        history.append(cost=cost, accuracy=accuracy, seconds=seconds, samples_per_second=len(images) / seconds)
        if verbose:
            tqdm.write("cost=%5.6f, accuracy=%2.6f" % (cost, accuracy))
        if checkpoint is not None:
            from .checkpoint import save

            save(net, checkpoint, optimizer=optimizer, history=history, epoch=epoch)
        if patience:
            if accuracy > best_accuracy:
                best_accuracy, best_epoch, best = accuracy, epoch, _snapshot(net)
            elif epoch - best_epoch >= patience:
                _restore(net, best)
                if verbose:
                    tqdm.write(f"early stop: no better validation accuracy for {patience} epochs; "
                               f"kept the parameters of epoch {best_epoch}")
                break
    return history


def epoch_generator(seed, epoch) -> numpy.random.Generator:
    """The generator that shuffles epoch ``epoch`` (from 1) of a run seeded with ``seed``."""
    return numpy.random.default_rng((seed, epoch))


class _StepLoop:
    """One epoch of the notebook's step loop, with the backend's whole-epoch fast path when it has one."""

    def __init__(self, net, cost_function, images, targets, batch_size, optimizer):
        self.net, self.cost, self.optimizer = net, cost_function, optimizer
        self.images, self.targets, backend = images, targets, net.backend
        n = images.shape[0]
        self.batches = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
        self.full = self.batches[0][1]
        self.buffers = (
            backend.zeros((self.full,) + images.shape[1:], images.dtype),
            backend.zeros((self.full,) + targets.shape[1:], targets.dtype),
        )
        self.fast = None
        if optimizer is None:
            self.fast = backend.compile_epoch(net, cost_function, images, targets, batch_size)
        self._start = _snapshot(net)  # the epoch's starting parameters, refilled every epoch

    def run(self, order, rate, bar=None):
        """One epoch of steps over the batches of ``order``; return its summed cost (a float)."""
        self.net.train()
        if self.fast is None:
            return float(sum(self._steps(order, rate, bar)))
        total = float(self.fast(order, rate))
        for leaf in self.net.leaves():  # the gradients now hold the last batch's sums, as after a step
            leaf._fresh_gradients = False
        if bar is not None:
            bar.update(len(self.batches))
        return total

    def epoch(self, order, rate, bar, epoch):
        """Run one epoch; return the summed cost, or raise TrainingDiverged at the last finite step."""
        net = self.net
        for start, parameter in zip(self._start, net.parameters()):
            start[...] = parameter.value
        generators = [leaf.rng for leaf in net.leaves() if isinstance(getattr(leaf, "rng", None), numpy.random.Generator)]
        random_states = [generator.bit_generator.state for generator in generators]
        optimizer_state = self.optimizer.snapshot() if self.optimizer is not None else None
        total = self.run(order, rate, bar)
        if math.isfinite(total):
            return total
        # Find the batch that diverged: replay the epoch from its start (same parameters, optimizer
        # state and dropout masks), checking every batch.
        _restore(net, self._start)
        for generator, state in zip(generators, random_states):
            generator.bit_generator.state = state
        if self.optimizer is not None:
            self.optimizer.restore(optimizer_state)
        total = 0.0
        for batch, cost in enumerate(self._steps(order, rate, None, check=True), start=1):
            if not math.isfinite(cost):
                raise TrainingDiverged(
                    f"Training diverged at epoch {epoch}, batch {batch}: the cost became {cost} at "
                    f"learning rate {rate:g}; the network keeps its last finite step. Lower the "
                    "learning rate, or use SoftmaxCrossEntropy on logits instead of SoftMax+CrossEntropy."
                )
            total += cost
        return total

    def _steps(self, order, rate, bar, check=False):
        """Yield each batch's summed cost (a backend scalar, or a float with ``check``)."""
        net, backend, cost_function = self.net, self.net.backend, self.cost
        mean = getattr(cost_function, "reduction", "sum") == "mean"
        for start, stop in self.batches:
            index = order[start:stop]
            whole = stop - start == self.full
            x = backend.take_rows(self.images, index, out=self.buffers[0] if whole else None)
            t = backend.take_rows(self.targets, index, out=self.buffers[1] if whole else None)
            net.zero_gradients()
            prediction = net.forward(x)
            cost = cost_function.estimate(prediction, t).sum(dtype=numpy.float64)
            if mean:  # report the summed cost per sample whatever the reduction
                cost = cost * (stop - start)
            if check:
                cost = float(cost)
                if not math.isfinite(cost):
                    yield cost
                    return
            net.backward(cost_function.gradient(prediction, t))
            if self.optimizer is None:
                net.update_parameters(rate)
            else:
                self.optimizer.step(net, rate)
            if bar is not None:
                bar.update()
            yield cost


def _snapshot(net):
    return [parameter.value.copy() for parameter in net.parameters()]


def _restore(net, values):
    for parameter, value in zip(net.parameters(), values):
        parameter.value[...] = value


def _resume(path, net, optimizer):
    """Load parameters, optimizer state and history from ``path`` into ``net``; return (history, next epoch)."""
    from .checkpoint import CheckpointError, load_checkpoint

    saved = load_checkpoint(path, backend=net.backend.name, dtype=net.dtype)
    ours, theirs = net.parameters(), saved.net.parameters()
    shapes = [tuple(p.value.shape) for p in ours], [tuple(p.value.shape) for p in theirs]
    if shapes[0] != shapes[1]:
        raise CheckpointError(
            f"Cannot resume from checkpoint {path}: it holds a network with parameter shapes "
            f"{shapes[1]}, but the network being trained has {shapes[0]}; use another checkpoint path."
        )
    if optimizer is not None and saved.optimizer_state is not None:
        optimizer.load_state_dict(saved.optimizer_state)
    _restore(net, [p.value for p in theirs])
    history = saved.history or History()
    return history, (saved.epoch or len(history)) + 1


def _factor(schedule, epoch):
    if schedule is None:
        return 1.0
    factor = schedule(epoch)
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
        raise ValueError(
            f"train's schedule {schedule!r} gave {factor!r} for epoch {epoch}; "
            "a schedule must return a finite factor >= 0."
        )
    return factor


def _check_arguments(number_epochs, batch_size, learning_rate, patience):
    for name, value in (("number_epochs", number_epochs), ("batch_size", batch_size)):
        if not isinstance(value, (int, numpy.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"train needs a positive integer {name}, got {value!r}.")
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"train needs a positive finite learning_rate, got {learning_rate!r}.")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"train needs patience to be a positive number of epochs or None, got {patience!r}.")


def _checked(name, array):
    if len(array) == 0:
        raise ValueError(f"train got no {name}; give at least one row.")
    return array


def _check_lengths(name, images, labels):
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"train got {images.shape[0]} {name} images but {labels.shape[0]} {name} labels; "
            "give exactly one label row per image."
        )


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
    labels = labels if backend.is_native(labels) else backend.asarray(labels)
    classes = labels.argmax(axis=1) if labels.ndim == 2 else labels
    correct, start = 0, 0
    for outputs in _forward_batches(net, images, batch_size, quiet, desc):
        stop = start + outputs.shape[0]
        correct += backend.xp.count_nonzero(outputs.argmax(axis=1) == classes[start:stop])
        start = stop
    return int(correct) / max(len(images), 1)


def _forward_batches(net, images, batch_size, quiet, desc):
    """Yield the network's outputs batch by batch, in evaluation mode (restored afterwards)."""
    was_training = getattr(net, "training", True)
    backend = net.backend
    images = images if backend.is_native(images) else backend.asarray(images, dtype=net.dtype)
    net.eval()
    try:
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=desc, disable=quiet, leave=False):
            yield net.forward(images[start : start + batch_size])
    finally:
        net.train(was_training)
