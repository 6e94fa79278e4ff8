"""IDX files (``fastprop.idx``, read and written through ``fastprop.datasets``): round trips, the format
written by hand, gzip detected by content, damaged files named in one sentence, no read past the
header's promise, and atomic writes."""

import gzip
import os
import struct

import numpy
import pytest

from fastprop import datasets, files, idx
from fastprop.datasets import DatasetError


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
    data = bytearray(gzip.compress(_idx(bytes(range(200)), dims=(200,)), mtime=0))
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
    (gzip.compress(_idx(bytes(7)), mtime=0), "trailing data"),  # mtime=0: the same test ids every run
    (_corrupt_gzip(), "gzip stream is damaged"),
    (gzip.compress(_idx(), mtime=0)[:-6], "gzip stream is damaged"),
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


def test_a_file_is_read_no_further_than_its_header_promises(tmp_path, monkeypatch):
    """A small gzip file whose stream expands to 64 MiB past the 6 bytes its header declares (a
    decompression bomb) is refused after reading the declared bytes and one more."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # a gzip stream, written in pieces
    path = tmp_path / "labels.gz"
    with open(path, "wb") as stream:
        stream.write(packer.compress(_idx(bytes(6), dims=(6,))))
        for _ in range(64):
            stream.write(packer.compress(bytes(2**20)))
        stream.write(packer.flush())
    assert path.stat().st_size < 200_000
    delivered = []
    for name in ("read", "readinto"):
        original = getattr(gzip.GzipFile, name)

        def counting(self, *arguments, original=original, name=name):
            result = original(self, *arguments)
            delivered.append(result if name == "readinto" else len(result))
            return result

        monkeypatch.setattr(gzip.GzipFile, name, counting)
    with pytest.raises(DatasetError, match="has trailing data: its header promises 6 bytes"):
        datasets.read_idx(path)
    # magic, sizes, the declared bytes and one more, then at most a bounded look for a damaged stream
    assert sum(delivered) <= 64 + idx._LOOK_FURTHER  # never the 64 MiB (readinto counts its read too)


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

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        datasets.write_idx(path, numpy.arange(9, dtype=numpy.uint8))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["x.idx"]
