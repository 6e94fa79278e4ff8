"""Tests for fastprop.datasets: IDX files, search order, downloads served from memory, splits."""

import gzip
import hashlib
import io
import os
import struct
import urllib.error
from pathlib import Path

import numpy
import platformdirs
import pytest

from fastprop import datasets
from fastprop.datasets import DatasetError, DatasetNotFoundError, DatasetSpec

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Keep every test off the network, the user's cache and the system's data folders."""
    monkeypatch.setenv("FASTPROP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTPROP_DATA", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_PATHS", ())

    def no_network(url, timeout=None):
        raise AssertionError(f"a test tried to reach the network: {url}")

    monkeypatch.setattr(datasets, "_urlopen", no_network)


def make_arrays(n_train=120, n_test=30, seed=0):
    """Random images whose first pixel encodes the label, so shuffled pairs can be checked."""
    rng = numpy.random.default_rng(seed)
    arrays = []
    for n in (n_train, n_test):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=numpy.uint8)
        labels = rng.integers(0, 10, size=n, dtype=numpy.uint8)
        images[:, 0, 0] = labels * 20
        images[:, 0, 1], images[:, 0, 2] = 0, 255  # the scaling's end points
        arrays += [images, labels]
    return arrays


def make_dataset(folder, compress=True, **kwargs):
    folder = Path(folder)
    arrays = make_arrays(**kwargs)
    for name, array in zip(FILES, arrays):
        datasets.write_idx(folder / (name if compress else name.removesuffix(".gz")), array)
    return arrays


def assert_same(raw, arrays):
    assert len(raw) == 4
    for loaded, expected in zip(raw, arrays):
        numpy.testing.assert_array_equal(loaded, expected)
        assert loaded.dtype == numpy.uint8


# ---------------------------------------------------------------- IDX files

@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)])
@pytest.mark.parametrize("name", ["array.idx", "array.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, shape, name):
    array = (numpy.arange(numpy.prod(shape)) * 7 - 11).reshape(shape).astype(dtype)
    datasets.write_idx(tmp_path / name, array)
    read = datasets.read_idx(tmp_path / name)
    numpy.testing.assert_array_equal(read, array)
    assert read.dtype == numpy.dtype(dtype) and read.dtype.isnative
    read[...] = 0  # the result must be writable
    assert (tmp_path / name).read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\0\0")
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_read_idx_matches_the_format_written_by_hand(tmp_path):
    # Type 0x0B is big-endian int16; the oracle is the IDX layout itself, not write_idx.
    values = [-2, 300, 7, -32768, 32767, 0]
    data = struct.pack(">BBBBII", 0, 0, 0x0B, 2, 2, 3) + struct.pack(">6h", *values)
    (tmp_path / "hand.idx").write_bytes(data)
    numpy.testing.assert_array_equal(datasets.read_idx(tmp_path / "hand.idx"),
                                     numpy.array(values).reshape(2, 3))
    datasets.write_idx(tmp_path / "written.idx", numpy.array(values, numpy.int16).reshape(2, 3))
    assert (tmp_path / "written.idx").read_bytes() == data


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = numpy.arange(12, dtype=numpy.uint8)
    datasets.write_idx(tmp_path / "compressed.raw", array, compress=True)
    datasets.write_idx(tmp_path / "plain.gz", array, compress=False)
    numpy.testing.assert_array_equal(datasets.read_idx(tmp_path / "compressed.raw"), array)
    numpy.testing.assert_array_equal(datasets.read_idx(tmp_path / "plain.gz"), array)


def _idx(payload=bytes(6), code=0x08, dims=(2, 3)):
    return struct.pack(f">BBBB{len(dims)}I", 0, 0, code, len(dims), *dims) + payload


def _corrupt_gzip():
    data = bytearray(gzip.compress(_idx(bytes(range(200)), dims=(200,))))
    data[20:30] = bytes(10)  # damage the deflate stream past the header
    return bytes(data)


@pytest.mark.parametrize("content, phrase", [
    (b"\0\x01\x08\x01" + _idx()[4:], "IDX header"),
    (_idx(code=0x0A), "IDX header"),
    (struct.pack(">BBBB", 0, 0, 0x08, 0), "IDX header"),
    (struct.pack(">BBBB5I", 0, 0, 0x08, 5, 1, 1, 1, 1, 1) + b"\0", "IDX header"),
    (b"", "IDX header"),
    (struct.pack(">BBBBI", 0, 0, 0x08, 3, 2), "dimension sizes"),
    (_idx(bytes(5)), "truncated"),
    (_idx(bytes(7)), "trailing data"),
    (_idx(bytes(12), code=0x0B, dims=(7,)), "truncated"),
    (gzip.compress(_idx(bytes(7))), "trailing data"),
    (_corrupt_gzip(), "gzip stream is damaged"),
    (gzip.compress(_idx())[:-6], "gzip stream is damaged"),
])
def test_bad_idx_files_fail_with_one_sentence_naming_the_file(tmp_path, content, phrase):
    path = tmp_path / "damaged-file.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as caught:
        datasets.read_idx(path)
    message = str(caught.value)
    assert phrase in message
    assert str(path) in message
    assert "delete it so it is downloaded again" in message
    assert message.count(". ") == 0 and message.endswith(".")
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("array", [numpy.zeros(3, bool), numpy.zeros((), numpy.uint8),
                                   numpy.zeros((1,) * 5, numpy.uint8), numpy.zeros(2, numpy.int64)])
def test_write_idx_rejects_what_idx_cannot_hold(tmp_path, array):
    with pytest.raises(ValueError, match="rank 1 to 4 with dtype uint8"):
        datasets.write_idx(tmp_path / "x.idx", array)
    assert not (tmp_path / "x.idx").exists()


def test_write_idx_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "x.idx"
    datasets.write_idx(path, numpy.arange(3, dtype=numpy.uint8))
    before = path.read_bytes()

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        datasets.write_idx(path, numpy.arange(9, dtype=numpy.uint8))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["x.idx"]


# ---------------------------------------------------------------- finding local files

def test_load_from_explicit_path_gzip_and_raw(tmp_path):
    arrays = make_dataset(tmp_path / "gz")
    assert_same(datasets.load_mnist(tmp_path / "gz", download=False), arrays)
    arrays = make_dataset(tmp_path / "raw", compress=False, seed=1)
    assert_same(datasets.load_fashion_mnist(str(tmp_path / "raw"), download=False), arrays)


@pytest.mark.parametrize("subfolder", ["mnist", ""])
def test_fastprop_data_folder_and_its_dataset_subfolder(tmp_path, monkeypatch, subfolder):
    arrays = make_dataset(tmp_path / "data" / subfolder)
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    assert_same(datasets.load_mnist(download=False), arrays)


def test_cache_folder_is_searched(tmp_path):
    arrays = make_dataset(tmp_path / "cache" / "fashion-mnist")
    assert_same(datasets.load_fashion_mnist(download=False), arrays)


def test_cache_dir_defaults_to_the_user_cache(monkeypatch, tmp_path):
    assert datasets.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("FASTPROP_CACHE")
    assert datasets.cache_dir() == Path(platformdirs.user_cache_dir("fastprop"))


def test_system_paths_are_searched(tmp_path, monkeypatch):
    arrays = make_dataset(tmp_path / "system" / "fashion-mnist")
    monkeypatch.setattr(datasets, "SYSTEM_PATHS", (tmp_path / "nowhere", tmp_path / "system"))
    assert_same(datasets.load_fashion_mnist(download=False), arrays)


def test_search_order_path_then_fastprop_data_then_cache_then_system(tmp_path, monkeypatch):
    places = [tmp_path / "path", tmp_path / "data" / "mnist", tmp_path / "data",
              tmp_path / "cache" / "mnist", tmp_path / "system" / "mnist"]
    expected = [make_dataset(place, seed=seed) for seed, place in enumerate(places)]
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(datasets, "SYSTEM_PATHS", (tmp_path / "system",))
    for place, arrays in zip(places, expected):
        assert_same(datasets.load_mnist(tmp_path / "path", download=False), arrays)
        for file in FILES:  # hide this place so the next one is found
            (place / file).rename(place / ("hidden-" + file))


def test_incomplete_folder_is_skipped(tmp_path):
    incomplete = tmp_path / "incomplete"
    make_dataset(incomplete)
    (incomplete / FILES[3]).unlink()
    arrays = make_dataset(tmp_path / "cache" / "mnist", seed=3)
    assert_same(datasets.load_mnist(incomplete, download=False), arrays)


def test_damaged_file_in_a_complete_folder_is_reported_not_skipped(tmp_path):
    make_dataset(tmp_path / "path")
    make_dataset(tmp_path / "cache" / "mnist")
    damaged = tmp_path / "path" / FILES[2]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="gzip stream is damaged") as caught:
        datasets.load_mnist(tmp_path / "path", download=False)
    assert str(damaged) in str(caught.value)


def test_wrong_image_shape_and_label_count_are_reported(tmp_path):
    arrays = make_dataset(tmp_path)
    datasets.write_idx(tmp_path / FILES[0], arrays[0][:, :27])
    with pytest.raises(DatasetError, match=r"shape \(N, 28, 28\)") as caught:
        datasets.load_mnist(tmp_path, download=False)
    assert str(tmp_path / FILES[0]) in str(caught.value)
    datasets.write_idx(tmp_path / FILES[0], arrays[0])
    datasets.write_idx(tmp_path / FILES[3], arrays[3][:-1])
    with pytest.raises(DatasetError, match="should hold 30 uint8 labels") as caught:
        datasets.load_mnist(tmp_path, download=False)
    assert str(tmp_path / FILES[3]) in str(caught.value)


# ---------------------------------------------------------------- downloads, served from memory

MIRRORS = ("https://first.invalid/mnist/", "https://second.invalid/mnist/")


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve a small fake MNIST from the second mirror; the first is unreachable."""
    arrays = make_dataset(tmp_path / "server")
    served = {MIRRORS[1] + name: (tmp_path / "server" / name).read_bytes() for name in FILES}
    checksums = {name: hashlib.sha256(served[MIRRORS[1] + name]).hexdigest() for name in FILES}
    monkeypatch.setitem(datasets.DATASETS, "mnist", DatasetSpec("MNIST", checksums, MIRRORS))
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        assert timeout, "downloads must not wait forever"
        if url not in served:
            raise urllib.error.URLError("unreachable")
        return io.BytesIO(served[url])

    monkeypatch.setattr(datasets, "_urlopen", fake_urlopen)
    return arrays, served, requested


