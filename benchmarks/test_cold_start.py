"""Cold start of each fastprop backend: load, ``warmup(dtype)`` and the first training epoch.

"Cold" means the first call in this pytest process: this file runs before the throughput file,
and W1 before W2 and the CNN, so only the first workload of a backend and dtype pays for
compilation. Numba keeps compiled kernels in an on-disk cache, so a machine that ran fastprop
before starts warmer; ``fastprop bench`` measures the same thing in a fresh process.
"""

import pytest

from fastprop import bench


@pytest.mark.parametrize("workload", list(bench.WORKLOADS))
@pytest.mark.runners("fastprop")
def test_cold_start(benchmark, record, bench_rows, name, dtype, workload):
    measured = {}

    def first_call():
        rows = bench.WORKLOADS[workload].epoch_rows(bench_rows)
        measured.update(bench.cold_start(name, dtype, workload, rows, fresh_process=False))

    record.label(name, dtype, workload, "cold")
    benchmark.pedantic(first_call, rounds=1, iterations=1, warmup_rounds=0)
    assert measured["first_epoch_s"] > 0
    record.done(seconds=[measured["first_epoch_s"]], **measured)
