"""The notebook's training loop, made honest and fast: ``train``, ``train_epoch``, ``validate_epoch``,
``validate`` and ``predict``."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
import time
import weakref

import numpy

from fastprop.backends import get_backend, get_dtype, load_backend, use_backend
from fastprop.backends.arrays import accept_array

from .checks import is_real, is_whole, positive_integer, whole_number
from .distributed import Communicator, abort_on_error, check_same_data, shard, warn_about_threads
from .history import History
from .layers.base import Layer, is_native, leaves_of, takes_input_gradient
from .lowering import lower


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
    communicator=None,
):
    """Train ``net`` with mini-batch gradient descent on ``cost_function``; return a :class:`History`.

    The notebook's ``train``: without ``data`` it calls :func:`fastprop.load_data` (``dataset``
    "mnist" or "fashion-mnist", from ``data_dir`` only when given, else the usual places; shuffled
    with NumPy's global generator) and keeps the first 50,000 of the 60,000 rows for training (5/6
    of other sizes), the rest for validation. ``data`` is ``(train_images, train_labels,
    validation_images, validation_labels)`` instead; labels are one-hot rows, or class ids of shape
    ``(N,)`` or ``(N, 1)``. For each epoch ``e = 0, 1, ...`` it runs :func:`train_epoch` (bar
    ``training, e=0``), :func:`validate_epoch` (bar ``validation, e=0``) and prints
    ``cost=..., accuracy=...``. The cost is the mean over batches of ``np.mean(cost)``, the mean
    cost per element (the notebook added those means up, so its figure grew with the number of
    batches). Each batch runs the notebook's step: ``zero_gradients``, ``forward``,
    ``estimate(target, prediction)``, ``gradient(cost)``, ``backward``,
    ``update_parameters(learning_rate)`` (or ``optimizer.step``), with the cost computing on the
    network's backend. The data goes to the network's backend once, checked first: a non-finite
    value is reported with its array and row. ``quiet`` hides the progress bars,
    ``verbose=False`` the per-epoch lines.

    Beyond the notebook: ``shuffle=True`` visits the training rows in a new order every epoch (drawn
    from ``seed``, or from NumPy's global generator when ``seed`` is None); ``optimizer`` (e.g.
    :class:`~fastprop.Adam`; ``learning_rate=None`` then uses the optimizer's own rate);
    ``schedule(epoch) -> factor`` scales the rate per epoch (epochs counted from 1);
    ``checkpoint`` is a path saved after every epoch and resumed from when it exists (the resumed
    run continues exactly as the uninterrupted one would: parameters, optimizer state, schedule,
    early stopping, shuffle and dropout generators); ``patience`` stops after that many epochs
    without a better validation accuracy. With ``patience`` the network ends with the parameters
    of its best epoch, whether or not training stopped early. A non-finite cost or parameter raises
    :class:`TrainingDiverged` with the network left at its last finite step. ``communicator`` (see
    :mod:`fastprop.distributed`) trains data-parallel over several processes.
    """
    communicator = communicator if communicator is not None else Communicator()
    try:
        return _train(net, cost_function, number_epochs, batch_size, learning_rate, data, dataset, data_dir,
                      shuffle, seed, quiet, verbose, optimizer, schedule, checkpoint, patience, communicator)
    except BaseException:
        abort_on_error(communicator)
        raise


def _train(net, cost_function, number_epochs, batch_size, learning_rate, data, dataset, data_dir, shuffle,
           seed, quiet, verbose, optimizer, schedule, checkpoint, patience, communicator):
    root = communicator.is_root
    quiet, verbose = quiet or not root, verbose and root
    warn_about_threads(communicator)
    if learning_rate is None:
        learning_rate = getattr(optimizer, "learning_rate", None) or 1e-4
    number_epochs, batch_size, learning_rate, patience = _check_arguments(
        number_epochs, batch_size, learning_rate, patience)
    if seed is not None:
        seed = whole_number(seed, "seed", "train")
    _check_optimizer(net, optimizer)
    if data is None:
        from .datasets import load_training_rows, split_rows

        # The notebook's load_data: the rows shuffled with NumPy's global generator (rank 0's order).
        images, labels = load_training_rows(dataset, data_dir)
        order = numpy.random.permutation(len(images)) if root else numpy.zeros(len(images), numpy.int64)
        data = split_rows(*(array[communicator.broadcast(order)] for array in (images, labels)))
        del images, labels
    if not (isinstance(data, (tuple, list)) and len(data) == 4):
        raise ValueError(
            "train needs data=(train_images, train_labels, validation_images, validation_labels), "
            f"got {type(data).__name__}{f' of length {len(data)}' if hasattr(data, '__len__') else ''}."
        )
    backend, dtype = _backend_of(net)
    if communicator.size > 1:
        names = ("training images", "training labels", "validation images", "validation labels")
        arrays = [a if backend.is_native(a) else numpy.asarray(a) for a in data]
        check_same_data(communicator, dict(zip(names, arrays)),
                        lambda a: (backend if backend.is_native(a) else load_backend("numpy")).checksum(a))
    with computing_on(backend, dtype):
        images, targets = prepare_training_data(net, data[0], data[1], "training")
        validation_images = _checked_images(backend, dtype, data[2], "validation images", allow_empty=True)
        _check_lengths("validation", validation_images, data[3])
        # Checked and turned into class ids once, before any step.
        validation_labels = class_ids(backend, data[3], targets.shape[1], "validation labels")
        if patience is not None and len(validation_images) == 0:
            raise ValueError(
                f"train got patience={patience} but no validation rows: early stopping compares validation "
                "accuracies and there would be none to compare; give validation data, or drop patience."
            )

        history, first_epoch, state = History(), 1, None
        if checkpoint is not None and root:  # what could not be saved is said before the first step
            from .checkpoint import check_savable

            check_savable(net, checkpoint)
        if checkpoint is not None and os.path.exists(checkpoint):
            history, first_epoch, state = _resume(checkpoint, net, optimizer)
        seed = _shuffle_seed(shuffle, seed, state, checkpoint)
        if communicator.size > 1:  # every rank starts from rank 0's parameters, state and shuffle
            _start_together(net, optimizer, communicator)
            seed = int(communicator.broadcast(numpy.array([-1 if seed is None else seed]))[0])
            seed = None if seed == -1 else seed
        stopper = _EarlyStopping(patience)
        if checkpoint is not None and len(history):
            stopper.load(net, state, history)
            if state is not None:
                _set_generators(net, state["state"].get("generators"))
            if stopper.exhausted(first_epoch - 1):  # the saved run had already stopped early
                first_epoch = number_epochs + 1
        loop = EpochRunner(net, cost_function, images, targets, batch_size, optimizer,
                           communicator=communicator)

        last = first_epoch - 1
        for epoch in range(first_epoch, number_epochs + 1):
            e = epoch - 1  # the notebook counts epochs from 0 on screen
            rate = learning_rate * _factor(schedule, epoch)
            order = backend.permutation(epoch_generator(seed, epoch), len(images)) if shuffle else None
            started = time.perf_counter()
            cost = loop.epoch(order, rate, e, quiet)
            seconds = time.perf_counter() - started
            accuracy = validate_epoch(e, net, validation_images, validation_labels, batch_size, quiet=quiet,
                                      communicator=communicator)
            history.append(cost=cost, accuracy=accuracy, seconds=seconds,
                           samples_per_second=len(images) / seconds)
            if verbose:
                print("cost=%5.6f, accuracy=%2.6f" % (cost, accuracy), flush=True)
            last, stop = epoch, stopper.update(net, epoch, accuracy)
            if checkpoint is not None and root:
                from .checkpoint import save

                save(net, checkpoint, optimizer=optimizer, history=history, epoch=epoch,
                     loop=_loop_state(net, seed, stopper))
            if stop:
                if verbose:
                    print(f"early stop: no better validation accuracy for {patience} epochs", flush=True)
                break
        kept = stopper.keep_best(net, last)
        if kept is not None and verbose:
            print(f"kept the parameters of e={kept - 1}, the best validation accuracy "
                  f"({stopper.best_accuracy:.6f})", flush=True)
    return history


def train_epoch(e, net, images, labels, cost_function, batch_size, learning_rate, *, quiet=False,
                optimizer=None):
    """One epoch of the notebook's step loop over ``images`` in order, with a ``training, e=<e>`` bar.

    Returns the epoch's cost: the mean over batches of ``np.mean(cost)``. ``labels`` are the targets
    the cost compares with: one-hot rows (or any rows shaped like the network's output), or class
    ids ``(N,)`` / ``(N, 1)``, which become one-hot rows. Called once per epoch on the same arrays,
    it converts and checks them (and the backend prepares its whole-epoch program) once, where the
    backend can tell cheaply that they did not change since (:data:`PREPARED`).
    """
    whole_number(e, "epoch number e", "train_epoch")
    _, batch_size, learning_rate, _ = _check_arguments(1, batch_size, learning_rate, None, "train_epoch")
    _check_optimizer(net, optimizer)
    backend, dtype = _backend_of(net)
    with computing_on(backend, dtype):
        runner = PREPARED.runner(net, images, labels, cost_function, batch_size, optimizer)
        return runner.epoch(None, learning_rate, e, quiet)


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
        backend, dtype = _backend_of(net)
        if not (backend.fast_checksum and isinstance(images, numpy.ndarray | backend.xp.ndarray)):
            return self._made(net, images, labels, cost_function, batch_size, optimizer)
        key = (id(net), tuple(map(id, leaves_of(net))), id(labels), id(cost_function), batch_size,
               id(optimizer), backend, dtype, images.shape, images.dtype, getattr(labels, "shape", None))
        sums = (backend.checksum(images), _labels_checksum(backend, labels))
        kept = self._kept.get(id(images))
        if kept is not None and kept[0]() is images and kept[1] == key and kept[2] == sums:
            return kept[3]
        runner = self._made(net, images, labels, cost_function, batch_size, optimizer)
        self._kept[id(images)] = (weakref.ref(images, self._forget(id(images))), key, sums, runner)
        return runner

    @staticmethod
    def _made(net, images, labels, cost_function, batch_size, optimizer):
        images, targets = prepare_training_data(net, images, labels, "training")
        return EpochRunner(net, cost_function, images, targets, batch_size, optimizer)

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


def validate_epoch(e, net, images, labels, batch_size, *, quiet=False, communicator=None):
    """The notebook's ``validate_epoch``: the accuracy on ``images``, with a ``validation, e=<e>`` bar."""
    whole_number(e, "epoch number e", "validate_epoch")
    positive_integer(batch_size, "batch_size", "validate_epoch")
    return validate(net, images, labels, batch_size, quiet=quiet, desc=f"validation, e={e}",
                    communicator=communicator)


def epoch_generator(seed, epoch) -> numpy.random.Generator:
    """The generator that shuffles epoch ``epoch`` (from 1) of a run seeded with ``seed``."""
    return numpy.random.default_rng((seed, epoch))


def progress_bar(**options):
    """A tqdm bar: a notebook widget inside Jupyter when ipywidgets is installed, text otherwise.

    Bars stay on screen when done (``leave=True``), as in the notebook's recorded output. A process
    whose standard error is closed (started without a terminal, with ``2>&-``) gets no bars.
    """
    options.setdefault("leave", True)
    stream = options.get("file", sys.stderr)
    if stream is None or getattr(stream, "closed", False):
        options["disable"] = True
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


class EpochRunner:
    """Runs one epoch of the notebook's step loop, or the backend's whole-epoch program when it has one
    (``fast=False`` keeps the step loop)."""

    def __init__(self, net, cost_function, images, targets, batch_size, optimizer, *, fast=True,
                 communicator=None):
        self.net, self.cost, self.optimizer = net, cost_function, optimizer
        self.communicator = communicator if communicator is not None else Communicator()
        self.gradients = None  # one flat buffer holding every gradient, all-reduced once per step
        if self.communicator.size > 1:
            fast, self.gradients = False, _flatten_gradients(net)
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
        if optimizer is None and fast:
            plan = lower(net, cost_function)
            if plan is not None:
                self.fast = backend.compile_epoch(plan, images, targets, batch_size)
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
        for parameter in _parameters(self.net):  # the gradients hold the last batch's sums, as after a step
            parameter.fresh = False
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
        generators = _generators(net)
        random_states = [generator.bit_generator.state for generator in generators]
        optimizer_state = self.optimizer.snapshot() if self.optimizer is not None else None
        with progress_bar(total=len(self.batches), desc=f"training, e={e}", disable=quiet) as bar:
            cost = self.run(order, rate, bar)
        if math.isfinite(cost) and self._finite():
            return cost
        # Find the batch that diverged: replay the epoch from its start (same parameters, optimizer
        # state and dropout masks), checking the cost and the parameters after every batch.
        self._start.restore(net)
        for generator, state in zip(generators, random_states):
            generator.bit_generator.state = state
        if self.optimizer is not None:
            self.optimizer.restore(optimizer_state)
        total = 0.0
        for batch, (cost, finite) in enumerate(self._steps(order, rate, None, check=_Snapshot(net))):
            if not (math.isfinite(cost) and finite):
                what = (f"the cost became {cost}" if not math.isfinite(cost)
                        else "its update made a parameter infinite or NaN")
                raise TrainingDiverged(
                    f"Training diverged at e={e}, batch {batch}: {what} at learning rate {rate:g}; the "
                    "network keeps its last finite step. Lower the learning rate, or use "
                    "SoftmaxCrossEntropy on logits instead of SoftMax+CrossEntropy."
                )
            total += cost
        return total / len(self.batches)

    def _finite(self) -> bool:
        """True when every parameter of the network is finite."""
        xp = self.backend.xp
        return all(bool(xp.isfinite(parameter.value).all()) for parameter in _parameters(self.net))

    def _steps(self, order, rate, bar, check=None):
        """Yield each batch's mean cost per element (a backend scalar).

        With ``check`` (a :class:`_Snapshot` to reuse), yield ``(cost as a float, parameters finite)``
        instead and stop at the first non-finite step, with the parameters as before that step.
        """
        net, backend, cost_function, communicator = self.net, self.backend, self.cost, self.communicator
        for start, stop in self.batches:
            rows = stop - start
            if communicator.size > 1:
                start, stop = shard(start, stop, communicator)
            if order is None:
                x, t = self.images[start:stop], self.targets[start:stop]
            else:
                index = order[start:stop]
                whole = stop - start == self.full
                x = backend.take_rows(self.images, index, out=self.buffers[0] if whole else None)
                t = backend.take_rows(self.targets, index, out=self.buffers[1] if whole else None)
            if check is not None:
                check.refill(net)
            net.zero_gradients()
            prediction = net.forward(x)
            cost = cost_function.estimate(t, prediction)
            if communicator.size == 1:
                mean = backend.xp.mean(backend.xp.asarray(cost), dtype=numpy.float64)
            else:  # the mean over the global batch; every rank sees the same value
                xp = backend.xp
                total = numpy.array([float(xp.sum(xp.asarray(cost), dtype=numpy.float64)), float(cost.size)])
                communicator.allreduce(total)
                mean = total[0] / total[1]
            if check is not None and not math.isfinite(float(mean)):
                yield float(mean), True
                return
            gradient = cost_function.gradient(cost)
            if self._input_gradient:
                net.backward(gradient, input_gradient=False)
            else:
                net.backward(gradient)
            if self.gradients is not None:
                if getattr(cost_function, "reduction", "sum") == "mean":  # this rank divided by its rows
                    self.gradients *= (stop - start) / rows
                communicator.allreduce(self.gradients)
            if self.optimizer is None:
                net.update_parameters(rate)
            else:
                self.optimizer.step(net, rate)
            if bar is not None:
                bar.update()
            if check is None:
                yield mean
            elif self._finite():
                yield float(mean), True
            else:
                check.restore(net)
                yield float(mean), False
                return


class _Snapshot:
    """A copy of a network's parameters, and of the NumPy arrays its foreign layers hold, to go back to."""

    def __init__(self, net, values=None):
        self.values = [parameter.value.copy() for parameter in _parameters(net)] if values is None else values
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


class _EarlyStopping:
    """``patience``: the best validation accuracy so far, its epoch (from 1) and its parameters."""

    def __init__(self, patience):
        self.patience = patience
        self.best_accuracy, self.best_epoch, self.best = -1.0, 0, None

    def update(self, net, epoch, accuracy) -> bool:
        """Record epoch ``epoch``'s accuracy; True when training should stop."""
        if not self.patience:
            return False
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            if self.best is None:
                self.best = _Snapshot(net)
            else:
                self.best.refill(net)
        return self.exhausted(epoch)

    def exhausted(self, epoch) -> bool:
        """True when ``epoch`` is ``patience`` epochs past the best one."""
        return bool(self.patience) and self.best_epoch > 0 and epoch - self.best_epoch >= self.patience

    def keep_best(self, net, last):
        """Restore the best epoch's parameters when the last epoch run (``last``) was not the best;
        returns the epoch restored, or None."""
        if not self.patience or self.best is None or self.best_epoch == last:
            return None
        self.best.restore(net)
        return self.best_epoch

    def state(self):
        """``(JSON values, host arrays)`` for a checkpoint."""
        values = [] if self.best is None else list(self.best.values)
        return {"best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch}, values

    def load(self, net, loop, history):
        """Take the state a checkpoint saved (``loop``), or, from an older checkpoint without it, the
        last saved epoch as the best one known."""
        if not self.patience:
            return
        if loop is not None and "best_epoch" in loop["state"]:
            self.best_accuracy = float(loop["state"]["best_accuracy"])
            self.best_epoch = int(loop["state"]["best_epoch"])
            if self.best_epoch:
                backend = _backend_of(net)[0]
                values = [backend.asarray(array, dtype=parameter.value.dtype)
                          for array, parameter in zip(loop["arrays"], _parameters(net))]
                self.best = _Snapshot(net, values)
        elif len(history):
            self.best_accuracy, self.best_epoch, self.best = (
                history.accuracy[-1], len(history), _Snapshot(net)
            )


def _loop_state(net, seed, stopper):
    """What a checkpoint must hold, beyond parameters and optimizer, to resume exactly."""
    values, arrays = stopper.state()
    backend = _backend_of(net)[0]
    return {"state": {**values, "shuffle_seed": seed, "generators": _generator_states(net)},
            "arrays": [backend.to_numpy(array) for array in arrays]}


def _generators(net):
    """The distinct random generators the network's layers draw from (dropout masks)."""
    found = {}
    for leaf in leaves_of(net):
        rng = getattr(leaf, "rng", None)
        if isinstance(rng, numpy.random.Generator):
            found.setdefault(id(rng), rng)
    return list(found.values())


def _generator_states(net):
    return [generator.bit_generator.state for generator in _generators(net)]


def _set_generators(net, states):
    if states is None:
        return
    generators = _generators(net)
    if len(states) != len(generators):
        raise ValueError(
            f"The checkpoint holds {len(states)} random generator states but the network draws from "
            f"{len(generators)}; resume with the network the checkpoint was saved from."
        )
    for generator, state in zip(generators, states):
        generator.bit_generator.state = state


def _shuffle_seed(shuffle, seed, loop, checkpoint):
    """The seed of the epoch orders: the checkpoint's when resuming, else ``seed``, else one drawn from
    NumPy's global generator."""
    saved = loop["state"].get("shuffle_seed") if loop is not None else None
    if saved is not None:
        if seed is not None and seed != saved:
            raise ValueError(
                f"train got seed={seed}, but the checkpoint {checkpoint} was trained with seed={saved}; "
                "resume with the same seed (or seed=None), or start a new checkpoint."
            )
        return int(saved)
    if shuffle and seed is None:
        return int(numpy.random.randint(2**31))
    return seed


@contextlib.contextmanager
def computing_on(backend, dtype):
    """Make the network's backend current, so that costs compute with its kernels."""
    try:
        registered = load_backend(backend.name) is backend
    except Exception:  # a backend object that is not registered under its name
        registered = False
    if not registered:
        yield
        return
    with use_backend(backend.name, dtype):
        yield


def _foreign_arrays(net):
    """``[(layer, {attribute: copy})]`` for the NumPy arrays held by each foreign layer of ``net``."""
    return [
        (layer, {key: value.copy() for key, value in vars(layer).items() if isinstance(value, numpy.ndarray)})
        for layer in _foreign_layers(net)
    ]


def _start_together(net, optimizer, communicator):
    """Give every rank rank 0's parameters and optimizer state."""
    _refuse_foreign(net)
    for parameter in _parameters(net):
        communicator.broadcast(parameter.value)
    if optimizer is not None:
        for array in optimizer.state_arrays():
            communicator.broadcast(array)


def _refuse_foreign(net, what="Data-parallel training cannot share the arrays of",
                    remedy="; build the network from fastprop layers."):
    """One error naming the first layer of ``net`` that is not a fastprop Layer, if there is one."""
    foreign = _foreign_layers(net)
    if foreign:
        raise ValueError(f"{what} {foreign[0]!r}, which is not a fastprop Layer{remedy}")


def _flatten_gradients(net):
    """One flat buffer holding every parameter gradient of ``net`` (each gradient becomes a view of
    it), so that data-parallel training sums all gradients in one collective call."""
    _refuse_foreign(net)
    parameters = _parameters(net)
    backend, dtype = _backend_of(net)
    flat = backend.zeros(sum(int(parameter.gradient.size) for parameter in parameters), dtype)
    offset = 0
    for parameter in parameters:
        size = int(parameter.gradient.size)
        view = flat[offset:offset + size].reshape(parameter.gradient.shape)
        view[...] = parameter.gradient
        parameter.gradient, offset = view, offset + size
        parameter.version += 1
    return flat


def _backend_of(net):
    """``(backend, dtype)`` a network computes with; for a foreign model, the current ones."""
    if isinstance(net, Layer):
        return net.backend, net.dtype
    return get_backend(), get_dtype()


def _parameters(net):
    return net.parameters() if isinstance(net, Layer) else []


def _foreign_layers(net):
    return [leaf for leaf in leaves_of(net) if not is_native(leaf)]


def _set_mode(net, training):
    if isinstance(net, Layer):  # a foreign model has no training mode to set
        net.train(training)


def _check_optimizer(net, optimizer):
    if optimizer is not None:
        _refuse_foreign(net, f"train cannot use {optimizer!r} on", " (an optimizer updates fastprop "
                        "parameters only); train with plain SGD (optimizer=None), which calls its "
                        "update_parameters, or build that layer from fastprop layers.")


def _resume(path, net, optimizer):
    """Fill ``net`` (and ``optimizer``) from the checkpoint at ``path``; return
    ``(history, next epoch, loop state or None)``."""
    from .checkpoint import load_into

    before = _Snapshot(net)
    saved = load_into(net, path)
    given, stored = _optimizer_settings(optimizer), _optimizer_settings(saved.optimizer_state)
    if given != stored:
        before.restore(net)  # nothing changes when the resume is refused
        raise ValueError(
            f"train cannot resume {path}: it was written with {_describe_settings(stored)}, but this call "
            f"trains with {_describe_settings(given)}; resume with the optimizer and settings it was "
            "written with (the checkpoint keeps their state), or start a new checkpoint path."
        )
    if optimizer is not None:
        optimizer.load_state_dict(saved.optimizer_state)
    history = saved.history or History()
    return history, (saved.epoch or len(history)) + 1, saved.loop


def _optimizer_settings(optimizer):
    """``(type name, hyperparameters as JSON values)`` of an optimizer or its state dict; None for
    the notebook's plain SGD (no optimizer)."""
    if optimizer is None:
        return None
    state = optimizer if isinstance(optimizer, dict) else {
        "type": type(optimizer).__name__, "hyperparameters": optimizer.hyperparameters()}
    return state.get("type"), json.loads(json.dumps(state.get("hyperparameters"), default=str))


def _describe_settings(settings):
    if settings is None:
        return "the notebook's plain SGD (no optimizer)"
    kind, hyperparameters = settings
    return f"{kind}({', '.join(f'{key}={value!r}' for key, value in (hyperparameters or {}).items())})"


def _factor(schedule, epoch):
    if schedule is None:
        return 1.0
    factor = schedule(epoch)
    if not (is_real(factor) and math.isfinite(factor) and factor >= 0):
        raise ValueError(
            f"train's schedule {schedule!r} gave {factor!r} for epoch {epoch}; "
            "a schedule must return a finite factor >= 0."
        )
    return float(factor)


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
    value finite, and labels given as class ids ``(N,)`` / ``(N, 1)`` turned into one-hot rows."""
    backend, dtype = _backend_of(net)
    images = _checked_images(backend, dtype, images, f"{what} images")
    _check_lengths(what, images, labels)
    labels = labels if backend.is_native(labels) else backend.asarray(numpy.asarray(labels))
    n_classes = _output_width(net, images)
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


def _output_width(net, images):
    """How many outputs the network gives per row, from one row in evaluation mode (draws nothing)."""
    was_training = getattr(net, "training", True)
    _set_mode(net, False)
    try:
        return int(net.forward(images[:1]).shape[1])
    finally:
        _set_mode(net, was_training)


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


def predict(net, images, batch_size=10000):
    """The network's outputs for ``images`` as a host NumPy array, computed in evaluation mode.

    Zero rows give an array of shape ``(0, outputs)``, as N rows give ``(N, outputs)``.
    """
    batch_size = positive_integer(batch_size, "batch_size", "predict")
    backend = _backend_of(net)[0]
    outputs = [backend.to_numpy(y) for y in forward_batches(net, images, batch_size, True, None)]
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
    backend = _backend_of(net)[0]
    xp, classes, correct, start, finite = backend.xp, None, 0, 0, True
    total, offset = len(images), 0
    if communicator is not None and communicator.size > 1:  # each rank counts its share of the rows
        offset, last = shard(0, total, communicator)
        images, labels = images[offset:last], labels[offset:last]
        quiet = quiet or not communicator.is_root
    for outputs in forward_batches(net, images, batch_size, quiet, desc):
        outputs = outputs if backend.is_native(outputs) else backend.asarray(outputs)
        if classes is None:
            classes = class_ids(backend, labels, int(outputs.shape[1]), "validation labels")
        stop = start + outputs.shape[0]
        finite = finite & xp.isfinite(outputs).all()  # looked at once, after the loop: no sync per batch
        guesses = outputs.argmax(axis=1) if outputs.shape[1] > 1 else (outputs[:, 0] > 0.5)
        correct += xp.count_nonzero(guesses == classes[start:stop])
        start = stop
    if not bool(finite):
        _report_non_finite(net, images, batch_size, backend, offset)
    correct = int(correct)
    if communicator is not None and communicator.size > 1:
        correct = int(communicator.allreduce(numpy.array([correct], numpy.int64))[0])
    return correct / max(total, 1)


def _report_non_finite(net, images, batch_size, backend, offset):
    """Raise the error for the first row whose output is not finite (``offset``: the row of ``images[0]``)."""
    xp, start = backend.xp, 0
    for inputs, outputs in forward_batches(net, images, batch_size, True, None, with_inputs=True):
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
    (restored afterwards). No rows still run one empty batch, so the outputs have their shape."""
    was_training = getattr(net, "training", True)
    backend, dtype = _backend_of(net)
    if not backend.is_native(images):
        images = accept_array(backend, dtype, images, "the images")
    if images.ndim == 1:  # one sample is one row, as Linear.forward takes it
        images = images.reshape(1, -1)
    _set_mode(net, False)
    try:
        starts = range(0, max(len(images), 1), batch_size)
        with progress_bar(total=len(starts), desc=desc, disable=quiet) as bar:
            for start in starts:
                batch = images[start : start + batch_size]
                outputs = net.forward(batch)
                yield (batch, outputs) if with_inputs else outputs
                bar.update()
    finally:
        _set_mode(net, was_training)
