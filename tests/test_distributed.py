"""Data-parallel training: 2 ranks under mpiexec take the steps 1 process takes on the same global batches."""

from __future__ import annotations

import os
import shutil
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
MPIEXEC = shutil.which("mpiexec")
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


@needs_mpi
def test_a_rank_that_fails_ends_the_job_within_seconds(tmp_path):
    started = time.perf_counter()
    done = _mpiexec(tmp_path, "--fail-rank", "1", "--epochs", "4", "--out", str(tmp_path / "run"),
                    timeout=120)
    assert done.returncode != 0
    assert time.perf_counter() - started < 60
    assert "rank 1 fails on purpose" in done.stderr
    assert not (tmp_path / "run.0.npz").exists()  # rank 0 did not finish as if nothing happened
