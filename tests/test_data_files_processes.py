"""Data given explicitly is used, or refused; processes and files.

* A folder the user names (``path=`` / ``--data-dir``) is the only place searched: missing files there
  are one error naming the folder and listing them, never a silent fall back to another copy; the name
  variants people download (``train-images.idx3-ubyte``, with or without ``.gz``) are recognised.
* A ``multiprocessing`` fork child trains on Numba after the parent ran a parallel kernel (a fork-safe
  threading layer unless the user chose one).
* Atomic writes leave the previous file and no temporary file when a save fails or is interrupted; a
  missing folder is named.
* The CLI checks the backend before loading data, reports an unusable backend in one line, and by
  default trains on the fastest backend, saying so in its first line; the library default stays NumPy.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy
import pytest

import fastprop
from fastprop import cli, datasets, files
from fastprop.datasets import DatasetNotFoundError, read_idx, write_idx

REPO = Path(__file__).resolve().parents[1]

# The four files under their canonical names, in RawDataset order (the test's own oracle, not the
# package's list).
CANONICAL = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


def variant(index, dotted, gz):
    """One name of file ``index``: ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``, ± ``.gz``."""
    prefix, kind, idx = re.fullmatch(r"(train|t10k)-(images|labels)-(idx\d)-ubyte", CANONICAL[index]).groups()
    return f"{prefix}-{kind}{'.' if dotted else '-'}{idx}-ubyte{'.gz' if gz else ''}"


def make_arrays(n_train=24, n_test=12, seed=0):
    """Four uint8 arrays shaped like MNIST's; the first pixel encodes the label and ``seed``."""
    rng = numpy.random.default_rng(seed)
    arrays = []
    for n in (n_train, n_test):
        images = rng.integers(0, 256, (n, 28, 28), dtype=numpy.uint8)
        labels = rng.integers(0, 10, n, dtype=numpy.uint8)
        images[:, 0, 0] = labels * 20 + seed
        arrays += [images, labels]
    return arrays


def write_dataset(folder, names, arrays):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(names, arrays):
        write_idx(folder / name, array, compress=name.endswith(".gz"))


def assert_same(raw, arrays):
    assert len(raw) == 4
    for loaded, expected in zip(raw, arrays):
        numpy.testing.assert_array_equal(loaded, expected)


@pytest.fixture
def decoys(tmp_path, monkeypatch):
    """Valid copies of both datasets in every place a search without a folder would look
    (``$FASTPROP_DATA/<name>``, ``$FASTPROP_DATA``, the cache, a system folder), and a network that
    records every request and serves nothing. Returns ``(decoy folders, requested urls)``."""
    places = []
    for name in ("mnist", "fashion-mnist"):
        places += [tmp_path / "data" / name, tmp_path / "cache" / name, tmp_path / "system" / name]
    places.append(tmp_path / "data")
    for seed, place in enumerate(places, start=100):
        write_dataset(place, [name + ".gz" for name in CANONICAL], make_arrays(seed=seed))
    monkeypatch.setenv("FASTPROP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FASTPROP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_PATHS", (tmp_path / "system",))
    requested = []

    def offline(url, timeout=None):
        requested.append(url)
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(datasets, "_urlopen", offline)
    return places, requested


# ------------------------------------------------------------------ data given explicitly

LOADERS = {
    "fastprop.load_data": lambda name, folder: fastprop.load_data(name, folder),
    "read_dataset": lambda name, folder: datasets.read_dataset(name, folder),
    "load_split": lambda name, folder: datasets.load_split(name, folder),
    "load_test_data": lambda name, folder: datasets.load_test_data(name, folder),
    "load_split_and_test": lambda name, folder: datasets.load_split_and_test(name, folder),
    "load_mnist": lambda name, folder: (
        fastprop.load_mnist if name == "mnist" else fastprop.load_fashion_mnist
    )(folder),
}


def _fill(folder, state):
    """Make ``folder`` lack the dataset in one of the ways users do; return the indices missing."""
    arrays = make_arrays(seed=7)
    if state == "absent":
        return [0, 1, 2, 3]
    folder.mkdir()
    if state == "empty":
        return [0, 1, 2, 3]
    if state == "other names":  # browser duplicates, underscores, CSV exports, archives unpacked as folders
        write_idx(folder / "train-images-idx3-ubyte (1).gz", arrays[0])
        write_idx(folder / "train_labels_idx1_ubyte.gz", arrays[1])
        (folder / "fashion-mnist_test.csv").write_text("label,pixel1\n0,0\n")
        (folder / "t10k-labels-idx1-ubyte").mkdir()
        write_idx(folder / "t10k-labels-idx1-ubyte" / "t10k-labels-idx1-ubyte", arrays[3])
        return [0, 1, 2, 3]
    if state == "two missing":
        write_idx(folder / variant(0, False, True), arrays[0])
        write_idx(folder / variant(2, True, False), arrays[2])
        return [1, 3]
    raise AssertionError(state)


@pytest.mark.parametrize("state", ["absent", "empty", "other names", "two missing"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_a_named_folder_lacking_the_files_is_one_error_never_another_copy(tmp_path, decoys, name, loader,
                                                                          state):
    places, requested = decoys
    folder = tmp_path / "mine"
    missing = _fill(folder, state)
    with pytest.raises(DatasetNotFoundError) as caught:
        LOADERS[loader](name, folder)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(folder) in message
    assert "\n" not in message
    for place in places:  # nothing else was looked at, nor offered as where the data came from
        assert f"{place} " not in message and f"{place}/" not in message and not message.endswith(f"{place}.")
    assert requested == []  # and nothing was downloaded
    if state == "absent":
        assert "no such folder" in message
        return
    for index in range(4):
        if index in missing:
            assert CANONICAL[index] in message, f"{CANONICAL[index]} is missing but not listed: {message}"
        else:
            assert CANONICAL[index] not in message, f"{CANONICAL[index]} is there but listed: {message}"
    if state == "two missing":
        assert "train-labels.idx1-ubyte" in message  # the error also says which other names would do


@pytest.mark.parametrize("dotted, gz", [(False, True), (False, False), (True, True), (True, False)])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_the_name_variants_people_download_are_recognised(tmp_path, decoys, name, dotted, gz):
    folder = tmp_path / "mine"
    arrays = make_arrays(seed=3)
    names = [variant(index, dotted, gz) for index in range(4)]
    write_dataset(folder, names, arrays)
    assert sorted(os.listdir(folder)) == sorted(names)
    assert_same(datasets.read_dataset(name, folder), arrays)
    assert_same(datasets.read_dataset(name, str(folder), download=False), arrays)
    images, labels, image_size, label_size = fastprop.load_data(name, folder)
    assert images.shape == (24, 784) and (image_size, label_size) == (784, 10)
    assert sorted(numpy.rint(images[:, 0] * 255).astype(int).tolist()) == sorted(
        (arrays[1].astype(int) * 20 + 3).tolist())  # these rows, not a decoy's (their seeds differ)
    x, y, x_valid, y_valid = datasets.load_split(name, folder)
    assert len(x) + len(x_valid) == 24


def test_each_file_may_go_by_its_own_variant(tmp_path, decoys):
    folder = tmp_path / "mixed"
    arrays = make_arrays(seed=5)
    names = [variant(0, True, False), variant(1, False, False), variant(2, True, True),
             variant(3, False, True)]
    write_dataset(folder, names, arrays)
    assert_same(datasets.read_dataset("mnist", folder), arrays)


def test_without_a_folder_the_search_still_uses_fastprop_data(tmp_path, decoys):
    """The fix is about named folders only: with none, FASTPROP_DATA/<name> is found as before."""
    raw = datasets.read_dataset("mnist")
    assert_same(raw, make_arrays(seed=100))  # the decoy in $FASTPROP_DATA/mnist


def _cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("state", ["absent", "empty", "other names", "two missing"])
def test_cli_data_dir_lacking_the_files_is_one_line_and_exit_code_2(tmp_path, decoys, capsys, state):
    places, requested = decoys
    folder = tmp_path / "mine"
    missing = _fill(folder, state)
    code, out, err = _cli(
        ["train", "--dataset", "mnist", "--data-dir", str(folder), "--epochs", "1", "--quiet"], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fastprop: error: ") and "Traceback" not in err
    assert str(folder) in err
    for index in missing if state != "absent" else []:
        assert CANONICAL[index] in err
    assert "cost=" not in out and "test accuracy" not in out  # nothing was trained on a decoy
    assert len(out.splitlines()) == 1 and out.startswith("backend: ")
    assert requested == []


def test_cli_trains_from_a_data_dir_with_dotted_uncompressed_names(tiny_mnist, tmp_path, decoys, capsys):
    folder = tmp_path / "dotted"
    folder.mkdir()
    for index in range(4):
        write_idx(folder / variant(index, True, False), read_idx(tiny_mnist / (CANONICAL[index] + ".gz")))
    code, out, err = _cli(["train", "--data-dir", str(folder), "--epochs", "1", "--batch-size", "100",
                           "--learning-rate", "0.01", "--quiet", "--backend", "numpy"], capsys)
    assert code == 0, err
    assert float(re.search(r"^test accuracy=(\d\.\d{6})$", out, flags=re.M).group(1)) > 0.5


# ------------------------------------------------------------------ fork

def _numba_available():
    return fastprop.available_backends()["numba"].available


needs_numba = pytest.mark.skipif(not _numba_available(), reason="numba is not installed")

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


def run_python(script, env_changes, timeout=120):
    """Run ``script`` in a fresh interpreter in its own session; on a timeout kill that session (the
    interpreter and any pool children it left) and fail the test instead of hanging the suite."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY", "FASTPROP_BACKEND")}
    env.update(env_changes)
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the script hung for {timeout} s (killed); stderr: {err[-2000:]}")
    return process.returncode, out, err


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


# ------------------------------------------------------------------ atomic writes

def small_net():
    with fastprop.use_backend("numpy", "float32"):
        return fastprop.Network(
            [fastprop.Linear(4, 3, rng=0), fastprop.Sigmoid(), fastprop.Linear(3, 2, rng=1)]
        )


def small_history():
    history = fastprop.History()
    history.append(cost=0.5, accuracy=0.25, seconds=1.0, samples_per_second=100.0)
    return history


WRITERS = {
    "fastprop.save": lambda path: fastprop.save(small_net(), path),
    "History.to_csv": lambda path: small_history().to_csv(path),
    "History.to_json": lambda path: small_history().to_json(path),
    "write_atomically": lambda path: files.write_atomically(path, lambda stream: stream.write(b"data")),
    "write_text_atomically": lambda path: files.write_text_atomically(path, "text"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("depth", [1, 2])
def test_writing_into_a_missing_folder_names_that_folder(tmp_path, writer, depth):
    missing = tmp_path / "no-such-folder"
    folder = missing / "deeper" if depth == 2 else missing
    with pytest.raises(FileNotFoundError) as caught:
        WRITERS[writer](folder / "out.file")
    assert str(folder) in str(caught.value)
    assert "does not exist" in str(caught.value)
    assert os.listdir(tmp_path) == []  # no folder made, no temporary file anywhere


class Interrupted(Exception):
    pass


def _write_then_fail(failure):
    def write(stream):
        stream.write(b"PK\x03\x04 half of a new file")
        stream.flush()
        raise failure

    return write


@pytest.mark.parametrize(
    "failure",
    [OSError(28, "No space left on device"), KeyboardInterrupt(), Interrupted("x")],
    ids=["disk-full", "ctrl-c", "exception"],
)
def test_a_save_that_fails_part_way_keeps_the_old_checkpoint_and_no_tmp(tmp_path, monkeypatch, failure):
    path = tmp_path / "net.npz"
    net = small_net()
    fastprop.save(net, path)
    before = path.read_bytes()
    other = small_net()
    other.layers[0].w = numpy.ones((3, 4), numpy.float32)

    def savez(stream, **arrays):
        _write_then_fail(failure)(stream)

    monkeypatch.setattr(numpy, "savez", savez)
    with pytest.raises(type(failure)):
        fastprop.save(other, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["net.npz"]
    assert path.read_bytes() == before
    numpy.testing.assert_array_equal(fastprop.load(path).layers[0].w, net.layers[0].w)


@pytest.mark.parametrize("method", ["to_csv", "to_json"])
@pytest.mark.parametrize(
    "failure", [OSError(5, "Input/output error"), KeyboardInterrupt()], ids=["io-error", "ctrl-c"]
)
def test_a_history_write_interrupted_after_the_bytes_keeps_the_old_file(tmp_path, monkeypatch, method,
                                                                        failure):
    path = tmp_path / f"history.{method[3:]}"
    getattr(small_history(), method)(path)
    before = path.read_bytes()
    longer = small_history()
    longer.append(cost=0.25, accuracy=0.5, seconds=1.0, samples_per_second=100.0)

    def fsync(fd):  # the new bytes are written; the interruption comes before the rename
        raise failure

    monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(type(failure)):
        getattr(longer, method)(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [path.name]
    assert path.read_bytes() == before
    getattr(longer, method)(path)  # and it works once the trouble is gone
    assert path.read_bytes() != before and os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize(
    "failure",
    [OSError(28, "No space left on device"), KeyboardInterrupt(), Interrupted("x")],
    ids=["disk-full", "ctrl-c", "exception"],
)
@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new"])
def test_write_atomically_leaves_the_old_file_or_none(tmp_path, failure, existing):
    path = tmp_path / "file.bin"
    if existing:
        assert os.fspath(files.write_atomically(path, lambda stream: stream.write(b"old"))) == os.fspath(path)
    with pytest.raises(type(failure)):
        files.write_atomically(path, _write_then_fail(failure))
    assert os.listdir(tmp_path) == (["file.bin"] if existing else [])
    if existing:
        assert path.read_bytes() == b"old"
    files.write_atomically(str(path), lambda stream: stream.write(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["file.bin"]


# ------------------------------------------------------------------ the CLI's cheap checks and its backend

@pytest.fixture
def no_data_anywhere(offline_datasets, monkeypatch):
    """No dataset in any place, no network, and a spy that fails the test if the data is read."""
    loads = []
    monkeypatch.setattr(datasets, "_load_raw",
                        lambda *args: loads.append(args) or pytest.fail("data was loaded"))
    return loads


@pytest.mark.parametrize("argv, env, message", [
    (["train", "--backend", "tpu9000"], {}, "Unknown backend 'tpu9000'; registered backends are "),
    (["train"], {"FASTPROP_BACKEND": "tpu9000"}, "Unknown backend 'tpu9000'; registered backends are "),
    (["train", "--data-dir", "/no/such/folder"], {"FASTPROP_DTYPE": "float16"},
     "Unsupported dtype 'float16'"),
])
def test_cheap_arguments_are_checked_before_any_data_is_loaded(no_data_anywhere, monkeypatch, capsys, argv,
                                                               env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = _cli(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"fastprop: error: {message}")
    assert "MNIST" not in err and "Traceback" not in err and "usage:" not in err
    if "tpu9000" in message:
        for name in fastprop.backends.backend_names():
            assert name in err.split("registered backends are ")[1]
    assert no_data_anywhere == []
    assert out == ""


def _cupy_runs_here():
    return fastprop.available_backends()["cupy"].available


@pytest.mark.skipif(_cupy_runs_here(), reason="CuPy runs here; the test is for a machine without a GPU")
def test_fastprop_backend_cupy_without_a_gpu_is_one_line_in_the_cli_and_fine_on_import(tiny_mnist):
    env = dict(os.environ, FASTPROP_BACKEND="cupy")
    command = [sys.executable, "-m", "fastprop", "train", "--data-dir", str(tiny_mnist), "--epochs", "1",
               "--quiet"]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""  # not trained, not even the backend line
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("fastprop: error: Backend 'cupy' is unavailable: ")
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-c", "import fastprop; print('imported')"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "imported\n" and result.stderr == "", result.stderr


@pytest.mark.skipif(_cupy_runs_here(), reason="CuPy runs here; the test is for a machine without a GPU")
def test_cupy_without_a_gpu_via_main_is_one_line(tiny_mnist, monkeypatch, capsys):
    monkeypatch.setenv("FASTPROP_BACKEND", "cupy")
    code, out, err = _cli(["train", "--data-dir", str(tiny_mnist), "--quiet"], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("fastprop: error: Backend 'cupy' is unavailable")
    monkeypatch.delenv("FASTPROP_BACKEND")
    code, out, err = _cli(["train", "--backend", "cupy", "--data-dir", str(tiny_mnist), "--quiet"], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("fastprop: error: Backend 'cupy' is unavailable")


def _expected_fastest():
    statuses = fastprop.available_backends()
    return next(name for name in ("cupy", "numba", "numpy") if statuses[name].available)


def test_fastest_backend_prefers_a_gpu_then_numba_then_numpy():
    assert cli.fastest_backend() == _expected_fastest()
    if _numba_available() and not _cupy_runs_here():
        assert cli.fastest_backend() == "numba"


@pytest.mark.parametrize("choice", ["default", "auto", "numpy-flag", "numpy-env"])
def test_the_first_line_names_the_backend_the_cli_trains_on(tiny_mnist, monkeypatch, capsys, choice):
    import fastprop.training as training

    monkeypatch.delenv("FASTPROP_BACKEND", raising=False)
    monkeypatch.delenv("FASTPROP_DTYPE", raising=False)
    argv = ["train", "--data-dir", str(tiny_mnist), "--epochs", "1", "--batch-size", "100", "--quiet"]
    if choice == "auto":
        argv += ["--backend", "auto"]
    elif choice == "numpy-flag":
        argv += ["--backend", "numpy"]
    elif choice == "numpy-env":
        monkeypatch.setenv("FASTPROP_BACKEND", "numpy")
    used = []
    original = training.train
    monkeypatch.setattr(training, "train",
                        lambda net, *a, **k: used.append(net.backend.name) or original(net, *a, **k))
    code, out, err = _cli(argv, capsys)
    assert code == 0, err
    first = out.splitlines()[0]
    expected = _expected_fastest() if choice in ("default", "auto") else "numpy"
    assert used == [expected]
    assert first.startswith(f"backend: {expected}, float32")
    assert ("auto" in first) == (choice in ("default", "auto"))
    assert f"{expected} backend" in out  # the throughput line agrees


def test_the_library_default_stays_numpy_even_after_the_cli_chose_another(tiny_mnist):
    script = f'''
import fastprop
from fastprop.cli import main
assert fastprop.get_backend().name == "numpy", fastprop.get_backend().name
argv = ["train", "--data-dir", {str(tiny_mnist)!r}, "--epochs", "1", "--batch-size", "100", "--quiet"]
assert main(argv) == 0
print("library default:", fastprop.get_backend().name, fastprop.Linear(2, 2).backend.name)
'''
    code, out, err = run_python(script, {})
    assert code == 0, err[-3000:]
    assert out.splitlines()[0].startswith(f"backend: {_expected_fastest()}, ")
    assert out.splitlines()[-1] == "library default: numpy numpy"


@pytest.mark.parametrize("option", ["--history", "--checkpoint", "--plot"])
def test_output_paths_in_missing_folders_are_refused_before_any_data_is_loaded(no_data_anywhere, tmp_path,
                                                                               capsys, option):
    """Where the CLI will write is a cheap argument too: a missing folder is reported before the data is
    read, not after the training it would have saved (today --history loses a whole run)."""
    if option == "--plot":
        pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    target = tmp_path / "no-such-folder" / ("out.png" if option == "--plot" else "out.csv")
    code, out, err = _cli(
        ["train", "--data-dir", str(tmp_path), "--epochs", "1", "--quiet", option, str(target)], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fastprop: error: ") and str(target.parent) in err
    assert no_data_anywhere == []
