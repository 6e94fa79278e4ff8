"""A stand-in ``cupy`` for tests on machines without a GPU: NumPy arrays on the host, CuPy's interface.

Only what fastprop's CuPy backend uses is here, each with CuPy 13's signature (read from CuPy's
source), and everything else fails loudly: an attribute CuPy has but this lacks raises
AttributeError naming it, so the stand-in never hides a call real CuPy would refuse, and never
silently accepts one it would not.

* :class:`ndarray` is a ``numpy.ndarray`` subclass, so that device and host arrays stay apart:
  ``get()`` copies to the host, ``cupy.asnumpy`` and ``cupy.asarray`` move data, and mixing a host
  array into a device operation raises TypeError as CuPy does. Results of reductions are 0-d
  device arrays, not NumPy scalars, as in CuPy. Floating-point errors never raise (a GPU has none).
  NumPy's ndarray attributes that CuPy's lacks (``ctypes``, ``resize``, ...) raise AttributeError.
* Arrays this module allocates sit between guard bytes, and ``empty`` memory is filled with 0xFF
  bytes (NaN, or -1): a kernel that reads uninitialised memory gets NaNs, and one that writes past
  either end of an array is reported after its launch.
* Kernels are :mod:`host_module`'s emulation (``RawModule``, ``ElementwiseKernel``); cuBLAS's
  ``gemm`` is NumPy with cuBLAS's argument checks (``cupy.cublas``).
* Streams: ``cupy.cuda.Stream`` with ``begin_capture``/``end_capture``. While the current stream
  captures, kernel launches are recorded (not run) and ``end_capture`` returns a graph whose
  ``launch()`` replays them with the arguments they had; any other operation on device data then
  raises (a GPU would capture it, or refuse it when it synchronises, and this stand-in records
  kernels only), so a capture never half-works.

Limits: ``numpy.asarray(device_array)`` cannot be caught (NumPy sees a subclass; real CuPy raises
TypeError), and operations run at once, in order, so no stream race can show.
"""

from __future__ import annotations

import builtins
import math
import sys
import threading
import weakref

import numpy
from numpy import (  # NOQA: F401  (re-exported by CuPy from NumPy)
    bool_, e, finfo, float16, float32, float64, floating, generic, iinfo, inexact, inf, int8, int16,
    int32, int64, integer, intp, issubdtype, nan, newaxis, number, pi, signedinteger, uint8, uint16, uint32,
    uint64, unsignedinteger,
)

from tests.cuda_emulation import host_module

__version__ = "13.6.0"  # the CuPy whose interface this follows (fastprop requires CuPy 13)

_STANDIN = "the stand-in cupy (tests/cuda_emulation/standin)"


class StandinLimitation(NotImplementedError):
    """Something real CuPy does that this stand-in does not (never a silent approximation)."""


# ------------------------------------------------------------------------------ memory


_GUARD = 256  # bytes on either side of each allocation
_POISON = 0xFF
_allocations: dict[int, tuple] = {}  # id(raw buffer) -> (start, nbytes)
_lock = threading.Lock()


class MemoryPool:
    """``cupy.get_default_memory_pool()``: counts the bytes of the arrays this stand-in allocated."""

    def __init__(self):
        self._used = 0
        self._total = 0

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._total

    def free_bytes(self):
        return self._total - self._used

    def free_all_blocks(self, stream=None):
        self._total = self._used

    def n_free_blocks(self):
        return 0

    def _allocated(self, nbytes):
        self._used += nbytes
        self._total = builtins.max(self._total, self._used)

    def _freed(self, nbytes):
        self._used -= nbytes


_pool = MemoryPool()


def get_default_memory_pool():
    return _pool


def _released(key, nbytes):
    with _lock:
        _allocations.pop(key, None)
        _pool._freed(nbytes)


def _allocate(shape, dtype, order="C"):
    """A new device array of ``shape``, poisoned, between guard bytes."""
    dtype = numpy.dtype(dtype)
    shape = _shape(shape)
    if order not in ("C", "F"):
        raise ValueError(f"order not understood: {order!r}")
    nbytes = math.prod(shape) * dtype.itemsize
    raw = numpy.empty(nbytes + 2 * _GUARD + 256, numpy.uint8)
    raw.fill(_POISON)
    start = _GUARD + (-(raw.ctypes.data + _GUARD)) % 256  # 256-byte aligned, as CuPy's pool
    array = raw[start:start + nbytes].view(dtype).reshape(shape, order=order).view(ndarray)
    with _lock:
        _allocations[id(raw)] = (start, nbytes)
        _pool._allocated(nbytes)
    weakref.finalize(raw, _released, id(raw), nbytes)
    return array


