"""The ``fastprop`` command: a training smoke run on a tiny dataset, the backend table, bad input."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy
import pytest

from fastprop.cli import main


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


def test_backends_lists_numpy_as_available(capsys):
    assert main(["backends", "--no-warmup"]) == 0
    out = capsys.readouterr().out
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
        monkeypatch.setattr(datasets, "_load_raw", lambda *args: pytest.fail("data was loaded"))
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

    monkeypatch.setattr(datasets, "SYSTEM_PATHS", ())
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

    monkeypatch.setattr(datasets, "_urlopen", offline)
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


def test_python_dash_m_fastprop_runs():
    result = subprocess.run([sys.executable, "-m", "fastprop", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert "train" in result.stdout and "backends" in result.stdout and "bench" in result.stdout


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
    for model in ("mlp", "seed", "cnn"):
        assert main(argv + ["--model", model]) == 0
        assert calls.pop()["shuffle"] is True  # unlike fastprop.train's default, the CLI reshuffles
        printed = [float(c) for c in re.findall(r"^cost=(\d+\.\d{6}), ", capsys.readouterr().out, flags=re.M)]
        with open(history, newline="") as stream:
            saved = [float(row["cost"]) for row in csv.DictReader(stream)]
        assert len(printed) == len(saved) == 3
        assert printed == pytest.approx(saved, abs=5e-7)  # the printed figure is History.cost
