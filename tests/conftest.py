"""Shared fixtures and data helpers: every test that takes ``backend_name`` runs once per backend
available here (the other shared helpers: ``tests/helpers.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy
import pytest

import fastprop
from fastprop import dataset_files
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
    """The data sets kept off the network, the user's cache and the system's data folders: any
    download attempt fails the test."""

    monkeypatch.setenv("FASTPROP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTPROP_DATA", raising=False)
    monkeypatch.setattr(dataset_files, "SYSTEM_PATHS", ())

    def no_network(url, timeout=None):
        raise AssertionError(f"a test tried to reach the network: {url}")

    monkeypatch.setattr(dataset_files, "_urlopen", no_network)


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


# -- scripted validation accuracies ----------------------------------------------------------------


@pytest.fixture
def scripted_accuracy(monkeypatch):
    """Make train's validation return ``script[e]`` for epoch e (from 0): deterministic accuracies."""

    def install(script):
        def validate_epoch(e, net, images, labels, batch_size, *, quiet=False, communicator=None):
            return script[e]

        monkeypatch.setattr(fastprop.training.api, "validate_epoch", validate_epoch)

    return install


# -- dataset folders under the names people download, and decoys wherever a search would look ------


# The four files under their canonical names, in RawDataset order (the test's own oracle, not the
# package's list).
CANONICAL = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


def variant(index, dotted, gz):
    """One name of file ``index``: ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``, ± ``.gz``."""
    prefix, kind, idx = re.fullmatch(r"(train|t10k)-(images|labels)-(idx\d)-ubyte", CANONICAL[index]).groups()
    return f"{prefix}-{kind}{'.' if dotted else '-'}{idx}-ubyte{'.gz' if gz else ''}"


def mnist_arrays(n_train=24, n_test=12, seed=0):
    """Four uint8 arrays shaped like MNIST's; the first pixel encodes the label and ``seed``."""
    rng = numpy.random.default_rng(seed)
    arrays = []
    for n in (n_train, n_test):
        images = rng.integers(0, 256, (n, 28, 28), dtype=numpy.uint8)
        labels = rng.integers(0, 10, n, dtype=numpy.uint8)
        images[:, 0, 0] = labels * 20 + seed
        arrays += [images, labels]
    return arrays


def write_dataset(folder, names, arrays):
    """Write ``arrays`` into ``folder`` under ``names`` (gzip-compressed where a name ends in .gz)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(names, arrays):
        write_idx(folder / name, array, compress=name.endswith(".gz"))


def lack_files(folder, state):
    """Make ``folder`` lack the dataset in one of the ways users do; return the indices missing."""
    arrays = mnist_arrays(seed=7)
    if state == "absent":
        return [0, 1, 2, 3]
    folder.mkdir()
    if state == "empty":
        return [0, 1, 2, 3]
    if state == "other names":  # browser duplicates, underscores, CSV exports, archives unpacked as folders
        write_idx(folder / "train-images-idx3-ubyte (1).gz", arrays[0])
        write_idx(folder / "train_labels_idx1_ubyte.gz", arrays[1])
        (folder / "fashion-mnist_test.csv").write_text("label,pixel1\n0,0\n")
        (folder / "t10k-labels-idx1-ubyte").mkdir()
        write_idx(folder / "t10k-labels-idx1-ubyte" / "t10k-labels-idx1-ubyte", arrays[3])
        return [0, 1, 2, 3]
    if state == "two missing":
        write_idx(folder / variant(0, False, True), arrays[0])
        write_idx(folder / variant(2, True, False), arrays[2])
        return [1, 3]
    raise AssertionError(state)


@pytest.fixture
def decoys(tmp_path, monkeypatch):
    """Valid copies of both datasets in every place a search without a folder would look
    (``$FASTPROP_DATA/<name>``, ``$FASTPROP_DATA``, the cache, a system folder), and a network that
    records every request and serves nothing. Returns ``(decoy folders, requested urls)``."""
    places = []
    for name in ("mnist", "fashion-mnist"):
        places += [tmp_path / "data" / name, tmp_path / "cache" / name, tmp_path / "system" / name]
    places.append(tmp_path / "data")
    for seed, place in enumerate(places, start=100):
        write_dataset(place, [name + ".gz" for name in CANONICAL], mnist_arrays(seed=seed))
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FASTPROP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dataset_files, "SYSTEM_PATHS", (tmp_path / "system",))
    requested = []

    def offline(url, timeout=None):
        requested.append(url)
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(dataset_files, "_urlopen", offline)
    return places, requested
