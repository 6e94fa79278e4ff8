"""The checks every public entry point makes on numbers, with one sentence naming what is wrong.

NumPy scalars count as numbers (``numpy.float32(0.1)``, ``numpy.int64(3)``); booleans do not.
"""

from __future__ import annotations

import math
import numbers

import numpy


def is_real(value) -> bool:
    """A real number, NumPy scalars included, but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, numpy.bool_))


def is_whole(value) -> bool:
    """An integer, NumPy integers included, but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, numpy.bool_))


def positive_integer(value, name, where) -> int:
    """``value`` as an ``int`` >= 1, or ``ValueError("<where> needs a positive integer <name> ...")``."""
    if not is_whole(value) or value < 1:
        raise ValueError(f"{where} needs a positive integer {name}, got {value!r}.")
    return int(value)


def whole_number(value, name, where) -> int:
    """``value`` as an ``int``, or one clear error."""
    if not is_whole(value):
        raise ValueError(f"{where} needs an integer {name}, got {value!r}.")
    return int(value)


def finite_number(value, name, where) -> float:
    """``value`` as a finite ``float``, or one clear error."""
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{where} needs a finite number for {name}, got {value!r}.")
    return float(value)


def nonnegative_number(value, name, where) -> float:
    """``value`` as a finite ``float`` >= 0, or one clear error."""
    if finite_number(value, name, where) < 0:
        raise ValueError(f"{where} needs {name} >= 0, got {value!r}.")
    return float(value)
