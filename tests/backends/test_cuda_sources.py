"""The CuPy backend's CUDA sources: shipped as package data, assembled by the loader, compilable.

These run without CuPy or a GPU: ``fastprop.backends.cupy.kernels`` is loaded against a stand-in ``cupy``
that records what would be compiled (a fresh module object, never registered in ``sys.modules``).
Compiling the assembled sources needs ``nvcc`` and skips without it.
The conv kernels, which neither share memory
nor synchronize, also run on the CPU (built with ``g++``, skipped without it) under the CuPy backend's
own methods, against the NumPy reference.
"""

from __future__ import annotations

import ctypes
import fnmatch
import functools
import importlib.resources
import importlib.util
import itertools
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy
import pytest

import fastprop.backends.cupy as cupy_package  # imported before any test puts a stand-in cupy in place
from fastprop.backends import Backend
from fastprop.backends.plan import Activation, Loss, cuda_defines
from tests.conftest import relative_error

FAMILIES = ("step_kernels", "epoch_kernels", "conv_kernels", "norm_kernels")
CUDA = importlib.resources.files("fastprop.backends.cupy").joinpath("cuda")


@pytest.fixture
def kernels(monkeypatch):
    """The CuPy kernels module on a stand-in ``cupy`` whose RawModule records (source, name expressions)."""
    compiled = []

    class RawModule:
        def __init__(self, code, name_expressions=(), **options):
            compiled.append((code, tuple(name_expressions)))

        def get_function(self, name):
            return name

    stand_in = types.ModuleType("cupy")
    stand_in.RawModule = RawModule
    monkeypatch.setitem(sys.modules, "cupy", stand_in)
    spec = importlib.util.find_spec("fastprop.backends.cupy.kernels")
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
    shipped = patterns["fastprop.backends.cupy"]
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


def test_launch_shapes_are_defined_once_in_python(kernels):
    """THREADS, ROWS_PER_BLOCK, COLUMNS, SLICES and CHUNK_ROWS come from the kernels module only: the CUDA
    files use them and never define them, and every assembled source defines each with the value Python
    launches with."""
    names = ("THREADS", "ROWS_PER_BLOCK", "COLUMNS", "SLICES", "CHUNK_ROWS")
    shapes = {name: getattr(kernels, name) for name in names}
    for name in _cuda_files():
        text = CUDA.joinpath(name).read_text(encoding="utf-8")
        for shape in shapes:
            assert not re.search(rf"(#define\s+{shape}\b|\b{shape}\s*=)", text), f"{name} defines {shape}"
    for family in FAMILIES:
        source = kernels.cuda_source(family)
        for shape, value in shapes.items():
            assert source.count(f"#define {shape} {value}\n") == 1


def test_the_kernels_compare_codes_by_name_not_by_number(kernels):
    for family in FAMILIES:
        bare = re.findall(r"\b(?:act|loss|mode)\s*[=!]=\s*\d", kernels.cuda_source(family))
        assert bare == [], f"{family}: {bare}"


@pytest.mark.slow
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


# ------------------------------------------------------------------ the conv kernels, run on the CPU

HOST_PRELUDE = """#include <cmath>
using std::isnan;
struct Index { unsigned x = 0, y = 0, z = 0; };
static Index threadIdx, blockIdx, blockDim, gridDim;
#define __global__
"""
#: Blocks a host launch runs, however many it asks for, so that every grid-stride loop goes round.
HOST_BLOCKS = 3


