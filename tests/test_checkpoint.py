"""Checkpoints: round trips on and across backends, optimizer state, damaged files, atomic saves, and a
layer whose class was defined again."""

from __future__ import annotations

import json
import os
import pathlib
import textwrap
import zipfile

import numpy
import pytest

import fastprop
from fastprop import History, Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftMax, Tanh
from fastprop import checkpoint
from fastprop.checkpoint import CheckpointError, load, load_checkpoint, save
from fastprop.layers.dropout import Dropout
from fastprop.optimizers import SGD, Adam

X = numpy.random.default_rng(0).normal(size=(9, 4))
TARGET = numpy.random.default_rng(1).random((9, 3))


def _net(backend_name="numpy", dtype="float64"):
    with fastprop.use_backend(backend_name, dtype=dtype):
        net = Network([
            Linear(4, 6, rng=1, init="xavier"), ReLU(), Dropout(0.25, rng=2),
            Network([Linear(6, 5, rng=3), Sigmoid()], fuse=False),
            Linear(5, 3, rng=4), Tanh(), SoftMax(),
        ], input_gradient=True)
    # Linear's bias starts at zero; give every bias distinct values so round trips check them too.
    biases = numpy.random.default_rng(7)
    for layer in net.leaves():
        if isinstance(layer, Linear):
            layer.b = biases.normal(size=(1, layer.n_out))
    return net


def _history(epochs=3):
    history = History()
    for epoch in range(epochs):
        history.append(cost=1.0 / (epoch + 1), accuracy=0.5 + epoch / 10, seconds=0.1, samples_per_second=1e4)
    return history


def _values(net):
    return [net.backend.to_numpy(p.value) for p in net.parameters()]


def _step(net, optimizer):
    cost = MeanSquareError()
    net.zero_gradients()
    net.backward(cost.gradient(cost.estimate(TARGET, net.forward(X))))
    optimizer.step(net)


# -- round trips ----------------------------------------------------------------------------------


def test_round_trip_gives_identical_predictions(backend_name, tmp_path):
    net = _net(backend_name)
    path = save(net, tmp_path / "model.npz")
    with fastprop.use_backend(backend_name):  # the current backend, in its default float32
        loaded = load(path)
    assert repr(loaded) == repr(net)
    assert loaded.input_gradient and not loaded.layers[3].fuse and loaded.layers[2].rate == 0.25
    assert loaded.layers[0].init == "xavier" and loaded.dtype == numpy.float64
    assert loaded.backend is fastprop.backends.load_backend(backend_name)
    numpy.testing.assert_array_equal(fastprop.predict(loaded, X), fastprop.predict(net, X))
    for a, b in zip(_values(loaded), _values(net)):
        numpy.testing.assert_array_equal(a, b)
    assert all(not loaded.backend.to_numpy(p.gradient).any() for p in loaded.parameters())


def test_checkpoints_move_between_backends(backend_name, tmp_path):
    path = save(_net("numpy"), tmp_path / "from-numpy.npz")
    loaded = load(path, backend=backend_name)
    assert loaded.backend is fastprop.backends.load_backend(backend_name)
    numpy.testing.assert_allclose(fastprop.predict(loaded, X), fastprop.predict(_net("numpy"), X), rtol=1e-12)
    back = load(save(loaded, tmp_path / "back.npz"), backend="numpy")
    for a, b in zip(_values(back), _values(_net("numpy"))):
        numpy.testing.assert_array_equal(a, b)


def test_dtype_is_preserved_or_overridden(backend_name, tmp_path):
    path = save(_net(backend_name, dtype="float32"), tmp_path / "single.npz")
    with fastprop.use_backend(backend_name, dtype="float64"):
        kept = load(path)
        wider = load(path, dtype="float64")
    assert kept.dtype == numpy.float32 and all(v.dtype == numpy.float32 for v in _values(kept))
    assert wider.dtype == numpy.float64 and all(v.dtype == numpy.float64 for v in _values(wider))
    for a, b in zip(_values(kept), _values(wider)):
        numpy.testing.assert_array_equal(a.astype(numpy.float64), b)


