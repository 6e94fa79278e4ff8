"""The training loop's state in a checkpoint (:class:`fastprop.checkpoint.LoopState`)."""

from __future__ import annotations

import json
import zipfile

import numpy
import pytest

import fastprop
from fastprop import Linear, Network, Sigmoid
from fastprop.checkpoint import CheckpointError, LoopState, load_checkpoint, save


def _net():
    with fastprop.use_backend("numpy", "float64"):
        return Network([Linear(3, 2, rng=1), Sigmoid()])


def test_loop_state_round_trips_through_a_checkpoint(tmp_path):
    net, path = _net(), tmp_path / "run.npz"
    generator_state = numpy.random.default_rng(5).bit_generator.state
    best = [numpy.arange(6.0).reshape(2, 3), numpy.ones((1, 2))]
    state = LoopState(shuffle_seed=11, generators=[generator_state], best_accuracy=0.75, best_epoch=3,
                      best=best)
    save(net, path, loop=state)
    loaded = load_checkpoint(path).loop
    assert (loaded.shuffle_seed, loaded.best_accuracy, loaded.best_epoch) == (11, 0.75, 3)
    assert loaded.generators == json.loads(json.dumps([generator_state]))
    assert len(loaded.best) == 2 and all(numpy.array_equal(a, b) for a, b in zip(loaded.best, best))


def test_a_file_without_early_stopping_state_loads_it_as_unknown(tmp_path):
    path = tmp_path / "run.npz"
    save(_net(), path, loop=LoopState(shuffle_seed=4))
    loaded = load_checkpoint(path).loop
    assert loaded.shuffle_seed == 4 and loaded.best_epoch is None and loaded.best == []
    assert load_checkpoint(_saved_without_loop(tmp_path)).loop is None


def _saved_without_loop(tmp_path):
    path = tmp_path / "plain.npz"
    save(_net(), path)
    return path


def _rewrite_loop(path, edit):
    with numpy.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(bytes(arrays["fastprop_header"]).decode("utf-8"))
    edit(header["loop"]["state"])
    arrays["fastprop_header"] = numpy.frombuffer(json.dumps(header).encode("utf-8"), numpy.uint8)
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as stream:
                numpy.lib.format.write_array(stream, numpy.asarray(value), allow_pickle=False)


@pytest.mark.parametrize("key, value", [("shuffle_seed", "7"), ("best_epoch", 1.5), ("best_accuracy", "high"),
                                        ("generators", {"not": "a list"})])
def test_a_loop_state_of_the_wrong_type_is_refused_naming_the_file(tmp_path, key, value):
    path = tmp_path / "run.npz"
    save(_net(), path, loop=LoopState(shuffle_seed=1, generators=[], best_accuracy=0.5, best_epoch=1))
    _rewrite_loop(path, lambda state: state.update({key: value}))
    with pytest.raises(CheckpointError, match=key) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
