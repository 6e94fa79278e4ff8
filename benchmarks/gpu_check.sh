#!/usr/bin/env bash
# The CuPy backend's check on a machine with an NVIDIA GPU, in one command:
# install fastprop in place, name the GPU, run the GPU tests, then the rest of the suite (layers,
# gradients, costs and training on every backend, CuPy included), then benchmarks/bench_gpu.py,
# whose table is printed last (with OUT set it also writes $OUT/gpu_bench.json). Every step runs
# even when an earlier one fails; the exit status is 1 when any failed.
#
# Offline: it makes no registry access. It needs CuPy, numba, numpy, tqdm, threadpoolctl, pytest,
# pytest-benchmark, setuptools and wheel already installed; what else fastprop needs at run time
# and such a machine may lack comes as wheels from benchmarks/wheels/ (platformdirs), each
# installed with --no-index --no-deps unless it is installed already.
#
# PYTHON names the interpreter (default python3); every step runs with it, in the environment the
# script got (PYTHONPATH included, so a stand-in cupy put there is the one the steps import:
# PYTHONPATH=tests/cuda_emulation/standin:. runs the whole script on the CPU, kernels emulated).
# TIMEOUT_FACTOR (a whole number, default 1) multiplies the time limits, for a slower machine.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
factor="${TIMEOUT_FACTOR:-1}"
limit() { echo $(( $1 * factor )); }
status=0

wheels=(benchmarks/wheels/*.whl)
if [ -e "${wheels[0]}" ]; then
    names=()
    for wheel in "${wheels[@]}"; do
        name="${wheel##*/}"
        names+=("${name%%-*}")
    done
    # --find-links, not the files: a package installed already stays as it is
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
        --find-links benchmarks/wheels "${names[@]}" || status=1
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-build-isolation \
    -e . || status=1

"$PYTHON" - <<'EOF' || status=1
import sys

import fastprop

cupy_status = fastprop.available_backends()["cupy"]
if not cupy_status.available:
    sys.exit(f"gpu_check.sh: no GPU to check: {cupy_status.reason}")
import cupy

properties = cupy.cuda.runtime.getDeviceProperties(0)
name = properties["name"]
print("GPU:", name.decode() if isinstance(name, bytes) else name, "| CuPy", cupy.__version__,
      "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), "| driver", cupy.cuda.runtime.driverGetVersion())
EOF

# the contract table on CuPy too
timeout "$(limit 120)" "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests || status=1
# The rest in parallel where pytest-xdist is installed (the GPU images have it and 16 cores): serial,
# it takes minutes on a machine with few.
workers=()
if "$PYTHON" -c "import xdist" 2>/dev/null; then
    workers=(-n 8)
fi
timeout "$(limit 240)" "$PYTHON" -m pytest -q -p no:cacheprovider -m "not gpu" --maxfail=20 "${workers[@]}" tests \
    || status=1
timeout "$(limit 90)" "$PYTHON" benchmarks/bench_gpu.py --require-gpu || status=1
exit "$status"
