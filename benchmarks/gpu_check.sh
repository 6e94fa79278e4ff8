#!/usr/bin/env bash
# The CuPy backend's check on a machine with an NVIDIA GPU, in one command and under 4 minutes:
# install fastprop in place, name the GPU, run the GPU tests and the layer/gradient tests on every
# backend, then benchmarks/bench_gpu.py (its table is printed last; with OUT set it also writes
# $OUT/gpu_bench.json). Needs CuPy, numba, pytest, pytest-benchmark and tqdm already installed; it
# makes no registry access. Every step runs even when an earlier one fails; the exit status is 1
# when any failed.
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
timeout 75 python -m pytest -q -m gpu tests/test_cupy_backend.py || status=1
timeout 50 python -m pytest -q --maxfail=10 tests/test_layers.py tests/test_backends.py tests/test_costs.py \
    tests/test_training.py || status=1
timeout 100 python benchmarks/bench_gpu.py || status=1
exit "$status"
