"""Data-parallel training: the same script on several processes, gradients all-reduced every step.

``train(..., communicator=fastprop.distributed.init())`` under ``mpiexec -n 4 python -m mpi4py
train.py`` trains one model on four processes: every rank holds the whole data set, walks the same
epoch order, and takes its share of the rows of each global batch; after ``backward`` the gradients
(one flat buffer per network) are summed over the ranks, so with the notebook's summed costs every
rank takes exactly the step one process takes on the whole batch. Parameters (and optimizer state)
start from rank 0's, validation is split over the ranks and its counts summed, and only rank 0
shows progress bars, prints and writes checkpoints.

Communicators work in place on the backend's own buffers, never through pickle:

* :class:`Communicator` — one process; every collective does nothing (the default).
* :class:`MPICommunicator` — mpi4py over any MPI (``pip install "fastprop[mpi]"`` brings mpi4py and
  MPICH; a cluster's own MPI works through its mpi4py build).
* :class:`NCCLCommunicator` — NCCL through CuPy between GPUs, its unique id handed out over MPI so
  that one ``mpiexec`` starts everything.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
import warnings

import numpy

#: Seconds a failing rank waits, after writing its traceback, before it aborts the job.
ABORT_GRACE_SECONDS = 0.5


class Communicator:
    """One process: ``rank`` 0 of ``size`` 1, and every collective a no-op."""

    rank = 0
    size = 1

    def __init__(self):
        #: Seconds spent in :meth:`allreduce` so far (the cost of data parallelism).
        self.allreduce_seconds = 0.0

    @property
    def is_root(self) -> bool:
        """True on the rank that prints, shows progress bars and writes files."""
        return self.rank == 0

    def allreduce(self, buffer):
        """Sum ``buffer`` over all ranks, in place; returns it."""
        return buffer

    def broadcast(self, buffer, root=0):
        """Overwrite ``buffer`` with rank ``root``'s, in place; returns it."""
        return buffer

    def abort(self, code=1):
        """End every rank of the job (used when one rank fails, so the others do not wait forever)."""

    def allgather(self, row):
        """Every rank's host int64 ``row`` (all of one length), as a ``(size, len(row))`` array."""
        return numpy.asarray(row, numpy.int64)[None, :].copy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class MPICommunicator(Communicator):
    """Collectives over MPI with mpi4py's buffer interface (``Allreduce``/``Bcast``, no pickle).

    Host NumPy buffers go to MPI directly; device buffers are staged through host memory unless the
    MPI is CUDA-aware (then mpi4py hands it the device pointer itself).
    """

    def __init__(self, comm=None):
        super().__init__()
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def allreduce(self, buffer):
        started = time.perf_counter()
        if isinstance(buffer, numpy.ndarray):
            self.comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)
        else:  # a device array: through the host
            host = _to_host(buffer)
            self.comm.Allreduce(self._mpi.IN_PLACE, host, op=self._mpi.SUM)
            buffer[...] = _like(buffer, host)
        self.allreduce_seconds += time.perf_counter() - started
        return buffer

    def broadcast(self, buffer, root=0):
        if isinstance(buffer, numpy.ndarray):
            self.comm.Bcast(buffer, root=root)
        else:
            host = _to_host(buffer)
            self.comm.Bcast(host, root=root)
            buffer[...] = _like(buffer, host)
        return buffer

    def abort(self, code=1):
        self.comm.Abort(code)

    def allgather(self, row):
        row = numpy.ascontiguousarray(row, numpy.int64)
        table = numpy.empty((self.size, row.size), numpy.int64)
        self.comm.Allgather(row, table)  # over MPI, also under NCCL: a few host numbers
        return table


class NCCLCommunicator(MPICommunicator):
    """Gradients summed between GPUs by NCCL (through CuPy); MPI starts the job and hands out NCCL's id.

    Buffers must be CuPy arrays on this rank's device (rank modulo the number of visible devices).
    """

    def __init__(self, comm=None):
        super().__init__(comm)
        import cupy
        from cupy.cuda import nccl

        cupy.cuda.Device(self.rank % cupy.cuda.runtime.getDeviceCount()).use()
        unique_id = numpy.frombuffer(bytes(nccl.get_unique_id()), dtype=numpy.uint8).copy() \
            if self.rank == 0 else numpy.zeros(nccl.NCCL_UNIQUE_ID_BYTES, numpy.uint8)
        self.comm.Bcast(unique_id, root=0)
        self._cupy, self._nccl = cupy, nccl
        self.nccl = nccl.NcclCommunicator(self.size, tuple(int(b) for b in unique_id), self.rank)

    def allreduce(self, buffer):
        started = time.perf_counter()
        nccl, stream = self._nccl, self._cupy.cuda.get_current_stream().ptr
        self.nccl.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, _nccl_type(nccl, buffer.dtype),
                            nccl.NCCL_SUM, stream)
        self.allreduce_seconds += time.perf_counter() - started
        return buffer

    def broadcast(self, buffer, root=0):
        nccl, stream = self._nccl, self._cupy.cuda.get_current_stream().ptr
        self.nccl.bcast(buffer.data.ptr, buffer.size, _nccl_type(nccl, buffer.dtype), root, stream)
        return buffer


