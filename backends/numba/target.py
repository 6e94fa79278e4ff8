"""The instruction set Numba compiles for: the host's, with 512-bit vectors where they pay.

LLVM tunes every AVX-512 CPU to prefer 256-bit vectors, a choice made for the first AVX-512
Xeons (Skylake-SP, Cascade Lake), whose clock drops while 512-bit instructions run. On later cores
(Ice Lake, Sapphire and Emerald Rapids, AMD Zen 4 and 5) it costs no clock, and fastprop's
dot-product kernels run 1.3-1.5x faster with 512-bit vectors (the notebook's step loop on an
Emerald Rapids Xeon, ``benchmarks`` and the README say how it was measured). So when the Numba
backend loads Numba on such a CPU, it asks for the host's features without that preference.

Numba compiles all the code of a process for one target machine, made when the first function is
decorated. So fastprop chooses only when Numba has compiled nothing yet in the process (as when
fastprop's backend is the first to use it) and neither ``NUMBA_CPU_NAME`` nor
``NUMBA_CPU_FEATURES`` is set; the on-disk cache keeps one entry per choice. Set them yourself to
build for another instruction set (``NUMBA_CPU_NAME=haswell`` with Haswell's features builds and
times AVX2 code on an AVX-512 machine) or to keep LLVM's tuning (the host's name and features).
"""

from __future__ import annotations

from typing import NamedTuple

#: AVX-512 CPUs (LLVM's names) whose clock drops under 512-bit instructions: they keep 256-bit vectors.
NARROW_AVX512 = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "knl", "knm")
#: How fastprop chose, for reports: set by :func:`configure`.
choice = "not configured"


def wide_vector_features(name: str, features: str) -> str | None:
    """The feature string for 512-bit vectors on CPU ``name`` with LLVM ``features`` (``+avx512f,...``),
    or None when the CPU has no AVX-512 or slows down under it."""
    if "+avx512f" not in features.split(",") or name in NARROW_AVX512:
        return None
    return features + ",-prefer-256-bit"


def configure(numba) -> str:
    """Before fastprop's kernels are defined: ask for 512-bit vectors where :func:`wide_vector_features`
    says they pay. Returns (and keeps in :data:`choice`) what was decided, in words; decides once
    per process, so that every module that sizes its kernels by the target may ask first."""
    global choice
    from numba.core.registry import cpu_target

    if choice != "not configured":
        return choice
    if numba.config.CPU_NAME is not None or numba.config.CPU_FEATURES is not None:
        choice = "set by NUMBA_CPU_NAME / NUMBA_CPU_FEATURES"
    elif "_toplevel_target_context" in vars(cpu_target):  # the target machine exists already
        choice = "the host's, as LLVM tunes it (Numba compiled other code first)"
    else:
        import llvmlite.binding as llvm

        name, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        wide = wide_vector_features(name, features)
        if wide is None:
            choice = f"the host's ({name}), as LLVM tunes it"
        else:
            numba.config.CPU_NAME, numba.config.CPU_FEATURES = name, wide
            choice = f"the host's ({name}) with 512-bit vectors"
    return choice


class VectorUnit(NamedTuple):
    """The vector registers of the code Numba compiles: ``bytes`` wide, ``count`` of them."""

    name: str
    bytes: int
    count: int


def vector_unit(numba) -> VectorUnit:
    """The vector registers Numba's code uses, read from the CPU name and features it compiles for
    (``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` or what :func:`configure` set, else the host's).

    AVX-512 has 32 registers, 64 bytes wide only when ``-prefer-256-bit`` is asked for: LLVM's
    tuning otherwise splits 512-bit vectors in two (every Intel AVX-512 CPU is tuned so). AVX and
    AVX2 have 16 of 32 bytes, SSE 16 of 16. Kernels size their register blocks from this at import,
    and Numba's cache keeps one build per CPU name and features."""
    from numba.core.codegen import get_host_cpu_features

    import llvmlite.binding as llvm

    name = numba.config.CPU_NAME
    name = llvm.get_host_cpu_name() if name in (None, "host") else name
    features = numba.config.CPU_FEATURES
    flags = set((get_host_cpu_features() if features is None else features).split(","))
    if "+avx512f" in flags:
        return VectorUnit(name, 64 if "-prefer-256-bit" in flags else 32, 32)
    return VectorUnit(name, 32 if "+avx" in flags else 16, 16)
