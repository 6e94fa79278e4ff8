"""The NumPy backend: the contract's reference implementations (:mod:`fastprop.backends.base`)."""

from .backend import NumpyBackend, create

__all__ = ["NumpyBackend", "create"]
