"""Arrays crossing into a backend: one conversion at the boundary, with one clear error."""

from __future__ import annotations

import numpy

from .base import Backend
from .registry import BackendError


def accept_array(backend: Backend, dtype, array, where: str):
    """Return ``array`` as a ``dtype`` array of ``backend``; host NumPy data is copied across.

    ``where`` names the receiver in error messages, e.g. ``"Linear(784, 10) input"``.
    """
    if backend.is_native(array):
        if array.dtype != dtype:
            _check_numeric(array.dtype, where)
            array = _converted(backend.xp, array, dtype, where)
        return array
    device = hasattr(array, "__cuda_array_interface__")  # another backend's, whatever its type says
    if isinstance(array, (numpy.ndarray, numpy.generic, list, tuple, int, float)) and not device:
        host = numpy.asarray(array)
        _check_numeric(host.dtype, where)
        if host.dtype != dtype:
            host = _converted(numpy, host, dtype, where)
        return backend.asarray(host, dtype=dtype)
    kind = f"{type(array).__module__}.{type(array).__name__}"
    raise BackendError(
        f"{where} is a {kind}, but this layer computes on the {backend.name!r} backend; "
        f"pass a NumPy array or an array of that backend, or move the model with "
        f".to_backend(...) to the backend that owns the data."
    )


def _converted(xp, array, dtype, where):
    """``array.astype(dtype)``, refusing values too large for ``dtype`` (they would become inf)."""
    if xp is numpy:
        try:
            with numpy.errstate(over="raise"):
                return array.astype(dtype)
        except FloatingPointError:
            pass
    else:
        converted = array.astype(dtype)
        if not bool((xp.isinf(converted) == xp.isinf(array)).all()):
            pass
        else:
            return converted
    limit = numpy.finfo(dtype).max
    largest = float(xp.abs(array[xp.isfinite(array)]).max())
    raise ValueError(
        f"{where} holds {largest:g}, beyond the range of {numpy.dtype(dtype).name} (about ±{limit:.3g}); "
        "scale the data down, or compute in float64 (fastprop.set_backend(name, 'float64'))."
    )


def _check_numeric(dtype, where):
    if numpy.dtype(dtype).kind not in "fiub":
        raise BackendError(
            f"{where} has dtype {dtype}, but fastprop needs real numbers; convert it with "
            ".astype(numpy.float32) first."
        )


#: The dtypes the accelerated backends' kernels take; anything else goes to the NumPy reference.
KERNEL_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def kernel_ready(*arrays, ndim=None) -> bool:
    """True when the arrays are C-contiguous, all of one dtype in :data:`KERNEL_FLOATS` (and all
    ``ndim``-D when ``ndim`` is given): what a backend's own kernels take."""
    dtype = arrays[0].dtype
    return dtype in KERNEL_FLOATS and all(
        a.dtype == dtype and a.flags.c_contiguous and (ndim is None or a.ndim == ndim) for a in arrays)



def norm_ready(x, *columns, max_rows=None) -> bool:
    """True for a non-empty ``(rows, C)`` matrix (at most ``max_rows`` rows when given) and ``(C,)``
    vectors of its dtype that a backend's batch-norm kernels take."""
    return (x.ndim == 2 and 0 < x.shape[0] <= (x.shape[0] if max_rows is None else max_rows)
            and kernel_ready(x) and all(c.shape == (x.shape[1],) for c in columns)
            and kernel_ready(*columns, ndim=1) and columns[0].dtype == x.dtype)
