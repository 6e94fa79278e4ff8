"""The notebook's training loop, made honest and fast: ``train``, ``train_epoch``, ``validate_epoch``,
``validate`` and ``predict``."""

from __future__ import annotations

import importlib.util
import math
import os
import time

import numpy

from .backends import get_backend, get_dtype
from .history import History
from .layers.base import Layer, is_native, leaves_of, takes_input_gradient


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
    shuffle=False,
    seed=None,
    quiet=False,
    verbose=True,
    optimizer=None,
    schedule=None,
    checkpoint=None,
    patience=None,
):
    """Train ``net`` with mini-batch gradient descent on ``cost_function``; return a :class:`History`.

    The notebook's ``train``: without ``data`` it calls :func:`fastprop.load_data` (``dataset``
    "mnist" or "fashion-mnist", from ``data_dir`` or the usual places, shuffled with NumPy's global
    generator) and keeps the first 50,000 of the 60,000 rows for training (5/6 of other sizes), the
    rest for validation. ``data`` is ``(train_images, train_labels, validation_images,
    validation_labels)`` instead, labels one-hot. For each epoch ``e = 0, 1, ...`` it runs
    :func:`train_epoch` (bar ``training, e=0``), :func:`validate_epoch` (bar ``validation, e=0``) and
    prints ``cost=..., accuracy=...``. The cost is the mean over batches of ``np.mean(cost)``, the
    mean cost per element (the notebook added those means up, so its figure grew with the number of
    batches). Each batch runs the notebook's step: ``zero_gradients``, ``forward``,
    ``estimate(target, prediction)``, ``gradient(cost)``, ``backward``,
    ``update_parameters(learning_rate)`` (or ``optimizer.step``). The data goes to the network's
    backend once. ``quiet`` hides the progress bars, ``verbose=False`` the per-epoch lines.

    Beyond the notebook: ``shuffle=True`` visits the training rows in a new order every epoch (drawn
    from ``seed``, or from NumPy's global generator when ``seed`` is None); ``optimizer`` (e.g.
    :class:`~fastprop.Adam`; ``learning_rate=None`` then uses the optimizer's own rate);
    ``schedule(epoch) -> factor`` scales the rate per epoch (epochs counted from 1);
    ``checkpoint`` is a path saved after every epoch and resumed from when it exists; ``patience``
    stops after that many epochs without a better validation accuracy, restoring the best
    parameters. A non-finite cost raises :class:`TrainingDiverged` with the network left at its
    last finite step.
    """
    if learning_rate is None:
        learning_rate = getattr(optimizer, "learning_rate", None) or 1e-4
    _check_arguments(number_epochs, batch_size, learning_rate, patience)
    _check_optimizer(net, optimizer)
    if data is None:
        from .datasets import load_data, split_rows

        images, labels, _, _ = load_data(dataset, data_dir)
        data = split_rows(images, labels)
    backend, dtype = _backend_of(net)
    images, targets, validation_images, validation_labels = (
        backend.asarray(_checked(name, array), dtype=dtype)
        for name, array in zip(("training images", "training labels", "validation images", "validation labels"), data)
    )
    _check_lengths("training", images, targets)
    _check_lengths("validation", validation_images, validation_labels)
    if shuffle and seed is None:
        seed = int(numpy.random.randint(2**31))

    history, first_epoch = History(), 1
    if checkpoint is not None and os.path.exists(checkpoint):
        history, first_epoch = _resume(checkpoint, net, optimizer)
    loop = _StepLoop(net, cost_function, images, targets, batch_size, optimizer)
    # The best epoch whose parameters we hold: after a resume, the saved epoch to start with.
    best_accuracy, best_epoch, best = -1.0, 0, None
    if patience and len(history):
        best_accuracy, best_epoch, best = history.accuracy[-1], len(history), _Snapshot(net)

    for epoch in range(first_epoch, number_epochs + 1):
        e = epoch - 1  # the notebook counts epochs from 0 on screen
        rate = learning_rate * _factor(schedule, epoch)
        order = backend.permutation(epoch_generator(seed, epoch), len(images)) if shuffle else None
        started = time.perf_counter()
        cost = loop.epoch(order, rate, e, quiet)
        seconds = time.perf_counter() - started
        accuracy = validate_epoch(e, net, validation_images, validation_labels, batch_size, quiet=quiet)
        history.append(cost=cost, accuracy=accuracy, seconds=seconds, samples_per_second=len(images) / seconds)
        if verbose:
            print("cost=%5.6f, accuracy=%2.6f" % (cost, accuracy), flush=True)
        if checkpoint is not None:
            from .checkpoint import save

            save(net, checkpoint, optimizer=optimizer, history=history, epoch=epoch)
        if patience:
            if accuracy > best_accuracy:
                best_accuracy, best_epoch, best = accuracy, epoch, _Snapshot(net)
            elif epoch - best_epoch >= patience:
                best.restore(net)
                if verbose:
                    print(f"early stop: no better validation accuracy for {patience} epochs; "
                          f"kept the parameters of e={best_epoch - 1}", flush=True)
                break
    return history


