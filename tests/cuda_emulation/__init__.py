"""Running fastprop's CuPy backend without a GPU: a host CUDA emulator and a stand-in ``cupy``.

* ``host_cuda.h``: the CUDA execution model for g++ (threads as fibers, real barriers and warp
  exchanges, per-block shared memory, chosen thread orders);
* ``host_module.py``: CuPy's ``RawModule``/``RawKernel`` and ``ElementwiseKernel`` on top of it;
* ``standin/cupy``: NumPy-backed ``cupy`` for tests only (device arrays of their own type, streams
  with graph capture and replay, cuBLAS's gemm with its argument checks);
* :func:`standin_cupy` and :func:`emulated_cupy_backend` put them in place for a while and restore
  everything afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parent / "standin"
#: The CuPy backend's sources this checkout holds (tests/../backends/cupy), else the installed ones.
SOURCE_CHECKOUT = Path(__file__).resolve().parents[2] / "backends" / "cupy"


def _take_modules(prefixes):
    """Remove and return the sys.modules entries named ``prefix`` or ``prefix.*``."""
    taken = {}
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            taken[name] = sys.modules.pop(name)
    return taken


@contextlib.contextmanager
def standin_cupy():
    """``import cupy`` gives the stand-in inside; sys.modules is as it was afterwards."""
    from tests.cuda_emulation import host_module

    saved, runtime = _take_modules(["cupy"]), host_module.runtime
    spec = importlib.util.spec_from_file_location("cupy", STANDIN / "cupy" / "__init__.py",
                                                  submodule_search_locations=[str(STANDIN / "cupy")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["cupy"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        _take_modules(["cupy"])
        sys.modules.update(saved)
        host_module.runtime = runtime


def backend_sources() -> Path:
    if (SOURCE_CHECKOUT / "backend.py").is_file():
        return SOURCE_CHECKOUT
    return Path(importlib.util.find_spec("fastprop.backends.cupy").origin).parent


@contextlib.contextmanager
def emulated_cupy_backend():
    """The CuPy backend (``backends/cupy`` of this checkout, loaded afresh) on the stand-in ``cupy``,
    registered as fastprop's ``"cupy"`` backend; yields ``(backend, kernels module, cupy module)``.

    Afterwards sys.modules, ``fastprop.backends.cupy`` and the backend registry are as they were."""
    import fastprop.backends as backends_package
    from fastprop.backends import registry

    name = "fastprop.backends.cupy"
    tables = {table: getattr(registry, table) for table in ("_factories", "_instances", "_failures")}
    had_attribute, attribute = hasattr(backends_package, "cupy"), getattr(backends_package, "cupy", None)
    with standin_cupy() as cupy:
        saved = _take_modules([name])
        folder = backend_sources()
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        try:
            spec.loader.exec_module(package)
            backend = package.create()
            backend.name = "cupy"
            for table, value in tables.items():
                setattr(registry, table, dict(value))
            registry._failures.pop("cupy", None)
            registry._instances["cupy"] = backend
            registry._factories["cupy"] = lambda: backend
            yield backend, sys.modules[f"{name}.kernels"], cupy
        finally:
            for table, value in tables.items():
                setattr(registry, table, value)
            _take_modules([name])
            sys.modules.update(saved)
            if had_attribute:
                backends_package.cupy = attribute
            elif hasattr(backends_package, "cupy"):
                del backends_package.cupy
