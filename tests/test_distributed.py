"""Data-parallel training: 2 ranks under mpiexec take the steps 1 process takes on the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

import fastprop
from fastprop import distributed
from tests import distributed_worker

ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = distributed.launcher()
try:
    import mpi4py  # noqa: F401
except ImportError:
    mpi4py = None
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or mpi4py is None,
    reason="mpiexec or mpi4py is missing; pip install 'fastprop[mpi]' installs both (mpi4py, MPICH)",
)
BACKENDS = [name for name in ("numpy", "numba") if fastprop.available_backends()[name].available]


def _mpiexec(tmp_path, *arguments, ranks=2, timeout=240):
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                   "PYTHONPATH": str(ROOT)}
    command = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "tests.distributed_worker",
               *arguments]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def _load(prefix, rank):
    with numpy.load(f"{prefix}.{rank}.npz") as saved:
        return {key: saved[key] for key in saved.files}


def test_one_process_is_a_communicator_of_one():
    single = distributed.init("single")
    buffer = numpy.arange(4.0)
    assert (single.rank, single.size, single.is_root) == (0, 1, True)
    assert single.allreduce(buffer) is buffer and buffer.tolist() == [0, 1, 2, 3]
    assert single.broadcast(buffer) is buffer
    with pytest.raises(ValueError, match="choose 'auto', 'mpi', 'nccl' or 'single'"):
        distributed.init("gloo")


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_batches_are_split_into_contiguous_shares_that_cover_them(size):
    for start, stop in [(0, 64), (64, 128), (448, 500), (0, 1), (10, 10)]:
        shares = [distributed.shard(start, stop, _Rank(rank, size)) for rank in range(size)]
        assert shares[0][0] == start and shares[-1][1] == stop
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        assert max(b - a for a, b in shares) - min(b - a for a, b in shares) <= 1


class _Rank(distributed.Communicator):
    def __init__(self, rank, size):
        super().__init__()
        self.rank, self.size = rank, size


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", ["seed", "mlp"])
def test_two_ranks_take_the_steps_one_process_takes(tmp_path, backend, model):
    done = _mpiexec(tmp_path, "--backend", backend, "--model", model, "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    ranks = [_load(tmp_path / "run", rank) for rank in range(2)]
    history, arrays = distributed_worker.run(backend, model, 3, communicator=distributed.Communicator())
    for key in ranks[0]:
        assert numpy.array_equal(ranks[0][key], ranks[1][key]), f"{key} differs between the ranks"
    for key, value in arrays.items():
        numpy.testing.assert_allclose(ranks[0][key], value, rtol=1e-10, atol=1e-13)
    numpy.testing.assert_allclose(ranks[0]["cost"], history.cost, rtol=1e-10)
    assert ranks[0]["accuracy"].tolist() == history.accuracy


@pytest.mark.slow
@needs_mpi
def test_a_resume_under_two_ranks_continues_the_run(tmp_path):
    arguments = ("--backend", BACKENDS[-1], "--model", "mlp", "--optimizer", "adam")
    straight = _mpiexec(tmp_path, *arguments, "--epochs", "4", "--out", str(tmp_path / "straight"))
    first = _mpiexec(tmp_path, *arguments, "--epochs", "2", "--out", str(tmp_path / "first"),
                     "--checkpoint", str(tmp_path / "run.npz"))
    resumed = _mpiexec(tmp_path, *arguments, "--epochs", "4", "--out", str(tmp_path / "resumed"),
                       "--checkpoint", str(tmp_path / "run.npz"))
    for done in (straight, first, resumed):
        assert done.returncode == 0, done.stderr
    expected, got = _load(tmp_path / "straight", 0), _load(tmp_path / "resumed", 1)
    for key in expected:
        numpy.testing.assert_allclose(got[key], expected[key], rtol=1e-12, err_msg=key)


@pytest.mark.slow
@needs_mpi
def test_a_rank_that_fails_ends_the_job_within_seconds(tmp_path):
    started = time.perf_counter()
    done = _mpiexec(tmp_path, "--fail-rank", "1", "--epochs", "4", "--out", str(tmp_path / "run"),
                    timeout=120)
    assert done.returncode != 0
    assert time.perf_counter() - started < 60
    assert "rank 1 fails on purpose" in done.stderr
    assert not (tmp_path / "run.0.npz").exists()  # rank 0 did not finish as if nothing happened


@pytest.mark.slow
@needs_mpi
def test_the_distributed_benchmark_runs(capsys):
    from benchmarks import bench_distributed

    bench_distributed.main(["--epochs", "1", "--rows", "1200", "--backend", BACKENDS[-1]])
    out = capsys.readouterr().out
    assert "1 process" in out and "2 ranks" in out and "ratio: 2 ranks reach" in out


class _FakeNccl:
    """What NCCLCommunicator uses of cupy.cuda.nccl, recording the calls (no GPU needed)."""

    NCCL_UNIQUE_ID_BYTES, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 128, 7, 8, 0
    calls = []

    @staticmethod
    def get_unique_id():
        return tuple(range(128))

    class NcclCommunicator:
        def __init__(self, size, unique_id, rank):
            _FakeNccl.calls.append(("init", size, unique_id, rank))

        def allReduce(self, send, receive, count, dtype, op, stream):  # noqa: N802 (NCCL's name)
            _FakeNccl.calls.append(("allReduce", send, receive, count, dtype, op, stream))

        def bcast(self, buffer, count, dtype, root, stream):
            _FakeNccl.calls.append(("bcast", buffer, count, dtype, root, stream))


@pytest.mark.skipif(mpi4py is None, reason="mpi4py is missing; pip install 'fastprop[mpi]'")
def test_nccl_plumbing_against_a_stand_in(monkeypatch):
    import types

    class Buffer:
        def __init__(self, size, dtype):
            self.size, self.dtype = size, numpy.dtype(dtype)
            self.data = types.SimpleNamespace(ptr=4096)

    cuda = types.SimpleNamespace(
        Device=lambda index: types.SimpleNamespace(use=lambda: None),
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        get_current_stream=lambda: types.SimpleNamespace(ptr=77),
        nccl=_FakeNccl,
    )
    fake = types.SimpleNamespace(cuda=cuda)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", _FakeNccl)
    _FakeNccl.calls.clear()
    communicator = distributed.NCCLCommunicator()
    assert _FakeNccl.calls[0] == ("init", 1, tuple(range(128)), 0)  # the id rank 0 made, handed out over MPI
    communicator.allreduce(Buffer(12, "float32"))
    communicator.broadcast(Buffer(5, "float64"))
    assert _FakeNccl.calls[1] == ("allReduce", 4096, 4096, 12, _FakeNccl.NCCL_FLOAT32, _FakeNccl.NCCL_SUM, 77)
    assert _FakeNccl.calls[2] == ("bcast", 4096, 5, _FakeNccl.NCCL_FLOAT64, 0, 77)


def _gpu_skip_reason():
    try:
        import cupy
    except Exception as error:
        return f"CuPy is not importable ({error}); this runs on a machine with an NVIDIA GPU"
    try:
        if not cupy.cuda.runtime.getDeviceCount():
            return "CuPy sees no CUDA device"
    except Exception as error:
        return f"CuPy sees no CUDA device ({error})"
    try:  # after the device: without one, importing NCCL only warns that its library is missing
        from cupy.cuda import nccl  # noqa: F401
    except Exception as error:
        return f"CuPy's NCCL is not importable ({error})"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(mpi4py is None or _gpu_skip_reason() is not None,
                    reason=_gpu_skip_reason() or "mpi4py is missing; pip install 'fastprop[mpi]'")
def test_nccl_sums_device_buffers_in_place():
    import cupy

    communicator = distributed.NCCLCommunicator()  # one rank: the sum over ranks is the buffer itself
    buffer = cupy.arange(6, dtype=cupy.float32)
    assert communicator.allreduce(buffer) is buffer
    cupy.cuda.get_current_stream().synchronize()
    assert cupy.asnumpy(buffer).tolist() == [0, 1, 2, 3, 4, 5]
    communicator.broadcast(buffer)
    assert communicator.allreduce_seconds >= 0


@pytest.mark.slow
@needs_mpi
def test_ranks_holding_different_data_are_refused_with_one_sentence(tmp_path):
    """Each rank passing only its own shard (250 rows each, other values) is refused on every rank."""
    done = _mpiexec(tmp_path, "--backend", "numpy", "--out", str(tmp_path / "run"), "--shard")
    assert done.returncode != 0
    assert ("Data-parallel training needs the same data on every rank, but rank 1 holds other training "
            "images than rank 0 (the same shape (250, 40), dtype float64, other values)") in done.stderr
    assert not list(tmp_path.glob("run.*.npz"))  # nothing trained, nothing written


def test_ranks_with_other_rows_or_dtypes_are_told_which_and_how():
    """The check's sentences, with a stand-in for rank 1: more rows, another dtype."""
    backend = fastprop.backends.load_backend("numpy")
    x = numpy.random.default_rng(0).random((51, 40))

    class Recorder(distributed.Communicator):
        size = 2

        def allgather(self, row):
            self.row = row
            return numpy.stack([row, row])

    def refused(ours, theirs):
        recorder = Recorder()
        distributed.check_same_data(recorder, {"training images": theirs}, backend.checksum)

        class Pair(distributed.Communicator):
            size = 2

            def allgather(self, row):
                return numpy.stack([row, recorder.row])

        with pytest.raises(ValueError) as error:
            distributed.check_same_data(Pair(), {"training images": ours}, backend.checksum)
        return str(error.value)

    assert ("rank 1 holds training images of shape (50, 40), dtype float64 where rank 0 holds shape "
            "(51, 40), dtype float64; give every rank the whole data set") in refused(x, x[:50])
    assert "of shape (51, 40), dtype float32 where rank 0 holds shape (51, 40), dtype float64" in refused(
        x, x.astype(numpy.float32))
    distributed.check_same_data(Recorder(), {"training images": x}, backend.checksum)  # the same: no error
