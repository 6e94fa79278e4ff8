"""Shared fixtures: every test that takes ``backend_name`` runs once per backend available here."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop.backends import registry
from fastprop.datasets import write_idx

AVAILABLE_BACKENDS = [name for name, status in fastprop.available_backends().items() if status.available]


@pytest.fixture(params=AVAILABLE_BACKENDS)
def backend_name(request):
    """The name of one available backend (numpy always; numba and cupy where they run)."""
    return request.param


@pytest.fixture(autouse=True)
def _restore_backend_default():
    """Tests may call set_backend; give every test the process default it started with."""
    saved = registry._default
    yield
    registry._default = saved


@pytest.fixture(autouse=True)
def _forget_fastprop_seed():
    """Tests may call fastprop.seed(k), which outlives them; later tests rely on np.random.seed."""
    yield
    fastprop.seed(None)


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """fastprop.datasets kept off the network, the user's cache and the system's data folders: any
    download attempt fails the test."""
    from fastprop import datasets

    monkeypatch.setenv("FASTPROP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTPROP_DATA", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_PATHS", ())

    def no_network(url, timeout=None):
        raise AssertionError(f"a test tried to reach the network: {url}")

    monkeypatch.setattr(datasets, "_urlopen", no_network)


def separable_problem(n, seed=0):
    """``(x, one-hot t)``: a learnable 10-class problem where class k lights up features 4k..4k+3."""
    rng = numpy.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    x = rng.random((n, 40)) * 0.3
    for k in range(10):
        x[labels == k, 4 * k : 4 * k + 4] += 1
    return x, numpy.eye(10)[labels]


def relative_error(actual, expected) -> float:
    """Norm-wise relative error ``max|a - e| / max|e|`` on host copies."""
    actual = numpy.asarray(actual, dtype=numpy.float64)
    expected = numpy.asarray(expected, dtype=numpy.float64)
    return float(numpy.abs(actual - expected).max() / max(numpy.abs(expected).max(), 1e-300))


@pytest.fixture
def tiny_mnist(tmp_path):
    """A folder holding the four MNIST IDX files with 1,200 training and 200 test images.

    Images are drawn so that the class is learnable: each class lights up its own block of pixels.
    """
    rng = numpy.random.default_rng(1)

    def make(n):
        labels = rng.integers(0, 10, n).astype(numpy.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(numpy.uint8)
        for k in range(10):
            images[labels == k, 2 * k : 2 * k + 3, 4:24] = 250
        return images, labels

    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 1200), ("t10k", 200)):
        images, labels = make(n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder
