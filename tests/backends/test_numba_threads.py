"""Numba's threading layer: TBB from wherever pip put it, the layer reported, Python threads that train
at the same time, and fork children that train after the parent ran a parallel kernel (a fork-safe layer
unless the user chose one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

numba = pytest.importorskip("numba", reason="numba is not installed (pip install 'fastprop[numba]')")

from fastprop.backends import load_backend  # noqa: E402
from fastprop.backends.numba import threads as numba_threading  # noqa: E402
from tests.helpers import numba_available, run_python  # noqa: E402

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


@pytest.mark.slow
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


@pytest.mark.slow
@needs_tbb
def test_fastprop_backends_prints_the_layer_in_use():
    result = subprocess.run([sys.executable, "-m", "fastprop", "backends", "--no-warmup"],
                            capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"})
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("numba"))
    assert f"{numba.config.NUMBA_NUM_THREADS} (tbb)" in row


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("layer", [None, "workqueue"])
def test_python_threads_train_at_once_on_every_layer(layer):
    """Four threads training at once give each the single-threaded result; on workqueue, which aborts
    the process on concurrent launches, fastprop makes them take turns."""
    result = _python(THREADS_TRAINING, NUMBA_THREADING_LAYER=layer)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == (layer or ("tbb" if TBB is not None else result.stdout.split()[-1]))


# -- a fork child trains on Numba after the parent did; a layer the user chose is kept -------------


needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


_TRAIN_ON_NUMBA = '''
import json, multiprocessing, sys
import numpy, numba
import fastprop

def work(seed):
    rng = numpy.random.default_rng(seed)
    x = rng.random((256, 20), dtype=numpy.float32)
    y = numpy.eye(3, dtype=numpy.float32)[rng.integers(0, 3, 256)]
    with fastprop.use_backend("numba"):
        net = fastprop.Network([fastprop.Linear(20, 16, rng=seed), fastprop.Sigmoid(),
                                fastprop.Linear(16, 3, rng=seed)])
        history = fastprop.train(net, fastprop.MeanSquareError(), 2, 64, 0.5, data=(x, y, x, y),
                                 quiet=True, verbose=False)
    assert net.backend.name == "numba"
    return numba.threading_layer(), len(history), [float(c) for c in history.cost]
'''


@pytest.mark.slow
@needs_numba
@pytest.mark.parametrize("priority", [None, "omp tbb workqueue"],
                         ids=["numba's-priority", "openmp-first-as-without-tbb"])
def test_a_fork_child_trains_on_numba_after_the_parent_did(priority):
    """After a Numba parallel kernel ran in the parent, fork children that train finish. With OpenMP
    first in Numba's priority (as where TBB is not installed) the GNU OpenMP layer would kill every
    child ("fork() called from a process already using GNU OpenMP") and Pool.map would wait forever."""
    script = _TRAIN_ON_NUMBA + '''
if __name__ == "__main__":
    parent = work(0)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        children = pool.map_async(work, [1, 2, 0]).get(timeout=90)
    print(json.dumps({"parent": parent, "children": children}))
'''
    code, out, err = run_python(script, {"NUMBA_THREADING_LAYER_PRIORITY": priority} if priority else {})
    assert code == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["parent"][0] in ("tbb", "workqueue"), result  # a fork-safe layer, never omp
    assert [child[0] for child in result["children"]] == [result["parent"][0]] * 3
    assert all(child[1] == 2 for child in result["children"])
    assert result["children"][2][2] == result["parent"][2]  # the child computed what the parent did


@pytest.mark.slow
@needs_numba
@pytest.mark.parametrize("layer", ["workqueue", "omp"])
def test_a_threading_layer_the_user_chose_is_kept(layer):
    script = _TRAIN_ON_NUMBA + '''
try:
    print(json.dumps({"layer": work(0)[0], "config": numba.config.THREADING_LAYER}))
except ValueError as error:  # the chosen layer cannot load on this machine
    if "threading layer" not in str(error):
        raise
    print(json.dumps({"unavailable": str(error)}))
'''
    code, out, err = run_python(script, {"NUMBA_THREADING_LAYER": layer})
    assert code == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    if "unavailable" in result:
        pytest.skip(f"Numba's {layer} layer does not load here: {result['unavailable']}")
    assert result == {"layer": layer, "config": layer}
