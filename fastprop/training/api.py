"""The notebook's entry points: ``train`` and ``train_epoch``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy

from fastprop.backends import computing_on, load_backend

from ..checks import whole_number
from ..distributed import Communicator, abort_on_error, check_same_data, warn_about_threads
from ..history import History
from .data import (PREPARED, _check_arguments, _check_lengths, _checked_images, class_ids,
                   prepare_training_data)
from .epochs import EpochRunner, epoch_generator
from .evaluation import validate_epoch
from ..schedules import factor_of
from .state import _EarlyStopping, _loop_state, _resume, _shuffle_seed
from .trainee import Trainee


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
    augment=None,
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
    :mod:`fastprop.distributed`) trains data-parallel over several processes. ``augment`` (a
    :class:`~fastprop.Augment`) moves and flips each training batch's images, drawn from the run's
    seed.
    """
    communicator = communicator if communicator is not None else Communicator()
    try:
        config = TrainingConfig.checked(
            number_epochs, batch_size, learning_rate, shuffle=shuffle, seed=seed, quiet=quiet,
            verbose=verbose, optimizer=optimizer, schedule=schedule, checkpoint=checkpoint,
            patience=patience, communicator=communicator, augment=augment)
        trainee = Trainee(net)
        trainee.check_optimizer(optimizer)
        return _train(trainee, cost_function, config, _training_data(data, dataset, data_dir, communicator))
    except BaseException:
        abort_on_error(communicator)
        raise


@dataclass(frozen=True)
class TrainingConfig:
    """:func:`train`'s settings, checked once: what every part of a run reads. ``quiet`` and
    ``verbose`` already say what this rank shows (only rank 0 shows bars and lines)."""

    number_epochs: int
    batch_size: int
    learning_rate: float
    shuffle: bool
    seed: int | None
    quiet: bool
    verbose: bool
    optimizer: object
    schedule: object
    checkpoint: object
    patience: int | None
    communicator: object
    augment: object = None

    @classmethod
    def checked(cls, number_epochs, batch_size, learning_rate, *, shuffle, seed, quiet, verbose, optimizer,
                schedule, checkpoint, patience, communicator, augment=None):
        if learning_rate is None:
            learning_rate = getattr(optimizer, "learning_rate", None) or 1e-4
        number_epochs, batch_size, learning_rate, patience = _check_arguments(
            number_epochs, batch_size, learning_rate, patience)
        seed = None if seed is None else whole_number(seed, "seed", "train")
        if augment is not None and not callable(getattr(augment, "moves", None)):
            raise TypeError(f"train's augment must be a fastprop.Augment or None, got {augment!r}.")
        root = communicator.is_root
        return cls(number_epochs, batch_size, learning_rate, shuffle, seed, quiet or not root,
                   verbose and root, optimizer, schedule, checkpoint, patience, communicator, augment)


def _training_data(data, dataset, data_dir, communicator):
    """``(train_images, train_labels, validation_images, validation_labels)``: ``data`` as given, or
    the notebook's ``load_data`` (rows shuffled with NumPy's global generator, rank 0's order)."""
    if data is None:
        from ..datasets import load_training_rows, split_rows

        images, labels = load_training_rows(dataset, data_dir)
        root = communicator.is_root
        order = numpy.random.permutation(len(images)) if root else numpy.zeros(len(images), numpy.int64)
        data = split_rows(*(array[communicator.broadcast(order)] for array in (images, labels)))
    if not (isinstance(data, (tuple, list)) and len(data) == 4):
        raise ValueError(
            "train needs data=(train_images, train_labels, validation_images, validation_labels), "
            f"got {type(data).__name__}{f' of length {len(data)}' if hasattr(data, '__len__') else ''}."
        )
    return data