def test_download_falls_back_to_the_next_mirror_and_fills_the_cache(tmp_path, server):
    arrays, served, requested = server
    assert_same(datasets.load_mnist(), arrays)
    assert requested == [mirror + name for name in FILES for mirror in MIRRORS]
    cache = tmp_path / "cache" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(FILES)
    for name in FILES:
        assert (cache / name).read_bytes() == served[MIRRORS[1] + name]
    requested.clear()
    assert_same(datasets.load_mnist(), arrays)  # now from the cache
    assert requested == []


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, server):
    _, served, _ = server
    served[MIRRORS[0] + FILES[1]] = b"not the labels"
    served[MIRRORS[1] + FILES[1]] = served[MIRRORS[1] + FILES[1]][:-1] + b"!"
    with pytest.raises(DatasetNotFoundError) as caught:
        datasets.load_mnist()
    message = str(caught.value)
    assert message.count("instead of") == 2
    assert MIRRORS[0] + FILES[1] in message and MIRRORS[1] + FILES[1] in message
    assert os.listdir(tmp_path / "cache" / "mnist") == [FILES[0]]  # only the good first file


def test_existing_cache_file_is_never_touched(tmp_path, server):
    arrays, served, requested = server
    cache = tmp_path / "cache" / "mnist"
    datasets.write_idx(cache / FILES[0].removesuffix(".gz"), arrays[0])
    before = (cache / FILES[0].removesuffix(".gz")).stat()
    served[MIRRORS[1] + FILES[0]] = b"would fail the checksum anyway"
    assert_same(datasets.load_mnist(), arrays)
    after = (cache / FILES[0].removesuffix(".gz")).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not any(FILES[0] in url for url in requested)
    assert not (cache / FILES[0]).exists()


