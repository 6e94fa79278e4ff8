"""Files that pip wheels install outside Python's package folders.

Wheels that ship a shared library for other programs (``tbb``, ``mkl``) put it in
``<environment>/lib``, where the dynamic loader does not look in a virtual environment or a
``--user`` install. The distribution's own file list (``importlib.metadata``) says where it went.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path


def installed_file(distribution: str, wanted: Callable[[str], bool]) -> Path | None:
    """The file of ``distribution`` whose name ``wanted`` accepts (the shortest path when several do),
    or None when the distribution is not installed or has no such file on disk."""
    try:
        files = importlib.metadata.files(distribution) or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    found = sorted((Path(file.locate()).resolve() for file in files if wanted(file.name)),
                   key=lambda path: len(str(path)))
    return next((path for path in found if path.is_file()), None)
