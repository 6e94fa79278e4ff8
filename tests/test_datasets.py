"""Tests for fastprop.datasets: search order, a folder the user names searched alone, downloads served
from memory, the notebook's loaders, splits (the IDX files themselves: ``test_idx.py``)."""

import hashlib
import io
import os
import urllib.error
from pathlib import Path

import numpy
import platformdirs
import pytest

import fastprop
from fastprop import dataset_files, datasets
from fastprop.datasets import DatasetError, DatasetNotFoundError, DatasetSpec
from tests.conftest import CANONICAL, lack_files, mnist_arrays, variant, write_dataset

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_SYSTEM_PATHS = dataset_files.SYSTEM_PATHS  # before the fixture below hides them


@pytest.fixture(autouse=True)
def isolated(offline_datasets):
    """Keep every test off the network, the user's cache and the system's data folders."""


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


# ---------------------------------------------------------------- finding local files

def test_load_from_explicit_path_gzip_and_raw(tmp_path):
    arrays = make_dataset(tmp_path / "gz")
    assert_same(datasets.read_dataset("mnist", tmp_path / "gz", download=False), arrays)
    arrays = make_dataset(tmp_path / "raw", compress=False, seed=1)
    assert_same(datasets.read_dataset("fashion-mnist", str(tmp_path / "raw"), download=False), arrays)


@pytest.mark.parametrize("subfolder", ["mnist", ""])
def test_fastprop_data_folder_and_its_dataset_subfolder(tmp_path, monkeypatch, subfolder):
    arrays = make_dataset(tmp_path / "data" / subfolder)
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    assert_same(datasets.read_dataset("mnist", download=False), arrays)


def test_cache_folder_is_searched(tmp_path):
    arrays = make_dataset(tmp_path / "cache" / "fashion-mnist")
    assert_same(datasets.read_dataset("fashion-mnist", download=False), arrays)


def test_cache_dir_defaults_to_the_user_cache(monkeypatch, tmp_path):
    assert datasets.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("FASTPROP_CACHE")
    assert datasets.cache_dir() == Path(platformdirs.user_cache_dir("fastprop"))


def test_system_paths_are_searched(tmp_path, monkeypatch):
    arrays = make_dataset(tmp_path / "system" / "fashion-mnist")
    monkeypatch.setattr(dataset_files, "SYSTEM_PATHS", (tmp_path / "nowhere", tmp_path / "system"))
    assert_same(datasets.read_dataset("fashion-mnist", download=False), arrays)


def test_search_order_path_then_fastprop_data_then_cache_then_system(tmp_path, monkeypatch):
    """A path given is the only folder searched; without one: FASTPROP_DATA/<name>, FASTPROP_DATA,
    the cache, the system folders."""
    places = [tmp_path / "path", tmp_path / "data" / "mnist", tmp_path / "data",
              tmp_path / "cache" / "mnist", tmp_path / "system" / "mnist"]
    expected = [make_dataset(place, seed=seed) for seed, place in enumerate(places)]
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(dataset_files, "SYSTEM_PATHS", (tmp_path / "system",))
    assert_same(datasets.read_dataset("mnist", tmp_path / "path", download=False), expected[0])
    for file in FILES:
        (places[0] / file).rename(places[0] / ("hidden-" + file))
    with pytest.raises(DatasetNotFoundError, match=str(places[0])):  # never another copy instead
        datasets.read_dataset("mnist", tmp_path / "path", download=False)
    for place, arrays in zip(places[1:], expected[1:]):
        assert_same(datasets.read_dataset("mnist", download=False), arrays)
        for file in FILES:  # hide this place so the next one is found
            (place / file).rename(place / ("hidden-" + file))
    with pytest.raises(DatasetNotFoundError):
        datasets.read_dataset("mnist", download=False)


