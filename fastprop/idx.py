"""The IDX file format of MNIST and Fashion-MNIST: ``read_idx`` and ``write_idx``."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy

from .files import atomic_file


class DatasetError(ValueError):
    """A dataset file is missing, damaged or not what it should be."""



# IDX type code -> element type; IDX stores multi-byte numbers big-endian.
_IDX_TYPES = {
    0x08: numpy.dtype("u1"), 0x09: numpy.dtype("i1"), 0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"), 0x0D: numpy.dtype(">f4"), 0x0E: numpy.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
#: Bytes read past a bad IDX payload in a gzip file, to tell a damaged stream from a wrong header.
_LOOK_FURTHER = 2**20
_REMEDY = "replace it with the original file, or delete it so it is downloaded again"


def read_idx(path) -> numpy.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian, writable NumPy array.

    Compression is detected from the file's first bytes, not its name. The data is read straight
    into the array, and no further than the size the header promises plus one byte: a file that
    holds (or a gzip stream that expands to) more is refused without reading the rest. Raises
    ``DatasetError`` when the gzip stream is corrupt, the header is not IDX, or the payload is not
    exactly as long as the header's dimensions say.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            try:
                return _read_idx_stream(path, stream)
            except DatasetError:
                if compressed:  # a damaged stream can decode to a plausible header: look a little further
                    stream.read(_LOOK_FURTHER)
                raise
        except (OSError, EOFError, zlib.error) as error:
            if not compressed:
                raise
            raise DatasetError(f"{path} should be a gzip-compressed IDX file but its gzip stream "
                               f"is damaged ({error}); {_REMEDY}.") from None


def _read_exactly(stream, buffer) -> int:
    """Fill ``buffer`` (a writable memoryview) from ``stream``; return how many bytes came."""
    done = 0
    while done < len(buffer):
        count = stream.readinto(buffer[done:])
        if not count:
            break
        done += count
    return done


def _read_idx_stream(path, stream) -> numpy.ndarray:
    start = stream.read(4)
    if len(start) < 4 or start[:2] != b"\0\0" or start[2] not in _IDX_TYPES or not 1 <= start[3] <= 4:
        raise DatasetError(f"{path} should start with an IDX header (two zero bytes, a type code "
                           f"in {sorted(hex(code) for code in _IDX_TYPES)} and a rank 1 to 4) but "
                           f"starts with {start.hex(' ') or 'nothing'}; {_REMEDY}.")
    dtype, rank = _IDX_TYPES[start[2]], start[3]
    sizes = stream.read(4 * rank)
    if len(sizes) < 4 * rank:
        raise DatasetError(f"{path} should hold {rank} dimension sizes after its magic number but "
                           f"ends after {4 + len(sizes)} bytes; {_REMEDY}.")
    shape = struct.unpack(f">{rank}I", sizes)
    expected = math.prod(shape) * dtype.itemsize
    array = numpy.empty(shape, dtype)
    found = _read_exactly(stream, memoryview(array.reshape(-1).view(numpy.uint8)))
    if found < expected or stream.read(1):
        problem = "is truncated" if found < expected else "has trailing data"
        follow = f"{found}" if found < expected else "more"
        raise DatasetError(f"{path} {problem}: its header promises {expected} bytes of "
                           f"{dtype.name} data for shape {shape} but {follow} follow; {_REMEDY}.")
    return array.astype(dtype.newbyteorder("="), copy=False)  # native-endian (a copy where it was not)


def write_idx(path, array, compress=None) -> None:
    """Write ``array`` as an IDX file, atomically; gzip it when ``compress`` is true.

    ``compress=None`` compresses when the name ends in ``.gz``. The array's rank must be 1 to 4
    and its dtype one IDX supports: uint8, int8, int16, int32, float32 or float64.
    """
    path, array = Path(path), numpy.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or not 1 <= array.ndim <= 4:
        raise ValueError(f"write_idx({path}) needs an array of rank 1 to 4 with dtype uint8, int8, "
                         f"int16, int32, float32 or float64, but got rank {array.ndim} "
                         f"{array.dtype}; convert it with array.astype(...) first.")
    data = (struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
            + array.astype(_IDX_TYPES[code], copy=False).tobytes())
    if path.name.endswith(".gz") if compress is None else compress:
        data = gzip.compress(data, mtime=0)  # mtime=0: the same array always gives the same bytes
    path.parent.mkdir(parents=True, exist_ok=True)  # the cache and test folders are made as needed
    with atomic_file(path, "IDX file") as file:
        file.write(data)
