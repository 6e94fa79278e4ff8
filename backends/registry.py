"""Which backends exist, which one is current, and how to choose.

A backend is registered under a name with a *factory*: a callable that returns a
:class:`~fastprop.backends.base.Backend` or raises :class:`BackendUnavailableError` saying why it
cannot run here (package missing, no GPU) and what to install. Factories run lazily, once.

The current backend and working dtype come from, in order: a :func:`use_backend` block in this
context (thread or async task), the process default set by :func:`set_backend`, and the
``FASTPROP_BACKEND`` / ``FASTPROP_DTYPE`` environment variables (default ``numpy``, ``float32``).
Third-party packages add backends through the entry-point group ``fastprop.backends``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import NamedTuple

import numpy

from .base import Backend

ENTRY_POINT_GROUP = "fastprop.backends"
_DTYPES = {"float32": numpy.float32, "float64": numpy.float64}


class BackendError(ValueError):
    """A backend name, dtype or array that fastprop cannot use."""


class BackendUnavailableError(RuntimeError):
    """A registered backend that cannot run on this machine; the message says what to install."""


class Selection(NamedTuple):
    backend: Backend
    dtype: type


@dataclass(frozen=True)
class BackendStatus:
    """What :func:`available_backends` reports for one backend."""

    name: str
    available: bool
    version: str | None = None
    device: str | None = None
    reason: str | None = None
    #: How it runs in parallel, e.g. "2 (tbb)": 2 threads on Numba's TBB layer; None if it does not say.
    threads: str | None = None


_factories: dict[str, Callable[[], Backend]] = {}
_instances: dict[str, Backend] = {}
_failures: dict[str, str] = {}
_lock = threading.Lock()
_entry_points_loaded = False
_default: Selection | None = None
_override: contextvars.ContextVar[Selection | None] = contextvars.ContextVar(
    "fastprop_backend", default=None
)


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Register ``factory`` under ``name``; registering a name again replaces the old factory."""
    with _lock:
        _factories[name] = factory
        _instances.pop(name, None)
        _failures.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _factories:
            register_backend(entry.name, _lazy_entry_point(entry))


def _lazy_entry_point(entry) -> Callable[[], Backend]:
    def factory() -> Backend:
        try:
            return entry.load()()
        except BackendUnavailableError:
            raise
        except Exception as error:  # a broken plug-in must not break fastprop
            raise BackendUnavailableError(
                f"the entry point {entry.value!r} failed to load ({error}); "
                "reinstall or fix the package that provides it"
            ) from error

    return factory


def backend_names() -> list[str]:
    """Every registered backend name, available or not."""
    _load_entry_points()
    return sorted(_factories)


def load_backend(name: str) -> Backend:
    """The backend registered as ``name``, created on first use.

    Raises :class:`BackendError` for an unknown name and :class:`BackendUnavailableError` when the
    backend cannot run here.
    """
    _load_entry_points()
    with _lock:
        if name in _instances:
            return _instances[name]
        if name not in _factories:
            raise BackendError(
                f"Unknown backend {name!r}; registered backends are {', '.join(sorted(_factories))}."
            )
        if name in _failures:
            raise BackendUnavailableError(f"Backend {name!r} is unavailable: {_failures[name]}.")
        try:
            backend = _factories[name]()
        except BackendUnavailableError as error:
            _failures[name] = str(error)
            raise BackendUnavailableError(f"Backend {name!r} is unavailable: {error}.") from None
        backend.name = name
        _instances[name] = backend
        return backend


def owner_of(array) -> Backend | None:
    """The backend whose native arrays include ``array``: the current one first, then those already
    loaded, then (only for an array none of them owns) the other registered ones, loaded to ask;
    None when no backend owns it."""
    current_backend = current().backend
    if current_backend.is_native(array):
        return current_backend
    with _lock:
        loaded = list(_instances.values())
    for backend in loaded:
        if backend.is_native(array):
            return backend
    for name in backend_names():
        if name in _failures:
            continue
        try:
            backend = load_backend(name)
        except BackendUnavailableError:  # unavailable backends own nothing
            continue
        if backend.is_native(array):
            return backend
    return None


def available_backends() -> dict[str, BackendStatus]:
    """Every registered backend: whether it runs here, its version and device, or why not."""
    report = {}
    for name in backend_names():
        try:
            info = load_backend(name).info()
        except BackendUnavailableError:
            report[name] = BackendStatus(name, False, reason=_failures[name])
        else:
            threads = info.get("threads")
            if threads is not None and info.get("threading_layer"):
                threads = f"{threads} ({info['threading_layer']})"
            report[name] = BackendStatus(name, True, info.get("version"), info.get("device"),
                                         threads=None if threads is None else str(threads))
    return report


def resolve_dtype(dtype) -> type:
    """``numpy.float32`` or ``numpy.float64`` from a name or dtype; anything else is an error."""
    key = numpy.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if key not in _DTYPES:
        raise BackendError(
            f"Unsupported dtype {dtype!r}; fastprop computes in 'float32' (default) or 'float64'."
        )
    return _DTYPES[key]


def _selection(name: str | None, dtype) -> Selection:
    current = _override.get() or _default
    if name is None:
        backend = current.backend if current else _environment_default().backend
    else:
        backend = load_backend(name)
    if dtype is None:
        dtype = current.dtype if current else _environment_default().dtype
    return Selection(backend, resolve_dtype(dtype))


def _environment_default() -> Selection:
    global _default
    name = os.environ.get("FASTPROP_BACKEND", "numpy") or "numpy"
    dtype = os.environ.get("FASTPROP_DTYPE", "float32") or "float32"
    try:
        _default = Selection(load_backend(name), resolve_dtype(dtype))
    except (BackendError, BackendUnavailableError) as error:
        raise type(error)(
            f"{error} (set by the environment: FASTPROP_BACKEND={name!r}, FASTPROP_DTYPE={dtype!r}; "
            "change or unset them)"
        ) from None
    return _default


def current() -> Selection:
    """The backend and dtype in force here."""
    return _override.get() or _default or _environment_default()


def get_backend() -> Backend:
    """The backend in force here (see the module docstring for the order of precedence)."""
    return current().backend


def get_dtype() -> type:
    """The working dtype in force here (``numpy.float32`` unless chosen otherwise)."""
    return current().dtype


def set_backend(name: str, dtype=None) -> Backend:
    """Make ``name`` the process-wide default backend, optionally with a working ``dtype``.

    Inside a :func:`use_backend` block the change also applies to the rest of that block.
    """
    global _default
    selection = _selection(name, dtype)
    _default = selection
    if _override.get() is not None:
        _override.set(selection)
    return selection.backend


@contextlib.contextmanager
def computing_on(backend: Backend, dtype) -> Iterator[None]:
    """Make ``backend`` (a backend object, e.g. a network's) current in ``dtype`` inside the block, so
    that what computes without a layer (costs) uses its kernels; a backend object that is not
    registered under its name leaves the selection as it is."""
    try:
        registered = load_backend(backend.name) is backend
    except Exception:  # a backend object that is not registered under its name
        registered = False
    if not registered:
        yield
        return
    with use_backend(backend.name, dtype):
        yield


@contextlib.contextmanager
def use_backend(name: str, dtype=None) -> Iterator[Backend]:
    """Use backend ``name`` (and ``dtype``) inside a ``with`` block, in this context only."""
    token = _override.set(_selection(name, dtype))
    try:
        yield _override.get().backend
    finally:
        _override.reset(token)