class HostModule:
    """A stand-in ``cupy.RawModule`` for the conv kernels, which neither share memory nor synchronize:
    g++ builds ``conv_kernels.cu`` for the CPU, and each function checks a launch's arguments against
    the kernel's CUDA signature (CuPy passes whatever it is given), then runs its threads one by one."""

    def __init__(self, code, name_expressions=(), *, folder, launched):
        family = CUDA.joinpath("conv_kernels.cu").read_text(encoding="utf-8")
        assert family in code, "HostModule builds only the conv kernels"
        pattern = r"template <typename T>\s*__global__ void (\w+)\(([^)]*)\)"
        signatures = dict(re.findall(pattern, family))
        self.kernels, self.launched, wrappers = {}, launched, []
        for expression in name_expressions:
            name, ctype = re.fullmatch(r"(\w+)<(\w+)>", expression).groups()
            parameters = [" ".join(p.split()) for p in re.sub(r"\bT\b", ctype, signatures[name]).split(",")]
            symbol, names = f"host_{name}_{ctype}", ", ".join(p.split()[-1] for p in parameters)
            self.kernels[expression] = symbol, parameters
            wrappers.append(
                f'extern "C" void {symbol}(unsigned grid, {", ".join(parameters)}) {{\n'
                "    gridDim.x = grid; blockDim.x = 256;\n"
                "    for (blockIdx.x = 0; blockIdx.x < grid; ++blockIdx.x)\n"
                "        for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x)\n"
                f"            {name}<{ctype}>({names});\n}}\n"
            )
        source = folder / f"host_{len(list(folder.iterdir()))}.cpp"
        source.write_text(HOST_PRELUDE + family + "".join(wrappers), encoding="utf-8")
        library = source.with_suffix(".so")
        done = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        self.library = ctypes.CDLL(str(library))

    def get_function(self, expression):
        symbol, parameters = self.kernels[expression]
        pointers = {"float": numpy.float32, "double": numpy.float64, "int": numpy.int32}
        scalars = {"int": (numpy.int32, ctypes.c_int), "long long": (numpy.int64, ctypes.c_longlong)}

        def launch(grid, block, args):
            assert len(grid) == 1 and 1 <= grid[0] <= 65535 and block == (256,), (expression, grid, block)
            assert len(args) == len(parameters), expression
            values = []
            for parameter, arg in zip(parameters, args):
                what = f"{expression}: {parameter} got {type(arg).__name__}"
                pointer = re.fullmatch(r"(?:const )?(\w+)\* __restrict__ \w+", parameter)
                if pointer:
                    assert isinstance(arg, numpy.ndarray) and arg.dtype == pointers[pointer[1]], what
                    assert arg.flags.c_contiguous, f"{what}, not contiguous"
                    values.append(ctypes.c_void_p(arg.ctypes.data))
                else:
                    scalar, c_type = scalars[parameter.rsplit(" ", 1)[0]]
                    assert type(arg) is scalar, what
                    values.append(c_type(int(arg)))
            self.launched.append(expression.split("<")[0])
            getattr(self.library, symbol)(ctypes.c_uint(min(grid[0], HOST_BLOCKS)), *values)

        return launch