def test_not_found_offline_lists_every_place_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(datasets, "SYSTEM_PATHS", (tmp_path / "system",))
    make_dataset(tmp_path / "path")
    (tmp_path / "path" / FILES[1]).unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        datasets.load_fashion_mnist(tmp_path / "path", download=False)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    for place in [tmp_path / "path", tmp_path / "data" / "fashion-mnist", tmp_path / "data",
                  tmp_path / "cache" / "fashion-mnist", tmp_path / "system" / "fashion-mnist"]:
        assert f"{place} (" in message
    assert f"{tmp_path / 'path'} (missing {FILES[1]})" in message
    assert "download=False" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FASTPROP_DATA=/folder/with/the/files" in message
    assert "network is reachable" in message


def test_not_found_after_downloads_fail_lists_each_mirror_and_its_error(monkeypatch):
    def unreachable(url, timeout=None):
        raise urllib.error.URLError(f"no route to {url.split('/')[2]}")

    monkeypatch.setattr(datasets, "_urlopen", unreachable)
    with pytest.raises(DatasetNotFoundError) as caught:
        datasets.load_mnist()
    message = str(caught.value)
    for mirror in datasets.DATASETS["mnist"].mirrors:
        host = mirror.split("/")[2]
        assert f"{mirror}{FILES[0]} (<urlopen error no route to {host}>)" in message
    assert "apt-get" not in message  # MNIST has no Debian package to suggest
    assert not list((Path(os.environ["FASTPROP_CACHE"])).rglob("*.part"))