def test_optimizer_history_and_extra_round_trip_and_training_continues(backend_name, tmp_path):
    net, optimizer = _net(backend_name), Adam(0.01, weight_decay=0.1)
    for _ in range(2):
        _step(net, optimizer)
    history = _history()
    extra = {"note": "run 1", "seed": [1, 2]}
    save(net, tmp_path / "run.npz", optimizer=optimizer, history=history, extra=extra)
    restored = load_checkpoint(tmp_path / "run.npz", backend=backend_name)
    assert restored.history == history and restored.epoch == 3 and restored.extra == extra
    assert restored.version == checkpoint.FORMAT_VERSION
    assert isinstance(restored.optimizer, Adam)
    assert restored.optimizer.hyperparameters() == optimizer.hyperparameters()
    assert [e["step"] for e in restored.optimizer_state["parameters"]] == [2] * len(net.parameters())
    for model, opt in ((net, optimizer), (restored.net, restored.optimizer)):
        model.eval()  # the same (no) dropout mask on both sides
        _step(model, opt)
    for a, b in zip(_values(restored.net), _values(net)):
        numpy.testing.assert_array_equal(a, b)


def test_plain_checkpoint_has_no_optimizer_or_history(tmp_path):
    restored = load_checkpoint(save(_net(), str(tmp_path / "plain.npz"), epoch=7))
    assert restored.optimizer is None and restored.history is None and restored.extra is None
    assert restored.epoch == 7


def test_sgd_without_state_and_save_method(tmp_path):
    net = _net()
    assert net.save(tmp_path / "m.npz", optimizer=SGD(0.1)) == tmp_path / "m.npz"
    restored = load_checkpoint(tmp_path / "m.npz")
    assert isinstance(restored.optimizer, SGD) and restored.optimizer.learning_rate == 0.1


def test_loading_leaves_the_shared_generator_alone(tmp_path):
    path = save(_net(), tmp_path / "model.npz")
    fastprop.seed(5)
    expected = fastprop.seeding.generator().random()
    fastprop.seed(5)
    load(path)
    assert fastprop.seeding.generator().random() == expected


def _rename_to_old_names(header, arrays):
    """Rewrite a checkpoint the way fastprop wrote it before Linear's arrays were named w and b."""
    old = {"w": "weights", "b": "bias"}

    def visit(node):
        renamed = {}
        for name, entry in node["parameters"].items():
            key = entry["key"].rsplit(".", 1)[0] + "." + old[name]
            arrays[key] = arrays.pop(entry["key"])
            renamed[old[name]] = {**entry, "key": key}
        node["parameters"] = renamed
        for child in node.get("layers", ()):
            visit(child)

    visit(header["model"])
    for slot in header["optimizer"]["parameters"]:
        slot["name"] = old[slot["name"]]


def test_checkpoints_with_the_old_parameter_names_still_load(tmp_path):
    net, optimizer = _net(), Adam(0.01)
    _step(net, optimizer)
    path = save(net, tmp_path / "old.npz", optimizer=optimizer)
    _rewrite(path, _rename_to_old_names)
    with numpy.load(path, allow_pickle=False) as archive:  # the file really holds the old names
        assert "model.0.weights" in archive.files and "model.0.w" not in archive.files
    restored = load_checkpoint(path)
    assert [p.name for p in restored.net.parameters()] == ["w", "b"] * 3
    for a, b in zip(_values(restored.net), _values(net)):
        numpy.testing.assert_array_equal(a, b)
    assert [e["name"] for e in restored.optimizer_state["parameters"]] == ["w", "b"] * 3
    for model, opt in ((net, optimizer), (restored.net, restored.optimizer)):
        model.eval()
        _step(model, opt)  # the restored Adam state continues exactly where the saved one stopped
    for a, b in zip(_values(restored.net), _values(net)):
        numpy.testing.assert_array_equal(a, b)


