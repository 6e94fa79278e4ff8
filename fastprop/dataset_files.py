"""Finding a dataset's four IDX files, or downloading them: MNIST and Fashion-MNIST as stored.

A dataset is four IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; also accepted uncompressed, and
spelled ``train-images.idx3-ubyte`` as some mirrors do). A ``path`` argument (``fastprop train
--data-dir``) is the only folder searched: files missing there are an error listing them. Without
one, the first folder that holds all four is used, searched in this order:

1. ``$FASTPROP_DATA/<name>/``, then ``$FASTPROP_DATA/`` itself;
2. the cache folder ``cache_dir()/<name>/`` (``$FASTPROP_CACHE``, else the user cache folder);
3. ``<folder>/<name>/`` for each folder in ``SYSTEM_PATHS`` (Debian's ``dataset-fashion-mnist``
   package installs ``/usr/share/datasets/fashion-mnist``);
4. when ``download`` is true, the files still missing from the cache folder are downloaded from
   the dataset's mirrors, each checked against its SHA-256 before it is moved into place.

``<name>`` is ``mnist`` or ``fashion-mnist``. Local files are trusted if they parse as IDX arrays
of the right shape; only downloads are checked against the checksums. The arrays are prepared for
training by :mod:`fastprop.datasets`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy
from tqdm import tqdm

from .files import atomic_file
from .idx import _REMEDY, DatasetError, read_idx


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No folder holds the dataset's files and they could not be downloaded."""