def _train(trainee, cost_function, config, data):
    communicator, checkpoint, optimizer = config.communicator, config.checkpoint, config.optimizer
    root = communicator.is_root
    warn_about_threads(communicator)
    net, backend, dtype = trainee.net, trainee.backend, trainee.dtype
    if communicator.size > 1:
        names = ("training images", "training labels", "validation images", "validation labels")
        arrays = [a if backend.is_native(a) else numpy.asarray(a) for a in data]
        check_same_data(communicator, dict(zip(names, arrays)),
                        lambda a: (backend if backend.is_native(a) else load_backend("numpy")).checksum(a))
    with computing_on(backend, dtype):
        images, targets = prepare_training_data(trainee, data[0], data[1], "training")
        validation_images = _checked_images(backend, dtype, data[2], "validation images", allow_empty=True)
        _check_lengths("validation", validation_images, data[3])
        # Checked and turned into class ids once, before any step.
        validation_labels = class_ids(backend, data[3], targets.shape[1], "validation labels")
        if config.patience is not None and len(validation_images) == 0:
            raise ValueError(
                f"train got patience={config.patience} but no validation rows: early stopping compares "
                "validation accuracies and there would be none to compare; give validation data, or drop "
                "patience."
            )

        history, first_epoch, saved = History(), 1, None
        if checkpoint is not None and root:  # what could not be saved is said before the first step
            from ..checkpoint import check_savable

            check_savable(net, checkpoint)
        if checkpoint is not None and os.path.exists(checkpoint):
            history, first_epoch, saved = _resume(checkpoint, trainee, optimizer)
        seed = _shuffle_seed(config.shuffle or config.augment is not None, config.seed, saved, checkpoint)
        if communicator.size > 1:  # every rank starts from rank 0's parameters, state and shuffle
            trainee.start_together(optimizer, communicator)
            seed = int(communicator.broadcast(numpy.array([-1 if seed is None else seed]))[0])
            seed = None if seed == -1 else seed
        stopper = _EarlyStopping(config.patience)
        if checkpoint is not None and len(history):
            stopper.load(trainee, saved, history)
            if saved is not None:
                trainee.set_generator_states(saved.generators)
            if stopper.exhausted(first_epoch - 1):  # the saved run had already stopped early
                first_epoch = config.number_epochs + 1
        runner = EpochRunner(trainee, cost_function, images, targets, config.batch_size, optimizer,
                             communicator=communicator, augment=config.augment, seed=seed)

        last = first_epoch - 1
        for epoch in range(first_epoch, config.number_epochs + 1):
            e = epoch - 1  # the notebook counts epochs from 0 on screen
            rate = config.learning_rate * factor_of(config.schedule, epoch)
            order = backend.permutation(epoch_generator(seed, epoch), len(images)) if config.shuffle else None
            started = time.perf_counter()
            cost = runner.epoch(order, rate, e, config.quiet)
            seconds = time.perf_counter() - started
            accuracy = validate_epoch(e, trainee, validation_images, validation_labels, config.batch_size,
                                      quiet=config.quiet, communicator=communicator)
            history.append(cost=cost, accuracy=accuracy, seconds=seconds,
                           samples_per_second=len(images) / seconds)
            if config.verbose:
                print("cost=%5.6f, accuracy=%2.6f" % (cost, accuracy), flush=True)
            last, stop = epoch, stopper.update(trainee, epoch, accuracy)
            if checkpoint is not None and root:
                from ..checkpoint import save

                save(net, checkpoint, optimizer=optimizer, history=history, epoch=epoch,
                     loop=_loop_state(trainee, seed, stopper))
            if stop:
                if config.verbose:
                    print(f"early stop: no better validation accuracy for {config.patience} epochs",
                          flush=True)
                break
        kept = stopper.keep_best(trainee, last)
        if kept is not None and config.verbose:
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
    trainee = Trainee(net)
    trainee.check_optimizer(optimizer)
    with computing_on(trainee.backend, trainee.dtype):
        runner = PREPARED.runner(trainee, images, labels, cost_function, batch_size, optimizer)
        return runner.epoch(None, learning_rate, e, quiet)
