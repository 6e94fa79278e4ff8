"""The throughput suite: every registered backend, the notebook baseline and PyTorch, under pytest-benchmark.

Full run (each workload's own rows per epoch: 50,000 for W1 and W2, 20 batches of 128 for the CNN;
5 timed rounds after 1 warm-up round)::

    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json

Smoke run for CI, which checks that the suite runs without judging speed (1,200 rows for every workload)::

    FASTPROP_BENCH_ROWS=1200 FASTPROP_BENCH_ROUNDS=1 pytest benchmarks/ --benchmark-disable

A peer that does not apply to a workload (the notebook to the CNN) is skipped with the reason.

The workloads, rows and runners live in :mod:`fastprop.bench` (``workloads``, ``data``, ``runners``), shared
with ``fastprop bench`` and ``benchmarks/bench_gpu.py``.
"""

from __future__ import annotations

import os

import pytest

import fastprop
from fastprop import bench

#: Fastprop backend name -> BackendStatus, and torch peer -> reason it cannot run (None: it can).
STATUSES = fastprop.available_backends()
TORCH = bench.torch_devices()
_results: list = []


def pytest_addoption(parser):
    group = parser.getgroup("fastprop benchmarks")
    rows, own = os.environ.get("FASTPROP_BENCH_ROWS"), ", ".join(
        f"{key} {workload.rows}" for key, workload in bench.WORKLOADS.items())
    group.addoption("--bench-rows", type=int, default=int(rows) if rows else None,
                    help=f"training rows per epoch of every workload (env FASTPROP_BENCH_ROWS; default: "
                         f"each workload's own, {own})")
    group.addoption("--bench-rounds", type=int, default=int(os.environ.get("FASTPROP_BENCH_ROUNDS", 5)),
                    help="timed epochs per benchmark after one warm-up "
                         "(env FASTPROP_BENCH_ROUNDS; default 5)")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add BLAS, its threads, Numba's threads and the backends to pytest-benchmark's machine record."""
    machine_info["fastprop"] = bench.machine_info(STATUSES)


def pytest_configure(config):
    config.addinivalue_line("markers",
                            "runners(*kinds): which of fastprop, steps, baseline, torch to parametrize over")


def pytest_generate_tests(metafunc):
    """Parametrize ``name, dtype`` over the runners: float32 everywhere, float64 too on the CPU.

    A runner that cannot run here stays in the list, skipped with the reason.
    """
    if not {"name", "dtype"} <= set(metafunc.fixturenames):
        return
    marker = metafunc.definition.get_closest_marker("runners")
    kinds = marker.args if marker else ("baseline", "torch", "fastprop", "steps")
    params = []
    if "baseline" in kinds:
        params += [(bench.BASELINE, dtype, None) for dtype in ("float32", "float64")]
    if "torch" in kinds:
        params += [(peer, "float32", reason) for peer, reason in TORCH.items()]
    for name, status in STATUSES.items():
        cpu = status.available and str(status.device).lower().startswith("cpu")
        # train()'s runner ("fastprop") and the notebook's step loop on that backend ("steps")
        runners = [name] * ("fastprop" in kinds) + [name + bench.STEPS] * ("steps" in kinds)
        for runner in runners:
            params += [(runner, dtype, status.reason) for dtype in ("float32", "float64")[:1 + cpu]]
    metafunc.parametrize("name, dtype", [
        pytest.param(name, dtype, id=f"{name}-{dtype}",
                     marks=[pytest.mark.skip(reason=reason)] if reason else [])
        for name, dtype, reason in params])


@pytest.fixture(scope="session")
def bench_rows(request):
    """The rows per epoch asked for, or None: each workload's own."""
    return request.config.getoption("--bench-rows")


@pytest.fixture(scope="session")
def bench_rounds(request):
    return request.config.getoption("--bench-rounds")


@pytest.fixture
def bench_data(bench_rows, workload):
    """``(images, targets, source)`` of ``workload``, shared by its benchmarks in the session."""
    rows = bench.WORKLOADS[workload].epoch_rows(bench_rows)
    return bench.load_rows(rows, "auto")  # the same cache key as run_bench and cold_start use


class Record:
    """Labels one benchmark before it runs, and adds samples/s and ms/epoch to it afterwards."""

    def __init__(self, benchmark, data):
        self.benchmark, self.rows, self.source = benchmark, len(data[0]), data[2]

    def label(self, name, dtype, workload, mode):
        """Call before ``benchmark.pedantic``: pytest-benchmark reads the group when it starts timing."""
        self.key = (name, dtype, workload, mode)
        self.benchmark.group = f"{workload} {mode} {dtype}"
        self.benchmark.extra_info.update(backend=name, dtype=dtype, workload=workload, mode=mode,
                                         rows=self.rows, data=self.source)

    def done(self, seconds=None, **extra):
        """``seconds`` (one per epoch) default to the benchmark's timed rounds."""
        self.benchmark.extra_info.update(extra)
        if seconds is None and self.benchmark.stats is not None:  # None under --benchmark-disable
            seconds = list(self.benchmark.stats.stats.data)
        if seconds:
            row = bench.result_row(*self.key, self.rows, seconds, **extra)
            self.benchmark.extra_info.update(samples_per_second=row["samples_per_second"],
                                             ms_per_epoch=row["ms_per_epoch"])
            _results.append(row)


@pytest.fixture
def record(benchmark, bench_data):
    return Record(benchmark, bench_data)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Put each figure's ratio to the notebook baseline and the numpy backend (same run) in the JSON."""
    bench.add_ratios(_results)
    ratios = {(r["backend"], r["dtype"], r["workload"], r["mode"]): r for r in _results}
    for entry in output_json["benchmarks"]:
        info = entry["extra_info"]
        row = ratios.get((info.get("backend"), info.get("dtype"), info.get("workload"), info.get("mode")))
        if row is not None:
            info.update(x_baseline=row["x_baseline"], x_numpy=row["x_numpy"])


def pytest_terminal_summary(terminalreporter):
    """The same side-by-side table as ``fastprop bench``, from this session's measurements."""
    if _results:
        bench.add_ratios(_results)
        terminalreporter.write_sep("-", "fastprop throughput (median epoch; ratios from this session)")
        terminalreporter.write_line(bench.format_results(_results))