def _root(array):
    while isinstance(array, numpy.ndarray) and array.base is not None:
        array = array.base
    return array


def _check_guards(arrays, description):
    for array in arrays:
        raw = _root(array)
        found = _allocations.get(id(raw))
        if found is None or not isinstance(raw, numpy.ndarray) or raw.dtype != numpy.uint8:
            continue
        start, nbytes = found
        before, after = raw[:start], raw[start + nbytes:]
        if (before != _POISON).any() or (after != _POISON).any():
            raise host_module.EmulationError(f"{description}: wrote outside an array of {nbytes} bytes "
                                             f"({array.dtype}, shape {array.shape})")


def _shape(shape):
    if isinstance(shape, (int, numpy.integer)):
        return (int(shape),)
    return tuple(int(s) for s in shape)


class MemoryPointer:
    """``ndarray.data``: the device address of an array's first element (``ptr``), with memset."""

    def __init__(self, array):
        self._array = array
        self.ptr = array.view(numpy.ndarray).ctypes.data

    def memset_async(self, value, size, stream=None):
        _refuse_in_capture("MemoryPointer.memset_async")
        self._memset(value, size)

    def memset(self, value, size):
        _refuse_in_capture("MemoryPointer.memset")
        self._memset(value, size)

    def _memset(self, value, size):
        raw = _root(self._array)
        found = _allocations.get(id(raw))
        if found is None:
            raise StandinLimitation(f"{_STANDIN} sets memory of arrays it allocated only")
        start, nbytes = found
        offset = self.ptr - raw.ctypes.data
        if not start <= offset <= offset + size <= start + nbytes:
            raise host_module.EmulationError(f"memset of {size} bytes at byte {offset - start} of an "
                                             f"allocation of {nbytes}: outside it")
        raw[offset:offset + size] = value & 0xFF

    def __getattr__(self, name):
        raise AttributeError(f"{_STANDIN}: cupy.cuda.MemoryPointer.{name} is not emulated")


# ------------------------------------------------------------------------------ streams and capture


class _ThreadLocal(threading.local):
    def __init__(self):
        self.stack = []  # streams made current with `with`


_streams = _ThreadLocal()


def _current_stream():
    from .cuda import Stream

    return _streams.stack[-1] if _streams.stack else Stream.null


def _capturing():
    return _current_stream()._captured is not None


def _refuse_in_capture(operation):
    if _capturing():
        raise StandinLimitation(
            f"{operation} while the current stream captures a CUDA graph: {_STANDIN} records kernel launches "
            "only (a GPU would capture this into the graph, or fail if it synchronises)")


class _Runtime(host_module.Runtime):
    def is_device_array(self, value):
        return isinstance(value, ndarray)

    def empty(self, shape, dtype):
        return _allocate(shape, dtype)

    def enqueue(self, description, run):
        captured = _current_stream()._captured
        if captured is not None:
            captured.append((description, run))
        else:
            run()

    def check_guards(self, arrays, description):
        _check_guards(arrays, description)


host_module.runtime = _Runtime()


# ------------------------------------------------------------------------------ arrays


def _is_host_array(value):
    return isinstance(value, numpy.ndarray) and not isinstance(value, ndarray)


def _to_host_views(values, what):
    """``values`` with device arrays as plain NumPy views; a host array among them is refused."""
    if isinstance(values, ndarray):
        return values.view(numpy.ndarray)
    if _is_host_array(values):
        raise TypeError(f"Unsupported type {type(values)} (a host array given to {what}; move it with "
                        "cupy.asarray)")
    if isinstance(values, (list, tuple)):
        return type(values)(_to_host_views(v, what) for v in values)
    return values


def _to_device(result):
    """NumPy results as device arrays (scalars as 0-d arrays, as CuPy returns them)."""
    if isinstance(result, ndarray):
        return result
    if isinstance(result, numpy.ndarray):
        return result.view(ndarray)
    if isinstance(result, numpy.generic):
        return numpy.asarray(result).view(ndarray)
    if isinstance(result, tuple):
        return tuple(_to_device(r) for r in result)
    return result


def _compute(function, args, kwargs, what):
    _refuse_in_capture(what)
    args = _to_host_views(args, what)
    kwargs = {k: _to_host_views(v, what) for k, v in kwargs.items()}
    with numpy.errstate(all="ignore"):
        return _to_device(function(*args, **kwargs))


_UFUNC_KEYWORDS = {"__call__": {"out", "dtype", "casting"}, "reduce": {"axis", "dtype", "out", "keepdims"},
                   "accumulate": {"axis", "dtype", "out"}}


def _device_method(name):
    """``numpy.ndarray.<name>`` with device arrays in and out (NumPy's returns scalars)."""

    def method(self, *args, **kwargs):
        return _compute(getattr(numpy.ndarray, name), (self,) + args, kwargs, f"ndarray.{name}")

    method.__name__ = name
    return method


class ndarray(numpy.ndarray):
    """A device array: a ``numpy.ndarray`` subclass, its memory standing for GPU memory."""

    __array_priority__ = 100

    @property
    def __cuda_array_interface__(self):
        """The CUDA Array Interface (version 3) that CuPy's arrays offer: what tells a device array
        from a host one for code that does not import CuPy."""
        pointer = self.view(numpy.ndarray).ctypes.data
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (pointer, False), "version": 3,
                "strides": None if self.flags.c_contiguous else self.strides}

    def __new__(cls, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise StandinLimitation(f"{_STANDIN} makes ndarrays of new memory only")
        return _allocate(shape, dtype, order)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        allowed = _UFUNC_KEYWORDS.get(method)
        if allowed is None:
            raise StandinLimitation(f"{_STANDIN}: ufunc method {ufunc.__name__}.{method}")
        if kwargs.get("where", True) is not True:
            raise TypeError(f"Wrong arguments {{'where': {kwargs['where']!r}}}")
        kwargs.pop("where", None)
        if set(kwargs) - allowed:
            raise TypeError(f"Wrong arguments {dict((k, kwargs[k]) for k in set(kwargs) - allowed)}")
        out = kwargs.get("out")
        if out is not None:
            if builtins.any(not isinstance(o, ndarray) for o in out if o is not None):
                raise TypeError("Output arguments type must be cupy.ndarray")
        result = _compute(getattr(ufunc, method), inputs, kwargs, f"cupy.{ufunc.__name__}")
        if out is not None:
            return out[0] if len(out) == 1 else out
        return result

    def __array_function__(self, func, types, args, kwargs):
        ours = _NAMESPACE.get(func.__name__)
        if ours is None:
            raise TypeError(f"numpy.{func.__name__} has no implementation for cupy arrays in {_STANDIN}")
        return ours(*args, **kwargs)

    # -- transfers and copies

    def get(self, stream=None, order="C", out=None, blocking=True):
        _refuse_in_capture("ndarray.get")
        host = numpy.array(self.view(numpy.ndarray), order=order, copy=True)
        if out is not None:
            if not _is_host_array(out):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        _refuse_in_capture("ndarray.set")
        if not _is_host_array(arr) or arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("set needs a host numpy.ndarray of the same shape and dtype")
        self.view(numpy.ndarray)[...] = arr

    def copy(self, order="C"):
        _refuse_in_capture("ndarray.copy")
        copy = _allocate(self.shape, self.dtype, "F" if order == "F" else "C")
        copy.view(numpy.ndarray)[...] = self.view(numpy.ndarray)
        return copy

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        _refuse_in_capture("ndarray.astype")
        dtype = numpy.dtype(dtype)
        if not copy and dtype == self.dtype:
            return self
        result = _allocate(self.shape, dtype)
        with numpy.errstate(all="ignore"):
            result.view(numpy.ndarray)[...] = self.view(numpy.ndarray).astype(dtype)
        return result

    def fill(self, value):
        _refuse_in_capture("ndarray.fill")
        self.view(numpy.ndarray).fill(value)

    @property
    def data(self):
        return MemoryPointer(self)

    @property
    def device(self):
        from .cuda import Device

        return Device(0)

    # -- indexing: CuPy converts host index arrays and values to device arrays

    def __getitem__(self, key):
        key = _index(key)
        result = self.view(numpy.ndarray)[key]
        if isinstance(result, numpy.generic):  # CuPy gives a 0-d view, not a copy
            result = self.view(numpy.ndarray)[(key if isinstance(key, tuple) else (key,)) + (Ellipsis,)]
        if result.base is None or _root(result) is not _root(self):
            _refuse_in_capture("ndarray.__getitem__ (a gather)")
        return result.view(ndarray)

    def __setitem__(self, key, value):
        _refuse_in_capture("ndarray.__setitem__")
        if isinstance(value, ndarray):
            value = value.view(numpy.ndarray)
        with numpy.errstate(all="ignore"):
            self.view(numpy.ndarray)[_index(key)] = value

    # -- reading values on the host (a synchronisation)

    def item(self, *args):
        _refuse_in_capture("ndarray.item")
        return self.view(numpy.ndarray).item(*args)

    def tolist(self):
        _refuse_in_capture("ndarray.tolist")
        return self.view(numpy.ndarray).tolist()

    def __float__(self):
        _refuse_in_capture("float(ndarray)")
        return float(self.view(numpy.ndarray))

    def __int__(self):
        _refuse_in_capture("int(ndarray)")
        return int(self.view(numpy.ndarray))

    def __bool__(self):
        _refuse_in_capture("bool(ndarray)")
        return bool(self.view(numpy.ndarray))

    def __index__(self):
        _refuse_in_capture("operator.index(ndarray)")
        return self.view(numpy.ndarray).__index__()

    # -- methods whose NumPy versions return scalars or host types

    argmax = _device_method("argmax")
    argmin = _device_method("argmin")
    mean = _device_method("mean")
    var = _device_method("var")
    std = _device_method("std")
    nonzero = _device_method("nonzero")

    def __reduce__(self):
        raise StandinLimitation(f"{_STANDIN} does not pickle device arrays")

    def __array__(self, dtype=None, copy=None):  # numpy.array(device) on a non-subclass path
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def __dlpack__(self, *args, **kwargs):
        raise StandinLimitation(f"{_STANDIN}: DLPack")


def _not_in_cupy(name):
    def refuse(self):
        raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}' (NumPy's has, CuPy's not)")

    return property(refuse)


