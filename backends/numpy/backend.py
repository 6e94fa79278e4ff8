"""The NumPy backend: the contract's reference implementations, unchanged."""

from __future__ import annotations

from ..base import Backend


class NumpyBackend(Backend):
    """Plain NumPy on the CPU; BLAS does the matrix products."""


def create() -> NumpyBackend:
    return NumpyBackend()
