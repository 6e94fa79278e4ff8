"""Numba's threading layer: TBB from wherever pip put it, the layer reported, and Python threads
that train at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

numba = pytest.importorskip("numba", reason="numba is not installed (pip install 'fastprop[numba]')")

from fastprop.backends import load_backend  # noqa: E402
from fastprop.backends.numba import threads as numba_threading  # noqa: E402

TBB = numba_threading.tbb_library()
needs_tbb = pytest.mark.skipif(TBB is None, reason="the tbb wheel is not installed for this platform")


def _python(code, **environment):
    """Run ``code`` in a fresh interpreter with ``environment`` added (None removes a variable);
    return the completed process."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("NUMBA_THREADING_LAYER", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")}
    for key, value in environment.items():
        if value is not None:
            env[key] = value
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=600)


@needs_tbb
def test_the_tbb_library_is_the_one_the_wheel_installed():
    assert TBB.is_file()
    platform = "linux" if sys.platform.startswith("linux") else sys.platform
    assert TBB.name == numba_threading.TBB_LIBRARIES[platform]
    installed = Path(sys.prefix).resolve()
    if sys.prefix != sys.base_prefix:  # a virtual environment: the wheel put it off the loader's path
        assert installed in TBB.parents


@needs_tbb
def test_parallel_kernels_run_on_tbb_without_help_from_the_environment():
    """A fresh process with no LD_LIBRARY_PATH: the Numba backend finds the wheel's TBB and runs on it."""
    result = _python("""
        import numba, numpy
        from fastprop.backends import load_backend
        backend = load_backend("numba")
        x = numpy.ones((4, 3), numpy.float32)
        backend.take_rows(x, numpy.arange(4), out=numpy.empty_like(x))
        print(backend.info()["threading_layer"], numba.threading_layer())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tbb", "tbb"]


@needs_tbb
def test_fastprop_backends_prints_the_layer_in_use():
    result = subprocess.run([sys.executable, "-m", "fastprop", "backends", "--no-warmup"],
                            capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"})
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("numba"))
    assert f"{numba.config.NUMBA_NUM_THREADS} (tbb)" in row


def test_the_users_choice_of_layer_is_kept():
    result = _python("""
        from fastprop.backends import load_backend
        print(load_backend("numba").threading_layer)
    """, NUMBA_THREADING_LAYER="workqueue")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["workqueue"]


def test_this_process_reports_the_layer_numba_runs():
    backend = load_backend("numba")
    assert backend.info()["threading_layer"] == numba.threading_layer() == backend.threading_layer
    if TBB is not None and numba_threading.user_choice(numba) in (None, "forksafe", "safe", "tbb"):
        assert backend.threading_layer == "tbb"


THREADS_TRAINING = """
    import sys, threading
    import numpy
    import fastprop
    from fastprop import Linear, MeanSquareError, Network, ReLU, Sigmoid, train

    def network():
        return Network([Linear(40, 64, rng=1), ReLU(), Linear(64, 10, rng=2), Sigmoid()])

    rng = numpy.random.default_rng(0)
    x, t = rng.random((900, 40)), numpy.eye(10)[rng.integers(0, 10, 900)]
    results, errors = [None] * 4, []

    def work(index):
        try:
            with fastprop.use_backend("numba"):
                net = network()
                train(net, MeanSquareError(), 3, 60, 1e-3, data=(x, t, x[:60], t[:60]), quiet=True)
                results[index] = [p.value.copy() for p in net.parameters()]
        except BaseException as error:  # reported below: a thread's failure must fail the test
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    with fastprop.use_backend("numba"):
        alone = network()
        train(alone, MeanSquareError(), 3, 60, 1e-3, data=(x, t, x[:60], t[:60]), quiet=True)
    for result in results:
        assert all(numpy.array_equal(a, p.value) for a, p in zip(result, alone.parameters()))
    print(fastprop.backends.load_backend("numba").threading_layer)
"""


@pytest.mark.parametrize("layer", [None, "workqueue"])
def test_python_threads_train_at_once_on_every_layer(layer):
    """Four threads training at once give each the single-threaded result; on workqueue, which aborts
    the process on concurrent launches, fastprop makes them take turns."""
    result = _python(THREADS_TRAINING, NUMBA_THREADING_LAYER=layer)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == (layer or ("tbb" if TBB is not None else result.stdout.split()[-1]))