def launcher() -> str | None:
    """The ``mpiexec`` to start ranks with: the one installed beside this Python (the ``mpi`` extra's
    MPICH in a virtual environment, found whether or not the environment is activated), else the first
    on ``PATH``; None when there is none."""
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def init(kind="auto"):
    """The communicator for this process: ``"mpi"``, ``"nccl"``, ``"single"``, or ``"auto"``.

    ``auto`` gives NCCL (when the current backend is CuPy) or MPI when this process was started by
    an MPI launcher with more than one rank (mpi4py installed), and :class:`Communicator` (one
    process, no-ops) otherwise.
    """
    if kind == "single":
        return Communicator()
    if kind not in ("auto", "mpi", "nccl"):
        raise ValueError(
            f"fastprop.distributed.init got kind={kind!r}; choose 'auto', 'mpi', 'nccl' or 'single'."
        )
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        if kind == "auto":
            return Communicator()
        raise RuntimeError(
            "fastprop.distributed needs mpi4py for MPI and NCCL; install it with pip install 'fastprop[mpi]'."
        ) from None
    communicator = NCCLCommunicator() if kind == "nccl" else MPICommunicator()
    if kind == "auto":
        if communicator.size == 1:
            return Communicator()
        from fastprop.backends import get_backend

        if get_backend().name == "cupy":  # gradients live on the GPUs: sum them there
            return NCCLCommunicator(communicator.comm)
    return communicator


def check_same_data(communicator, arrays, checksum):
    """Refuse, on every rank at once, data that differs between ranks: rows, shape, dtype or values.

    Each rank takes its share of every global batch of the same rows, so every rank must hold the
    same data; a rank given only its own shard would train on other rows than the others believe
    (or, with fewer rows, make the collectives disagree: MPI's "message truncated"). ``arrays``
    maps names ("training images") to arrays, ``checksum(array)`` gives a 64-bit checksum of the
    values. Every rank raises the same ValueError, naming the first array and rank that differ from
    rank 0.
    """
    if communicator.size <= 1:
        return
    width, row = 7, []  # per array: ndim, four dimensions, the dtype's number, the values' checksum
    for array in arrays.values():
        shape = tuple(getattr(array, "shape", ()))[:4]
        total = numpy.array([checksum(array)], numpy.uint64).view(numpy.int64)[0]
        row += [len(shape), *shape, *([0] * (4 - len(shape))), numpy.dtype(array.dtype).num, total]
    table = communicator.allgather(numpy.array(row, numpy.int64))
    for rank in range(1, communicator.size):
        for index, name in enumerate(arrays):
            part = slice(index * width, (index + 1) * width)
            if numpy.array_equal(table[rank, part], table[0, part]):
                continue
            theirs, ours = _described(table[rank, part]), _described(table[0, part])
            held = (f"{name} of {theirs} where rank 0 holds {ours}" if theirs != ours else
                    f"other {name} than rank 0 (the same {ours}, other values)")
            raise ValueError(
                f"Data-parallel training needs the same data on every rank, but rank {rank} holds {held}; "
                "give every rank the whole data set (each rank takes its own share of every batch)."
            )


def _described(entry):
    ndim, *dims, number, _ = (int(value) for value in entry)
    return f"shape {tuple(dims[:ndim])}, dtype {_dtype_name(number)}"


def _dtype_name(number):
    """The name of the NumPy dtype whose ``num`` is ``number``."""
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                 "uint32", "uint64", "bool"):
        if numpy.dtype(name).num == number:
            return name
    return f"number {number}"


def warn_about_threads(communicator):
    """On rank 0, say how to keep ranks x threads within the cores, when the thread counts are unset."""
    if communicator.size == 1 or not communicator.is_root:
        return
    unset = [name for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")
             if name not in os.environ]
    if len(unset) == 3:
        warnings.warn(
            f"fastprop: {communicator.size} ranks each start BLAS and Numba threads for every core; more "
            "threads than cores makes training several times slower. Launch with e.g. "
            "OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 (cores / ranks each).",
            stacklevel=3,
        )


def abort_on_error(communicator):
    """Print the traceback and end every rank, when one rank fails while others wait in a collective."""
    if communicator.size > 1:
        # One write, then a moment for mpiexec to forward it: output still in flight when the job is
        # aborted can be dropped, and the traceback is what the user needs.
        sys.stderr.write(f"fastprop: rank {communicator.rank} failed; ending all {communicator.size} ranks\n"
                         + traceback.format_exc())
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)
        communicator.abort(1)


def shard(start, stop, communicator):
    """This rank's rows ``[first, last)`` of the global batch ``[start, stop)``: contiguous, as even as
    possible, the same split on every rank (a rank may get none of a small last batch)."""
    n, rank, size = stop - start, communicator.rank, communicator.size
    return start + n * rank // size, start + n * (rank + 1) // size


def _to_host(buffer):
    return numpy.ascontiguousarray(buffer.get() if hasattr(buffer, "get") else numpy.asarray(buffer))


def _like(buffer, host):
    module = sys.modules.get(type(buffer).__module__.split(".")[0])
    return module.asarray(host) if module is not None and hasattr(module, "asarray") else host


def _nccl_type(nccl, dtype):
    return {numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32, numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64}[
        numpy.dtype(dtype)]
