"""The ``fastprop`` command: a training smoke run on a tiny dataset, the backend table, bad input, a
``--data-dir`` that is the only place searched, cheap checks before any data is loaded, and the backend
it trains on (the fastest by default, named in its first line; the library default stays NumPy)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy
import pytest

import fastprop
from fastprop import cli, dataset_files, datasets
from fastprop.cli import main
from fastprop.datasets import read_idx, write_idx
from tests.conftest import CANONICAL, lack_files, variant
from tests.helpers import REPO, numba_available, run_python


def test_train_prints_epochs_test_accuracy_and_throughput(tiny_mnist, capsys):
    code = main(["train", "--dataset", "mnist", "--data-dir", str(tiny_mnist), "--epochs", "2",
                 "--batch-size", "100", "--learning-rate", "0.01", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    epochs = re.findall(r"^cost=\d+\.\d{6}, accuracy=\d\.\d{6}$", out, flags=re.M)
    assert len(epochs) == 2
    accuracy = float(re.search(r"^test accuracy=(\d\.\d{6})$", out, flags=re.M).group(1))
    assert accuracy > 0.5  # the tiny set is learnable
    assert re.search(r"^training throughput=\d+ samples/s", out, flags=re.M)


def test_backends_says_when_the_blas_asked_for_is_missing(capsys, monkeypatch):
    from fastprop.backends import blas

    monkeypatch.setenv(blas.VARIABLE, "nonsense")
    blas.products.cache_clear()
    try:
        assert main(["backends", "--no-warmup"]) == 1
    finally:
        blas.products.cache_clear()
    assert "FASTPROP_BLAS='nonsense' names no BLAS" in capsys.readouterr().out


def test_backends_lists_numpy_as_available(capsys):
    assert main(["backends", "--no-warmup"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^the numba backend's matrix products: \S", out, flags=re.M)
    assert re.search(r"^numpy\s+yes\s+numpy \d", out, flags=re.M)
    for line in out.splitlines()[1:]:  # every unavailable backend says why
        if re.match(r"^\S+\s+no\s", line):
            assert len(line.split("  ")[-1].strip()) > 10


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "0"], r"argument --epochs: expected a positive number, got '0'"),
        (["train", "--learning-rate", "fast"], r"argument --learning-rate: expected a float, got 'fast'"),
        (["train", "--model", "resnet"], r"argument --model: invalid choice: 'resnet'"),
        (["train", "--backend", "tpu"], r"^fastprop: error: Unknown backend 'tpu'; registered backends are "
                                        r"[^\n]*numba[^\n]*numpy[^\n]*\n$"),
        (["frobnicate"], r"invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_get_an_argparse_error_not_a_traceback(argv, message, capsys, monkeypatch, tiny_mnist):
    import fastprop.datasets as datasets

    argv = argv + (["--data-dir", str(tiny_mnist)] if argv[0] == "train" else [])
    if "--backend" in argv:
        # Backend errors are found after parsing, but before any data is loaded: one line on
        # stderr, exit code 2, no usage line.
        monkeypatch.setattr(datasets, "load_raw", lambda *args: pytest.fail("data was loaded"))
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert re.search(message, captured.err) and "Traceback" not in captured.err
        assert "usage:" not in captured.err and captured.out == ""
        return
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert re.search(message, err) and "Traceback" not in err
    assert err.startswith("usage: fastprop")


def test_missing_data_is_an_argparse_error_listing_the_places(tmp_path, capsys, monkeypatch):
    """A --data-dir lacking the files is the only place searched: one line naming it, exit code 2,
    and no look elsewhere (FASTPROP_DATA holds a copy here) nor download."""
    import fastprop.datasets as datasets

    monkeypatch.setattr(dataset_files, "SYSTEM_PATHS", ())
    monkeypatch.setenv("FASTPROP_CACHE", str(tmp_path / "cache"))
    elsewhere = tmp_path / "elsewhere"
    for name, array in (("train-images-idx3-ubyte.gz", numpy.zeros((12, 28, 28), numpy.uint8)),
                        ("train-labels-idx1-ubyte.gz", numpy.zeros(12, numpy.uint8)),
                        ("t10k-images-idx3-ubyte.gz", numpy.zeros((6, 28, 28), numpy.uint8)),
                        ("t10k-labels-idx1-ubyte.gz", numpy.zeros(6, numpy.uint8))):
        datasets.write_idx(elsewhere / name, array)
    monkeypatch.setenv("FASTPROP_DATA", str(elsewhere))
    requested = []

    def offline(url, timeout=None):
        requested.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(dataset_files, "_urlopen", offline)
    (tmp_path / "empty").mkdir()
    for folder, problem in (
        (tmp_path / "empty", "train-images-idx3-ubyte"),
        (tmp_path / "absent", "no such folder"),
    ):
        assert main(["train", "--data-dir", str(folder), "--epochs", "1", "--quiet"]) == 2
        captured = capsys.readouterr()
        err = captured.err
        assert err.startswith("fastprop: error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert str(folder) in err and problem in err and str(elsewhere) not in err
        assert "cost=" not in captured.out  # nothing trained on the copy in FASTPROP_DATA
    assert requested == []


@pytest.mark.slow
def test_python_dash_m_fastprop_runs():
    result = subprocess.run([sys.executable, "-m", "fastprop", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert "train" in result.stdout and "backends" in result.stdout and "bench" in result.stdout


@pytest.mark.slow
def test_train_writes_plot_history_and_checkpoint(tiny_mnist, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    plot, history, checkpoint = tmp_path / "curves.png", tmp_path / "history.csv", tmp_path / "run.npz"
    argv = ["train", "--data-dir", str(tiny_mnist), "--epochs", "2", "--batch-size", "100", "--quiet",
            "--plot", str(plot), "--history", str(history), "--checkpoint", str(checkpoint)]
    assert main(argv) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(history.read_text().splitlines()) == 3
    assert checkpoint.exists()
    capsys.readouterr()
    assert main(argv[:4] + ["4"] + argv[5:]) == 0  # resumes at epoch 3
    assert len(re.findall(r"^cost=", capsys.readouterr().out, flags=re.M)) == 2
    assert len(history.read_text().splitlines()) == 5


def test_train_shows_zero_based_epoch_bars_unless_quiet(tiny_mnist, capsys):
    argv = ["train", "--data-dir", str(tiny_mnist), "--epochs", "2", "--batch-size", "100"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    for bar in ("training, e=0", "validation, e=0", "training, e=1", "validation, e=1"):
        assert bar in err
    assert "e=2" not in err  # two epochs are e=0 and e=1, as in the notebook
    assert main(argv + ["--quiet"]) == 0
    assert "training, e=" not in capsys.readouterr().err


@pytest.mark.slow
def test_train_shuffles_every_epoch_and_prints_the_history_cost(tiny_mnist, tmp_path, capsys, monkeypatch):
    import csv

    import fastprop.training as training

    calls = []
    original = training.train

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    history = tmp_path / "history.csv"
    argv = ["train", "--data-dir", str(tiny_mnist), "--epochs", "3", "--batch-size", "100", "--quiet",
            "--history", str(history)]
    for model in ("mlp", "notebook", "cnn", "cnn-bn"):
        assert main(argv + ["--model", model]) == 0
        assert calls.pop()["shuffle"] is True  # unlike fastprop.train's default, the CLI reshuffles
        printed = [float(c) for c in re.findall(r"^cost=(\d+\.\d{6}), ", capsys.readouterr().out, flags=re.M)]
        with open(history, newline="") as stream:
            saved = [float(row["cost"]) for row in csv.DictReader(stream)]
        assert len(printed) == len(saved) == 3
        assert printed == pytest.approx(saved, abs=5e-7)  # the printed figure is History.cost


def test_the_former_model_name_trains_the_notebook_model_with_a_note(tiny_mnist, capsys, monkeypatch):
    import fastprop.training as training

    built = []
    original = training.train
    monkeypatch.setattr(training, "train", lambda net, *a, **k: built.append(net) or original(net, *a, **k))
    argv = ["train", "--data-dir", str(tiny_mnist), "--epochs", "1", "--quiet"]
    assert main(argv + ["--model", "seed"]) == 0
    assert "--model seed is now called --model notebook" in capsys.readouterr().err
    assert main(argv) == 0  # the default is the notebook model
    assert "now called" not in capsys.readouterr().err
    assert [[repr(leaf) for leaf in net.leaves()] for net in built] == [["Linear(784, 10)", "Sigmoid()"]] * 2


@pytest.mark.parametrize("options, expected", [
    ([], None),  # the cnn-bn recipe's own: none
    (["--augment", "0"], None),
    (["--augment", "1", "--flip"], "Augment(shift=1, flip=True, image_shape=(28, 28))"),
    (["--no-flip", "--augment", "3"], "Augment(shift=3, flip=False, image_shape=(28, 28))"),
])
def test_augment_options_change_the_recipe_s_augmentation(tiny_mnist, monkeypatch, options, expected):
    import fastprop.training as training

    seen, original = [], training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: seen.append(k["augment"]) or original(*a, **k))
    argv = ["train", "--data-dir", str(tiny_mnist), "--model", "cnn-bn", "--epochs", "1", "--quiet", *options]
    assert main(argv) == 0
    assert (None if seen[0] is None else repr(seen[0])) == expected


def test_a_negative_augment_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--augment", "-1"])
    assert "expected a whole number >= 0" in capsys.readouterr().err


# -- a --data-dir lacking the files is one line; name variants are recognised ----------------------


def _cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("state", ["absent", "empty", "other names", "two missing"])
def test_cli_data_dir_lacking_the_files_is_one_line_and_exit_code_2(tmp_path, decoys, capsys, state):
    places, requested = decoys
    folder = tmp_path / "mine"
    missing = lack_files(folder, state)
    code, out, err = _cli(
        ["train", "--dataset", "mnist", "--data-dir", str(folder), "--epochs", "1", "--quiet"], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fastprop: error: ") and "Traceback" not in err
    assert str(folder) in err
    for index in missing if state != "absent" else []:
        assert CANONICAL[index] in err
    assert "cost=" not in out and "test accuracy" not in out  # nothing was trained on a decoy
    assert len(out.splitlines()) == 1 and out.startswith("backend: ")
    assert requested == []


def test_cli_trains_from_a_data_dir_with_dotted_uncompressed_names(tiny_mnist, tmp_path, decoys, capsys):
    folder = tmp_path / "dotted"
    folder.mkdir()
    for index in range(4):
        write_idx(folder / variant(index, True, False), read_idx(tiny_mnist / (CANONICAL[index] + ".gz")))
    code, out, err = _cli(["train", "--data-dir", str(folder), "--epochs", "1", "--batch-size", "100",
                           "--learning-rate", "0.01", "--quiet", "--backend", "numpy"], capsys)
    assert code == 0, err
    assert float(re.search(r"^test accuracy=(\d\.\d{6})$", out, flags=re.M).group(1)) > 0.5


# -- the cheap checks come before the data is loaded; the backend the CLI trains on ----------------


@pytest.fixture
def no_data_anywhere(offline_datasets, monkeypatch):
    """No dataset in any place, no network, and a spy that fails the test if the data is read."""
    loads = []
    monkeypatch.setattr(datasets, "load_raw",
                        lambda *args: loads.append(args) or pytest.fail("data was loaded"))
    return loads


@pytest.mark.parametrize("argv, env, message", [
    (["train", "--backend", "tpu9000"], {}, "Unknown backend 'tpu9000'; registered backends are "),
    (["train"], {"FASTPROP_BACKEND": "tpu9000"}, "Unknown backend 'tpu9000'; registered backends are "),
    (["train", "--data-dir", "/no/such/folder"], {"FASTPROP_DTYPE": "float16"},
     "Unsupported dtype 'float16'"),
])
def test_cheap_arguments_are_checked_before_any_data_is_loaded(no_data_anywhere, monkeypatch, capsys, argv,
                                                               env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = _cli(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"fastprop: error: {message}")
    assert "MNIST" not in err and "Traceback" not in err and "usage:" not in err
    if "tpu9000" in message:
        for name in fastprop.backends.backend_names():
            assert name in err.split("registered backends are ")[1]
    assert no_data_anywhere == []
    assert out == ""


def _cupy_runs_here():
    return fastprop.available_backends()["cupy"].available


@pytest.mark.slow
@pytest.mark.skipif(_cupy_runs_here(), reason="CuPy runs here; the test is for a machine without a GPU")
def test_fastprop_backend_cupy_without_a_gpu_is_one_line_in_the_cli_and_fine_on_import(tiny_mnist):
    env = dict(os.environ, FASTPROP_BACKEND="cupy")
    command = [sys.executable, "-m", "fastprop", "train", "--data-dir", str(tiny_mnist), "--epochs", "1",
               "--quiet"]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""  # not trained, not even the backend line
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("fastprop: error: Backend 'cupy' is unavailable: ")
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-c", "import fastprop; print('imported')"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "imported\n" and result.stderr == "", result.stderr


@pytest.mark.skipif(_cupy_runs_here(), reason="CuPy runs here; the test is for a machine without a GPU")
def test_cupy_without_a_gpu_via_main_is_one_line(tiny_mnist, monkeypatch, capsys):
    monkeypatch.setenv("FASTPROP_BACKEND", "cupy")
    code, out, err = _cli(["train", "--data-dir", str(tiny_mnist), "--quiet"], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("fastprop: error: Backend 'cupy' is unavailable")
    monkeypatch.delenv("FASTPROP_BACKEND")
    code, out, err = _cli(["train", "--backend", "cupy", "--data-dir", str(tiny_mnist), "--quiet"], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("fastprop: error: Backend 'cupy' is unavailable")


def _expected_fastest():
    statuses = fastprop.available_backends()
    return next(name for name in ("cupy", "numba", "numpy") if statuses[name].available)


def test_fastest_backend_prefers_a_gpu_then_numba_then_numpy():
    assert cli.fastest_backend() == _expected_fastest()
    if numba_available() and not _cupy_runs_here():
        assert cli.fastest_backend() == "numba"


@pytest.mark.parametrize("choice", ["default", "auto", "numpy-flag", "numpy-env"])
def test_the_first_line_names_the_backend_the_cli_trains_on(tiny_mnist, monkeypatch, capsys, choice):
    import fastprop.training as training

    monkeypatch.delenv("FASTPROP_BACKEND", raising=False)
    monkeypatch.delenv("FASTPROP_DTYPE", raising=False)
    argv = ["train", "--data-dir", str(tiny_mnist), "--epochs", "1", "--batch-size", "100", "--quiet"]
    if choice == "auto":
        argv += ["--backend", "auto"]
    elif choice == "numpy-flag":
        argv += ["--backend", "numpy"]
    elif choice == "numpy-env":
        monkeypatch.setenv("FASTPROP_BACKEND", "numpy")
    used = []
    original = training.train
    monkeypatch.setattr(training, "train",
                        lambda net, *a, **k: used.append(net.backend.name) or original(net, *a, **k))
    code, out, err = _cli(argv, capsys)
    assert code == 0, err
    first = out.splitlines()[0]
    expected = _expected_fastest() if choice in ("default", "auto") else "numpy"
    assert used == [expected]
    assert first.startswith(f"backend: {expected}, float32")
    assert ("auto" in first) == (choice in ("default", "auto"))
    assert f"{expected} backend" in out  # the throughput line agrees


@pytest.mark.slow
def test_the_library_default_stays_numpy_even_after_the_cli_chose_another(tiny_mnist):
    script = f'''
import fastprop
from fastprop.cli import main
assert fastprop.get_backend().name == "numpy", fastprop.get_backend().name
argv = ["train", "--data-dir", {str(tiny_mnist)!r}, "--epochs", "1", "--batch-size", "100", "--quiet"]
assert main(argv) == 0
print("library default:", fastprop.get_backend().name, fastprop.Linear(2, 2).backend.name)
'''
    code, out, err = run_python(script, {})
    assert code == 0, err[-3000:]
    assert out.splitlines()[0].startswith(f"backend: {_expected_fastest()}, ")
    assert out.splitlines()[-1] == "library default: numpy numpy"


@pytest.mark.parametrize("option", ["--history", "--checkpoint", "--plot"])
def test_output_paths_in_missing_folders_are_refused_before_any_data_is_loaded(no_data_anywhere, tmp_path,
                                                                               capsys, option):
    """Where the CLI will write is a cheap argument too: a missing folder is reported before the data is
    read, not after the training it would have saved (today --history loses a whole run)."""
    if option == "--plot":
        pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    target = tmp_path / "no-such-folder" / ("out.png" if option == "--plot" else "out.csv")
    code, out, err = _cli(
        ["train", "--data-dir", str(tmp_path), "--epochs", "1", "--quiet", option, str(target)], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fastprop: error: ") and str(target.parent) in err
    assert no_data_anywhere == []
