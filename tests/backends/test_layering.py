"""Where things live: the backends know arrays and kernels, never fastprop's models."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastprop.backends

BACKENDS = Path(fastprop.backends.__file__).parent


def _imports(path):
    """The absolute names ``path`` imports, relative imports resolved against its package."""
    package = ["fastprop", "backends", *path.parent.relative_to(BACKENDS).parts]
    package[:2] = ["fastprop.backends"]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > len(package):  # above the backends
            yield ".".join(["fastprop"] + ([node.module] if node.module else []))
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            yield ".".join(base + ([node.module] if node.module else []))
        elif isinstance(node, ast.ImportFrom):
            yield node.module


def test_nothing_under_backends_imports_fastprop():
    inside = ("fastprop.backends", "fastprop.backends.")
    offenders = {
        str(path.relative_to(BACKENDS)): name
        for path in sorted(BACKENDS.rglob("*.py"))
        for name in _imports(path)
        if (name == "fastprop" or name.startswith("fastprop.")) and not name.startswith(inside)
    }
    assert offenders == {}, f"backends import fastprop's models: {offenders}"


def test_the_import_check_resolves_relative_imports():
    probe = BACKENDS / "numba" / "backend.py"
    names = set(_imports(probe))
    assert "fastprop.backends.base" in names and "fastprop.backends.numba" in names


def test_the_backends_cannot_be_imported_under_another_name():
    root = BACKENDS.parent
    done = subprocess.run([sys.executable, "-c", "import backends"], cwd=root, capture_output=True, text=True)
    assert done.returncode != 0
    assert "import them as fastprop.backends" in done.stderr


def test_every_subpackage_is_installed():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    root = BACKENDS.parent
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {"fastprop." + ".".join(path.parent.relative_to(root / "fastprop").parts)
             for path in (root / "fastprop").rglob("__init__.py")}
    found = {name.rstrip(".") for name in found}
    found |= {"fastprop.backends" + "".join("." + part for part in path.parent.relative_to(BACKENDS).parts)
              for path in BACKENDS.rglob("__init__.py")}
    assert found - listed == set(), "subpackages missing from pyproject.toml's packages"


#: What ``import fastprop`` may import beyond the standard library. A machine with only NumPy and tqdm (a GPU
#: image without platformdirs, say) imports fastprop; platformdirs is imported where the user cache folder
#: is needed, threadpoolctl where the benchmark describes the machine.
IMPORTED_BY_FASTPROP = ("numpy", "tqdm")


def test_importing_fastprop_needs_only_numpy_and_tqdm(tmp_path):
    script = f"""
import os, sys
allowed = set(sys.stdlib_module_names) | {{"fastprop", *{IMPORTED_BY_FASTPROP!r}}}

class Refuse:  # as if every other package were not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in allowed:
            raise ModuleNotFoundError(f"No module named {{name!r}} (refused by the test)", name=name)

sys.meta_path.insert(0, Refuse())
import fastprop, fastprop.datasets
os.environ["FASTPROP_CACHE"] = {str(tmp_path)!r}
print(fastprop.datasets.cache_dir())
print("platformdirs" in sys.modules, "tqdm" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(tmp_path), "False True"]
