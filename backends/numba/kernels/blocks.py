"""Register blocks written as LLVM vector IR, for kernels whose inner loops LLVM's loop vectorizer would
not keep in registers: ``rows`` rows of ``CHANNEL_VECTORS`` vectors of sums, one broadcast multiply-add
per row and step (:func:`_broadcast_fma`), or the same started at a bias and stored straight into an
output (:func:`_bias_block`). The vector width is the one of the instruction set Numba compiles for
(:func:`..target.vector_unit`), so each build has its own blocks; the direct convolution
(:mod:`.direct`) sizes its blocks of pixels and taps from ``VECTOR_REGISTERS``."""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import target
from . import intrinsics  # noqa: F401  (imported first: it chooses the target the blocks are sized for)

#: Bytes and number of the vector registers of the instruction set Numba compiles for (chosen when
#: :mod:`.intrinsics` was imported, so that importing the kernels before the backend sizes the blocks
#: as it compiles).
VECTOR_BYTES, VECTOR_REGISTERS = target.vector_unit(numba)[1:]
#: Vectors of output channels in a register block of the direct convolution: 32 channels, the
#: CNN's first layer, with 512-bit float32 vectors.
CHANNEL_VECTORS = 2


def _vector_type(dtype):
    """LLVM's vector of ``VECTOR_BYTES`` of ``dtype`` (a Numba float type) and its element type."""
    element = ir.FloatType() if dtype.bitwidth == 32 else ir.DoubleType()
    return ir.VectorType(element, VECTOR_BYTES * 8 // dtype.bitwidth), element


@intrinsic
def _block_channels(typingctx, like):
    """The channels of one register block for arrays like ``like``: ``CHANNEL_VECTORS`` vectors."""

    def codegen(context, builder, signature, arguments):
        lanes = _vector_type(like.dtype)[0].count
        return context.get_constant(types.intp, CHANNEL_VECTORS * lanes)

    return types.intp(like), codegen


class _Block:
    """The IR of one register block: ``rows + sums`` rows of ``CHANNEL_VECTORS`` vectors of sums held in
    registers (allocas that LLVM promotes) and the loop of broadcast multiply-adds into them."""

    def __init__(self, context, builder, dtype, count, extra):
        self.context, self.builder, self.count, self.extra = context, builder, count, extra
        self.vector, self.element = _vector_type(dtype)
        self.width, self.lanes = dtype.bitwidth // 8, self.vector.count
        self.intp = context.get_value_type(types.intp)
        self.slots = [cgutils.alloca_once(builder, self.vector)
                      for _ in range((count + extra) * CHANNEL_VECTORS)]

    def at(self, pointer, index):
        """The vector at element ``index`` of the element pointer ``pointer``."""
        return self.builder.bitcast(self.builder.gep(pointer, [index]), self.vector.as_pointer())

    def load(self, pointer, index):
        return self.builder.load(self.at(pointer, index), align=self.width)

    def store(self, value, pointer, index):
        self.builder.store(value, self.at(pointer, index), align=self.width)

    def data(self, array_type, value):
        return self.context.make_array(array_type)(self.context, self.builder, value)

    def steps(self, x, x_a, base_v, outer, outer_a, inner, inner_a, v, v_a, k0_v):
        """For ``a`` in ``range(len(outer))``: row ``r`` of the sums ``+= x[base + outer[a] + inner[r]] *
        v[a, k0:k0 + block]``, and each of the ``sums`` rows ``+= v[a, k0:k0 + block]``."""
        builder, intp, vector = self.builder, self.intp, self.vector
        x_s, outer_s, inner_s, v_s = (self.data(t, a) for t, a in ((x, x_a), (outer, outer_a),
                                                                   (inner, inner_a), (v, v_a)))
        name = f"llvm.fmuladd.v{self.lanes}f{8 * self.width}"  # llvmlite names no vector intrinsic
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3), name)
        i32 = ir.IntType(32)
        splat = ir.Constant(ir.VectorType(i32, self.lanes), [0] * self.lanes)
        offsets = [builder.load(builder.gep(inner_s.data, [intp(r)])) for r in range(self.count)]
        row_bytes = cgutils.unpack_tuple(builder, v_s.strides)[0]
        steps = cgutils.unpack_tuple(builder, outer_s.shape)[0]
        v_bytes = builder.bitcast(v_s.data, ir.IntType(8).as_pointer())
        with cgutils.for_range(builder, steps) as loop:
            a = loop.index
            row = builder.bitcast(builder.gep(v_bytes, [builder.mul(a, row_bytes)]),
                                  self.element.as_pointer())
            values = [self.load(row, builder.add(k0_v, intp(c * self.lanes))) for c in range(CHANNEL_VECTORS)]
            start = builder.add(base_v, builder.load(builder.gep(outer_s.data, [a])))
            for r in range(self.count):
                scalar = builder.load(builder.gep(x_s.data, [builder.add(start, offsets[r])]))
                broadcast = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, i32(0)),
                    ir.Constant(vector, ir.Undefined), splat)
                for c in range(CHANNEL_VECTORS):
                    slot = self.slots[r * CHANNEL_VECTORS + c]
                    builder.store(builder.call(fma, [broadcast, values[c], builder.load(slot)]), slot)
            for c in range(CHANNEL_VECTORS * self.extra):
                slot = self.slots[self.count * CHANNEL_VECTORS + c]
                builder.store(builder.fadd(builder.load(slot), values[c]), slot)

    def load_all(self, pointer):
        """Every row of sums from the rows of ``pointer`` (one block of channels a row)."""
        for i, slot in enumerate(self.slots):
            self.builder.store(self.load(pointer, self.intp(i * self.lanes)), slot)

    def store_all(self, pointer):
        for i, slot in enumerate(self.slots):
            self.store(self.builder.load(slot), pointer, self.intp(i * self.lanes))