def test_incomplete_folder_is_skipped(tmp_path, monkeypatch):
    """An incomplete folder in the search is skipped; an incomplete folder the caller named is an
    error listing what it lacks."""
    incomplete = tmp_path / "incomplete"
    make_dataset(incomplete)
    (incomplete / FILES[3]).unlink()
    arrays = make_dataset(tmp_path / "cache" / "mnist", seed=3)
    monkeypatch.setenv("FASTPROP_DATA", str(incomplete))
    assert_same(datasets.read_dataset("mnist", download=False), arrays)
    with pytest.raises(DatasetNotFoundError) as caught:
        datasets.read_dataset("mnist", incomplete, download=False)
    message = str(caught.value)
    assert str(incomplete) in message and FILES[3] in message
    assert not any(file in message for file in FILES[:3])
    assert str(tmp_path / "cache") not in message


def test_damaged_file_in_a_complete_folder_is_reported_not_skipped(tmp_path):
    make_dataset(tmp_path / "path")
    make_dataset(tmp_path / "cache" / "mnist")
    damaged = tmp_path / "path" / FILES[2]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="gzip stream is damaged") as caught:
        datasets.read_dataset("mnist", tmp_path / "path", download=False)
    assert str(damaged) in str(caught.value)


def test_wrong_image_shape_and_label_count_are_reported(tmp_path):
    arrays = make_dataset(tmp_path)
    datasets.write_idx(tmp_path / FILES[0], arrays[0][:, :27])
    with pytest.raises(DatasetError, match=r"shape \(N, 28, 28\)") as caught:
        datasets.read_dataset("mnist", tmp_path, download=False)
    assert str(tmp_path / FILES[0]) in str(caught.value)
    datasets.write_idx(tmp_path / FILES[0], arrays[0])
    datasets.write_idx(tmp_path / FILES[3], arrays[3][:-1])
    with pytest.raises(DatasetError, match="should hold 30 uint8 labels") as caught:
        datasets.read_dataset("mnist", tmp_path, download=False)
    assert str(tmp_path / FILES[3]) in str(caught.value)


# ---------------------------------------------------------------- a folder the user names, and nothing else


def assert_same_arrays(raw, arrays):
    assert len(raw) == 4
    for loaded, expected in zip(raw, arrays):
        numpy.testing.assert_array_equal(loaded, expected)


LOADERS = {
    "fastprop.load_data": lambda name, folder: fastprop.load_data(name, folder),
    "read_dataset": lambda name, folder: datasets.read_dataset(name, folder),
    "load_split": lambda name, folder: datasets.load_split(name, folder),
    "load_test_data": lambda name, folder: datasets.load_test_data(name, folder),
    "load_split_and_test": lambda name, folder: datasets.load_split_and_test(name, folder),
    "load_mnist": lambda name, folder: (
        fastprop.load_mnist if name == "mnist" else fastprop.load_fashion_mnist
    )(folder),
}


