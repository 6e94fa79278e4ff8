"""Learning-rate schedules: ``schedule(epoch) -> factor`` with 1-based epochs, as ``train`` prints
them; ``train(..., schedule=...)`` multiplies its rate by the factor of each epoch."""

from __future__ import annotations

import math

from .checks import finite_number, is_real, is_whole, nonnegative_number, positive_integer


def factor_of(schedule, epoch: int) -> float:
    """``schedule(epoch)`` checked to be a finite factor >= 0 (1.0 without a schedule)."""
    if schedule is None:
        return 1.0
    factor = schedule(epoch)
    if not (is_real(factor) and math.isfinite(factor) and factor >= 0):
        raise ValueError(
            f"train's schedule {schedule!r} gave {factor!r} for epoch {epoch}; "
            "a schedule must return a finite factor >= 0."
        )
    return float(factor)


def constant(epoch: int) -> float:
    """The factor 1 for every epoch."""
    return 1.0


class StepLR:
    """Multiply the rate by ``gamma`` every ``step_size`` epochs: epochs 1..step_size get 1, then gamma..."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _positive_integer(self, "step_size", step_size)
        self.gamma = nonnegative_number(gamma, "gamma", "StepLR")

    def __repr__(self) -> str:
        return f"StepLR({self.step_size}, gamma={self.gamma})"

    def __call__(self, epoch: int) -> float:
        return self.gamma ** ((_epoch(self, epoch) - 1) // self.step_size)


class CosineLR:
    """Cosine annealing from 1 at epoch 1 down to ``min_factor`` after ``total_epochs`` epochs.

    ``factor = min + (1 - min) (1 + cos(pi (epoch - 1) / total_epochs)) / 2``, so every one of the
    ``total_epochs`` epochs trains with a nonzero rate; later epochs stay at ``min_factor``.
    """

    def __init__(self, total_epochs: int, min_factor: float = 0.0):
        self.total_epochs = _positive_integer(self, "total_epochs", total_epochs)
        if not 0 <= finite_number(min_factor, "min_factor", "CosineLR") <= 1:
            raise ValueError(f"CosineLR needs 0 <= min_factor <= 1, got {min_factor!r}.")
        self.min_factor = float(min_factor)

    def __repr__(self) -> str:
        return f"CosineLR({self.total_epochs}, min_factor={self.min_factor})"

    def __call__(self, epoch: int) -> float:
        progress = min(_epoch(self, epoch) - 1, self.total_epochs) / self.total_epochs
        return self.min_factor + (1.0 - self.min_factor) * (1.0 + math.cos(math.pi * progress)) / 2.0


def _epoch(schedule, epoch) -> int:
    if not is_whole(epoch) or epoch < 1:
        raise ValueError(f"{schedule!r} takes 1-based epoch numbers, got {epoch!r}.")
    return int(epoch)


def _positive_integer(owner, label, value) -> int:
    return positive_integer(value, label, type(owner).__name__)

