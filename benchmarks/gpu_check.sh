#!/usr/bin/env bash
# The CuPy backend's check on a machine with an NVIDIA GPU, in one command and under 6 minutes:
# install fastprop in place, name the GPU, run the GPU tests, then the rest of the suite (layers,
# gradients, costs and training on every backend, CuPy included), then benchmarks/bench_gpu.py,
# whose table is printed last (with OUT set it also writes $OUT/gpu_bench.json). Needs CuPy, numba,
# pytest, pytest-benchmark and tqdm already installed; makes no registry access. Every step runs
# even when an earlier one fails; the exit status is 1 when any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

pip install --quiet --no-deps --no-build-isolation -e .
python -c "
import cupy
properties = cupy.cuda.runtime.getDeviceProperties(0)
print('GPU:', properties['name'].decode(), '| CuPy', cupy.__version__,
      '| CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), '| driver', cupy.cuda.runtime.driverGetVersion())
"

status=0
timeout 120 python -m pytest -q -p no:cacheprovider -m gpu tests || status=1  # the contract table on CuPy too
timeout 150 python -m pytest -q -p no:cacheprovider -m "not gpu" --maxfail=20 tests || status=1
timeout 90 python benchmarks/bench_gpu.py || status=1
exit "$status"
