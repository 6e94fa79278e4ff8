"""Learning curves: a real PNG from a History, and a clear message without matplotlib."""

from __future__ import annotations

import sys

import numpy
import pytest

import fastprop
from fastprop.plot import learning_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history():
    return fastprop.History(cost=[0.9, 0.5, 0.31, 0.3], accuracy=[0.6, 0.8, 0.88, 0.9])


def test_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    path = tmp_path / "curves.png"
    assert learning_curves(_history(), path, title="tiny run") == path
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_accepts_a_history_dict_with_one_epoch(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    path = str(tmp_path / "one.png")
    learning_curves({"cost": [1.0], "accuracy": [0.5]}, path)
    with open(path, "rb") as stream:
        assert stream.read(8) == PNG_SIGNATURE


def test_leaves_pyplot_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    backend = matplotlib.get_backend()
    learning_curves(_history(), tmp_path / "curves.png")
    assert matplotlib.get_backend() == backend


def test_draws_the_history_that_train_returns(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    rng = numpy.random.default_rng(0)
    x, t = rng.random((90, 6)), fastprop.vectorize(rng.integers(0, 3, 90), n_classes=3)
    net = fastprop.Network([fastprop.Linear(6, 3, rng=0), fastprop.Sigmoid()])
    history = fastprop.train(net, fastprop.MeanSquareError(), 3, 20, 0.1,
                             data=(x[:60], t[:60], x[60:], t[60:]), quiet=True, verbose=False)
    assert len(history.cost) == len(history.accuracy) == 3
    path = learning_curves(history, tmp_path / "trained.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    learning_curves(history.to_dict(), tmp_path / "from_dict.png")
    assert (tmp_path / "from_dict.png").read_bytes().startswith(PNG_SIGNATURE)


def test_empty_or_ragged_history_is_refused(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    for history in (fastprop.History(), fastprop.History(cost=[1.0, 0.5], accuracy=[0.5])):
        with pytest.raises(ValueError, match="at least one epoch"):
            learning_curves(history, tmp_path / "none.png")
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # also when it was never imported
    with pytest.raises(ImportError, match=r"install the plot extra: pip install 'fastprop\[plot\]'"):
        learning_curves(_history(), tmp_path / "curves.png")
