"""Steady-state throughput: one training epoch and one inference pass, warm-up round excluded.

Every fastprop backend runs beside the notebook-style NumPy baseline and the PyTorch peers on the
same rows, order and initial weights; each benchmark's ``extra_info`` holds samples/s and
ms/epoch, and the JSON adds ratios to the baseline and to the numpy backend (same session).
"""

import pytest

from fastprop import bench


@pytest.fixture(params=sorted(bench.WORKLOADS))
def workload(request):
    return request.param


def test_train_epoch(benchmark, record, bench_data, bench_rounds, name, dtype, workload):
    images, targets, _ = bench_data
    runner = bench.make_runner(name, bench.WORKLOADS[workload], dtype, images, targets)
    record.label(name, dtype, workload, "train")
    total = benchmark.pedantic(runner.train_epoch, rounds=bench_rounds, iterations=1, warmup_rounds=1)
    assert float(total) > 0
    record.done()


def test_inference(benchmark, record, bench_data, bench_rounds, name, dtype, workload):
    images, targets, _ = bench_data
    runner = bench.make_runner(name, bench.WORKLOADS[workload], dtype, images, targets)
    record.label(name, dtype, workload, "infer")
    benchmark.pedantic(runner.infer_epoch, rounds=bench_rounds, iterations=1, warmup_rounds=1)
    record.done()
