"""The CuPy backend's CUDA sources: shipped as package data, assembled by the loader, compilable.

These run without CuPy or a GPU: ``cupy_kernels`` is loaded against a stand-in ``cupy`` that records
what would be compiled (a fresh module object, never registered in ``sys.modules``). Compiling the
assembled sources needs ``nvcc`` and skips without it.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import importlib.util
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy
import pytest

from fastprop.backends.plan import Activation, Loss, cuda_defines

FAMILIES = ("step_kernels", "epoch_kernels")
CUDA = importlib.resources.files("fastprop.backends").joinpath("cuda")


@pytest.fixture
def kernels(monkeypatch):
    """``cupy_kernels`` on a stand-in ``cupy`` whose RawModule records (source, name expressions)."""
    compiled = []

    class RawModule:
        def __init__(self, code, name_expressions=(), **options):
            compiled.append((code, tuple(name_expressions)))

        def get_function(self, name):
            return name

    stand_in = types.ModuleType("cupy")
    stand_in.RawModule = RawModule
    monkeypatch.setitem(sys.modules, "cupy", stand_in)
    spec = importlib.util.find_spec("fastprop.backends.cupy_kernels")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.recorded = compiled
    return module


def _cuda_files():
    return sorted(entry.name for entry in CUDA.iterdir() if entry.name.endswith((".cu", ".cuh")))


def test_every_cuda_file_is_declared_as_package_data():
    pyproject = Path(importlib.resources.files("fastprop.backends")).parent / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout: no pyproject.toml beside the backends")
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    shipped = patterns["fastprop.backends"]
    assert _cuda_files(), "no CUDA sources found beside the backends"
    for name in _cuda_files():
        assert any(fnmatch.fnmatch(f"cuda/{name}", pattern) for pattern in shipped), name


def test_the_loader_assembles_each_family_from_the_shipped_files(kernels):
    used = set()
    for family in FAMILIES:
        source = kernels.cuda_source(family)
        assert source.startswith(cuda_defines())
        for member in (*Activation, *Loss):
            prefix = "ACTIVATION" if isinstance(member, Activation) else "LOSS"
            assert f"#define {prefix}_{member.name} {member.value}\n" in source
        for mode in kernels.SoftmaxRows:
            assert f"#define SOFTMAX_ROWS_{mode.name} {mode.value}\n" in source
        for name in _cuda_files():
            if CUDA.joinpath(name).read_text(encoding="utf-8") in source:
                used.add(name)
    assert used == set(_cuda_files()), "a CUDA file that no family compiles"


def test_the_kernels_compare_codes_by_name_not_by_number(kernels):
    for family in FAMILIES:
        bare = re.findall(r"\b(?:act|loss|mode)\s*[=!]=\s*\d", kernels.cuda_source(family))
        assert bare == [], f"{family}: {bare}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_compiles_with_every_kernel_it_asks_for(kernels, family, tmp_path):
    for dtype in (numpy.float32, numpy.float64):
        getattr(kernels, family)(dtype)
    recorded = [(code, names) for code, names in kernels.recorded if code == kernels.cuda_source(family)]
    assert len(recorded) == 2  # one module per dtype
    names = [name for _, dtype_names in recorded for name in dtype_names]
    references = "".join(f"    (void*)&{name},\n" for name in names)  # instantiates each template
    driver = tmp_path / f"{family}.cu"
    driver.write_text(f"{recorded[0][0]}\nvoid* instances[] = {{\n{references}}};\n", encoding="utf-8")
    ptx = tmp_path / f"{family}.ptx"
    done = subprocess.run(["nvcc", "-ptx", "-o", str(ptx), str(driver)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plain = 1 if family == "epoch_kernels" else 0  # advance_cursor, an extern "C" kernel
    assert len(re.findall(r"^\.visible \.entry ", ptx.read_text(), re.M)) == len(names) + plain
