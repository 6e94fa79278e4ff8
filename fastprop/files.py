"""Writing files so that readers never see half of one: every file fastprop writes goes through here."""

from __future__ import annotations

import contextlib
import os
import secrets


@contextlib.contextmanager
def atomic_file(path, what="file"):
    """Yield a binary stream on a temporary file beside ``path``; when the block ends, sync it and
    rename it over ``path``. On any failure, an interrupt included, the temporary file is removed
    and the previous ``path`` is left untouched. A missing folder is one error naming it (``what``
    names the file's role, e.g. ``"checkpoint"``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot write {what} {path}: the folder {folder} does not exist; create it first "
            f"(os.makedirs({folder!r}, exist_ok=True)) or choose another path."
        )
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def write_atomically(path, write, what="file"):
    """Run ``write(stream)`` inside :func:`atomic_file`; returns ``path``."""
    with atomic_file(path, what) as stream:
        write(stream)
    return path


def write_text_atomically(path, text, what="file"):
    """:func:`write_atomically` for UTF-8 text."""
    return write_atomically(path, lambda stream: stream.write(text.encode("utf-8")), what)