@intrinsic
def _broadcast_fma(typingctx, acc, x, base, outer, inner, rows, sums, v, k0):
    """For ``a`` in ``range(len(outer))`` and ``r`` in ``range(rows)``:
    ``acc[r, :] += x[base + outer[a] + inner[r]] * v[a, k0:k0 + block]`` (``block`` the channels of
    :func:`_block_channels`), and with ``sums`` = 1 ``acc[rows, :] += v[a, k0:k0 + block]``.

    A register block written as vector IR, which LLVM's loop vectorizer would not make of the same
    loops (it vectorizes the short channel loop alone and leaves the sums in memory): ``acc`` is
    loaded into ``(rows + sums) * CHANNEL_VECTORS`` registers, each step loads the channel vectors
    of ``v`` once and broadcasts one ``x`` value per row into a fused multiply-add. ``rows`` and
    ``sums`` are compile-time constants; ``acc`` and ``x`` are C-contiguous, ``v``'s rows are
    contiguous, and every index read must lie inside its array (nothing is checked)."""
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(sums, types.IntegerLiteral)):
        return None

    def codegen(context, builder, signature, arguments):
        acc_a, x_a, base_v, outer_a, inner_a, _, _, v_a, k0_v = arguments
        block = _Block(context, builder, acc.dtype, rows.literal_value, sums.literal_value)
        sums_at = block.data(acc, acc_a).data
        block.load_all(sums_at)
        block.steps(x, x_a, base_v, outer, outer_a, inner, inner_a, v, v_a, k0_v)
        block.store_all(sums_at)
        return context.get_dummy_value()

    return types.void(acc, x, base, outer, inner, rows, sums, v, k0), codegen


@intrinsic
def _bias_block(typingctx, acc, x, base, outer, inner, rows, v, init, out, out_at, stride, relu, whole):
    """The forward's register block: every row of sums starts at ``init[:block]`` (the bias), takes
    the steps of :func:`_broadcast_fma` (``k0`` 0, no ``sums`` row), and goes, with ``whole``, straight
    to ``out`` (row ``r`` at element ``out_at + r * stride``, through ``max(., 0)`` with ``relu``: NaN
    stays NaN), else to ``acc`` as it is, for the caller to copy the rows and channels that exist.

    Starting from the bias and storing from the registers saves the two passes over ``acc`` a block
    would otherwise take (a third of the first layer's forward time)."""
    if not isinstance(rows, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, arguments):
        acc_a, x_a, base_v, outer_a, inner_a, _, v_a, init_a, out_a, out_at, stride_v, relu_v, whole_v = (
            arguments)
        block = _Block(context, builder, acc.dtype, rows.literal_value, 0)
        bias_at = block.data(init, init_a).data
        starts = [block.load(bias_at, block.intp(c * block.lanes)) for c in range(CHANNEL_VECTORS)]
        for i, slot in enumerate(block.slots):
            builder.store(starts[i % CHANNEL_VECTORS], slot)
        block.steps(x, x_a, base_v, outer, outer_a, inner, inner_a, v, v_a, block.intp(0))
        with builder.if_else(whole_v) as (direct, kept):
            with direct:
                zero = ir.Constant(block.vector, [0.0] * block.lanes)
                out_data = block.data(out, out_a).data
                for r in range(block.count):
                    row_at = builder.add(out_at, builder.mul(stride_v, block.intp(r)))
                    for c in range(CHANNEL_VECTORS):
                        value = builder.load(block.slots[r * CHANNEL_VECTORS + c])
                        clipped = builder.select(builder.fcmp_ordered("<", value, zero), zero, value)
                        block.store(builder.select(relu_v, clipped, value), out_data,
                                    builder.add(row_at, block.intp(c * block.lanes)))
            with kept:
                block.store_all(block.data(acc, acc_a).data)
        return context.get_dummy_value()

    return types.void(acc, x, base, outer, inner, rows, v, init, out, out_at, stride, relu, whole), codegen
