"""fastprop's backends: one contract (:mod:`.base`, with the NumPy reference of every method) and
one subpackage per backend (:mod:`.numpy`, :mod:`.numba`, :mod:`.cupy`), each with its backend module
and its kernels beside it.

Built-in backends are registered here by name and imported only when first used, so a missing
optional package (numba, cupy) costs nothing until somebody asks for that backend.
"""

from __future__ import annotations

from importlib import import_module

if __name__ != "fastprop.backends":  # e.g. `import backends` from the repository root
    raise ImportError(
        f"fastprop's backends were imported as {__name__!r}, which would start a second, separate "
        "registry; install the project (pip install -e .) and import them as fastprop.backends."
    )

from . import blas_spin  # noqa: F401  first: it may set OPENBLAS_THREAD_TIMEOUT before NumPy loads OpenBLAS
from .base import Backend
from .registry import (
    BackendError,
    BackendStatus,
    BackendUnavailableError,
    available_backends,
    backend_names,
    computing_on,
    current,
    get_backend,
    get_dtype,
    load_backend,
    owner_of,
    register_backend,
    resolve_dtype,
    set_backend,
    use_backend,
)

__all__ = [
    "Backend",
    "BackendError",
    "BackendStatus",
    "BackendUnavailableError",
    "available_backends",
    "backend_names",
    "computing_on",
    "current",
    "get_backend",
    "get_dtype",
    "load_backend",
    "owner_of",
    "register_backend",
    "resolve_dtype",
    "set_backend",
    "use_backend",
]


def _builtin(module: str):
    def factory() -> Backend:
        return import_module(f"{__name__}.{module}").create()

    return factory


for _name in ("numpy", "numba", "cupy"):
    register_backend(_name, _builtin(_name))
