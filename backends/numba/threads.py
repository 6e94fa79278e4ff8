"""Numba's threading layer: TBB wherever pip installed it, else the safest layer Numba has.

Numba runs parallel kernels on one of three layers, chosen when the first one launches:

* ``tbb`` survives ``fork()`` and takes launches from several Python threads at once; a launch
  costs a few microseconds. fastprop's ``numba`` extra installs the ``tbb`` wheel where it exists
  (x86-64 Linux, Windows and Intel macOS).
* ``omp`` (GNU OpenMP on Linux) is as quick, but a ``multiprocessing`` child forked after a kernel
  ran dies or hangs in its first parallel kernel.
* ``workqueue`` always loads, survives ``fork()``, but aborts the whole process when two Python
  threads launch kernels at once, and a launch costs about 0.1 ms (more than a whole per-step
  kernel of the notebook's network).

The ``tbb`` wheel puts its library in ``<prefix>/lib``, which the dynamic loader does not search
in a virtual environment or a ``--user`` install, so Numba finds no TBB there and falls back to
``workqueue``. :func:`preload_tbb` loads the library from the file the wheel recorded, wherever
that is, before Numba looks for it by name; the loader then resolves Numba's own reference to it.

Unless the user chose a layer (``NUMBA_THREADING_LAYER``, or ``numba.config.THREADING_LAYER`` set
in code), fastprop asks Numba for ``forksafe``: TBB where it loads, else a fork-safe OpenMP (not on
Linux), else ``workqueue``. On a layer that cannot take launches from several threads at once,
the backend launches one kernel at a time (:data:`THREAD_SAFE`), so threads wait for each other
instead of aborting the process.
"""

from __future__ import annotations

import ctypes

import os
import sys
from pathlib import Path

from ..installed import installed_file

#: The TBB runtime Numba's ``tbbpool`` links against, by platform.
TBB_LIBRARIES = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}
#: Layers that take parallel launches from several Python threads at once.
THREAD_SAFE = ("tbb", "omp")
#: What fastprop asks Numba for when the user chose nothing (see the module docstring).
DEFAULT_CHOICE = "forksafe"

_loaded: list[str] = []


def tbb_library(distribution: str = "tbb") -> Path | None:
    """The TBB runtime file that the ``tbb`` distribution installed, or None when it is not installed
    (or has no library for this platform)."""
    name = TBB_LIBRARIES.get("linux" if sys.platform.startswith("linux") else sys.platform)
    if name is None:
        return None
    return installed_file(distribution, lambda file: file == name)


def preload_tbb() -> str | None:
    """Load the ``tbb`` wheel's library, so that Numba's TBB layer finds it; return its path, or None
    when there is none to load. Safe to call more than once."""
    if _loaded:
        return _loaded[0]
    path = tbb_library()
    if path is None:
        return None
    if sys.platform == "win32":  # dependencies of a DLL are searched in the listed folders only
        os.add_dll_directory(str(path.parent))
    try:
        ctypes.CDLL(str(path), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
    except OSError:  # a broken install: Numba then picks another layer, and says so in info()
        return None
    _loaded.append(str(path))
    return _loaded[0]


def user_choice(numba) -> str | None:
    """The threading layer the user asked Numba for, or None when they left it to fastprop."""
    if "NUMBA_THREADING_LAYER" in os.environ:
        return os.environ["NUMBA_THREADING_LAYER"]
    chosen = str(numba.config.THREADING_LAYER)
    return None if chosen == "default" else chosen


def configure(numba) -> None:
    """Make TBB loadable and, unless the user chose a layer, ask Numba for :data:`DEFAULT_CHOICE`.

    Call before the first parallel kernel runs (Numba fixes its layer then)."""
    preload_tbb()
    if user_choice(numba) is None:
        numba.config.THREADING_LAYER = DEFAULT_CHOICE


def layer_in_use(numba, launch) -> str:
    """The layer Numba runs parallel kernels on, starting it with ``launch()`` (a tiny parallel
    kernel) when none has run yet."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        launch()
        return numba.threading_layer()
