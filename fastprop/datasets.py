"""MNIST and Fashion-MNIST as the notebook uses them: images flattened and scaled to [0, 1], labels
one-hot, split 5:1 for training and validation. Finding or downloading the files is
:mod:`fastprop.dataset_files`; reading and writing IDX arrays is :mod:`fastprop.idx`.
"""

from __future__ import annotations

import numpy

from .dataset_files import (DATASETS, SYSTEM_PATHS, DatasetNotFoundError, DatasetSpec, RawDataset, cache_dir,
                            dataset_name, load_raw, read_dataset)
from .idx import DatasetError, read_idx, write_idx

__all__ = [
    "DATASETS", "SYSTEM_PATHS", "DatasetError", "DatasetNotFoundError", "DatasetSpec", "RawDataset",
    "cache_dir", "load_data", "load_fashion_mnist", "load_mnist", "load_split", "load_split_and_test",
    "load_test_data", "load_training_rows", "one_hot", "read_dataset", "read_idx", "split_rows", "write_idx",
]


def load_mnist(path=None, *, dtype=numpy.float64, download=True):
    """The notebook's ``load_mnist()``: ``(images, labels)`` of the 60,000 MNIST training rows in file
    order, images ``(60000, 784)`` scaled to [0, 1], labels one-hot ``(60000, 10)``, both ``dtype``."""
    raw = load_raw("mnist", path, download)
    return _prepare(raw.train_images, raw.train_labels, dtype)


def load_fashion_mnist(path=None, *, dtype=numpy.float64, download=True):
    """:func:`load_mnist` for Fashion-MNIST, the drop-in replacement with the same shapes."""
    raw = load_raw("fashion-mnist", path, download)
    return _prepare(raw.train_images, raw.train_labels, dtype)


def load_training_rows(dataset="mnist", path=None, *, dtype=numpy.float64, download=True):
    """:func:`load_mnist` for either dataset by name: its training rows in file order."""
    raw = load_raw(dataset_name(dataset), path, download)
    return _prepare(raw.train_images, raw.train_labels, dtype)


def load_data(dataset="mnist", path=None, *, dtype=numpy.float64, download=True):
    """The notebook's ``load_data()``: ``(images, labels, image_size, label_size)``.

    The official training rows (60,000), images ``(N, 784)`` scaled to [0, 1] and one-hot labels
    ``(N, 10)``, shuffled with ``numpy.random.permutation`` (NumPy's global generator, so
    ``np.random.seed(k)`` first gives the notebook's order); ``image_size`` is 784, ``label_size`` 10.
    """
    raw = load_raw(dataset_name(dataset), path, download)
    order = numpy.random.permutation(len(raw.train_images))
    images, labels = _prepare(raw.train_images[order], raw.train_labels[order], dtype)
    return images, labels, images.shape[1], labels.shape[1]


def one_hot(labels, n_classes=10, dtype=numpy.float32) -> numpy.ndarray:
    """Encode integer ``labels`` of shape (N,) as rows of shape (N, n_classes) with a single 1."""
    labels = numpy.asarray(labels)
    if labels.ndim != 1 or not numpy.issubdtype(labels.dtype, numpy.integer):
        raise ValueError(f"one_hot needs a 1-D array of integer labels, but got a {labels.ndim}-D "
                         f"{labels.dtype} array; pass the labels as read from the labels file.")
    if labels.size and not 0 <= labels.min() <= labels.max() < n_classes:
        raise ValueError(f"one_hot needs labels from 0 to {n_classes - 1}, but they range from "
                         f"{labels.min()} to {labels.max()}; check the labels file or n_classes.")
    encoded = numpy.zeros((len(labels), n_classes), dtype=dtype)
    encoded[numpy.arange(len(labels)), labels] = 1
    return encoded


def load_split(dataset="mnist", path=None, *, seed=0, dtype=numpy.float32, download=True):
    """Return ``(train_images, train_labels, validation_images, validation_labels)``.

    The official training file is shuffled with ``numpy.random.default_rng(seed)`` and split
    5:1, which gives 50,000 training and 10,000 validation rows for the 60,000 images. Images
    are flattened to (N, 784) and scaled to [0, 1]; labels are one-hot (N, 10); both ``dtype``.
    """
    return _split(load_raw(dataset_name(dataset), path, download), seed, dtype)


def load_test_data(dataset="mnist", path=None, *, dtype=numpy.float32, download=True):
    """Return ``(test_images, test_labels)``, the official test set prepared like ``load_split``."""
    raw = load_raw(dataset_name(dataset), path, download)
    return _prepare(raw.test_images, raw.test_labels, dtype)


def load_split_and_test(dataset="mnist", path=None, *, seed=0, dtype=numpy.float32, download=True):
    """``load_split(...) + load_test_data(...)``, the six arrays, from one read of the files."""
    raw = load_raw(dataset_name(dataset), path, download)
    return _split(raw, seed, dtype) + _prepare(raw.test_images, raw.test_labels, dtype)


def _split(raw, seed, dtype):
    """The notebook's seeded 5:1 split of the official training file, prepared."""
    order = numpy.random.default_rng(seed).permutation(len(raw.train_images))
    # Shuffle the uint8 arrays: a quarter of the memory traffic of shuffling float32 ones.
    images, labels = _prepare(raw.train_images[order], raw.train_labels[order], dtype)
    return split_rows(images, labels)


def split_rows(images, labels):
    """The notebook's split: the first 5/6 of the rows (50,000 of 60,000) for training, the rest
    for validation; returns ``(train_images, train_labels, validation_images, validation_labels)``."""
    n_train = round(len(images) * 5 / 6)
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


def _prepare(images, labels, dtype):
    if not numpy.issubdtype(dtype, numpy.floating):
        raise ValueError(f"Images are scaled to [0, 1], so dtype must be a floating type, but got "
                         f"{numpy.dtype(dtype)}; pass e.g. dtype=numpy.float32.")
    flat = images.reshape(len(images), -1).astype(dtype)
    flat /= 255
    return flat, one_hot(labels, 10, dtype)
