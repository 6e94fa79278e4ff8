"""Atomic writes (``fastprop.files``), for checkpoints, histories and any file: a write that fails or is
interrupted leaves the previous file and no temporary file, and a missing folder is named."""

from __future__ import annotations

import os

import numpy
import pytest

import fastprop
from fastprop import files


def small_net():
    with fastprop.use_backend("numpy", "float32"):
        return fastprop.Network(
            [fastprop.Linear(4, 3, rng=0), fastprop.Sigmoid(), fastprop.Linear(3, 2, rng=1)]
        )


def small_history():
    history = fastprop.History()
    history.append(cost=0.5, accuracy=0.25, seconds=1.0, samples_per_second=100.0)
    return history


WRITERS = {
    "fastprop.save": lambda path: fastprop.save(small_net(), path),
    "History.to_csv": lambda path: small_history().to_csv(path),
    "History.to_json": lambda path: small_history().to_json(path),
    "write_atomically": lambda path: files.write_atomically(path, lambda stream: stream.write(b"data")),
    "write_text_atomically": lambda path: files.write_text_atomically(path, "text"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("depth", [1, 2])
def test_writing_into_a_missing_folder_names_that_folder(tmp_path, writer, depth):
    missing = tmp_path / "no-such-folder"
    folder = missing / "deeper" if depth == 2 else missing
    with pytest.raises(FileNotFoundError) as caught:
        WRITERS[writer](folder / "out.file")
    assert str(folder) in str(caught.value)
    assert "does not exist" in str(caught.value)
    assert os.listdir(tmp_path) == []  # no folder made, no temporary file anywhere


class Interrupted(Exception):
    pass


def _write_then_fail(failure):
    def write(stream):
        stream.write(b"PK\x03\x04 half of a new file")
        stream.flush()
        raise failure

    return write


@pytest.mark.parametrize(
    "failure",
    [OSError(28, "No space left on device"), KeyboardInterrupt(), Interrupted("x")],
    ids=["disk-full", "ctrl-c", "exception"],
)
def test_a_save_that_fails_part_way_keeps_the_old_checkpoint_and_no_tmp(tmp_path, monkeypatch, failure):
    path = tmp_path / "net.npz"
    net = small_net()
    fastprop.save(net, path)
    before = path.read_bytes()
    other = small_net()
    other.layers[0].w = numpy.ones((3, 4), numpy.float32)

    def savez(stream, **arrays):
        _write_then_fail(failure)(stream)

    monkeypatch.setattr(numpy, "savez", savez)
    with pytest.raises(type(failure)):
        fastprop.save(other, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["net.npz"]
    assert path.read_bytes() == before
    numpy.testing.assert_array_equal(fastprop.load(path).layers[0].w, net.layers[0].w)


@pytest.mark.parametrize("method", ["to_csv", "to_json"])
@pytest.mark.parametrize(
    "failure", [OSError(5, "Input/output error"), KeyboardInterrupt()], ids=["io-error", "ctrl-c"]
)
def test_a_history_write_interrupted_after_the_bytes_keeps_the_old_file(tmp_path, monkeypatch, method,
                                                                        failure):
    path = tmp_path / f"history.{method[3:]}"
    getattr(small_history(), method)(path)
    before = path.read_bytes()
    longer = small_history()
    longer.append(cost=0.25, accuracy=0.5, seconds=1.0, samples_per_second=100.0)

    def fsync(fd):  # the new bytes are written; the interruption comes before the rename
        raise failure

    monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(type(failure)):
        getattr(longer, method)(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [path.name]
    assert path.read_bytes() == before
    getattr(longer, method)(path)  # and it works once the trouble is gone
    assert path.read_bytes() != before and os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize(
    "failure",
    [OSError(28, "No space left on device"), KeyboardInterrupt(), Interrupted("x")],
    ids=["disk-full", "ctrl-c", "exception"],
)
@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new"])
def test_write_atomically_leaves_the_old_file_or_none(tmp_path, failure, existing):
    path = tmp_path / "file.bin"
    if existing:
        assert os.fspath(files.write_atomically(path, lambda stream: stream.write(b"old"))) == os.fspath(path)
    with pytest.raises(type(failure)):
        files.write_atomically(path, _write_then_fail(failure))
    assert os.listdir(tmp_path) == (["file.bin"] if existing else [])
    if existing:
        assert path.read_bytes() == b"old"
    files.write_atomically(str(path), lambda stream: stream.write(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["file.bin"]
