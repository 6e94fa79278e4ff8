"""``cupy.cublas``: ``gemm`` as CuPy 13 drives cuBLAS (cupy/cublas.py), the product computed by NumPy.

The arguments CuPy hands to ``cublas<t>gemm`` (operations, sizes, leading dimensions) are derived as
CuPy derives them and checked as cuBLAS checks them (the BLAS rules: ``lda >= max(1, rows of A as
stored)``, and so on), raising ``CUBLASError(CUBLAS_STATUS_INVALID_VALUE)`` where a GPU would.
"""

from __future__ import annotations

import numpy

from . import _STANDIN, _refuse_in_capture, empty, ndarray

CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C = 0, 1, 2


class CUBLASError(RuntimeError):
    """cupy_backends.cuda.libs.cublas.CUBLASError."""


def _trans_to_cublas_op(trans):
    if trans in ("N", "n", CUBLAS_OP_N):
        return CUBLAS_OP_N
    if trans in ("T", "t", CUBLAS_OP_T):
        return CUBLAS_OP_T
    if trans in ("H", "h", "C", "c", CUBLAS_OP_C):
        return CUBLAS_OP_C
    raise TypeError(f"invalid trans (actual: {trans})")


def _decide_ld_and_trans(a, trans):
    ld = None
    if trans in (CUBLAS_OP_N, CUBLAS_OP_T):
        if a.flags.f_contiguous or a.size == 0:  # CuPy: an empty array is F- and C-contiguous
            ld = a.shape[0]
        elif a.flags.c_contiguous:
            ld = a.shape[1]
            trans = 1 - trans
    return ld, trans


def _check_gemm(transa, transb, m, n, k, lda, ldb, ldc):
    """cublas<t>gemm's CUBLAS_STATUS_INVALID_VALUE conditions (those of the reference BLAS xGEMM)."""
    rows_a = m if transa == CUBLAS_OP_N else k
    rows_b = k if transb == CUBLAS_OP_N else n
    problems = []
    if min(m, n, k) < 0:
        problems.append(f"m={m}, n={n}, k={k}")
    if lda < max(1, rows_a):
        problems.append(f"lda={lda} < max(1, {rows_a})")
    if ldb < max(1, rows_b):
        problems.append(f"ldb={ldb} < max(1, {rows_b})")
    if ldc < max(1, m):
        problems.append(f"ldc={ldc} < max(1, {m})")
    if problems:
        raise CUBLASError(f"CUBLAS_STATUS_INVALID_VALUE ({', '.join(problems)})")


def gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    """Computes out = alpha * op(a) @ op(b) + beta * out (``beta = 0``: out is not read)."""
    _refuse_in_capture("cupy.cublas.gemm")
    assert a.ndim == b.ndim == 2
    assert a.dtype == b.dtype
    if a.dtype.char not in "fd":
        raise TypeError("invalid dtype")
    if not (isinstance(a, ndarray) and isinstance(b, ndarray)):
        raise TypeError("gemm takes cupy.ndarray")
    transa, transb = _trans_to_cublas_op(transa), _trans_to_cublas_op(transb)
    if CUBLAS_OP_C in (transa, transb):
        raise NotImplementedError(f"{_STANDIN}: conjugate transposes")
    m, k = a.shape if transa == CUBLAS_OP_N else a.shape[::-1]
    if transb == CUBLAS_OP_N:
        n = b.shape[1]
        assert b.shape[0] == k
    else:
        n = b.shape[0]
        assert b.shape[1] == k
    if out is None:
        out = empty((m, n), dtype=a.dtype, order="F")
        beta = 0.0
    else:
        assert out.ndim == 2
        assert out.shape == (m, n)
        assert out.dtype == a.dtype
    lda, transa_ = _decide_ld_and_trans(a, transa)
    ldb, transb_ = _decide_ld_and_trans(b, transb)
    out_f = out.flags.f_contiguous or out.size == 0
    if lda is not None and ldb is not None and (out_f or out.flags.c_contiguous):
        if out_f:
            _check_gemm(transa_, transb_, m, n, k, lda, ldb, m)
        else:  # out.T = alpha * b.T @ a.T + beta * out.T
            _check_gemm(1 - transb_, 1 - transa_, n, m, k, ldb, lda, n)
    else:  # CuPy copies the operands without a leading dimension, and the result, to Fortran order first
        _check_gemm(transa_, transb_, m, n, k, a.shape[0] if lda is None else lda,
                    b.shape[0] if ldb is None else ldb, m)
    op_a = a.view(numpy.ndarray) if transa == CUBLAS_OP_N else a.view(numpy.ndarray).T
    op_b = b.view(numpy.ndarray) if transb == CUBLAS_OP_N else b.view(numpy.ndarray).T
    with numpy.errstate(all="ignore"):
        product = numpy.matmul(op_a, op_b) * a.dtype.type(alpha)
        target = out.view(numpy.ndarray)
        if beta == 0:
            target[...] = product
        else:
            target[...] = product + a.dtype.type(beta) * target
    return out


def __getattr__(name):
    raise AttributeError(f"cupy.cublas.{name} is not provided by {_STANDIN}")