@pytest.mark.parametrize("state", ["absent", "empty", "other names", "two missing"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_a_named_folder_lacking_the_files_is_one_error_never_another_copy(tmp_path, decoys, name, loader,
                                                                          state):
    places, requested = decoys
    folder = tmp_path / "mine"
    missing = lack_files(folder, state)
    with pytest.raises(DatasetNotFoundError) as caught:
        LOADERS[loader](name, folder)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(folder) in message
    assert "\n" not in message
    for place in places:  # nothing else was looked at, nor offered as where the data came from
        assert f"{place} " not in message and f"{place}/" not in message and not message.endswith(f"{place}.")
    assert requested == []  # and nothing was downloaded
    if state == "absent":
        assert "no such folder" in message
        return
    for index in range(4):
        if index in missing:
            assert CANONICAL[index] in message, f"{CANONICAL[index]} is missing but not listed: {message}"
        else:
            assert CANONICAL[index] not in message, f"{CANONICAL[index]} is there but listed: {message}"
    if state == "two missing":
        assert "train-labels.idx1-ubyte" in message  # the error also says which other names would do


@pytest.mark.parametrize("dotted, gz", [(False, True), (False, False), (True, True), (True, False)])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_the_name_variants_people_download_are_recognised(tmp_path, decoys, name, dotted, gz):
    folder = tmp_path / "mine"
    arrays = mnist_arrays(seed=3)
    names = [variant(index, dotted, gz) for index in range(4)]
    write_dataset(folder, names, arrays)
    assert sorted(os.listdir(folder)) == sorted(names)
    assert_same_arrays(datasets.read_dataset(name, folder), arrays)
    assert_same_arrays(datasets.read_dataset(name, str(folder), download=False), arrays)
    images, labels, image_size, label_size = fastprop.load_data(name, folder)
    assert images.shape == (24, 784) and (image_size, label_size) == (784, 10)
    assert sorted(numpy.rint(images[:, 0] * 255).astype(int).tolist()) == sorted(
        (arrays[1].astype(int) * 20 + 3).tolist())  # these rows, not a decoy's (their seeds differ)
    x, y, x_valid, y_valid = datasets.load_split(name, folder)
    assert len(x) + len(x_valid) == 24


def test_each_file_may_go_by_its_own_variant(tmp_path, decoys):
    folder = tmp_path / "mixed"
    arrays = mnist_arrays(seed=5)
    names = [variant(0, True, False), variant(1, False, False), variant(2, True, True),
             variant(3, False, True)]
    write_dataset(folder, names, arrays)
    assert_same_arrays(datasets.read_dataset("mnist", folder), arrays)


def test_without_a_folder_the_search_still_uses_fastprop_data(tmp_path, decoys):
    """The fix is about named folders only: with none, FASTPROP_DATA/<name> is found as before."""
    raw = datasets.read_dataset("mnist")
    assert_same_arrays(raw, mnist_arrays(seed=100))  # the decoy in $FASTPROP_DATA/mnist


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

    monkeypatch.setattr(dataset_files, "_urlopen", fake_urlopen)
    return arrays, served, requested


def test_download_falls_back_to_the_next_mirror_and_fills_the_cache(tmp_path, server):
    arrays, served, requested = server
    assert_same(datasets.read_dataset("mnist"), arrays)
    assert requested == [mirror + name for name in FILES for mirror in MIRRORS]
    cache = tmp_path / "cache" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(FILES)
    for name in FILES:
        assert (cache / name).read_bytes() == served[MIRRORS[1] + name]
    requested.clear()
    assert_same(datasets.read_dataset("mnist"), arrays)  # now from the cache
    assert requested == []


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, server):
    _, served, _ = server
    served[MIRRORS[0] + FILES[1]] = b"not the labels"
    served[MIRRORS[1] + FILES[1]] = served[MIRRORS[1] + FILES[1]][:-1] + b"!"
    with pytest.raises(DatasetNotFoundError) as caught:
        datasets.read_dataset("mnist")
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
    assert_same(datasets.read_dataset("mnist"), arrays)
    after = (cache / FILES[0].removesuffix(".gz")).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not any(FILES[0] in url for url in requested)
    assert not (cache / FILES[0]).exists()


def test_not_found_offline_lists_every_place_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(dataset_files, "SYSTEM_PATHS", (tmp_path / "system",))
    make_dataset(tmp_path / "data" / "fashion-mnist")
    (tmp_path / "data" / "fashion-mnist" / FILES[1]).unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        datasets.read_dataset("fashion-mnist", download=False)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    for place in [tmp_path / "data" / "fashion-mnist", tmp_path / "data",
                  tmp_path / "cache" / "fashion-mnist", tmp_path / "system" / "fashion-mnist"]:
        assert f"{place} (" in message
    assert f"{tmp_path / 'data' / 'fashion-mnist'} (missing {FILES[1]})" in message
    assert f"{tmp_path / 'cache' / 'fashion-mnist'} (no such folder)" in message
    assert "download=False" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FASTPROP_DATA=/folder/with/the/files" in message
    assert "network is reachable" in message


def test_not_found_after_downloads_fail_lists_each_mirror_and_its_error(monkeypatch):
    def unreachable(url, timeout=None):
        raise urllib.error.URLError(f"no route to {url.split('/')[2]}")

    monkeypatch.setattr(dataset_files, "_urlopen", unreachable)
    with pytest.raises(DatasetNotFoundError) as caught:
        datasets.read_dataset("mnist")
    message = str(caught.value)
    for mirror in datasets.DATASETS["mnist"].mirrors:
        host = mirror.split("/")[2]
        assert f"{mirror}{FILES[0]} (<urlopen error no route to {host}>)" in message
    assert "apt-get" not in message  # MNIST has no Debian package to suggest
    leftovers = [p for p in Path(os.environ["FASTPROP_CACHE"]).rglob("*") if p.name.startswith(".")]
    assert not leftovers  # no temporary file of a failed download is left behind


# ---------------------------------------------------------------- the notebook's loaders

@pytest.fixture
def global_rng():
    """Give back NumPy's global generator as it was: these tests seed it, as the notebook does."""
    state = numpy.random.get_state()
    yield
    numpy.random.set_state(state)


def assert_prepared(images, labels, raw_images, raw_labels, dtype):
    """``images``/``labels`` are ``raw_images``/``raw_labels`` flattened, scaled to [0, 1], one-hot."""
    n = len(raw_images)
    assert images.shape == (n, 784) and labels.shape == (n, 10)
    assert images.dtype == labels.dtype == dtype
    numpy.testing.assert_array_equal(images, raw_images.reshape(n, 784).astype(dtype) / dtype(255))
    assert images.min() == 0 and images.max() == 1
    expected = numpy.zeros((n, 10), dtype)
    expected[numpy.arange(n), raw_labels] = 1
    numpy.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("load, name", [(datasets.load_mnist, "mnist"),
                                        (datasets.load_fashion_mnist, "fashion-mnist")])
def test_load_mnist_gives_the_training_rows_in_file_order(tmp_path, load, name):
    arrays = make_dataset(tmp_path / "files", n_train=120, n_test=30)
    images, labels = load(tmp_path / "files", download=False)
    assert_prepared(images, labels, arrays[0], arrays[1], numpy.float64)  # no test rows, no shuffle
    images, labels = load(tmp_path / "files", dtype=numpy.float32, download=False)
    assert_prepared(images, labels, arrays[0], arrays[1], numpy.float32)
    # Without a path it searches like read_dataset: here the cache folder named after the dataset.
    arrays = make_dataset(tmp_path / "cache" / name, n_train=40, seed=4)
    assert_prepared(*load(download=False), arrays[0], arrays[1], numpy.float64)
    other = datasets.load_fashion_mnist if name == "mnist" else datasets.load_mnist
    with pytest.raises(DatasetNotFoundError):  # the other dataset's folder is not this one's
        other(download=False)


def test_load_mnist_and_load_fashion_mnist_read_their_own_dataset(tmp_path, monkeypatch):
    mnist = make_dataset(tmp_path / "data" / "mnist", n_train=30, seed=1)
    fashion = make_dataset(tmp_path / "data" / "fashion-mnist", n_train=30, seed=2)
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    assert_prepared(*datasets.load_mnist(download=False), mnist[0], mnist[1], numpy.float64)
    assert_prepared(*datasets.load_fashion_mnist(download=False), fashion[0], fashion[1], numpy.float64)


def test_the_notebook_loaders_are_fastprop_top_level_names():
    import fastprop

    assert fastprop.load_mnist is datasets.load_mnist
    assert fastprop.load_fashion_mnist is datasets.load_fashion_mnist
    assert fastprop.load_data is datasets.load_data


def test_load_data_permutes_with_numpys_global_generator(tmp_path, global_rng):
    arrays = make_dataset(tmp_path, n_train=120)
    numpy.random.seed(3)
    images, labels, image_size, label_size = datasets.load_data("mnist", tmp_path, download=False)
    after = numpy.random.random()
    numpy.random.seed(3)
    order = numpy.random.permutation(120)  # the notebook's load_data, written out
    assert numpy.random.random() == after  # it drew that one permutation and nothing else
    assert (image_size, label_size) == (784, 10)
    assert isinstance(image_size, int) and isinstance(label_size, int)
    assert_prepared(images, labels, arrays[0][order], arrays[1][order], numpy.float64)
    assert not numpy.array_equal(order, numpy.arange(120))
    # The same seed gives the same rows again, another seed another order.
    numpy.random.seed(3)
    numpy.testing.assert_array_equal(datasets.load_data("mnist", tmp_path, download=False)[0], images)
    numpy.random.seed(4)
    assert not numpy.array_equal(datasets.load_data("mnist", tmp_path, download=False)[0], images)


def test_load_data_dataset_dtype_and_fastprop_data(tmp_path, monkeypatch, global_rng):
    mnist = make_dataset(tmp_path / "data" / "mnist", n_train=60, seed=1)
    fashion = make_dataset(tmp_path / "data", n_train=60, seed=2)  # FASTPROP_DATA itself
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    for name, arrays in (("mnist", mnist), ("fashion-mnist", fashion), ("Fashion_MNIST", fashion)):
        numpy.random.seed(0)
        order = numpy.random.permutation(60)
        numpy.random.seed(0)
        images, labels, image_size, label_size = datasets.load_data(name, dtype=numpy.float32,
                                                                    download=False)
        assert_prepared(images, labels, arrays[0][order], arrays[1][order], numpy.float32)
        assert (image_size, label_size) == (784, 10)
    with pytest.raises(ValueError, match="floating"):
        datasets.load_data("mnist", dtype=numpy.int32, download=False)
    with pytest.raises(DatasetError, match="Unknown dataset 'cifar'"):
        datasets.load_data("cifar")


@pytest.mark.parametrize("n, n_train", [(60000, 50000), (120, 100), (7, 6), (6, 5), (1, 1)])
def test_split_rows_keeps_the_first_five_sixths_for_training(n, n_train):
    images = numpy.arange(n * 3, dtype=numpy.float64).reshape(n, 3)
    labels = numpy.arange(n * 2, dtype=numpy.float64).reshape(n, 2) * -1
    x, y, x_valid, y_valid = datasets.split_rows(images, labels)
    numpy.testing.assert_array_equal(x, images[:n_train])  # in order: the notebook never reshuffles
    numpy.testing.assert_array_equal(y, labels[:n_train])
    numpy.testing.assert_array_equal(x_valid, images[n_train:])
    numpy.testing.assert_array_equal(y_valid, labels[n_train:])


# ---------------------------------------------------------------- training splits

@pytest.mark.parametrize("n, n_train", [(120, 100), (60, 50), (7, 6), (6, 5)])
def test_load_split_splits_five_to_one(tmp_path, n, n_train):
    arrays = make_dataset(tmp_path, n_train=n)
    x, y, x_valid, y_valid = datasets.load_split("mnist", tmp_path, download=False)
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


def test_load_split_shuffle_is_seeded(tmp_path):
    make_dataset(tmp_path)
    first = datasets.load_split(path=tmp_path, seed=5, download=False)
    again = datasets.load_split(path=tmp_path, seed=5, download=False)
    other = datasets.load_split(path=tmp_path, seed=6, download=False)
    for a, b in zip(first, again):
        numpy.testing.assert_array_equal(a, b)
    assert not numpy.array_equal(first[0], other[0])


def test_load_split_dtype_and_dataset_names(tmp_path, monkeypatch):
    make_dataset(tmp_path / "data" / "fashion-mnist")
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    x, y, _, _ = datasets.load_split("fashion_mnist", dtype=numpy.float64, download=False)
    assert x.dtype == y.dtype == numpy.float64
    numpy.testing.assert_allclose(x, datasets.load_split("Fashion-MNIST", download=False)[0],
                                  rtol=1e-6)
    with pytest.raises(ValueError, match="floating"):
        datasets.load_split("fashion-mnist", dtype=numpy.int32, download=False)
    with pytest.raises(DatasetError, match="Unknown dataset 'cifar'; expected one of 'mnist', "
                                           "'fashion-mnist'"):
        datasets.load_split("cifar")


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

@pytest.mark.slow
def test_real_fashion_mnist_from_debian_package():
    if not all((DEBIAN_FASHION_MNIST / name).is_file() for name in FILES):
        pytest.skip(f"{DEBIAN_FASHION_MNIST} is absent; 'apt-get install dataset-fashion-mnist' "
                    "installs it")
    checksums = datasets.DATASETS["fashion-mnist"].sha256
    for name in FILES:
        digest = hashlib.sha256((DEBIAN_FASHION_MNIST / name).read_bytes()).hexdigest()
        assert digest == checksums[name], name
    raw = datasets.read_dataset("fashion-mnist", DEBIAN_FASHION_MNIST, download=False)
    assert raw.train_images.shape == (60000, 28, 28) and raw.train_labels.shape == (60000,)
    assert raw.test_images.shape == (10000, 28, 28) and raw.test_labels.shape == (10000,)
    assert numpy.bincount(raw.train_labels).tolist() == [6000] * 10
    assert numpy.bincount(raw.test_labels).tolist() == [1000] * 10


@pytest.mark.slow
def test_real_fashion_mnist_through_the_notebook_loaders(monkeypatch, global_rng):
    if not all((DEBIAN_FASHION_MNIST / name).is_file() for name in FILES):
        pytest.skip(f"{DEBIAN_FASHION_MNIST} is absent; 'apt-get install dataset-fashion-mnist' "
                    "installs it")
    monkeypatch.setattr(dataset_files, "SYSTEM_PATHS", DEFAULT_SYSTEM_PATHS)  # found where Debian put it
    raw = datasets.read_dataset("fashion-mnist", DEBIAN_FASHION_MNIST, download=False)
    images, labels = datasets.load_fashion_mnist(dtype=numpy.float32, download=False)
    assert images.shape == (60000, 784) and labels.shape == (60000, 10)
    numpy.testing.assert_array_equal(images[[0, 59999]],
                                     raw.train_images[[0, 59999]].reshape(2, 784) / numpy.float32(255))
    numpy.testing.assert_array_equal(labels.argmax(axis=1), raw.train_labels)
    numpy.random.seed(1)
    images, labels, image_size, label_size = datasets.load_data("fashion-mnist", dtype=numpy.float32,
                                                                download=False)
    assert (image_size, label_size) == (784, 10)
    x, y, x_valid, y_valid = datasets.split_rows(images, labels)
    assert x.shape == (50000, 784) and y.shape == (50000, 10)
    assert x_valid.shape == (10000, 784) and y_valid.shape == (10000, 10)
    numpy.random.seed(1)
    order = numpy.random.permutation(60000)
    numpy.testing.assert_array_equal(y_valid.argmax(axis=1), raw.train_labels[order[50000:]])


def test_data_and_test_come_from_one_read_and_match_the_two_loaders(tiny_mnist, monkeypatch):
    reads = []
    original = dataset_files._read_dataset
    monkeypatch.setattr(dataset_files, "_read_dataset", lambda *a: reads.append(a) or original(*a))
    together = datasets.load_split_and_test("mnist", tiny_mnist, seed=3, download=False)
    assert len(reads) == 1
    apart = datasets.load_split("mnist", tiny_mnist, seed=3, download=False) + datasets.load_test_data(
        "mnist", tiny_mnist, download=False)
    assert len(together) == 6 and all(numpy.array_equal(a, b) for a, b in zip(together, apart))
