"""Building blocks of the Numba kernels: compile options, a prefetch hint, ``2**n`` from its bits and
the sigmoid that LLVM can vectorize."""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .. import target

# Every kernel module imports this one first: the target machine is chosen before any kernel is
# defined (Numba makes one per process), whichever module is imported first.
target.configure(numba)

#: ``fastmath`` flags of the dot-product kernels: reassociation (vectorized reductions) and FMA.
REDUCE = {"reassoc", "contract"}
#: Options of every kernel: machine code cached beside this package, the GIL released.
JIT = dict(cache=True, nogil=True)


@intrinsic
def _prefetch_row(typingctx, array, row):
    """Ask the CPU to start loading ``array[row, :]`` (a C-contiguous 2-D array) into cache.

    One ``llvm.prefetch`` per 64-byte line; a hint only: it changes no value and faults on nothing.
    """

    def codegen(context, builder, signature, arguments):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, arguments[0])
        zero = context.get_constant(types.intp, 0)
        first = cgutils.get_item_pointer(context, builder, array_type, array, [arguments[1], zero])
        start = builder.bitcast(first, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch", [start.type], ir.FunctionType(ir.VoidType(), [start.type, i32, i32, i32]))
        row_bytes = builder.extract_value(array.strides, 0)
        line = context.get_constant(types.intp, 64)
        with cgutils.for_range_slice(builder, zero, row_bytes, line) as (offset, _):
            # read access, keep in all cache levels, data
            builder.call(prefetch, [builder.gep(start, [offset]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, row), codegen


def _sigmoid(z):
    """``1 / (1 + exp(-z))`` for one float; the Numba implementation below is picked per float type."""
    return 1.0 / (1.0 + math.exp(-z))


@intrinsic
def _pow2(typingctx, n, like):
    """``2.0 ** n`` in the float type of ``like``, for an int64 ``n`` inside that type's normal range."""

    def codegen(context, builder, signature, arguments):
        bits, mantissa, bias = (32, 23, 127) if signature.return_type.bitwidth == 32 else (64, 52, 1023)
        integer = ir.IntType(bits)
        exponent = builder.trunc(arguments[0], integer) if bits < 64 else arguments[0]
        exponent = builder.shl(builder.add(exponent, integer(bias)), integer(mantissa))
        return builder.bitcast(exponent, context.get_value_type(signature.return_type))

    return like(types.int64, like), codegen


@overload(_sigmoid, jit_options=dict(fastmath={"contract"}, error_model="numpy"))
def _sigmoid_overload(z):
    """A sigmoid that LLVM can vectorize in a loop: no libm call, no branch.

    ``exp(x) = 2**k * exp(r)`` with ``x = k ln 2 + r``, ``|r| <= ln(2) / 2`` (Cody-Waite: ln 2 split
    in two so ``r`` is exact), ``exp(r)`` by its Taylor series to degree 7 for float32 and 13 for
    float64, which leaves under half an ulp; ``2**k`` is built from its bits, in two factors so
    that ``exp`` overflows to inf exactly where it should. ``x`` is clamped below where the sigmoid
    is 1 to the last bit, and above where ``exp`` is inf (the sigmoid 0). Relative error against a
    float64 reference under 3e-7 in float32 and 2e-15 in float64; sigmoid(-inf) = 0, sigmoid(inf) = 1,
    NaN stays NaN (all tested).
    """
    if not isinstance(z, types.Float):
        return None
    f = z
    single = z.bitwidth == 32
    low, high = (-86.6, 88.8) if single else (-707.0, 709.9)  # 2**(k - 1) stays a normal number
    coefficients = [1.0 / math.factorial(i) for i in range(7 if single else 13, -1, -1)]
    head, tail = coefficients[0], tuple(coefficients[1:])

    def implementation(z):
        x = min(max(-z, f(low)), f(high))
        # floor(x / ln 2 + 1/2): the conversion truncates a positive number
        k = np.int64(x * f(1.4426950408889634) + f(1100.5)) - 1100
        n = f(k)
        r = x - n * f(0.693145751953125) - n * f(1.428606820309417e-06)
        p = f(head)
        for c in tail:
            p = p * r + f(c)
        s = f(1) / (f(1) + (p + p) * _pow2(k - 1, z))
        return s if z == z else z

    return implementation