# ---------------------------------------------------------------- training splits

@pytest.mark.parametrize("n, n_train", [(120, 100), (60, 50), (7, 6), (6, 5)])
def test_load_data_splits_five_to_one(tmp_path, n, n_train):
    arrays = make_dataset(tmp_path, n_train=n)
    x, y, x_valid, y_valid = datasets.load_data("mnist", tmp_path, download=False)
    assert x.shape == (n_train, 784) and y.shape == (n_train, 10)
    assert x_valid.shape == (n - n_train, 784) and y_valid.shape == (n - n_train, 10)
    images = numpy.concatenate([x, x_valid])
    labels = numpy.concatenate([y, y_valid])
    assert images.dtype == labels.dtype == numpy.float32
    assert images.min() == 0 and images.max() == 1
    numpy.testing.assert_array_equal(labels.sum(axis=1), 1)
    # The first pixel encodes the label, so this fails if images and labels were shuffled apart.
    numpy.testing.assert_array_equal(labels.argmax(axis=1), numpy.rint(images[:, 0] * 255 / 20))
    # Together the two parts are exactly the training file, scaled.
    original = arrays[0].reshape(n, -1).astype(numpy.float32) / 255
    assert sorted(map(bytes, images)) == sorted(map(bytes, original))


def test_load_data_shuffle_is_seeded(tmp_path):
    make_dataset(tmp_path)
    first = datasets.load_data(path=tmp_path, seed=5, download=False)
    again = datasets.load_data(path=tmp_path, seed=5, download=False)
    other = datasets.load_data(path=tmp_path, seed=6, download=False)
    for a, b in zip(first, again):
        numpy.testing.assert_array_equal(a, b)
    assert not numpy.array_equal(first[0], other[0])


