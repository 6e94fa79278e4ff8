"""The ``fastprop.bench`` package on tiny sizes: the report, its peers' fairness, JSON, table, plot and CLI.

No test here judges speed; they check that every figure exists and that the peers compute the
same training as fastprop, so that the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json

import numpy
import pytest

import fastprop
from fastprop import bench
from fastprop.backends import Backend, BackendUnavailableError, registry
from fastprop.models import MODELS, cnn_network, mlp_network, seed_network
from tests.conftest import relative_error

ROWS = 1200
#: Rows of the tiny CNN run: two batches of 128.
CNN_ROWS = 256
AVAILABLE = [name for name, status in fastprop.available_backends().items() if status.available]
#: The workloads the notebook peer runs (dense layers and plain SGD).
NOTEBOOK_WORKLOADS = [key for key in sorted(bench.WORKLOADS)
                      if bench.cannot_run(bench.BASELINE, bench.WORKLOADS[key]) is None]
TORCH = bench.torch_devices()["torch-cpu"] is None


def _slow_but_w1(keys):
    """``keys`` as parameters, every workload but W1 (the notebook's network, trained in milliseconds)
    marked slow: W2 and the CNN train for up to seconds even on these tiny row counts."""
    return [key if key == "W1" else pytest.param(key, marks=pytest.mark.slow) for key in keys]


WORKLOAD_PARAMS = _slow_but_w1(sorted(bench.WORKLOADS))


@pytest.fixture(autouse=True)
def _no_settle_pause(monkeypatch):
    """The pause between timed epochs only matters for real figures."""
    monkeypatch.setattr(bench.timing, "SETTLE_SECONDS", 0.0)


def _unavailable():
    raise BackendUnavailableError("it needs hardware this machine lacks; install nothing, it is a test")


class _Broken(Backend):
    """Loads fine, fails on first use: the run must go on without it."""

    def linear_forward(self, x, W, b):
        raise FloatingPointError("this backend is broken on purpose")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny run of the whole matrix, plus a backend that cannot run here and one that fails."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        factories = {**registry._factories, "unrunnable": _unavailable, "broken": _Broken}
        patch.setattr(registry, "_factories", factories)
        patch.setattr(registry, "_failures", dict(registry._failures))
        patch.setattr(registry, "_instances", dict(registry._instances))
        report = bench.run_bench(workloads=("W1", "W2"), epochs=1, json_path=path, rows=ROWS, out=out,
                                 data="synthetic", fresh_process=False)
    return report, out.getvalue(), path


@pytest.fixture(scope="module")
def cnn_run():
    """The CNN on every available backend and the torch peers, at its own default row count (made
    tiny here): the run a plain ``fastprop bench --workloads CNN`` makes."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(bench.WORKLOADS, "CNN", dataclasses.replace(bench.WORKLOADS["CNN"], rows=CNN_ROWS))
        report = bench.run_bench(workloads=("CNN",), epochs=1, out=out, data="synthetic", fresh_process=False)
    return report, out.getvalue()


def _tiny_rows(workload):
    """Two full batches of ``workload``: the peers' summed costs compare exactly only on full batches."""
    return 2 * bench.WORKLOADS[workload].batch_size


def _parameters(trained):
    """Host values of every parameter of a runner or a fastprop network, in ``net.parameters()`` order
    (PyTorch's biases are flat where fastprop's are rows: compare them reshaped)."""
    if isinstance(trained, bench.NotebookRunner):
        return [array for pair in trained.params for array in pair]
    if isinstance(trained, bench.TorchRunner):
        return [parameter.detach().cpu().numpy() for parameter in trained.model.parameters()]
    net = getattr(trained, "net", trained)
    return [net.backend.to_numpy(parameter.value) for parameter in net.parameters()]


def _epoch_cost(runner, total):
    """A runner's ``train_epoch`` result as train()'s epoch figure (the mean over batches of the mean
    cost per element). fastprop runners return that figure; the notebook and torch peers return the
    epoch's summed cost, which is the same figure times rows x outputs when every batch is full."""
    if isinstance(runner, bench.FastpropRunner):
        return float(total)
    assert runner.rows % runner.workload.batch_size == 0, "only exact with full batches"
    return float(total) / (runner.rows * runner.targets.shape[1])


def _assert_same_training(trained, reference, workload, rtol, norm_wise=False):
    """Same parameters elementwise within ``rtol``; with ``norm_wise``, all parameters together within
    a norm-wise relative error of ``rtol`` (for products summed in another order, float32 rounding
    grows through training, and most in biases, which are cancelling sums of hundreds of terms)."""
    moved = False
    initial = bench.initial_parameters(bench.WORKLOADS[workload], "float64")
    mine, theirs = _parameters(trained), _parameters(reference)
    assert len(mine) == len(theirs) == len(initial)
    if norm_wise:
        flat = [numpy.concatenate([a.reshape(-1) for a in arrays]) for arrays in (mine, theirs)]
        assert relative_error(*flat) <= rtol
    for value, expected, start in zip(mine, theirs, initial):
        value = value.reshape(expected.shape)
        if not norm_wise:
            numpy.testing.assert_allclose(value, expected, rtol=rtol, atol=rtol * numpy.abs(expected).max())
        moved |= numpy.abs(expected - start).max() > 1e-4
    assert moved, "one epoch should have moved the weights, or this comparison proves nothing"


@pytest.mark.slow
def test_report_has_figures_for_every_available_backend_and_the_baseline(bench_run):
    report, _, _ = bench_run
    for name in AVAILABLE + [bench.BASELINE]:
        for workload in ("W1", "W2"):
            modes = {r["mode"]: r for r in report["results"]
                     if (r["backend"], r["workload"]) == (name, workload)}
            assert {"train", "infer"} <= set(modes), (name, workload)
            assert all(r["samples_per_second"] > 0 and r["ms_per_epoch"] > 0 for r in modes.values())
            assert modes["train"]["x_baseline"] > 0
    cold = [r for r in report["results"] if r["mode"] == "cold"]
    assert {r["backend"] for r in cold} == set(AVAILABLE)
    assert all(r["warmup_s"] >= 0 and r["first_epoch_s"] > 0 for r in cold)


@pytest.mark.slow
def test_numpy_row_is_its_own_reference(bench_run):
    report, _, _ = bench_run
    numpy_rows = [r for r in report["results"] if r["backend"] == "numpy" and r["mode"] != "cold"]
    assert numpy_rows and all(r["x_numpy"] == pytest.approx(1.0) for r in numpy_rows)


@pytest.mark.slow
def test_unrunnable_backends_are_skipped_with_their_reason(bench_run):
    report, table, _ = bench_run
    skipped = {entry["backend"]: entry["reason"] for entry in report["skipped"]}
    assert "hardware this machine lacks" in skipped["unrunnable"]
    line = next(line for line in table.splitlines() if line.startswith("skipped unrunnable: "))
    assert "it needs hardware this machine lacks" in line
    assert not any(r["backend"] == "unrunnable" for r in report["results"])
    assert ("torch-cpu" in skipped) == (bench.torch_devices()["torch-cpu"] is not None)


@pytest.mark.slow
def test_a_backend_that_fails_is_reported_and_the_others_still_run(bench_run):
    report, table, _ = bench_run
    failures = [entry for entry in report["skipped"] if entry["backend"].startswith("broken ")]
    assert {entry["backend"] for entry in failures} == {"broken float32 W1", "broken float32 W2"}
    assert all("broken on purpose" in entry["reason"] for entry in failures)
    assert "skipped broken float32 W1: failed: FloatingPointError" in table
    assert any(r["backend"] == "numpy" and r["mode"] == "train" for r in report["results"])


@pytest.mark.slow
def test_table_names_every_backend_and_the_machine(bench_run):
    _, table, _ = bench_run
    for name in AVAILABLE + [bench.BASELINE]:
        assert f"\n{name} " in table
    assert "\nskipped unrunnable: " in table
    assert table.startswith("machine: ")
    assert "x baseline" in table and "x numpy" in table and "x torch" in table


@pytest.mark.slow
def test_json_is_written_with_the_machine(bench_run):
    report, _, path = bench_run
    written = json.loads(path.read_text())
    machine = written["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["numpy"] == numpy.__version__
    assert machine["date"] and isinstance(machine["blas"], list)
    assert written["config"]["rows"] == {"W1": ROWS, "W2": ROWS} and written["config"]["data"] == "synthetic"
    assert len(written["results"]) == len(report["results"])


@pytest.mark.slow
def test_plot_is_written(bench_run, tmp_path):
    pytest.importorskip("matplotlib")
    bench.plot(bench_run[0], tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_fails_first_with_one_clear_sentence(monkeypatch, tmp_path):
    modules = __import__("sys").modules
    for name in [name for name in modules if name.startswith("matplotlib.")]:
        monkeypatch.delitem(modules, name)
    monkeypatch.setitem(modules, "matplotlib", None)
    message = r"matplotlib; install the plot extra: pip install .fastprop\[plot\]."
    with pytest.raises(ImportError, match=message):
        bench.run_bench(plot_path=tmp_path / "x.png", rows=ROWS, out=io.StringIO())


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("workload", _slow_but_w1(NOTEBOOK_WORKLOADS))
def test_notebook_baseline_trains_exactly_like_the_numpy_backend(workload, dtype, rtol):
    images, targets, _ = bench.load_rows(ROWS, "synthetic")
    runners = [bench.make_runner(name, bench.WORKLOADS[workload], dtype, images, targets)
               for name in (bench.BASELINE, "numpy")]
    costs = [_epoch_cost(runner, runner.train_epoch()) for runner in runners]
    assert costs[0] > 0
    assert costs[0] == pytest.approx(costs[1], rel=1e-4)
    _assert_same_training(*runners, workload, rtol=rtol)


def test_notebook_peer_declines_the_cnn_with_its_reason():
    cnn = bench.WORKLOADS["CNN"]
    reason = bench.cannot_run(bench.BASELINE, cnn)
    assert reason.startswith("not applicable to CNN: ") and "Conv2D" in reason and "Adam" in reason
    images, targets, _ = bench.load_rows(CNN_ROWS, "synthetic")
    with pytest.raises(ValueError, match="NotebookRunner is not applicable to CNN: .*Conv2D"):
        bench.make_runner(bench.BASELINE, cnn, "float32", images, targets)
    assert bench.cannot_run("numpy", cnn) is None


@pytest.mark.parametrize("workload", WORKLOAD_PARAMS)
@pytest.mark.parametrize("name", AVAILABLE)
def test_timed_epoch_is_what_train_runs(name, workload):
    images, targets, _ = bench.load_rows(_tiny_rows(workload), "synthetic")
    spec = bench.WORKLOADS[workload]
    runner = bench.make_runner(name, spec, "float32", images, targets)
    costs = [runner.train_epoch(), runner.train_epoch()]  # a second epoch: the shuffle is drawn as train()'s
    with fastprop.use_backend(name, "float32"):
        net = spec.build()
        history = fastprop.train(net, spec.cost_function(), 2, spec.batch_size, spec.learning_rate,
                                 shuffle=True, seed=0, data=(images, targets, images[:2], targets[:2]),
                                 quiet=True, verbose=False, optimizer=spec.make_optimizer())
    _assert_same_training(runner, net, workload, rtol=1e-5)
    assert costs == pytest.approx(history.cost, rel=1e-5)  # the runner reports train()'s epoch figure


@pytest.mark.slow
@pytest.mark.parametrize("workload", WORKLOAD_PARAMS)
def test_torch_peer_trains_like_fastprop(workload):
    pytest.importorskip("torch")
    images, targets, _ = bench.load_rows(_tiny_rows(workload), "synthetic")
    runners = [bench.make_runner(name, bench.WORKLOADS[workload], "float64", images, targets)
               for name in ("torch-cpu", "numpy")]
    costs = [_epoch_cost(runner, runner.train_epoch()) for runner in runners]
    assert costs[0] > 0
    assert costs[0] == pytest.approx(costs[1], rel=1e-6)
    _assert_same_training(*runners, workload, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("workload", WORKLOAD_PARAMS)
def test_torch_peer_starts_from_fastprops_weights_and_takes_its_first_step(workload):
    """In float32: the same initial weights bit for bit, the same outputs and summed loss on the first
    batch, and the same parameters after one step of the workload's optimizer."""
    torch = pytest.importorskip("torch")
    spec = bench.WORKLOADS[workload]
    images, targets, _ = bench.load_rows(spec.batch_size, "synthetic")  # one batch: one step per epoch
    peer, ours = (bench.make_runner(name, spec, "float32", images, targets)
                  for name in ("torch-cpu", "numpy"))
    for value, initial in zip(_parameters(peer), bench.initial_parameters(spec, "float32"), strict=True):
        assert value.dtype == numpy.float32 and numpy.array_equal(value.reshape(initial.shape), initial)

    with torch.no_grad():
        outputs = peer.model(peer.images).numpy()
        loss = float(peer.loss(peer.model(peer.images), torch.arange(spec.batch_size)))
    with fastprop.use_backend("numpy", "float32"):
        expected = ours.net.forward(images)
        expected_loss = float(spec.cost_function().estimate(targets, expected).sum(dtype=numpy.float64))
    numpy.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5 * numpy.abs(expected).max())
    assert loss == pytest.approx(expected_loss, rel=1e-5)

    assert float(peer.train_epoch()) == pytest.approx(expected_loss, rel=1e-5)
    assert _epoch_cost(ours, ours.train_epoch()) == pytest.approx(expected_loss / targets.size, rel=1e-5)
    _assert_same_training(peer, ours, workload, rtol=1e-4)


@pytest.mark.slow
def test_cnn_runs_on_every_backend_beside_the_torch_peer(cnn_run):
    report, table = cnn_run
    assert report["config"]["rows"] == {"CNN": CNN_ROWS}
    figures = {(r["backend"], r["mode"]): r for r in report["results"]}
    runners = AVAILABLE + (["torch-cpu"] if TORCH else [])
    for name in runners:
        for mode in ("train", "infer"):
            row = figures[name, mode]
            assert row["workload"] == "CNN" and row["rows"] == CNN_ROWS and row["samples_per_second"] > 0
            assert (row["x_torch"] > 0) if TORCH else row["x_torch"] is None
            assert row["x_baseline"] is None  # the notebook does not run the CNN
        assert f"\n{name} " in table
    assert {name for name, mode in figures if mode == "cold"} == set(AVAILABLE)
    if TORCH:
        assert figures["torch-cpu", "train"]["x_torch"] == pytest.approx(1.0)


@pytest.mark.slow
def test_cnn_skips_the_notebook_peer_with_its_reason(cnn_run):
    report, table = cnn_run
    skipped = {entry["backend"]: entry["reason"] for entry in report["skipped"]}
    assert "Conv2D" in skipped["notebook float32 CNN"]
    assert "\nskipped notebook float32 CNN: not applicable to CNN: " in table
    assert not any(r["backend"] == bench.BASELINE for r in report["results"])
    assert not any(reason.startswith("failed") for reason in skipped.values())


@pytest.mark.slow
def test_cold_start_in_a_fresh_process():
    cold = bench.cold_start("numpy", "float32", "W1", ROWS, "synthetic", fresh_process=True)
    assert cold["fresh_process"] and cold["first_epoch_s"] > 0 and cold["warmup_s"] >= 0


def test_synthetic_rows_have_mnist_shape_and_are_seeded():
    images, targets, source = bench.load_rows(ROWS, "synthetic")
    again = bench.load_rows.__wrapped__(ROWS, "synthetic")
    assert source == "synthetic" and images.shape == (ROWS, 784) and targets.shape == (ROWS, 10)
    assert images.dtype == targets.dtype == numpy.float32 and 0 <= images.min() and images.max() <= 1
    assert (targets.sum(axis=1) == 1).all() and numpy.array_equal(images, again[0])
    assert numpy.array_equal(images * 255, numpy.round(images * 255))  # 8-bit pixels


def test_continuous_rows_are_seeded_floats_that_are_not_pixels():
    images, targets, source = bench.load_rows(ROWS, "continuous")
    assert source == "continuous" and images.shape == (ROWS, 784) and images.dtype == numpy.float32
    assert 0 <= images.min() and images.max() < 1 and (targets.sum(axis=1) == 1).all()
    assert numpy.array_equal(images, bench.load_rows.__wrapped__(ROWS, "continuous")[0])
    assert not numpy.array_equal(images * 255, numpy.round(images * 255))


def test_bad_arguments_are_refused_before_any_timing():
    with pytest.raises(ValueError, match="epochs"):
        bench.run_bench(epochs=0, out=io.StringIO())
    with pytest.raises(ValueError, match="W9"):
        bench.run_bench(workloads=("W9",), out=io.StringIO())


def test_command_line_entry(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--backend", "numpy", "--workload", "W1", "--rows", str(ROWS), "--epochs", "1",
                              "--data", "synthetic", "--no-torch", "--in-process-cold-start",
                              "--json", str(tmp_path / "b.json")])
    assert bench.command(args) == 0
    assert "\nnumpy " in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["results"]


def test_workloads_are_the_ready_made_models():
    built = {"W1": seed_network(numpy.random.default_rng(0)),
             "W2": mlp_network(numpy.random.default_rng(0), hidden=(512, 512), output_init="he"),
             "CNN": cnn_network(numpy.random.default_rng(0))}
    for key, net in built.items():
        ours = bench.WORKLOADS[key].build(0)
        assert [repr(leaf) for leaf in ours.leaves()] == [repr(leaf) for leaf in net.leaves()]
        assert [repr(leaf) for leaf in bench.WORKLOADS[key].layers] == [repr(leaf) for leaf in net.leaves()]
        for mine, theirs in zip(ours.parameters(), net.parameters(), strict=True):
            assert numpy.array_equal(mine.value, theirs.value)
    assert bench.WORKLOADS["W1"].describe().startswith("W1: Linear(784, 10) > Sigmoid(), MeanSquareError")
    cnn, model = bench.WORKLOADS["CNN"], MODELS["cnn"]
    assert (cnn.cost, cnn.optimizer, cnn.learning_rate, cnn.batch_size) == (
        model.cost, fastprop.Adam, 1e-3, 128) == (model.cost, model.optimizer, model.learning_rate,
                                                  model.batch_size)
    assert isinstance(cnn.make_optimizer(), fastprop.Adam) and cnn.make_optimizer().learning_rate == 1e-3
    assert bench.WORKLOADS["W2"].make_optimizer() is None
    assert "Conv2D(32, 64, 3, padding=1)" in cnn.describe() and "Adam at 0.001, batch 128" in cnn.describe()


@pytest.mark.parametrize("name", AVAILABLE)
def test_step_loop_option_trains_like_the_fast_path(name):
    images, targets, _ = bench.load_rows(ROWS, "synthetic")
    spec = bench.WORKLOADS["W1"]
    fast, step = (bench.FastpropRunner(name, spec, "float32", images, targets, fast=flag)
                  for flag in (True, False))
    assert step.epoch_mode == "step loop" and step.loop.fast is None
    costs = [fast.train_epoch(), step.train_epoch()]
    assert costs[0] == pytest.approx(costs[1], rel=1e-5)
    _assert_same_training(fast, step.net, "W1", rtol=1e-5)


def _gpu_bench():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_bench_runs_without_a_gpu(tmp_path, capsys):
    assert _gpu_bench().main(["--rows", str(ROWS), "--data", "synthetic", "--epochs", "1", "--w2-epochs",
                              "1", "--cpu-epochs", "1", "--inference-repeats", "1",
                              "--backends", "cupy,numpy,notebook", "--json", str(tmp_path / "gpu.json")]) == 0
    table = capsys.readouterr().out
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["config"]["data"] == "synthetic"
    assert {(r["backend"], r["workload"], r["mode"]) for r in report["results"]} >= {
        (name, key, mode) for name in ("numpy", "notebook") for key in ("W1", "W2")
        for mode in ("train", "infer")}
    if "cupy" not in AVAILABLE:
        assert "skipped cupy: " in table


def test_gpu_bench_require_gpu_stops_with_the_reason_where_cupy_cannot_run(monkeypatch, tmp_path, capsys):
    for table in ("_factories", "_instances", "_failures"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))

    def no_gpu():
        raise BackendUnavailableError("no CUDA device here (test)")

    registry.register_backend("cupy", no_gpu)
    json_path = tmp_path / "gpu.json"
    with pytest.raises(SystemExit) as stopped:
        _gpu_bench().main(["--require-gpu", "--rows", str(ROWS), "--json", str(json_path)])
    assert str(stopped.value) == "bench_gpu.py: no GPU to benchmark: no CUDA device here (test)"
    assert capsys.readouterr().out == "" and not json_path.exists()  # nothing timed


def test_gpu_bench_times_both_paths_of_a_backend_with_an_epoch_program():
    """The GPU path split, on a CPU backend: the step loop and the whole-epoch program, each with its
    cold row."""
    if "numba" not in AVAILABLE:
        pytest.skip("the Numba backend is the CPU backend with a whole-epoch program")
    module = _gpu_bench()
    args = module.parse_arguments(["--rows", str(ROWS), "--data", "synthetic", "--epochs", "1",
                                   "--inference-repeats", "1"])
    images, targets, _ = bench.load_rows(ROWS, "synthetic")
    rows = module.time_backend(bench, "numba", True, "W1", images, targets, args)
    modes = {(r["backend"], r["mode"]): r for r in rows}
    assert set(modes) == {("numba step", "cold"), ("numba step", "train"), ("numba graph", "cold"),
                          ("numba graph", "train"), ("numba", "infer")}
    assert modes["numba step", "train"]["epoch_mode"] == "step loop"
    assert modes["numba graph", "train"]["epoch_mode"] == "fast path"
    assert modes["numba graph", "train"]["target_ms"] == module.TARGETS_MS["W1"]


@pytest.mark.parametrize("workload", WORKLOAD_PARAMS)
@pytest.mark.parametrize("name", AVAILABLE)
def test_step_loop_runner_takes_the_steps_train_takes(name, workload):
    """``<backend>-steps``, the notebook's loop by hand over the epoch's rows in slices, takes train()'s
    steps in train()'s order (the input gradient it also computes changes nothing)."""
    images, targets, _ = bench.load_rows(_tiny_rows(workload), "synthetic")
    spec = bench.WORKLOADS[workload]
    steps, trained = (bench.make_runner(runner, spec, "float32", images, targets)
                      for runner in (name + bench.STEPS, name))
    assert isinstance(steps, bench.StepLoopRunner) and steps.name == name
    # train()'s whole-epoch program (CuPy's, for W2) sums its products in another order than the
    # step loop's BLAS: the same steps, float32 rounding apart.
    same_order = trained.epoch_mode == "step loop"
    rtol = 1e-5 if same_order else 1e-4
    for _ in range(2):
        steps.before_epoch()
        assert steps.train_epoch() == pytest.approx(trained.train_epoch(), rel=rtol)
    _assert_same_training(steps, trained, workload, rtol=rtol, norm_wise=not same_order)
    with pytest.raises(RuntimeError, match="call before_epoch"):  # a prepared epoch is used once
        next(steps.epoch_rows.batches(10))


def test_step_loop_runners_are_named_listed_and_left_out_on_request():
    statuses = fastprop.available_backends()
    names, skipped = bench.timing._fastprop_runners(None, statuses, True)
    assert [n for n in names if not n.endswith(bench.STEPS)] == AVAILABLE
    assert [n for n in names if n.endswith(bench.STEPS)] == [n + bench.STEPS for n in AVAILABLE]
    assert bench.timing._fastprop_runners(["numpy-steps"], statuses, True)[0] == ["numpy-steps"]
    assert bench.timing._fastprop_runners(["numpy"], statuses, False)[0] == ["numpy"]
    names, skipped = bench.timing._fastprop_runners(["nope-steps"], statuses, True)
    assert names == [] and "not registered" in skipped[0]["reason"]


@pytest.mark.slow
def test_markdown_table_has_a_row_per_training_and_inference_figure(bench_run):
    report = bench_run[0]
    table = bench.markdown_table(report).splitlines()
    figures = [r for r in report["results"] if r["mode"] != "cold"]
    assert len(table) == 2 + len(figures)
    assert table[0].startswith("| workload | runner | samples/s | ms/epoch |")
    assert any("fastprop `numpy`, notebook's step loop" in line for line in table)
    assert any(line.startswith("| W1 train") and "| notebook-style NumPy loop |" in line for line in table)
