"""What a run keeps between epochs and across a resume: early stopping, the shuffle seed, and the
checkpoint's optimizer settings."""

from __future__ import annotations

import json

import numpy


from ..checkpoint import LoopState
from ..history import History
from .epochs import _Snapshot


class _EarlyStopping:
    """``patience``: the best validation accuracy so far, its epoch (from 1) and its parameters."""

    def __init__(self, patience):
        self.patience = patience
        self.best_accuracy, self.best_epoch, self.best = -1.0, 0, None

    def update(self, trainee, epoch, accuracy) -> bool:
        """Record epoch ``epoch``'s accuracy; True when training should stop."""
        if not self.patience:
            return False
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            if self.best is None:
                self.best = _Snapshot(trainee)
            else:
                self.best.refill(trainee)
        return self.exhausted(epoch)

    def exhausted(self, epoch) -> bool:
        """True when ``epoch`` is ``patience`` epochs past the best one."""
        return bool(self.patience) and self.best_epoch > 0 and epoch - self.best_epoch >= self.patience

    def keep_best(self, trainee, last):
        """Restore the best epoch's parameters when the last epoch run (``last``) was not the best;
        returns the epoch restored, or None."""
        if not self.patience or self.best is None or self.best_epoch == last:
            return None
        self.best.restore(trainee)
        return self.best_epoch

    def load(self, trainee, loop, history):
        """Take the state a checkpoint saved (``loop``, a :class:`LoopState`), or, from an older
        checkpoint without it, the last saved epoch as the best one known."""
        if not self.patience:
            return
        if loop is not None and loop.best_epoch is not None:
            self.best_accuracy, self.best_epoch = float(loop.best_accuracy), loop.best_epoch
            if self.best_epoch and len(loop.best) != len(trainee.state_arrays()):
                raise ValueError(
                    f"The checkpoint keeps {len(loop.best)} arrays of its best epoch, but the network has "
                    f"{len(trainee.state_arrays())} parameters and running statistics; resume with the "
                    "network the checkpoint was saved from."
                )
            if self.best_epoch:
                values = [trainee.backend.asarray(saved, dtype=array.dtype)
                          for saved, array in zip(loop.best, trainee.state_arrays())]
                self.best = _Snapshot(trainee, values)
        elif len(history):
            self.best_accuracy, self.best_epoch, self.best = (
                history.accuracy[-1], len(history), _Snapshot(trainee)
            )


def _loop_state(trainee, seed, stopper) -> LoopState:
    """What a checkpoint must hold, beyond parameters and optimizer, to resume exactly."""
    best = [] if stopper.best is None else [trainee.backend.to_numpy(array) for array in stopper.best.values]
    return LoopState(shuffle_seed=seed, generators=trainee.generator_states(),
                     best_accuracy=stopper.best_accuracy, best_epoch=stopper.best_epoch, best=best)


def _shuffle_seed(shuffle, seed, loop, checkpoint):
    """The seed of the epoch orders: the checkpoint's when resuming, else ``seed``, else one drawn from
    NumPy's global generator."""
    saved = loop.shuffle_seed if loop is not None else None
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


def _resume(path, trainee, optimizer):
    """Fill the network (and ``optimizer``) from the checkpoint at ``path``; return
    ``(history, next epoch, LoopState or None)``."""
    from ..checkpoint import load_into

    before = _Snapshot(trainee)
    saved = load_into(trainee.net, path)
    given, stored = _optimizer_settings(optimizer), _optimizer_settings(saved.optimizer_state)
    if given != stored:
        before.restore(trainee)  # nothing changes when the resume is refused
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