# numpy.ndarray's attributes that cupy.ndarray (CuPy 13) lacks, refused rather than inherited.
for _name in ("byteswap", "ctypes", "getfield", "mT", "resize", "setfield", "setflags", "to_device"):
    setattr(ndarray, _name, _not_in_cupy(_name))


def _index(key):
    """An index with device arrays as plain views (CuPy takes host and device index arrays alike)."""
    if isinstance(key, ndarray):
        return key.view(numpy.ndarray)
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key


# ------------------------------------------------------------------------------ creation and transfer


def empty(shape, dtype=float, order="C"):
    return _allocate(shape, dtype, order)


def zeros(shape, dtype=float, order="C"):
    _refuse_in_capture("cupy.zeros")
    array = _allocate(shape, dtype, order)
    array.view(numpy.ndarray).fill(0)
    return array


def ones(shape, dtype=float, order="C"):
    _refuse_in_capture("cupy.ones")
    array = _allocate(shape, dtype, order)
    array.view(numpy.ndarray).fill(1)
    return array


def full(shape, fill_value, dtype=None, order="C"):
    _refuse_in_capture("cupy.full")
    if dtype is None:
        dtype = numpy.array(fill_value).dtype
    array = _allocate(shape, dtype, order)
    array.view(numpy.ndarray).fill(fill_value)
    return array


def _like(a, dtype, order, subok, shape):
    if subok is not None:
        raise TypeError("subok is not supported yet")
    if not isinstance(a, ndarray):
        a = asarray(a)
    fortran = order == "F" or (order in ("K", "A") and a.flags.f_contiguous and not a.flags.c_contiguous)
    layout = "F" if fortran else "C"
    return _allocate(a.shape if shape is None else shape, a.dtype if dtype is None else dtype, layout)


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    return _like(prototype, dtype, order, subok, shape)


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    _refuse_in_capture("cupy.zeros_like")
    array = _like(a, dtype, order, subok, shape)
    array.view(numpy.ndarray).fill(0)
    return array


