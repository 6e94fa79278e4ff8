"""Steady-state throughput: one training epoch and one inference pass, warm-up round excluded.

Every fastprop backend runs, as ``train()`` runs it and as the notebook's hand-written step loop
(``<backend>-steps``), beside the notebook-style NumPy baseline and the PyTorch peers on the same
rows, order and initial weights; each benchmark's ``extra_info`` holds samples/s and
ms/epoch, and the JSON adds ratios to the baseline, the numpy backend and torch-cpu (same session).
A runner that does not apply to a workload (the notebook to the CNN) is skipped with the reason.
"""

import pytest

from fastprop import bench


@pytest.fixture(params=list(bench.WORKLOADS))
def workload(request):
    return request.param


def _runner(name, dtype, workload, data):
    """The runner, or a skip with the reason when it does not apply to ``workload``."""
    reason = bench.cannot_run(name, bench.WORKLOADS[workload])
    if reason:
        pytest.skip(reason)
    images, targets, _ = data
    return bench.make_runner(name, bench.WORKLOADS[workload], dtype, images, targets)


def test_train_epoch(benchmark, record, bench_data, bench_rounds, name, dtype, workload):
    runner = _runner(name, dtype, workload, bench_data)
    record.label(name, dtype, workload, "train")
    # before_epoch (untimed) lays out the next epoch's rows for the runners that walk them in slices
    total = benchmark.pedantic(runner.train_epoch, setup=runner.before_epoch, rounds=bench_rounds,
                               iterations=1, warmup_rounds=1)
    assert float(total) > 0
    record.done()


def test_inference(benchmark, record, bench_data, bench_rounds, name, dtype, workload):
    runner = _runner(name, dtype, workload, bench_data)
    record.label(name, dtype, workload, "infer")
    benchmark.pedantic(runner.infer_epoch, rounds=bench_rounds, iterations=1, warmup_rounds=1)
    record.done()
