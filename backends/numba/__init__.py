"""The Numba backend: :mod:`.backend` (the contract's overrides), :mod:`.kernels` (the JIT kernels,
one module a family), :mod:`.threads` (the threading layer) and :mod:`.target` (the vector width).

Importing this package does not import Numba; :func:`create` does.
"""

from .backend import NumbaBackend, create

__all__ = ["NumbaBackend", "create"]
