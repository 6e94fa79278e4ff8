"""The CuPy backend's launch-free training epoch: plain SGD for a stack of dense layers as the
*epoch kernels* of :mod:`.kernels` (``cuda/epoch_kernels.cu``), captured into CUDA graphs and replayed.

Matrices are row-major and C-contiguous. A batch's rows are read straight from the training set
through the epoch's shuffled ``order`` at a device-side ``cursor``, so one captured step serves
every batch and no gathered copy of the batch is made.
"""

from __future__ import annotations

import warnings

import cupy
import numpy

from . import kernels
from .kernels import (
    COLUMNS, NARROW_FORWARD, NARROW_UPDATE, ROWS_PER_BLOCK, SLICES, THREADS, TILES,
    _blocks, _ctype, _I32, _I64, _NO_LOSS,
)


class EpochProgram:
    """One epoch of plain SGD for a stack of dense layers, as fastprop's own kernels.

    ``plan`` is an :class:`~fastprop.backends.plan.EpochPlan`: dense layers, each with its
    activation code (none, sigmoid or ReLU), and the loss code (squared error or softmax
    cross-entropy), as the kernels take them. A step runs the forward pass (the
    first layer reads its rows straight from ``images`` through the order), the cost and its gradient
    (fused into a narrow last layer), then for each layer from the last: the input gradient through
    the previous activation, and the weight and bias gradients with their SGD update. The whole epoch
    is captured once into CUDA graphs (the batch offsets are constants, or a device-side cursor when
    an epoch is longer than ``max_steps_per_graph`` steps) and replayed; the learning rate lives in
    device memory. Without stream capture the same launches run from Python.

    Calling the program with ``(order, learning_rate)`` runs one epoch and returns its summed cost as
    a new float64 device array ``[over the full batches, over a smaller last batch]``.
    """

    #: Steps baked into one graph; a longer epoch replays a graph of this many steps.
    max_steps_per_graph = 128

    def __init__(self, plan, images, targets, batch_size):
        self.layers, self.loss = [(layer, int(layer.activation)) for layer in plan.layers], int(plan.loss)
        self.images, self.targets = images, targets
        self.dtype = images.dtype
        self.n, self.batch = images.shape[0], min(batch_size, images.shape[0])
        self.kernels = kernels.epoch_kernels(self.dtype)  # compiled on first use, then memoized
        self._t = _ctype(self.dtype)
        self.outputs = [cupy.empty((self.batch, layer.n_out), self.dtype) for layer, _ in self.layers]
        self.deltas = [cupy.empty((self.batch, layer.n_out), self.dtype) for layer, _ in self.layers]
        self.order = cupy.zeros(self.n, numpy.int64)
        self.cursor = cupy.zeros(1, numpy.int64)
        self.total = cupy.zeros(2, numpy.float64)  # [full batches, a smaller last batch]
        self._totals = (self.total[0:1], self.total[1:2])
        self.rate = cupy.zeros((), self.dtype)
        self._rate_value = None
        device = cupy.cuda.Device().id
        self._multiprocessors = int(cupy.cuda.runtime.getDeviceProperties(device)["multiProcessorCount"])
        self._stream, self._parameters = None, None
        self._chunk, self._tail, self._eager, self._repeats = None, None, None, 0
        self.mode = None  # "graph" or "eager" once built

    def __call__(self, order, learning_rate):
        parameters = self._parameter_versions()
        if parameters != self._parameters:  # first call, or parameter arrays were replaced
            self._build()
            self._parameters = parameters
        if order.shape != (self.n,):
            raise ValueError(f"the epoch needs an order of {self.n} rows, got shape {tuple(order.shape)}.")
        self.order[...] = order
        self.cursor.fill(0)
        self.total.fill(0)
        if learning_rate != self._rate_value:
            self.rate.fill(learning_rate)
            self._rate_value = learning_rate
        if self.mode == "graph":
            for _ in range(self._repeats):
                self._chunk.launch()
            if self._tail is not None:
                self._tail.launch()
        else:
            self._launch(self._eager)
        return self.total.copy()

    # -- building -------------------------------------------------------------------------------

    def _parameter_versions(self):
        """What the captured graphs depend on: each parameter's version (bumped when an array is replaced)."""
        return tuple(p.version for layer, _ in self.layers for p in (layer.weight, layer.bias))

    def _build(self):
        for layer, _ in self.layers:
            for array in (layer.weight.value, layer.bias.value, layer.weight.gradient, layer.bias.gradient):
                fits = isinstance(array, cupy.ndarray) and array.dtype == self.dtype
                if not (fits and array.flags.c_contiguous):
                    raise RuntimeError(
                        f"a dense layer ({layer.n_in} -> {layer.n_out}) no longer holds C-contiguous "
                        f"{self.dtype} CuPy parameters; call train again so that the epoch is compiled "
                        "for the model as it is now."
                    )
        full, part = divmod(self.n, self.batch)
        steps = [(k * self.batch, self.batch) for k in range(full)]
        steps += [(full * self.batch, part)] if part else []
        if not cupy.cuda.runtime.is_hip:  # ROCm builds of CuPy capture no graphs of these launches
            try:
                self._capture_epoch(steps, full)
                self.mode = "graph"
                return
            except Exception as error:  # capture unsupported here: launch the same kernels from Python
                message = f"fastprop: CUDA graph capture failed ({error}); the epoch runs launch by launch"
                warnings.warn(message, stacklevel=2)
        self._chunk, self._tail, self._repeats = None, None, 0
        self._eager = self._launches(steps)
        self.mode = "eager"

    def _capture_epoch(self, steps, full):
        """Graphs for ``steps``: a chunk of full batches replayed ``_repeats`` times, then the rest."""
        self._chunk, self._tail, self._repeats = None, None, 0
        per = self.max_steps_per_graph
        if len(steps) > per:  # then full >= per
            self._repeats = full // per
            self._chunk = self._capture(self._launches(steps[:per]) + [self._advance(per * self.batch)])
            done = self._repeats * per  # steps run by the chunk; the cursor then stands at their rows
            steps = [(first - done * self.batch, rows) for first, rows in steps[done:]]
        self._tail = self._capture(self._launches(steps)) if steps else None

    def _capture(self, launches):
        if self._stream is None:
            self._stream = cupy.cuda.Stream(non_blocking=True)
        stream = self._stream
        with stream:
            stream.begin_capture()
            try:
                self._launch(launches)
            finally:
                graph = stream.end_capture()
        return graph

    @staticmethod
    def _launch(launches):
        for kernel, grid, block, args in launches:
            kernel(grid, block, args)

    def _advance(self, rows):
        return self.kernels["advance_cursor"], (1,), (1,), (self.cursor, _I64(rows))

    def _tile(self, rows, cols):
        for bm, bn in TILES:
            if _blocks(rows, bm) * _blocks(cols, bn) >= self._multiprocessors:
                return bm, bn
        return TILES[-1]

    def _launches(self, steps):
        launches = []
        for first, rows in steps:
            launches += self._step(_I64(first), rows)
        return launches

    def _step(self, first, rows):
        """The launches of one step on the batch ``order[cursor + first : cursor + first + rows]``."""
        k, t, last = self.kernels, self._t, len(self.layers) - 1
        batch = (self.order, self.cursor, first)
        row_blocks, row_threads = (_blocks(rows, ROWS_PER_BLOCK),), (32 * ROWS_PER_BLOCK,)
        launches, x, gather = [], self.images, 1
        total = self._totals[0 if rows == self.batch else 1]
        for index, (layer, act) in enumerate(self.layers):
            n_out, n_in, y = layer.n_out, layer.n_in, self.outputs[index]
            loss = self.loss if index == last else _NO_LOSS
            head = (x, *batch, _I32(gather), layer.weight.value, layer.bias.value, y)
            if n_out <= NARROW_FORWARD[-1]:  # one warp per row, the cost fused in
                kernel = k[f"narrow_forward<{t}, {next(w for w in NARROW_FORWARD if n_out <= w)}>"]
                launches.append((kernel, row_blocks, row_threads, head + (
                    _I64(rows), _I32(n_out), _I64(n_in), _I32(act), _I32(loss), self.targets,
                    self.deltas[index], total)))
            else:
                bm, bn = self._tile(rows, n_out)
                grid = (_blocks(n_out, bn), _blocks(rows, bm))
                launches.append((k[f"dense_forward<{t}, {bm}, {bn}>"], grid, (THREADS,),
                                 head + (_I64(rows), _I64(n_out), _I64(n_in), _I32(act))))
                if loss != _NO_LOSS:
                    launches.append((k[f"batch_loss<{t}>"], row_blocks, row_threads, (
                        y, self.targets, *batch, self.deltas[index], _I64(rows), _I64(n_out), _I32(act),
                        _I32(loss), total)))
            x, gather = y, 0
        for index in range(last, -1, -1):
            layer, _ = self.layers[index]
            weight, bias = layer.weight, layer.bias
            n_out, n_in, g = layer.n_out, layer.n_in, self.deltas[index]
            if index > 0:  # the input gradient first: it needs the weights before their update
                bm, bn = self._tile(rows, n_in)
                grid, previous_act = (_blocks(n_in, bn), _blocks(rows, bm)), self.layers[index - 1][1]
                launches.append((k[f"dense_backward_input<{t}, {bm}, {bn}>"], grid, (THREADS,), (
                    g, weight.value, self.outputs[index - 1], self.deltas[index - 1],
                    _I64(rows), _I64(n_in), _I64(n_out), _I32(previous_act))))
            x, gather = (self.images, 1) if index == 0 else (self.outputs[index - 1], 0)
            head = (g, x, *batch, _I32(gather), weight.value, bias.value, weight.gradient,
                    bias.gradient, self.rate)
            if n_out <= NARROW_UPDATE[-1]:
                kernel = k[f"narrow_update<{t}, {next(w for w in NARROW_UPDATE if n_out <= w)}>"]
                launches.append((kernel, (_blocks(n_in, COLUMNS),), (COLUMNS, SLICES),
                                 head + (_I32(n_out), _I64(n_in), _I64(rows))))
            else:
                bm, bn = self._tile(n_out, n_in)
                launches.append((k[f"dense_update<{t}, {bm}, {bn}>"], (_blocks(n_in, bn), _blocks(n_out, bm)),
                                 (THREADS,), head + (_I64(n_out), _I64(n_in), _I64(rows))))
        return launches
