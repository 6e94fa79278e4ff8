"""The CuPy backend's CUDA sources compile with NVRTC, as ``cupy.RawModule`` compiles them, with no GPU.

NVRTC, the compiler the backend uses at run time, needs neither a device nor a driver. Through CuPy's
binding to it (``cupy_backends.cuda.libs.nvrtc``) every family's assembled source is compiled with
every name expression ``kernels.py`` asks for, per dtype, with the options RawModule passes, and each
name expression must lower to a kernel entry of the PTX and a symbol of the cubin. The family
functions run against a stand-in ``cupy`` that records the RawModule calls, so the name expressions
are the module's own. What this proves: NVRTC accepts the sources and the name expressions. What it
cannot: that the kernels run, or compute the right thing; that takes a GPU (``benchmarks/gpu_check.sh``).

Skips, with the reason, where CuPy or the NVRTC library is missing: ``pip install -e ".[cuda-compile]"``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import re
import sys
import types

import pytest

import fastprop.backends.cupy  # noqa: F401  imported before the stand-in cupy is put in place
from fastprop.backends.arrays import KERNEL_FLOATS

INSTALL = 'pip install -e ".[cuda-compile]"'
nvrtc = pytest.importorskip(
    "cupy_backends.cuda.libs.nvrtc", reason=f"CuPy is not installed; {INSTALL} compiles the CUDA sources here"
)

CUDA = importlib.resources.files("fastprop.backends.cupy").joinpath("cuda")
#: One kernel family per ``cuda/<family>.cu``: kernels.py builds it with its function ``<family>(dtype)``.
FAMILIES = sorted(entry.name[: -len(".cu")] for entry in CUDA.iterdir() if entry.name.endswith(".cu"))
#: Compute capabilities to build for, as RawModule's ``-arch=sm_XX``: the H100 and H200 the GPU checks run
#: on; the oldest this NVRTC supports is added by ``architectures()``.
HOPPER = 90
#: RawModule arguments this test reproduces the compilation of (NVRTC, no Jitify): any other fails it.
KNOWN_ARGUMENTS = {"code", "name_expressions", "options"}


class NvrtcError(AssertionError):
    """NVRTC rejected a program: the message holds its log."""


def _record_raw_modules():
    """Run every family function of kernels.py, per dtype, on a stand-in cupy: the RawModule calls."""
    calls = []

    class RawModule:
        def __init__(self, **arguments):
            calls.append(arguments)

        def get_function(self, name):
            return name

    stand_in = types.ModuleType("cupy")
    stand_in.RawModule = RawModule
    spec = importlib.util.find_spec("fastprop.backends.cupy.kernels")
    module = importlib.util.module_from_spec(spec)  # a fresh module, never registered in sys.modules
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = stand_in
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved
    recorded = {}
    for family in FAMILIES:
        for dtype in KERNEL_FLOATS:
            before = len(calls)
            getattr(module, family)(dtype)
            made = len(calls) - before
            assert made == 1, f"kernels.{family}({dtype}) made {made} RawModules"
            recorded[family, dtype.name] = calls[-1]
            assert calls[-1]["code"] == module.cuda_source(family)
    return recorded


RECORDED = _record_raw_modules()


def _nvrtc_version():
    try:
        return nvrtc.getVersion()
    except Exception as error:  # the binding is there, the library is not
        reason = str(error).strip()
        pytest.skip(f"CuPy cannot load the NVRTC library ({reason}); {INSTALL} brings it as a wheel")


def architectures():
    """The oldest compute capability this NVRTC builds for, and Hopper's (both where they differ)."""
    try:
        oldest = min(nvrtc.getSupportedArchs())
    except Exception:  # no NVRTC library: the tests skip in _nvrtc_version
        oldest = HOPPER
    return sorted({oldest, HOPPER})


def rawmodule_options(options, arch):
    """The NVRTC options ``RawModule(code=..., options=options)`` compiles with on a device of compute
    capability ``arch`` (90 for 9.0), as CuPy 14 assembles them.

    First ``cupy._core.core.assemble_cupy_compiler_options``, called here itself: ``--std=c++17`` unless
    a standard is given, ``-I`` for CuPy's CCCL and its own headers, ``-I`` for the CUDA headers (which
    it insists on finding). Then what ``cupy/cuda/compiler.py`` adds, written out here because CuPy
    needs a device to decide it: ``-ftz=true`` (``_compile_with_cache_cuda``); ``-arch=sm_XX`` for the
    device (``_get_arch_for_options_for_nvrtc``: a cubin, not PTX, unless CUPY_COMPILE_WITH_PTX is set)
    and ``--device-as-default-execution-space`` (NVRTC's ``-default-device``; added without Jitify in
    ``_compile_using_nvrtc_no_warning``). Left out are the opt-in ones: the debug options of
    CUPY_CUDA_COMPILE_WITH_DEBUG and the ``--pch`` of CUPY_NVRTC_USE_PCH.
    """
    from cupy._core import core

    try:
        assembled = core.assemble_cupy_compiler_options(tuple(options))
    except RuntimeError as error:  # "Failed to find CUDA headers": RawModule itself would stop here
        pytest.skip(f"CuPy finds no CUDA headers ({error}); {INSTALL} brings them as a wheel")
    return assembled + ("-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space")