def test_linear_parameters_are_saved_under_the_notebook_names(tmp_path):
    path = save(_net(), tmp_path / "model.npz")
    with numpy.load(path, allow_pickle=False) as archive:
        header = json.loads(archive[checkpoint.HEADER].tobytes())
        assert sorted(_first_linear(header)["parameters"]) == ["b", "w"]
        numpy.testing.assert_array_equal(archive["model.0.w"], _net().layers[0].w)
        numpy.testing.assert_array_equal(archive["model.0.b"], _net().layers[0].b)


# -- damaged and hostile files --------------------------------------------------------------------


def _rewrite(path, edit):
    """Re-save the checkpoint at ``path`` after ``edit(header, arrays)`` changed it in memory."""
    with numpy.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    original = arrays[checkpoint.HEADER]
    header = json.loads(original.tobytes())
    edit(header, arrays)
    if arrays.get(checkpoint.HEADER) is original:  # the edit changed the header, not its bytes
        arrays[checkpoint.HEADER] = numpy.frombuffer(json.dumps(header).encode(), dtype=numpy.uint8)
    with open(path, "wb") as stream:
        numpy.savez(stream, **arrays)


def _first_linear(header):
    return header["model"]["layers"][0]


TAMPERING = {
    "unknown layer type": (lambda h, a: _first_linear(h).update(type="os.system"),
                           "unknown layer type 'os.system'"),
    "newer format": (lambda h, a: h.update(version=checkpoint.FORMAT_VERSION + 1), "newer fastprop"),
    "header shape": (lambda h, a: _first_linear(h)["parameters"]["w"].update(shape=[6, 5]), "shape"),
    "constructor argument": (lambda h, a: _first_linear(h)["arguments"].update(n_in=5), "needs"),
    "bad argument": (lambda h, a: _first_linear(h)["arguments"].update(init="evil"), "rejects"),
    "missing array": (lambda h, a: a.pop("model.4.b"), "lacks the array 'model.4.b'"),
    "stray array": (lambda h, a: a.update(smuggled=numpy.zeros(3)), "does not describe"),
    "array dtype": (lambda h, a: a.update({"model.0.b": a["model.0.b"].astype(numpy.int64)}), "dtype"),
    "array shape": (lambda h, a: a.update({"model.0.b": numpy.zeros((1, 7))}), "shape"),
    "missing key": (lambda h, a: h.pop("model"), "inconsistent"),
    "not a checkpoint": (lambda h, a: h.update(format="something else"), "not describe a fastprop"),
    "no header": (lambda h, a: a.pop(checkpoint.HEADER), "no 'fastprop_header'"),
    "header is not JSON": (lambda h, a: a.update({checkpoint.HEADER: numpy.frombuffer(b"{no", numpy.uint8)}),
                           "not valid JSON"),
    "optimizer state shape": (lambda h, a: a.update({"optimizer.0.first_moment": numpy.zeros((2, 2))}),
                              "shape"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampered_files_fail_with_one_clear_error_naming_the_file(tmp_path, case):
    edit, message = TAMPERING[case]
    path = tmp_path / "model.npz"
    net, optimizer = _net(), Adam(0.1)
    _step(net, optimizer)
    save(net, path, optimizer=optimizer)

    _rewrite(path, edit)
    with pytest.raises(CheckpointError, match=message) as error:
        load(path)
    assert str(path) in str(error.value) and str(error.value).count(". ") == 0


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "flipped byte", "empty"])
def test_damaged_files_fail_with_one_clear_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "model.npz"
    save(_net(), path)
    data = path.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "not a zip":
        data = b"certainly not a checkpoint"
    elif damage == "flipped byte":
        index = data.index(b"model.0.w.npy") + 200  # inside that array's data
        data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]
    else:
        data = b""
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"Cannot load checkpoint {path}:"):
        load(path)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "model.npz"
    save(_net(), path)

    def smuggle(header, arrays):
        arrays["model.0.b"] = numpy.array([{"payload": 1}], dtype=object)

    _rewrite(path, smuggle)
    with pytest.raises(CheckpointError, match="object array, which needs pickle and is refused"):
        load(path)


