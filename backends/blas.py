"""Matrix products for the CPU backends that call a BLAS: NumPy's, or Intel oneMKL's when installed.

NumPy's wheels bring OpenBLAS. On Intel CPUs oneMKL's ``?gemm`` ran fastprop's dense shapes 1.2-1.35x
faster (``benchmarks/blas_products.py`` measures both on the machine at hand), and a ``cblas_?gemm``
call can add a product into a gradient buffer (``beta = 1``) where ``numpy.matmul`` needs a temporary
and a second pass. So the Numba backend computes its products through :func:`products`, which is:

* :class:`MklProducts` when oneMKL's runtime library (``libmkl_rt``) can be loaded: ``pip install
  "fastprop[mkl]"`` (x86-64 only) puts it in the environment's ``lib`` folder, where the dynamic
  loader does not look, so it is found through the ``mkl`` distribution's own file list, then on the
  loader's path (conda, system packages);
* :class:`NumpyProducts` otherwise.

``FASTPROP_BLAS`` chooses: ``auto`` (the default: oneMKL when it loads), ``mkl`` (oneMKL or an error
that says how to install it) or ``numpy``. oneMKL runs on the GNU OpenMP runtime (``libgomp``, what
GCC-built programs use) when it is there, else on Intel's (``MKL_THREADING_LAYER`` overrides the
choice); its thread count is oneMKL's default (the physical cores), ``MKL_NUM_THREADS`` overrides it.
The Numba backend itself does not use oneMKL's threads: its kernels call ``cblas_?gemm`` one
thread per block from Numba's threads (:meth:`MklProducts.kernel_calls`,
:mod:`backends.numba.kernels.products`), so a training step runs on one thread pool and a forked
process can go on computing (GNU OpenMP's threads do not survive ``fork()``: a product on them in a
forked child hangs). A process holds one oneMKL runtime: PyTorch's oneMKL calls in the same process
run on the threading layer chosen here. On the GNU layer with its default settings PyTorch's epochs
took the same time as without fastprop's oneMKL loaded; with ``OMP_WAIT_POLICY=PASSIVE`` or the
sequential layer they took up to 1.6x longer (``benchmarks/blas_products.py --peer`` measures
it), so fastprop sets neither.

Operands may be C- or Fortran-ordered 2-D views (a transpose costs nothing); anything else, a product
whose output overlaps an operand, or another dtype, goes to ``numpy.matmul``. Products are not
bit-identical across the two libraries (each sums in its own order); both are within float rounding.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

import numpy

from .installed import installed_file

#: The environment variable that picks the library.
VARIABLE = "FASTPROP_BLAS"
CHOICES = ("auto", "mkl", "numpy")
#: oneMKL's threading layers (``MKL_Set_Threading_Layer``), by the name ``MKL_THREADING_LAYER`` takes.
THREADING_LAYERS = {"INTEL": 0, "SEQUENTIAL": 1, "GNU": 3, "TBB": 4}
#: cblas enumerations.
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
#: LP64 interface: dimensions are 32-bit.
_LARGEST = 2**31 - 1


class NumpyProducts:
    """``numpy.matmul``: the BLAS NumPy was built with."""

    name = "numpy"
    #: Whether the library's idle threads stop spinning soon after a product.
    short_spin = False

    def matmul(self, a, b, out=None, *, accumulate=False):
        """``a @ b``, written to ``out`` when given; added to ``out`` when ``accumulate``."""
        if accumulate:
            out += numpy.matmul(a, b)
            return out
        return numpy.matmul(a, b, out=out)

    def matmul_batched(self, a, b, out):
        """``out[i] = a[i] @ b[i]`` for stacks ``a (batch, m, k)``, ``b (batch, k, n)``."""
        return numpy.matmul(a, b, out=out)

    def kernel_calls(self, dtype):
        """The functions compiled kernels call for one-thread products of ``dtype``, as an int64 array
        of addresses (see :mod:`backends.numba.kernels.products`), or None when there are none."""
        return None

    def info(self) -> str:
        return "numpy.matmul (NumPy's BLAS)"


def _layout(array):
    """``(transpose, leading dimension)`` that describe a 2-D array to a row-major cblas call, or None
    when its strides fit neither a row-major nor a column-major matrix."""
    rows, columns = array.shape
    item = array.itemsize
    row_stride, column_stride = array.strides
    if column_stride == item or columns == 1:
        lead = row_stride // item if rows > 1 else columns
        if row_stride % item == 0 and lead >= max(1, columns):
            return _NO_TRANS, lead
    if row_stride == item or rows == 1:
        lead = column_stride // item if columns > 1 else rows
        if column_stride % item == 0 and lead >= max(1, rows):
            return _TRANS, lead
    return None


class MklProducts(NumpyProducts):
    """``cblas_sgemm`` / ``cblas_dgemm`` from oneMKL's runtime library, loaded from ``path``."""

    name = "mkl"

    def __init__(self, path: str):
        self.path = path
        self._lib = lib = ctypes.CDLL(path)
        layer = os.environ.get("MKL_THREADING_LAYER", "").upper()
        if layer not in THREADING_LAYERS:
            layer = "GNU" if ctypes.util.find_library("gomp") else "INTEL"
        lib.MKL_Set_Threading_Layer(THREADING_LAYERS[layer])
        self.threading_layer = layer
        #: GNU OpenMP's idle threads spin briefly by default; Intel OpenMP's for KMP_BLOCKTIME (200 ms).
        self.short_spin = layer != "INTEL" or os.environ.get("KMP_BLOCKTIME", "200").strip() in ("0", "1")
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        self._gemm = {}
        self._batched = {}
        for dtype, prefix, scalar in ((numpy.float32, "cblas_s", ctypes.c_float),
                                      (numpy.float64, "cblas_d", ctypes.c_double)):
            function = getattr(lib, prefix + "gemm")
            function.restype = None
            function.argtypes = [integer] * 6 + [scalar, pointer, integer, pointer, integer,
                                                 scalar, pointer, integer]
            self._gemm[numpy.dtype(dtype)] = function
            batched = getattr(lib, prefix + "gemm_batch_strided")  # oneMKL 2020.2 and later
            batched.restype = None
            batched.argtypes = [integer] * 6 + [scalar, pointer, integer, integer, pointer, integer, integer,
                                                scalar, pointer, integer, integer, integer]
            self._batched[numpy.dtype(dtype)] = batched
        lib.MKL_Get_Max_Threads.restype = integer
        local = ctypes.cast(lib.MKL_Set_Num_Threads_Local, ctypes.c_void_p).value
        self._calls = {dtype: numpy.array([ctypes.cast(gemm, ctypes.c_void_p).value, local], numpy.int64)
                       for dtype, gemm in self._gemm.items()}
        version = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(version, len(version))
        self.version = version.value.decode(errors="replace").strip()

    def matmul(self, a, b, out=None, *, accumulate=False):
        gemm = self._gemm.get(a.dtype)
        if (gemm is None or a.ndim != 2 or b.ndim != 2 or b.dtype != a.dtype
                or a.shape[1] != b.shape[0] or max(a.shape + b.shape) > _LARGEST):
            return super().matmul(a, b, out, accumulate=accumulate)
        (m, k), n = a.shape, b.shape[1]
        if out is None:
            if accumulate:
                raise ValueError("matmul(accumulate=True) needs the out array to add the product to")
            out = numpy.empty((m, n), a.dtype)
        elif (out.shape != (m, n) or out.dtype != a.dtype or not out.flags.writeable
              or numpy.may_share_memory(out, a) or numpy.may_share_memory(out, b)):
            return super().matmul(a, b, out, accumulate=accumulate)
        if m == 0 or n == 0:
            return out
        if k == 0:
            if not accumulate:
                out[...] = 0
            return out
        layout_a, layout_b, layout_out = _layout(a), _layout(b), _layout(out)
        if layout_a is None or layout_b is None or layout_out is None or layout_out[0] != _NO_TRANS:
            return super().matmul(a, b, out, accumulate=accumulate)
        gemm(_ROW_MAJOR, layout_a[0], layout_b[0], m, n, k, 1.0, a.ctypes.data, layout_a[1],
             b.ctypes.data, layout_b[1], 1.0 if accumulate else 0.0, out.ctypes.data, layout_out[1])
        return out

    def kernel_calls(self, dtype):
        """``[cblas_?gemm, MKL_Set_Num_Threads_Local]`` for ``dtype`` (float32 or float64)."""
        return self._calls.get(numpy.dtype(dtype))

    def matmul_batched(self, a, b, out):
        batched = self._batched.get(a.dtype)
        if (batched is None or a.ndim != 3 or b.ndim != 3 or out.ndim != 3 or not a.shape[0]
                or b.dtype != a.dtype or out.dtype != a.dtype or not out.flags.writeable
                or a.shape[0] != b.shape[0] or out.shape != (a.shape[0], a.shape[1], b.shape[2])
                or a.shape[2] != b.shape[1] or min(a.shape[1:] + b.shape[2:]) == 0
                or max(a.shape + b.shape) > _LARGEST
                or numpy.may_share_memory(out, a) or numpy.may_share_memory(out, b)):
            return super().matmul_batched(a, b, out)
        layouts = [_layout(m[0]) for m in (a, b, out)]
        strides = [m.strides[0] for m in (a, b, out)]
        if (None in layouts or layouts[2][0] != _NO_TRANS
                or any(stride % a.itemsize or stride <= 0 for stride in strides)):
            return super().matmul_batched(a, b, out)
        (count, m, k), n = a.shape, b.shape[2]
        (trans_a, lda), (trans_b, ldb), (_, ldc) = layouts
        item = a.itemsize
        batched(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda, strides[0] // item,
                b.ctypes.data, ldb, strides[1] // item, 0.0, out.ctypes.data, ldc, strides[2] // item, count)
        return out

    def info(self) -> str:
        threads = self._lib.MKL_Get_Max_Threads()
        return f"{self.version}, {threads} threads on the {self.threading_layer} threading layer"


def find_mkl() -> str | None:
    """Where oneMKL's runtime library is: the pip package's file, else what the dynamic loader finds."""
    installed = installed_file("mkl", lambda file: file.startswith(("libmkl_rt.", "mkl_rt.")))
    if installed is not None:
        return str(installed)
    prefix_lib = os.path.join(sys.prefix, "lib")
    for name in ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"):
        if os.path.exists(os.path.join(prefix_lib, name)):
            return os.path.join(prefix_lib, name)
    return ctypes.util.find_library("mkl_rt")


class BlasUnavailableError(RuntimeError):
    """``FASTPROP_BLAS`` names a library that cannot be loaded."""


@functools.cache
def products(choice: str | None = None):
    """The products the CPU backends use: ``choice`` (or ``FASTPROP_BLAS``, default ``auto``)."""
    choice = (choice or os.environ.get(VARIABLE) or "auto").lower()
    if choice not in CHOICES:
        raise BlasUnavailableError(
            f"{VARIABLE}={choice!r} names no BLAS fastprop knows; expected one of {', '.join(CHOICES)}")
    if choice == "numpy":
        return NumpyProducts()
    path = find_mkl()
    if path is not None:
        try:
            return MklProducts(path)
        except (OSError, AttributeError) as error:
            if choice == "mkl":
                raise BlasUnavailableError(f"{VARIABLE}=mkl, but oneMKL at {path} did not load ({error}); "
                                           "reinstall it with pip install --force-reinstall mkl") from error
    elif choice == "mkl":
        raise BlasUnavailableError(f"{VARIABLE}=mkl, but oneMKL's runtime library was not found; install "
                                   'it with pip install "fastprop[mkl]" (x86-64) or unset the variable')
    return NumpyProducts()
