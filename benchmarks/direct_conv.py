"""The Numba direct convolution's two kernels against an earlier revision's, timed interleaved in one process.

    PYTHONPATH=. python benchmarks/direct_conv.py [REVISION] [DTYPE]

REVISION (default ``HEAD~1``) names the git revision whose ``backends/numba/kernels/direct.py`` (or, in
revisions before that module, ``conv.py``) is the "before"; the shape is the CNN's first layer (128
images 28x28x1 -> 32 channels, 3x3, padding 1, ReLU): the convolution alone (``forward``), its weight
gradient and, where the revision has it, the convolution fused with its 2x2 max pooling (``pooled``).
Set ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` to time another instruction set.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from fastprop.backends import load_backend
from fastprop.backends.numba import target


def _show(revision, name):
    """The text of ``backends/numba/kernels/<name>`` at ``revision``, or None where it has no such file."""
    shown = subprocess.run(["git", "show", f"{revision}:backends/numba/kernels/{name}"],
                           capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return shown.stdout if shown.returncode == 0 else None


def _load(name, source, folder):
    """``source`` imported as the module ``name`` from a file in ``folder``, its package-relative imports
    made absolute (to the revision's own ``conv`` where the revision gave one: ``conv_before``)."""
    for module in ("conv", "products", "intrinsics", "blocks"):
        home = "conv_before" if module == "conv" and "conv_before" in sys.modules else \
            f"fastprop.backends.numba.kernels.{module}"
        source = source.replace(f"from .{module} import", f"from {home} import")
    source = source.replace("from .. import target", "from fastprop.backends.numba import target")
    path = Path(folder) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _before(revision):
    """The revision's direct convolution kernels, with the helpers of its own ``conv.py``."""
    folder, direct = tempfile.mkdtemp(), _show(revision, "direct.py")
    conv = _load("conv_before", _show(revision, "conv.py"), folder)
    return conv if direct is None else _load("direct_before", direct, folder)


def main(revision="HEAD~1", dtype="float32"):
    load_backend("numba")  # chooses the target before the kernels read it
    from fastprop.backends.numba.kernels import direct as after

    before = _before(revision)
    rng, dtype = np.random.default_rng(0), np.dtype(dtype)
    n, H, W, C, K = 128, 28, 28, 1, 32
    x = rng.random((n, H, W, C)).astype(dtype)
    Wt = rng.normal(0, 0.3, (3, 3, C, K)).astype(dtype)
    b = rng.normal(0, 0.1, (1, K)).astype(dtype)
    y, dy = np.empty((n, H, W, K), dtype), rng.normal(size=(n, H, W, K)).astype(dtype)
    chunks = 4 * numba.get_num_threads()
    before.conv_forward_direct(x, Wt, b, 1, 1, 1, 1, True, chunks, y)

    def forward(module):
        module.conv_forward_direct(x, Wt, b, 1, 1, 1, 1, True, chunks, y)

    def gradient(module):
        partial = np.empty(((n + module.IMAGES_PER_CHUNK - 1) // module.IMAGES_PER_CHUNK, 10, K), dtype)
        module.conv_weight_gradient_direct(x, y, dy, True, 3, 3, 1, 1, 1, 1, partial)

    def pooled(module):  # the CNN's first stage: the convolution fused with its 2x2 pooling and ReLU
        per_chunk = module.IMAGES_PER_CHUNK
        conv = np.empty((numba.get_num_threads(), per_chunk, H, W, K), dtype)
        shape = (n, H // 2, W // 2, K)
        module.direct_pool_forward(x, Wt, b, 1, 1, 1, 1, (2, 2, 2, 2), per_chunk, conv,
                                   np.empty(shape, dtype), np.empty(shape, np.int32))

    kernels = (forward, gradient) + ((pooled,) if hasattr(before, "direct_pool_forward") else ())
    times = {}
    for kernel in kernels:  # compile or load every kernel of both first
        kernel(before), kernel(after)
    for _ in range(7):
        for kernel in kernels:
            for name, module in (("before", before), ("after", after)):
                started = time.perf_counter()
                for _ in range(5):
                    kernel(module)
                times.setdefault((kernel.__name__, name), []).append((time.perf_counter() - started) / 5e-3)
    unit = target.vector_unit(numba)
    print(f"{unit.name}: {unit.count} vector registers of {unit.bytes} bytes, "
          f"{numba.get_num_threads()} threads, {dtype}; blocks: {after.PIXELS_PER_BLOCK} pixels, "
          f"{after.TAPS_PER_BLOCK} taps")
    for (kernel, name), values in times.items():
        print(f"{kernel:9s}{name:7s} min {min(values):6.2f} ms  median {statistics.median(values):6.2f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:])