def train_epoch(e, net, images, labels, cost_function, batch_size, learning_rate, *, quiet=False, optimizer=None):
    """One epoch of the notebook's step loop over ``images`` in order, with a ``training, e=<e>`` bar.

    Returns the epoch's cost: the mean over batches of ``np.mean(cost)``. ``labels`` are the targets
    the cost compares with (one-hot rows for classification).
    """
    _check_optimizer(net, optimizer)
    backend, dtype = _backend_of(net)
    images, targets = (backend.asarray(_checked(name, array), dtype=dtype)
                       for name, array in (("training images", images), ("training labels", labels)))
    _check_lengths("training", images, targets)
    return _StepLoop(net, cost_function, images, targets, batch_size, optimizer).epoch(None, learning_rate, e, quiet)


def validate_epoch(e, net, images, labels, batch_size, *, quiet=False):
    """The notebook's ``validate_epoch``: the accuracy on ``images``, with a ``validation, e=<e>`` bar."""
    return validate(net, images, labels, batch_size, quiet=quiet, desc=f"validation, e={e}")


def epoch_generator(seed, epoch) -> numpy.random.Generator:
    """The generator that shuffles epoch ``epoch`` (from 1) of a run seeded with ``seed``."""
    return numpy.random.default_rng((seed, epoch))


def progress_bar(**options):
    """A tqdm bar: a notebook widget inside Jupyter when ipywidgets is installed, text otherwise.

    Bars stay on screen when done (``leave=True``), as in the notebook's recorded output.
    """
    options.setdefault("leave", True)
    return _bar_class()(**options)


def _bar_class():
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if (shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
            and importlib.util.find_spec("ipywidgets") is not None):
        from tqdm.notebook import tqdm

        return tqdm
    from tqdm.std import tqdm

    return tqdm


class _StepLoop:
    """One epoch of the notebook's step loop, with the backend's whole-epoch fast path when it has one."""

    def __init__(self, net, cost_function, images, targets, batch_size, optimizer):
        self.net, self.cost, self.optimizer = net, cost_function, optimizer
        self.images, self.targets = images, targets
        self.backend = backend = _backend_of(net)[0]
        n = images.shape[0]
        self.batches = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
        self.full = self.batches[0][1]
        self.buffers = (
            backend.zeros((self.full,) + images.shape[1:], images.dtype),
            backend.zeros((self.full,) + targets.shape[1:], targets.dtype),
        )
        self.in_order = None  # the rows in order, made when the fast path needs an order
        self.fast = None
        if optimizer is None and isinstance(net, Layer):
            self.fast = backend.compile_epoch(net, cost_function, images, targets, batch_size)
        self._start = _Snapshot(net)  # the epoch's starting parameters, refilled every epoch
        self._input_gradient = takes_input_gradient(net)

    def run(self, order, rate, bar=None):
        """One epoch of steps over the batches (in ``order``, or in row order when it is None);
        return the mean over batches of the mean cost per element (a float)."""
        _set_mode(self.net, True)
        if self.fast is None:
            return float(sum(self._steps(order, rate, bar))) / len(self.batches)
        if order is None:
            if self.in_order is None:
                self.in_order = self.backend.asarray(numpy.arange(self.images.shape[0]))
            order = self.in_order
        costs = self.backend.to_numpy(self.fast(order, rate))
        for leaf in self.net.leaves():  # the gradients now hold the last batch's sums, as after a step
            leaf._fresh_gradients = False
        if bar is not None:
            bar.update(len(self.batches))
        return self._mean_cost(float(costs[0]), float(costs[1]))

    def _mean_cost(self, full_total, last_total):
        """The mean over batches of the mean cost per element, from the fast path's two sums."""
        elements = int(numpy.prod(self.targets.shape[1:]))
        last = self.batches[-1][1] - self.batches[-1][0]
        mean = full_total / (self.full * elements)
        if last != self.full:
            mean += last_total / (last * elements)
        return mean / len(self.batches)

    def epoch(self, order, rate, e, quiet=False):
        """Run one epoch with its bar; return its cost, or raise TrainingDiverged at the last finite step."""
        net = self.net
        self._start.refill(net)
        generators = [leaf.rng for leaf in _leaves(net) if isinstance(getattr(leaf, "rng", None), numpy.random.Generator)]
        random_states = [generator.bit_generator.state for generator in generators]
        optimizer_state = self.optimizer.snapshot() if self.optimizer is not None else None
        with progress_bar(total=len(self.batches), desc=f"training, e={e}", disable=quiet) as bar:
            cost = self.run(order, rate, bar)
        if math.isfinite(cost):
            return cost
        # Find the batch that diverged: replay the epoch from its start (same parameters, optimizer
        # state and dropout masks), checking every batch.
        self._start.restore(net)
        for generator, state in zip(generators, random_states):
            generator.bit_generator.state = state
        if self.optimizer is not None:
            self.optimizer.restore(optimizer_state)
        total = 0.0
        for batch, cost in enumerate(self._steps(order, rate, None, check=True)):
            if not math.isfinite(cost):
                raise TrainingDiverged(
                    f"Training diverged at e={e}, batch {batch}: the cost became {cost} at "
                    f"learning rate {rate:g}; the network keeps its last finite step. Lower the "
                    "learning rate, or use SoftmaxCrossEntropy on logits instead of SoftMax+CrossEntropy."
                )
            total += cost
        return total / len(self.batches)

    def _steps(self, order, rate, bar, check=False):
        """Yield each batch's mean cost per element (a backend scalar, or a float with ``check``)."""
        net, backend, cost_function = self.net, self.backend, self.cost
        for start, stop in self.batches:
            if order is None:
                x, t = self.images[start:stop], self.targets[start:stop]
            else:
                index = order[start:stop]
                whole = stop - start == self.full
                x = backend.take_rows(self.images, index, out=self.buffers[0] if whole else None)
                t = backend.take_rows(self.targets, index, out=self.buffers[1] if whole else None)
            net.zero_gradients()
            prediction = net.forward(x)
            cost = cost_function.estimate(t, prediction)
            mean = backend.xp.mean(backend.xp.asarray(cost), dtype=numpy.float64)
            if check:
                mean = float(mean)
                if not math.isfinite(mean):
                    yield mean
                    return
            gradient = cost_function.gradient(cost)
            if self._input_gradient:
                net.backward(gradient, input_gradient=False)
            else:
                net.backward(gradient)
            if self.optimizer is None:
                net.update_parameters(rate)
            else:
                self.optimizer.step(net, rate)
            if bar is not None:
                bar.update()
            yield mean