def compile_program(code, name_expressions, options):
    """``(ptx, cubin, {name expression: lowered name})``, or NvrtcError with NVRTC's log."""
    program = nvrtc.createProgram(code, "kern.cu", (), ())
    try:
        for name in name_expressions:
            nvrtc.addNameExpression(program, name)
        try:
            nvrtc.compileProgram(program, tuple(options))
        except nvrtc.NVRTCError as error:
            raise NvrtcError(f"NVRTC rejected the program ({error}) with options {' '.join(options)}:\n"
                             f"{nvrtc.getProgramLog(program)}") from None
        lowered = {name: nvrtc.getLoweredName(program, name) for name in name_expressions}
        return nvrtc.getPTX(program).decode(), nvrtc.getCUBIN(program), lowered
    finally:
        nvrtc.destroyProgram(program)


def ptx_entries(ptx):
    """The kernels a PTX module defines (``.entry``; ``.weak`` for template instances)."""
    return set(re.findall(r"^\.(?:visible|weak) \.entry (\S+?)\(", ptx, re.M))


@pytest.mark.parametrize("arch", architectures(), ids=lambda arch: f"sm_{arch}")
@pytest.mark.parametrize("dtype", [dtype.name for dtype in KERNEL_FLOATS])
@pytest.mark.parametrize("family", FAMILIES)
def test_nvrtc_compiles_each_family_with_every_name_expression(family, dtype, arch):
    version = _nvrtc_version()
    arguments = RECORDED[family, dtype]
    assert set(arguments) <= KNOWN_ARGUMENTS, f"RawModule also gets {set(arguments) - KNOWN_ARGUMENTS}"
    names = tuple(arguments["name_expressions"])
    assert names, f"kernels.{family} asks for no template instance"
    options = rawmodule_options(arguments.get("options", ()), arch)
    ptx, cubin, lowered = compile_program(arguments["code"], names, options)
    entries = ptx_entries(ptx)
    assert f".target sm_{arch}" in ptx, f"NVRTC {version} did not build for sm_{arch}"
    for name in names:
        symbol = lowered[name]
        assert symbol in entries, f"{name} lowers to {symbol}, not a kernel of the PTX: {sorted(entries)}"
        assert b"\0" + symbol.encode() + b"\0" in cubin, f"{name} ({symbol}) is not a symbol of the cubin"
    assert len(set(lowered.values())) == len(names), "two name expressions lower to one kernel"


def test_the_name_expressions_cover_both_element_types_and_every_file():
    """The recording saw each family once per dtype, each with its own C++ element type."""
    assert FAMILIES and set(FAMILIES) == {family for family, _ in RECORDED}
    for (family, dtype), arguments in RECORDED.items():
        ctype = {"float32": "float", "float64": "double"}[dtype]
        for name in arguments["name_expressions"]:
            assert re.fullmatch(rf"\w+<{ctype}(, \d+)*>", name), f"{family} {dtype}: {name}"


def test_a_rejected_source_fails_with_nvrtcs_log():
    """The check can fail: a kernel that does not compile, or a name expression the source lacks, is an
    error that carries NVRTC's log."""
    _nvrtc_version()
    options = rawmodule_options((), HOPPER)
    broken = "template <typename T> __global__ void k(T* x) { x[0] = undeclared_name; }\n"
    with pytest.raises(NvrtcError, match=r"(?s)NVRTC rejected.*undeclared_name"):
        compile_program(broken, ("k<float>",), options)
    fine = "template <typename T> __global__ void k(T* x) { x[0] = T(1); }\n"
    with pytest.raises(NvrtcError, match=r"(?s)NVRTC rejected.*not_a_kernel"):
        compile_program(fine, ("k<float>", "not_a_kernel<float>"), options)
    ptx, _, lowered = compile_program(fine, ("k<float>", "k<double>"), options)
    assert ptx_entries(ptx) == set(lowered.values()) == {"_Z1kIfEvPT_", "_Z1kIdEvPT_"}