@pytest.fixture
def host_backend(monkeypatch, tmp_path):
    """A ``CupyBackend`` on a stand-in ``cupy`` made of NumPy whose conv kernels run on the CPU
    (:class:`HostModule`); the step kernels' column sums and the ReLU mask are NumPy code here.
    ``host_backend.launched`` lists the conv kernels run."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH")
    launched = []
    stand_in = types.ModuleType("cupy")
    stand_in.__dict__.update({k: v for k, v in vars(numpy).items() if not k.startswith("__")})
    stand_in.RawModule = functools.partial(HostModule, folder=tmp_path, launched=launched)
    stand_in.ElementwiseKernel = lambda *definition: {
        "fastprop_relu_backward": lambda y, dy, out: numpy.multiply(dy, y > 0, out=out)}[definition[-1]]
    monkeypatch.setitem(sys.modules, "cupy", stand_in)
    modules = {}
    for name in ("kernels", "backend"):  # fresh modules, seen by each other only
        spec = importlib.util.find_spec(f"fastprop.backends.cupy.{name}")
        modules[name] = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, modules[name])
        monkeypatch.setattr(cupy_package, name, modules[name], raising=False)
        spec.loader.exec_module(modules[name])

    def column_sums(g, out, accumulate):
        out[...] = out + g.sum(0) if accumulate else g.sum(0)

    monkeypatch.setattr(modules["kernels"], "column_sums", column_sums)
    backend = modules["backend"].CupyBackend()
    backend.launched = launched
    return backend


HOST_CONV = [  # n, (H, W, C), K, kernel, stride, padding
    (1, (7, 6, 3), 4, (5, 5), (2, 2), (1, 1)),
    (2, (9, 8, 5), 3, (3, 2), (1, 2), (1, 0)),
    (3, (6, 11, 7), 6, (3, 2), (2, 1), (0, 1)),
    (2, (3, 3, 2), 2, (5, 4), (1, 1), (1, 1)),  # a kernel larger than the image, padded
]
HOST_POOL = [  # n, (H, W, C), size, stride
    (2, (9, 8, 5), (3, 3), (2, 2)),  # overlapping windows
    (1, (6, 11, 7), (3, 2), (2, 1)),
    (3, (8, 7, 3), (2, 2), (3, 3)),  # gaps between windows
]


def _fast(backend, kernel, method, *args, **keywords):
    """``backend.method(*args, **keywords)``, which must have launched ``kernel`` (not fallen back)."""
    backend.launched.clear()
    result = getattr(backend, method)(*args, **keywords)
    assert kernel in backend.launched, f"{method} fell back to the reference"
    return result


@pytest.mark.slow
@pytest.mark.parametrize("dtype, tolerance", [(numpy.float32, 1e-6), (numpy.float64, 1e-12)])
def test_the_convolution_kernels_run_on_the_cpu_match_the_reference(host_backend, dtype, tolerance):
    reference, rng = Backend(), numpy.random.default_rng(0)
    for n, image, K, kernel, stride, padding in HOST_CONV:
        x, W, b = (rng.normal(size=s).astype(dtype) for s in ((n, *image), (K, image[2], *kernel), (1, K)))
        for relu, accumulate, need_dx in itertools.product((False, True), repeat=3):
            case = f"{image}, kernel {kernel}, relu={relu}, accumulate={accumulate}, need_dx={need_dx}"
            y = _fast(host_backend, "add_bias", "conv2d_forward", x, W, b, stride, padding, relu=relu)
            expected = reference.conv2d_forward(x, W, b, stride, padding, relu=relu)
            assert y.dtype == dtype and relative_error(y, expected) <= tolerance, case
            dy = rng.normal(size=y.shape).astype(dtype)
            dW, db = rng.normal(size=W.shape).astype(dtype), rng.normal(size=b.shape).astype(dtype)
            mine, theirs = (dW, db), (dW.copy(), db.copy())
            flags = {"relu": relu, "accumulate": accumulate, "need_dx": need_dx}
            window = (stride, padding)
            dx = _fast(host_backend, "im2col", "conv2d_backward", x, W, y, dy, *mine, *window, **flags)
            dx_expected = reference.conv2d_backward(x, W, y, dy, *theirs, *window, **flags)
            assert all(relative_error(a, e) <= tolerance for a, e in zip(mine, theirs)), case
            if need_dx:
                assert dx.dtype == dtype and relative_error(dx, dx_expected) <= tolerance, case
            else:
                assert dx is None, case


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_the_pooling_kernels_run_on_the_cpu_match_the_reference_exactly(host_backend, dtype):
    reference, rng = Backend(), numpy.random.default_rng(0)
    for (n, image, size, stride), values in itertools.product(HOST_POOL, ("distinct", "ties", "NaNs")):
        case = f"{image}, size {size}, stride {stride}, {values}"
        x = rng.normal(size=(n, *image)) if values == "distinct" else rng.integers(0, 3, (n, *image)) * 1.0
        if values == "NaNs":
            x[rng.random(x.shape) < 0.1] = numpy.nan
        x = x.astype(dtype)
        y, argmax = _fast(host_backend, "maxpool_forward", "maxpool2d_forward", x, size, stride)
        expected, expected_argmax = reference.maxpool2d_forward(x, size, stride)
        assert y.dtype == dtype and numpy.array_equal(y, expected, equal_nan=True), case
        assert argmax.dtype == numpy.int32 and numpy.array_equal(argmax, expected_argmax), case
        dy = rng.normal(size=y.shape).astype(dtype)
        dx = _fast(host_backend, "maxpool_backward", "maxpool2d_backward", argmax, dy, size, stride, x.shape)
        expected = reference.maxpool2d_backward(argmax, dy, size, stride, x.shape)
        assert dx.dtype == dtype and numpy.array_equal(dx, expected), case