def ones_like(a, dtype=None, order="K", subok=None, shape=None):
    _refuse_in_capture("cupy.ones_like")
    array = _like(a, dtype, order, subok, shape)
    array.view(numpy.ndarray).fill(1)
    return array


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    _refuse_in_capture("cupy.full_like")
    array = _like(a, dtype, order, subok, shape)
    array.view(numpy.ndarray).fill(fill_value)
    return array


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    _refuse_in_capture("cupy.array")
    if isinstance(obj, ndarray):
        source = obj.view(numpy.ndarray)
    elif isinstance(obj, (list, tuple)) and builtins.any(isinstance(o, ndarray) for o in obj):
        source = numpy.array([o.get() if isinstance(o, ndarray) else o for o in obj])
    else:
        source = numpy.asarray(obj)
    same_dtype = dtype is None or numpy.dtype(dtype) == getattr(obj, "dtype", None)
    if isinstance(obj, ndarray) and not copy and same_dtype and not ndmin:
        return obj
    host = numpy.array(source, dtype=dtype, ndmin=ndmin, order="F" if order == "F" else "C", copy=True)
    result = _allocate(host.shape, host.dtype, "F" if host.flags.f_contiguous and not host.flags.c_contiguous
                       else "C")
    result.view(numpy.ndarray)[...] = host
    return result


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray) and (dtype is None or numpy.dtype(dtype) == a.dtype):
        return a
    return array(a, dtype=dtype, copy=False, order=order or "K", blocking=blocking)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    if a.flags.c_contiguous and (dtype is None or numpy.dtype(dtype) == a.dtype) and a.ndim >= 1:
        return a
    return array(a, dtype=dtype, order="C").reshape(a.shape if a.ndim else (1,))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    host = numpy.asarray(a, order=order)
    if out is not None:
        out[...] = host
        return out
    return host


def get_array_module(*args):
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else numpy


def arange(start, stop=None, step=1, dtype=None):
    _refuse_in_capture("cupy.arange")
    return array(numpy.arange(start, stop, step, dtype=dtype))


# ------------------------------------------------------------------------------ computation
#
# Each function has CuPy's signature and computes with NumPy on the device arrays' memory.


def _numpy(name):
    function = getattr(numpy, name)

    def call(*args, **kwargs):
        return _compute(function, args, kwargs, f"cupy.{name}")

    return call