def test_compressed_entries_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    save(_net(), path)
    with numpy.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    numpy.savez_compressed(path, **arrays)
    with pytest.raises(CheckpointError, match="is compressed"):
        load(path)


def test_an_entry_claiming_a_huge_array_is_refused_before_allocation(tmp_path):
    path = tmp_path / "model.npz"
    save(_net(), path)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    bias = members["model.0.b.npy"]
    claim = bias.index(b"(1, 6), }") + len(b"(1, 6), }")
    assert bias[claim : claim + 8] == b" " * 8  # the header's padding leaves room for a bigger claim
    members["model.0.b.npy"] = bias.replace(b"(1, 6), }        ", b"(1, 6000000000), }", 1)
    with zipfile.ZipFile(path, "w") as archive:  # a valid archive with correct checksums
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(CheckpointError, match="'model.0.b.npy' claims more data than it holds"):
        load(path)


def test_a_single_npy_array_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "array.npy"
    numpy.save(path, numpy.zeros(3))
    with pytest.raises(CheckpointError, match="single array"):
        load(path)


def test_a_missing_file_is_a_plain_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.npz")


# -- saving safely --------------------------------------------------------------------------------


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save(_net(), path)
    before = path.read_bytes()

    def savez_that_dies_midway(stream, **arrays):
        stream.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(numpy, "savez", savez_that_dies_midway)
    with pytest.raises(OSError, match="disk full"):
        save(_net(), path, history=_history())
    monkeypatch.undo()

    def replace_that_fails(source, target):
        raise PermissionError("target locked")

    monkeypatch.setattr(os, "replace", replace_that_fails)
    with pytest.raises(PermissionError):
        save(_net(), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_replaces_the_previous_file(tmp_path):
    path = tmp_path / "model.npz"
    save(_net(), path, epoch=1)
    save(_net(), path, epoch=2)
    assert load_checkpoint(path).epoch == 2
    assert os.listdir(tmp_path) == ["model.npz"]


def test_unsupported_layers_and_extras_fail_before_writing(tmp_path):
    class Custom(Linear):
        pass

    with pytest.raises(CheckpointError, match=r"Custom, which checkpoints do not know"):
        save(Network([Custom(2, 2)]), tmp_path / "custom.npz")
    with pytest.raises(TypeError, match="extra must hold only JSON values"):
        save(_net(), tmp_path / "extra.npz", extra={"array": numpy.zeros(2)})
    assert os.listdir(tmp_path) == []


def test_paths_are_used_exactly_as_given(tmp_path):
    path = pathlib.Path(tmp_path / "no-suffix")
    save(_net(), path)
    assert os.listdir(tmp_path) == ["no-suffix"]
    numpy.testing.assert_array_equal(fastprop.predict(load(path), X), fastprop.predict(_net(), X))


# -- a class defined again -------------------------------------------------------------------------


def test_a_class_defined_again_is_named_truly(monkeypatch):
    """A notebook cell run twice defines the class again: the old layer's class is not the one kept."""
    from fastprop.layer_types import CHECKPOINT_LAYERS

    monkeypatch.setitem(CHECKPOINT_LAYERS, "Scaled", None)  # the registration is undone afterwards
    namespace = {"fastprop": fastprop}
    source = textwrap.dedent("""
        class Scaled(fastprop.Layer):
            checkpoint_arguments = ()
            def forward(self, x_in):
                return 2 * x_in
            def backward(self, d_out, input_gradient=True):
                return 2 * d_out
    """)
    exec(source, namespace)
    old = namespace["Scaled"]()
    exec(source, namespace)  # the cell again
    with pytest.raises(CheckpointError, match="whose class was defined again after this layer was made"):
        fastprop.checkpoint.check_savable(Network([Linear(3, 3, rng=0), old]), "x.npz")
    fastprop.checkpoint.check_savable(Network([Linear(3, 3, rng=0), namespace["Scaled"]()]), "x.npz")