def test_load_data_dtype_and_dataset_names(tmp_path, monkeypatch):
    make_dataset(tmp_path / "data" / "fashion-mnist")
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    x, y, _, _ = datasets.load_data("fashion_mnist", dtype=numpy.float64, download=False)
    assert x.dtype == y.dtype == numpy.float64
    numpy.testing.assert_allclose(x, datasets.load_data("Fashion-MNIST", download=False)[0],
                                  rtol=1e-6)
    with pytest.raises(ValueError, match="floating"):
        datasets.load_data("fashion-mnist", dtype=numpy.int32, download=False)
    with pytest.raises(DatasetError, match="Unknown dataset 'cifar'; expected one of 'mnist', "
                                           "'fashion-mnist'"):
        datasets.load_data("cifar")


def test_load_test_data_is_the_official_test_set_in_order(tmp_path):
    arrays = make_dataset(tmp_path, n_test=30)
    x, y = datasets.load_test_data("mnist", tmp_path, download=False)
    numpy.testing.assert_array_equal(x, arrays[2].reshape(30, 784) / numpy.float32(255))
    numpy.testing.assert_array_equal(y.argmax(axis=1), arrays[3])
    assert x.dtype == y.dtype == numpy.float32 and y.shape == (30, 10)


def test_one_hot():
    encoded = datasets.one_hot(numpy.array([3, 0, 9], numpy.uint8), dtype=numpy.float64)
    expected = numpy.zeros((3, 10))
    expected[[0, 1, 2], [3, 0, 9]] = 1
    numpy.testing.assert_array_equal(encoded, expected)
    assert encoded.dtype == numpy.float64
    assert datasets.one_hot([1, 2], n_classes=3).tolist() == [[0, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="from 0 to 9, but they range from 0 to 10"):
        datasets.one_hot([0, 10])
    with pytest.raises(ValueError, match="1-D array of integer labels"):
        datasets.one_hot([[1]])


# ---------------------------------------------------------------- the real Fashion-MNIST

def test_real_fashion_mnist_from_debian_package():
    if not all((DEBIAN_FASHION_MNIST / name).is_file() for name in FILES):
        pytest.skip(f"{DEBIAN_FASHION_MNIST} is absent; 'apt-get install dataset-fashion-mnist' "
                    "installs it")
    checksums = datasets.DATASETS["fashion-mnist"].sha256
    for name in FILES:
        digest = hashlib.sha256((DEBIAN_FASHION_MNIST / name).read_bytes()).hexdigest()
        assert digest == checksums[name], name
    raw = datasets.load_fashion_mnist(DEBIAN_FASHION_MNIST, download=False)
    assert raw.train_images.shape == (60000, 28, 28) and raw.train_labels.shape == (60000,)
    assert raw.test_images.shape == (10000, 28, 28) and raw.test_labels.shape == (10000,)
    assert numpy.bincount(raw.train_labels).tolist() == [6000] * 10
    assert numpy.bincount(raw.test_labels).tolist() == [1000] * 10


def test_data_and_test_come_from_one_read_and_match_the_two_loaders(tiny_mnist, monkeypatch):
    reads = []
    original = datasets._read_dataset
    monkeypatch.setattr(datasets, "_read_dataset", lambda *a: reads.append(a) or original(*a))
    together = datasets.load_data_and_test("mnist", tiny_mnist, seed=3, download=False)
    assert len(reads) == 1
    apart = datasets.load_data("mnist", tiny_mnist, seed=3, download=False) + datasets.load_test_data(
        "mnist", tiny_mnist, download=False)
    assert len(together) == 6 and all(numpy.array_equal(a, b) for a, b in zip(together, apart))