class _Snapshot:
    """A copy of a network's parameters, and of the NumPy arrays its foreign layers hold, to go back to."""

    def __init__(self, net):
        self.values = [parameter.value.copy() for parameter in _parameters(net)]
        self.foreign = _foreign_arrays(net)

    def refill(self, net):
        """Copy the network's current state into this snapshot (reusing its arrays)."""
        for value, parameter in zip(self.values, _parameters(net)):
            value[...] = parameter.value
        self.foreign = _foreign_arrays(net)

    def restore(self, net):
        """Put the snapshot back into the network: fastprop's arrays in place, foreign ones rebound."""
        for parameter, value in zip(_parameters(net), self.values):
            parameter.value[...] = value
        for layer, arrays in self.foreign:
            for key, array in arrays.items():
                setattr(layer, key, array.copy())


def _foreign_arrays(net):
    """``[(layer, {attribute: copy})]`` for the NumPy arrays held by each foreign layer of ``net``."""
    return [(layer, {key: value.copy() for key, value in vars(layer).items() if isinstance(value, numpy.ndarray)})
            for layer in _foreign_layers(net)]


def _backend_of(net):
    """``(backend, dtype)`` a network computes with; for a foreign model, the current ones."""
    if isinstance(net, Layer):
        return net.backend, net.dtype
    return get_backend(), get_dtype()


def _parameters(net):
    return net.parameters() if isinstance(net, Layer) else []


def _leaves(net):
    return leaves_of(net)


def _foreign_layers(net):
    return [leaf for leaf in _leaves(net) if not is_native(leaf)]


def _set_mode(net, training):
    if callable(getattr(net, "train", None)) and isinstance(net, Layer):
        net.train(training)


def _check_optimizer(net, optimizer):
    foreign = _foreign_layers(net) if optimizer is not None else []
    if foreign:
        raise ValueError(
            f"train cannot use {optimizer!r} on {foreign[0]!r}, which is not a fastprop Layer (an "
            "optimizer updates fastprop parameters only); train with plain SGD (optimizer=None), "
            "which calls its update_parameters, or build that layer from fastprop layers."
        )


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
    for parameter, value in zip(ours, theirs):
        parameter.value[...] = value.value
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
    backend = _backend_of(net)[0]
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
    backend = _backend_of(net)[0]
    labels = labels if backend.is_native(labels) else backend.asarray(labels)
    classes = labels.argmax(axis=1) if labels.ndim == 2 else labels
    correct, start = 0, 0
    for outputs in _forward_batches(net, images, batch_size, quiet, desc):
        outputs = outputs if backend.is_native(outputs) else backend.asarray(outputs)
        stop = start + outputs.shape[0]
        correct += backend.xp.count_nonzero(outputs.argmax(axis=1) == classes[start:stop])
        start = stop
    return int(correct) / max(len(images), 1)


def _forward_batches(net, images, batch_size, quiet, desc):
    """Yield the network's outputs batch by batch, in evaluation mode (restored afterwards)."""
    was_training = getattr(net, "training", True)
    backend, dtype = _backend_of(net)
    images = images if backend.is_native(images) else backend.asarray(images, dtype=dtype)
    _set_mode(net, False)
    try:
        starts = range(0, len(images), batch_size)
        with progress_bar(total=len(starts), desc=desc, disable=quiet) as bar:
            for start in starts:
                yield net.forward(images[start : start + batch_size])
                bar.update()
    finally:
        _set_mode(net, was_training)