def concatenate(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    return _numpy("concatenate")(tup, axis=axis, out=out, dtype=dtype, casting=casting)


def stack(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    return _numpy("stack")(tup, axis=axis, out=out, dtype=dtype, casting=casting)


def take(a, indices, axis=None, out=None):
    return _numpy("take")(a, indices, axis=axis, out=out)


def argsort(a, axis=-1, kind=None):
    return _numpy("argsort")(a, axis=axis, kind="stable")


def sort(a, axis=-1, kind=None):
    return _numpy("sort")(a, axis=axis, kind="stable")


def argmin(a, axis=None, dtype=None, out=None, keepdims=False):
    result = _numpy("argmin")(a, axis=axis, out=out, keepdims=keepdims)
    return result if dtype is None else result.astype(dtype)


def argmax(a, axis=None, dtype=None, out=None, keepdims=False):
    result = _numpy("argmax")(a, axis=axis, out=out, keepdims=keepdims)
    return result if dtype is None else result.astype(dtype)


def sum(a, axis=None, dtype=None, out=None, keepdims=False):
    return _numpy("sum")(a, axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def prod(a, axis=None, dtype=None, out=None, keepdims=False):
    return _numpy("prod")(a, axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def mean(a, axis=None, dtype=None, out=None, keepdims=False):
    return _numpy("mean")(a, axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def amax(a, axis=None, out=None, keepdims=False):
    return _numpy("amax")(a, axis=axis, out=out, keepdims=keepdims)


def amin(a, axis=None, out=None, keepdims=False):
    return _numpy("amin")(a, axis=axis, out=out, keepdims=keepdims)


max = amax
min = amin


def all(a, axis=None, out=None, keepdims=False):
    return _numpy("all")(a, axis=axis, out=out, keepdims=keepdims)


def any(a, axis=None, out=None, keepdims=False):
    return _numpy("any")(a, axis=axis, out=out, keepdims=keepdims)


def count_nonzero(a, axis=None):
    return _to_device(numpy.asarray(_numpy("count_nonzero")(a, axis=axis)).astype(numpy.intp))


def around(a, decimals=0, out=None):
    return _numpy("around")(a, decimals=decimals, out=out)


def round(a, decimals=0, out=None):
    return around(a, decimals, out=out)


def where(condition, x=None, y=None):
    if (x is None) != (y is None):
        raise ValueError("Must give either both or neither of x and y")
    return _numpy("where")(condition) if x is None else _numpy("where")(condition, x, y)


def clip(a, a_min, a_max, out=None):
    return _numpy("clip")(a, a_min, a_max, out=out)


def copy(a, order="K"):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    return a.copy(order="F" if order == "F" else "C")


def reshape(a, newshape, order="C"):
    return _numpy("reshape")(a, newshape, order=order)


def transpose(a, axes=None):
    return _numpy("transpose")(a, axes)


def dot(a, b, out=None):
    return _numpy("dot")(a, b, out=out)


def may_share_memory(a, b, max_work=None):
    if not (isinstance(a, ndarray) and isinstance(b, ndarray)):
        raise TypeError("may_share_memory takes two cupy.ndarray")
    return numpy.may_share_memory(a.view(numpy.ndarray), b.view(numpy.ndarray))


def shares_memory(a, b, max_work=None):
    if not (isinstance(a, ndarray) and isinstance(b, ndarray)):
        raise TypeError("shares_memory takes two cupy.ndarray")
    return numpy.shares_memory(a.view(numpy.ndarray), b.view(numpy.ndarray))


def array_equal(a1, a2, equal_nan=False):
    return _numpy("array_equal")(a1, a2, equal_nan=equal_nan)


class ufunc:
    """A CuPy ufunc: ``f(*args, out=None, dtype=None, casting=...)`` on device arrays and scalars."""

    def __init__(self, numpy_ufunc):
        self._ufunc = numpy_ufunc
        self.__name__ = numpy_ufunc.__name__
        self.nin, self.nout, self.nargs = numpy_ufunc.nin, numpy_ufunc.nout, numpy_ufunc.nargs

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"

    def __call__(self, *args, **kwargs):
        if set(kwargs) - {"out", "dtype", "casting"}:
            raise TypeError(f"Wrong arguments {kwargs}")
        if not self.nin <= len(args) <= self.nargs:
            raise TypeError(f"Wrong number of arguments for {self.__name__}")
        arrays = [a for a in args if isinstance(a, ndarray)]
        for a in args:
            if isinstance(a, numpy.ndarray) and not isinstance(a, ndarray):
                raise TypeError(f"Unsupported type {type(a)}")
        out = kwargs.get("out")
        if out is not None and not isinstance(out, ndarray):
            raise TypeError("Output arguments type must be cupy.ndarray")
        if not arrays and out is None:  # scalars only: CuPy makes a 0-d device array
            args = tuple(array(a) for a in args)
        result = _compute(self._ufunc, args, kwargs, f"cupy.{self.__name__}")
        return out if out is not None else result


_UFUNCS = ("add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "negative", "power", "exp",
           "log", "log1p", "expm1", "sqrt", "square", "reciprocal", "tanh", "absolute", "maximum", "minimum",
           "fmax", "fmin", "isnan", "isinf", "isfinite", "greater", "greater_equal", "less", "less_equal",
           "equal", "not_equal", "logical_and", "logical_or", "logical_not", "sign", "floor", "ceil",
           "bitwise_and", "bitwise_or", "bitwise_xor", "right_shift", "left_shift")
for _name in _UFUNCS:
    globals()[_name] = ufunc(getattr(numpy, _name))
abs = absolute  # noqa: F821  (a ufunc made above)
del _name


class _MatMul:
    """``cupy.matmul`` (a generalized ufunc; cuBLAS underneath)."""

    __name__ = "matmul"

    def __call__(self, x1, x2, /, out=None, **kwargs):
        unknown = set(kwargs) - {"axes", "axis", "order", "dtype", "keepdims", "signature", "casting"}
        if unknown:
            raise RuntimeError(f"Unknown kwargs {' '.join(unknown)}")
        if kwargs:
            raise StandinLimitation(f"{_STANDIN}: cupy.matmul's keyword arguments {sorted(kwargs)}")
        for a in (x1, x2):
            if not isinstance(a, ndarray):
                raise TypeError(f"Unsupported type {type(a)}")
        if out is not None and not isinstance(out, ndarray):
            raise TypeError("`outs` must be a tuple or `cupy.ndarray`")
        if out is None:
            return _numpy("matmul")(x1, x2)
        _numpy("matmul")(x1, x2, out=out)
        return out


matmul = _MatMul()


# ------------------------------------------------------------------------------ kernels

RawModule = host_module.RawModule
ElementwiseKernel = host_module.ElementwiseKernel


# ------------------------------------------------------------------------------ anything else

dtype = numpy.dtype  # after the functions, whose parameters of that name shadow it
_NAMESPACE = {name: value for name, value in globals().items() if not name.startswith("_")}


def __getattr__(name):
    raise AttributeError(
        f"cupy.{name} is not provided by {_STANDIN}: add it there with CuPy's own signature if fastprop "
        "needs it, so that the tests keep using only what real CuPy has")


from . import cublas, cuda  # noqa: E402, F401  (subpackages, after what they import from here)