# The four files of a dataset, in the order of RawDataset's fields.
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IMAGE_SHAPE = (28, 28)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from: its title, the SHA-256 of each file in ``FILES``, its mirrors
    (base URLs ending in ``/``) and the Debian package that installs it, if any."""

    title: str
    sha256: dict
    mirrors: tuple
    apt_package: str | None = None


DATASETS = {
    "mnist": DatasetSpec(
        title="MNIST",
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
    "fashion-mnist": DatasetSpec(
        title="Fashion-MNIST",
        sha256={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        apt_package="dataset-fashion-mnist",
    ),
}

# Folders where system packages install datasets, each holding one subfolder per dataset name.
SYSTEM_PATHS = (Path("/usr/share/datasets"),)

# Replaced in tests so that no test reaches the network.
_urlopen = urllib.request.urlopen
_TIMEOUT = 30  # seconds without data before a mirror counts as failed


class RawDataset(NamedTuple):
    """The four arrays of a dataset as stored: uint8 images (N, 28, 28) and uint8 labels (N,)."""

    train_images: numpy.ndarray
    train_labels: numpy.ndarray
    test_images: numpy.ndarray
    test_labels: numpy.ndarray


def cache_dir() -> Path:
    """The folder downloads go to: ``$FASTPROP_CACHE`` if set, else the user cache folder."""
    if os.environ.get("FASTPROP_CACHE"):
        return Path(os.environ["FASTPROP_CACHE"])
    import platformdirs  # here, not at the top: importing fastprop needs only numpy and tqdm

    return Path(platformdirs.user_cache_dir("fastprop"))


def read_dataset(dataset="mnist", path=None, *, download=True) -> RawDataset:
    """The four arrays of ``dataset`` as stored (uint8), searching the places listed in this module's
    docstring."""
    return load_raw(dataset_name(dataset), path, download)


def dataset_name(dataset: str) -> str:
    name = str(dataset).lower().replace("_", "-")
    if name not in DATASETS:
        raise DatasetError(f"Unknown dataset {dataset!r}; expected one of "
                           f"{', '.join(map(repr, DATASETS))}.")
    return name


def load_raw(name: str, path, download: bool) -> RawDataset:
    spec = DATASETS[name]
    if path is not None:  # the folder the user named is the only place searched
        folder = Path(path)
        if not folder.is_dir():
            problem = "it is a file, not a folder" if folder.exists() else "no such folder"
            raise DatasetNotFoundError(
                f"Could not load {spec.title} from {folder}: {problem}; give the folder that "
                "holds the four IDX files, or leave the folder out to search the usual places."
            )
        files = _files_in(folder)
        missing = [_variants_note(file) for file, found in zip(FILES, files) if found is None]
        if missing:
            raise DatasetNotFoundError(
                f"Could not load {spec.title} from {folder}: it lacks {'; '.join(missing)}; put the "
                "four files there, or leave the folder out to search the usual places."
            )
        return _read_dataset(spec, files)
    searched = []
    for folder in _search_folders(name, path):
        files = _files_in(folder)
        missing = [file for file, found in zip(FILES, files) if found is None]
        if not missing:
            return _read_dataset(spec, files)
        problem = "missing " + ", ".join(missing) if folder.is_dir() else "no such folder"
        searched.append(f"{folder} ({problem})")
    if not download:
        _not_found(spec, searched, "downloading was switched off (download=False)")
    cache = cache_dir() / name
    for file, found in zip(FILES, _files_in(cache)):
        if found is None:  # files already in the cache are never touched
            failures = _download(spec, file, cache / file)
            if failures:
                _not_found(spec, searched, f"downloading {file} failed from {'; '.join(failures)}")
    return _read_dataset(spec, _files_in(cache))


def _search_folders(name: str, path) -> list:
    folders = []
    if os.environ.get("FASTPROP_DATA"):
        data = Path(os.environ["FASTPROP_DATA"])
        folders += [data / name, data]
    folders.append(cache_dir() / name)
    folders += [Path(system) / name for system in SYSTEM_PATHS]
    return list(dict.fromkeys(folders))  # drop repeats, keep the order


def _names(file: str) -> list:
    """The names one of FILES goes by: ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``
    (as some mirrors spell it), each gzip-compressed (``.gz``) or raw."""
    base = file.removesuffix(".gz")
    dotted = base.replace("-idx", ".idx")
    return [base + ".gz", base, dotted + ".gz", dotted]


def _variants_note(file: str) -> str:
    names = _names(file)
    return f"{names[0]} (or {', '.join(names[1:])})"


def _files_in(folder: Path) -> list:
    """For each of FILES, its path in ``folder`` under any of its :func:`_names`, or None."""
    return [
        next((folder / name for name in _names(file) if (folder / name).is_file()), None) for file in FILES
    ]


def _read_dataset(spec: DatasetSpec, files: list) -> RawDataset:
    arrays = [read_idx(file) for file in files]
    for index in (0, 2):
        images, labels = arrays[index], arrays[index + 1]
        image_file, label_file = files[index], files[index + 1]
        if images.dtype != numpy.uint8 or images.shape[1:] != IMAGE_SHAPE:
            raise DatasetError(f"{image_file} should hold {spec.title} images of shape (N, 28, 28) "
                               f"uint8 but holds {images.shape} {images.dtype}; {_REMEDY}.")
        if labels.dtype != numpy.uint8 or labels.shape != images.shape[:1]:
            raise DatasetError(f"{label_file} should hold {len(images)} uint8 labels, one per "
                               f"image in {image_file.name}, but holds {labels.shape} "
                               f"{labels.dtype}; {_REMEDY}.")
    return RawDataset(*arrays)


def _download(spec: DatasetSpec, file: str, target: Path) -> list:
    """Fetch ``file`` into ``target`` from the first mirror that serves the right bytes.

    Returns one "url (error)" entry per failed mirror, or an empty list on success.
    """
    failures = []
    for mirror in spec.mirrors:
        url = mirror + file
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # the cache folder is fastprop's own
            with atomic_file(target, "download") as output, _urlopen(url, timeout=_TIMEOUT) as response:
                digest = _copy_hashing(response, output, file)
                if digest != spec.sha256[file]:
                    raise DatasetError(f"SHA-256 {digest} instead of {spec.sha256[file]}")
            return []
        except (OSError, http.client.HTTPException, DatasetError) as error:
            failures.append(f"{url} ({error})")
    return failures


def _copy_hashing(response, output, label: str) -> str:
    digest = hashlib.sha256()
    total = getattr(response, "headers", {}).get("Content-Length")
    with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=label,
              leave=False, disable=None) as progress:  # disable=None: silent when not a terminal
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            output.write(chunk)
            progress.update(len(chunk))
    return digest.hexdigest()


def _not_found(spec: DatasetSpec, searched: list, download_note: str):
    fixes = ["put the four files in a folder and set FASTPROP_DATA=/folder/with/the/files",
             "run once where the network is reachable so they are downloaded"]
    if spec.apt_package:
        fixes.insert(0, f"install them with 'apt-get install {spec.apt_package}'")
    raise DatasetNotFoundError(f"Could not find the {spec.title} files: searched "
                               f"{'; '.join(searched)}, and {download_note}; to fix this, "
                               f"{', or '.join(fixes)}.")
