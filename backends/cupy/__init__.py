"""The CuPy backend: :mod:`.backend` (the contract's overrides), :mod:`.kernels` (compiling and
launching the CUDA kernels) and ``cuda/`` (their sources, shipped as package data).

Importing this package imports CuPy when it is installed; :func:`create` says why the backend cannot
run when it is not, or when no GPU is there.
"""

from .backend import CupyBackend, create

__all__ = ["CupyBackend", "create"]
