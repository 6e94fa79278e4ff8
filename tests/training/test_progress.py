"""Progress bars (``fastprop.training.progress``): they count epochs from zero, ``quiet`` hides them,
and training runs in a process without a terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy
import pytest

from fastprop import Linear, MeanSquareError, Network, Sigmoid, train
from tests.helpers import split_problem


def test_bars_count_epochs_from_zero_and_quiet_hides_them(capsys):
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    train(net, MeanSquareError(), 2, 100, 0.05, data=split_problem(300, 100))
    bars = capsys.readouterr().err
    for bar in ("training, e=0", "validation, e=0", "training, e=1", "validation, e=1"):
        assert bar in bars
    assert "e=2" not in bars
    train(net, MeanSquareError(), 1, 100, 0.05, data=split_problem(300, 100), quiet=True)
    assert "training" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("streams", ["closed", "devnull"])
def test_training_runs_with_closed_or_null_standard_streams(tmp_path, streams):
    """A job started without a terminal (cron, nohup, a service): bars and lines must not fail."""
    script = textwrap.dedent("""
        import sys
        import numpy, fastprop
        from tests.conftest import separable_problem
        x, t = separable_problem(200)
        net = fastprop.Network([fastprop.Linear(40, 10, rng=0), fastprop.Sigmoid()])
        history = fastprop.train(net, fastprop.MeanSquareError(), 2, 50, 0.1, data=(x, t, x, t))
        numpy.save(sys.argv[1], numpy.array(history.accuracy))
    """)
    out = tmp_path / "accuracy.npy"
    kind = subprocess.DEVNULL
    command = [sys.executable, "-c", script, str(out)]
    if streams == "closed":  # the child starts with stdout and stderr closed
        command = ["bash", "-c", f'exec {sys.executable} -c "$0" "$1" >&- 2>&-', script, str(out)]
    done = subprocess.run(command, stdin=kind, stdout=kind if streams == "devnull" else None,
                          stderr=kind if streams == "devnull" else None, timeout=300,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert done.returncode == 0
    assert numpy.load(out).shape == (2,)
