"""Checkpoints: a network (plus optimizer state, history and notes) in one ``.npz`` file, no pickle.

The file is a NumPy ``.npz`` archive. One ``uint8`` entry, ``fastprop_header``, holds UTF-8 JSON:
the format version, the tree of layers with their constructor arguments, and for every array its
entry name, shape and dtype. The other entries are the arrays, as host NumPy arrays, so a checkpoint
saved on one backend loads on any other. Loading reads with ``allow_pickle=False`` and builds only
the layer classes registered in :data:`fastprop.layer_types.CHECKPOINT_LAYERS`; it never runs code
from the file. Saving is atomic: the
archive is written to a temporary file beside the target, synced, then renamed over it.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy

from fastprop.backends import current, load_backend, resolve_dtype, use_backend
from .files import write_atomically
from .history import History
from .layer_types import CHECKPOINT_LAYERS
from .optimizers import from_state_dict

FORMAT = "fastprop checkpoint"
#: The newest format this module writes and reads; files with a larger version are refused.
#: Version 2 added the training loop's state ("loop"); version 1 files load as before.
FORMAT_VERSION = 2
HEADER = "fastprop_header"
#: Parameter names of checkpoints written before Linear took the notebook's names.
_RENAMED = {"weights": "w", "bias": "b"}

class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded (or a network that cannot be saved); names the file."""


@dataclass
class Checkpoint:
    """Everything :func:`load_checkpoint` read: the network and whatever was saved beside it."""

    net: object
    optimizer: object = None  # an SGD or Adam holding the saved state, or None
    optimizer_state: dict | None = None  # the same state as Optimizer.state_dict() returns
    history: History | None = None
    extra: object = None
    epoch: int | None = None
    version: int = FORMAT_VERSION
    #: What :func:`fastprop.train` needs to resume exactly, or None.
    loop: LoopState | None = None


@dataclass
class LoopState:
    """What :func:`fastprop.train` keeps across a resume beyond parameters and optimizer state.

    ``shuffle_seed`` orders the epochs; ``generators`` are the bit-generator states of the layers'
    random generators (dropout masks); early stopping's ``best_accuracy`` and ``best_epoch`` (None in
    files written before they were kept) and ``best``, the best epoch's parameters as host arrays.
    """

    shuffle_seed: int | None = None
    generators: list | None = None
    best_accuracy: float | None = None
    best_epoch: int | None = None
    best: list = field(default_factory=list)

    def _header(self, arrays):
        """The JSON the checkpoint's header holds, its arrays stored in ``arrays``."""
        state = {"shuffle_seed": self.shuffle_seed, "generators": self.generators}
        if self.best_epoch is not None:
            state.update(best_accuracy=self.best_accuracy, best_epoch=self.best_epoch)
        return {"state": state, "arrays": [_entry(arrays, f"loop.{i}", numpy.asarray(a))
                                           for i, a in enumerate(self.best)]}

    @classmethod
    def _read(cls, node, arrays, used):
        node = _check(node, dict, "loop state")
        state = _check(node["state"], dict, "loop state")
        best = [_array(entry, arrays, used, f"loop.{i}", tuple(entry["shape"]))
                for i, entry in enumerate(_check(node["arrays"], list, "loop arrays"))]
        values = {key: state.get(key) for key in ("shuffle_seed", "best_epoch")}
        for key, value in values.items():
            if value is not None:
                _check(value, int, f"loop state's {key}")
        accuracy = state.get("best_accuracy")
        if accuracy is not None and not isinstance(accuracy, (int, float)):
            raise _Invalid(f"its loop state's best_accuracy is {accuracy!r}, expected a number")
        generators = state.get("generators")
        if generators is not None:
            _check(generators, list, "loop state's generators")
        return cls(best=best, best_accuracy=accuracy, generators=generators, **values)


# -- saving ---------------------------------------------------------------------------------------


def save(net, path, *, optimizer=None, history=None, extra=None, epoch=None, loop=None):
    """Write ``net`` (and optionally an optimizer's state, a History, JSON ``extra``) to ``path``.

    ``path`` is used exactly as given (no ``.npz`` is appended). ``epoch`` defaults to the number
    of epochs in ``history``. ``loop`` is the training loop's own state (a :class:`LoopState`),
    written by :func:`fastprop.train`. The previous file at ``path`` stays
    intact until the new one is complete on disk. Returns ``path``.
    """
    arrays = {}
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dtype": numpy.dtype(net.dtype).name if getattr(net, "dtype", None) is not None else None,
        "training": bool(getattr(net, "training", True)),
        "model": _describe(net, "model", arrays, path),
        "optimizer": None,
        "history": history.to_dict() if history is not None else None,
        "extra": extra,
        "epoch": int(epoch) if epoch is not None else (len(history) if history is not None else None),
    }
    if optimizer is not None:
        header["optimizer"] = _describe_optimizer(optimizer.state_dict(), arrays)
    if loop is not None:
        header["loop"] = loop._header(arrays)
    try:
        text = json.dumps(header)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Cannot save checkpoint {path}: extra must hold only JSON values (dicts with string keys, "
            f"lists, strings, numbers, booleans, None) ({error})."
        ) from None
    arrays[HEADER] = numpy.frombuffer(text.encode("utf-8"), dtype=numpy.uint8)
    write_atomically(path, lambda stream: numpy.savez(stream, **arrays), "checkpoint")
    return path


def check_savable(net, path):
    """Raise the error :func:`save` would raise for ``net`` (a layer class checkpoints cannot hold) or
    for ``path`` (a missing folder), without writing anything: :func:`fastprop.train` asks before
    its first step, so a run that could not save its first checkpoint never starts."""
    _describe(net, "model", {}, path, host=False)
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot write checkpoint {path}: the folder {folder} does not exist; create it first "
            f"(os.makedirs({folder!r}, exist_ok=True)) or choose another path."
        )


def _unknown_class(layer, key, path):
    """The error for a layer whose class checkpoints do not hold, saying truly why."""
    cls, kind = type(layer), type(layer).__name__
    known = CHECKPOINT_LAYERS.get(kind)
    where = f"Cannot save checkpoint {path}: {key} is {layer!r}, a {cls.__module__}.{kind}"
    if known is None:
        return CheckpointError(
            f"{where}, which checkpoints do not know; they hold {', '.join(CHECKPOINT_LAYERS)}, and a Layer "
            "subclass that declares checkpoint_arguments (the constructor arguments to store, () for none)."
        )
    if known.__module__ == cls.__module__ and known.__qualname__ == cls.__qualname__:
        return CheckpointError(
            f"{where}, whose class was defined again after this layer was made (a notebook cell or module "
            f"run twice?); checkpoints hold the newest {kind}: build the layer again from it."
        )
    return CheckpointError(
        f"{where}, but checkpoints hold another class of that name, {known.__module__}.{known.__qualname__}, "
        "and tell layers apart by class name: rename one of the two classes."
    )


def _describe(layer, key, arrays, path, host=True):
    """The header node for ``layer``; its parameters go into ``arrays`` under ``key.<name>`` (as host
    copies, or without copying when ``host`` is false: a check of what can be saved)."""
    kind = type(layer).__name__
    if CHECKPOINT_LAYERS.get(kind) is not type(layer):
        raise _unknown_class(layer, key, path)
    node = {
        "type": kind,
        "arguments": {name: getattr(layer, name) for name in type(layer).checkpoint_arguments},
        "parameters": {
            parameter.name: _entry(arrays, f"{key}.{parameter.name}", layer.backend.to_numpy(parameter.value))
            if host else None for parameter in layer.own_parameters()
        },
    }
    if type(layer).buffer_names:
        node["buffers"] = {
            name: _entry(arrays, f"{key}.{name}", layer.backend.to_numpy(array)) if host else None
            for name, array in zip(type(layer).buffer_names, layer.own_buffers())
        }
    children = layer.children()
    if children:
        node["layers"] = [_describe(child, f"{key}.{i}", arrays, path, host)
                          for i, child in enumerate(children)]
    return node


def _describe_optimizer(state, arrays):
    """The header node for an optimizer's ``state_dict``; its arrays go into ``arrays``."""
    return {
        "type": state["type"],
        "hyperparameters": state["hyperparameters"],
        "parameters": [
            {
                "name": slot["name"],
                "shape": list(slot["shape"]),
                "step": slot["step"],
                "arrays": {
                    name: _entry(arrays, f"optimizer.{index}.{name}", array)
                    for name, array in slot["arrays"].items()
                },
            }
            for index, slot in enumerate(state["parameters"])
        ],
    }


def _entry(arrays, key, array):
    """Store ``array`` under ``key`` and return how the header refers to it."""
    array = numpy.ascontiguousarray(array)
    arrays[key] = array
    return {"key": key, "shape": list(array.shape), "dtype": array.dtype.name}


class _Invalid(Exception):
    """Why a checkpoint cannot be loaded, turned into a CheckpointError that names the file."""


def load(path, *, backend=None, dtype=None):
    """The network saved at ``path``, built on ``backend`` (default: the current one) in ``dtype``.

    ``dtype`` defaults to the dtype the network was saved in.
    """
    return load_checkpoint(path, backend=backend, dtype=dtype).net


def load_checkpoint(path, *, backend=None, dtype=None) -> Checkpoint:
    """Everything saved at ``path``: network, optimizer (rebuilt with its state), history, extra, epoch.

    The whole checkpoint is read and checked before anything is returned; a truncated, tampered or
    inconsistent file raises :class:`CheckpointError` naming it.
    """
    path = os.fspath(path)
    if backend is None:
        backend = current().backend
    backend_name = backend if isinstance(backend, str) else backend.name
    load_backend(backend_name)  # an unknown or unavailable backend is the caller's error, not the file's
    dtype = resolve_dtype(dtype) if dtype is not None else None
    try:
        header, arrays = _read(path)
        return _assemble(header, arrays, backend_name, dtype)
    except _Invalid as error:
        raise CheckpointError(f"Cannot load checkpoint {path}: {error}.") from None


def load_into(net, path) -> Checkpoint:
    """Fill the existing ``net`` with the parameters saved at ``path`` (the same architecture) and
    return everything else saved there, with ``net`` as its network; ``net`` is untouched when the
    file or the architecture does not fit (:class:`CheckpointError`). This is how ``train`` resumes."""
    path = os.fspath(path)
    try:
        header, arrays = _read(path)
        return _assemble(header, arrays, net=net)
    except _Invalid as error:
        raise CheckpointError(f"Cannot resume from checkpoint {path}: {error}.") from None


def _read(path):
    """The header and every array of the archive, read eagerly (so damage shows up here)."""
    with open(path, "rb") as stream:  # never let numpy guess: anything else is tried as a pickle
        signature = stream.read(6)
    if signature == b"\x93NUMPY":
        raise _Invalid("it holds a single array, not a fastprop checkpoint archive")
    if not signature.startswith(b"PK"):
        raise _Invalid(
            "it is not a .npz archive (no zip signature); it may be empty, truncated or not a checkpoint"
        )
    try:
        archive = numpy.load(path, allow_pickle=False)
    except Exception as error:
        raise _Invalid(
            f"it is not a readable .npz archive ({error}); it may be truncated or not a checkpoint"
        ) from None
    try:
        with archive:
            for info in archive.zip.infolist():
                _check_entry(archive.zip, info)
            arrays = {key: archive[key] for key in archive.files}
    except _Invalid:
        raise
    except ValueError as error:
        if "pickle" in str(error):
            raise _Invalid("it holds an object array, which needs pickle and is refused") from None
        raise _Invalid(f"an array in it cannot be read ({error}); the file is damaged") from None
    except Exception as error:
        raise _Invalid(f"an array in it cannot be read ({error}); the file is damaged") from None
    raw = arrays.pop(HEADER, None)
    if raw is None or raw.dtype != numpy.uint8 or raw.ndim != 1:
        raise _Invalid(f"it has no '{HEADER}' entry, so it is not a fastprop checkpoint")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _Invalid(f"its header is not valid JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _Invalid("its header does not describe a fastprop checkpoint")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Invalid(f"its header has format version {version!r}, expected a positive integer")
    if version > FORMAT_VERSION:
        raise _Invalid(
            f"it was written in checkpoint format {version} by a newer fastprop, and this one reads "
            f"format {FORMAT_VERSION} at most; upgrade fastprop to load it"
        )
    return header, arrays


def _check_entry(archive, info):
    """Refuse an entry before numpy allocates for it: compressed (a zip bomb?) or claiming more data
    than it holds (numpy would allocate the claimed size first)."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise _Invalid(f"its entry '{info.filename}' is compressed, which fastprop checkpoints never are")
    with archive.open(info) as member:
        version = numpy.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise _Invalid(f"its entry '{info.filename}' uses .npy format {version}, which save never writes")
        read_header = getattr(numpy.lib.format, f"read_array_header_{version[0]}_0")
        shape, _, dtype = read_header(member)
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise _Invalid(f"its entry '{info.filename}' claims more data than it holds; the file is damaged")


def _assemble(header, arrays, backend_name=None, dtype=None, net=None) -> Checkpoint:
    """Build the network (or, given ``net``, check that it has the saved architecture and fill it)
    and everything saved beside it; nothing is changed before the whole file has been checked."""
    try:
        used = set()
        if net is None:
            if dtype is None:
                dtype = resolve_dtype(header["dtype"]) if header["dtype"] is not None else current().dtype
            with use_backend(backend_name, dtype):
                net = _build(header["model"], arrays, used, "model")
            net.train(_check(header["training"], bool, "training flag"))
            fill = []
        else:
            fill = _matching(header["model"], net, arrays, used, "model")
        optimizer, state = None, None
        if header["optimizer"] is not None:
            state = _optimizer_state(header["optimizer"], arrays, used, net)
            optimizer = from_state_dict(state)
        history = History.from_dict(header["history"]) if header["history"] is not None else None
        epoch = header["epoch"]
        if epoch is not None:
            _check(epoch, int, "epoch")
        loop = None if header.get("loop") is None else LoopState._read(header["loop"], arrays, used)
    except _Invalid:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as error:
        raise _Invalid(f"its header is inconsistent ({type(error).__name__}: {error})") from None
    unused = sorted(set(arrays) - used)
    if unused:
        raise _Invalid(f"it holds arrays its header does not describe ({', '.join(unused[:5])})")
    for layer, mine, array in fill:  # everything checked: now the existing network takes the values
        mine[...] = layer.backend.asarray(array, dtype=mine.dtype)
    return Checkpoint(net, optimizer, state, history, header["extra"], epoch, header["version"], loop)


def _as_stored(value):
    """A constructor argument as the JSON header holds it (tuples become lists)."""
    return json.loads(json.dumps(value))


def _as_given(value):
    """A constructor argument read from the JSON header, with its lists back as the tuples the
    layers were given (``Reshape((1, 28, 28))``, ``Conv2D(..., kernel_size=(3, 3))``)."""
    return tuple(_as_given(item) for item in value) if isinstance(value, list) else value


def _node(node, arrays, used, where):
    """``(class, arguments, host arrays by parameter name, host arrays by buffer name, child nodes)`` of
    a checked header node."""
    kind = _check(node, dict, f"{where} entry").get("type")
    if kind not in CHECKPOINT_LAYERS:
        raise _Invalid(
            f"its {where} is of unknown layer type {kind!r}; checkpoints hold {', '.join(CHECKPOINT_LAYERS)}"
        )
    cls = CHECKPOINT_LAYERS[kind]
    arguments = {name: _as_given(value)
                 for name, value in _check(node["arguments"], dict, f"{where} arguments").items()}
    if set(arguments) != set(cls.checkpoint_arguments):
        raise _Invalid(
            f"its {where} ({kind}) has arguments {sorted(arguments)}, "
            f"expected {sorted(cls.checkpoint_arguments)}"
        )
    try:
        shapes = cls.parameter_shapes(**arguments)
    except (TypeError, ValueError) as error:
        raise _Invalid(f"its {where} ({kind}) has arguments the layer rejects ({error})") from None
    parameters = {_RENAMED.get(name, name): entry
                  for name, entry in _check(node["parameters"], dict, f"{where} parameters").items()}
    if set(parameters) != set(shapes):
        raise _Invalid(f"its {where} ({kind}) has parameters {sorted(parameters)}, expected {sorted(shapes)}")
    host = {name: _array(entry, arrays, used, f"{where}.{name}", tuple(shapes[name]))
            for name, entry in parameters.items()}
    buffer_shapes = cls.buffer_shapes(**arguments)
    buffers = _check(node.get("buffers", {}), dict, f"{where} buffers")
    if set(buffers) != set(buffer_shapes):
        raise _Invalid(
            f"its {where} ({kind}) has buffers {sorted(buffers)}, expected {sorted(buffer_shapes)}")
    host_buffers = {name: _array(entry, arrays, used, f"{where}.{name}", tuple(buffer_shapes[name]))
                    for name, entry in buffers.items()}
    children = _check(node.get("layers", []), list, f"{where} layers")
    return cls, arguments, host, host_buffers, children


def _build(node, arrays, used, where):
    """A new layer (and its children) from a header node, on the current backend."""
    cls, arguments, host, buffers, children = _node(node, arrays, used, where)
    layers = [_build(child, arrays, used, f"{where}.{i}") for i, child in enumerate(children)]
    try:
        layer = cls.restored(arguments, host, layers)
    except ValueError as error:
        raise _Invalid(f"its {where} ({cls.__name__}) has arguments the layer rejects ({error})") from None
    for name, array in buffers.items():
        mine = getattr(layer, name)
        mine[...] = layer.backend.asarray(array, dtype=mine.dtype)
    return layer


def _matching(node, layer, arrays, used, where):
    """``[(layer, array of the layer, host array)]`` to fill ``layer`` with (parameter values and
    buffers), once the header node is checked to describe a layer of the same class, arguments and
    children."""
    cls, arguments, host, buffers, children = _node(node, arrays, used, where)
    if type(layer) is not cls or any(_as_stored(getattr(layer, name, None)) != _as_stored(value)
                                     for name, value in arguments.items()):
        mine = {name: getattr(layer, name, None) for name in arguments}
        raise _Invalid(
            f"its {where} is a {cls.__name__} with {arguments}, but the network being trained has "
            f"{layer!r} with {mine} there; use another checkpoint path"
        )
    mine = layer.children()
    if len(mine) != len(children):
        raise _Invalid(
            f"its {where} holds {len(children)} layers, but the network being trained holds {len(mine)} "
            "there; use another checkpoint path"
        )
    fill = [(layer, parameter.value, host[parameter.name]) for parameter in layer.own_parameters()]
    fill += [(layer, getattr(layer, name), array) for name, array in buffers.items()]
    for i, (child, child_node) in enumerate(zip(mine, children)):
        fill += _matching(child_node, child, arrays, used, f"{where}.{i}")
    return fill


def _optimizer_state(node, arrays, used, net):
    parameters = net.parameters()
    slots = _check(node["parameters"], list, "optimizer parameters")
    if len(slots) > len(parameters):
        raise _Invalid(
            f"its optimizer holds state for {len(slots)} parameters but the network has {len(parameters)}"
        )
    entries = []
    for index, (slot, parameter) in enumerate(zip(slots, parameters)):
        shape = tuple(parameter.value.shape)
        slot = {**slot, "name": _RENAMED.get(slot["name"], slot["name"])}
        if slot["name"] != parameter.name or tuple(slot["shape"]) != shape:
            raise _Invalid(
                f"its optimizer state {index} is for '{slot['name']}' of shape {tuple(slot['shape'])}, "
                f"but the network's parameter {index} is '{parameter.name}' of shape {shape}"
            )
        state_arrays = {key: _array(entry, arrays, used, f"optimizer.{index}.{key}", shape)
                        for key, entry in _check(slot["arrays"], dict, "optimizer arrays").items()}
        entries.append({"name": slot["name"], "shape": shape, "step": slot["step"], "arrays": state_arrays})
    return {"type": node["type"], "hyperparameters": node["hyperparameters"], "parameters": entries}


def _array(entry, arrays, used, where, expected_shape):
    key = _check(entry, dict, f"{where} entry")["key"]
    if key not in arrays:
        raise _Invalid(f"it lacks the array '{key}' that its header lists")
    if key in used:
        raise _Invalid(f"its header uses the array '{key}' twice")
    array = arrays[key]
    if array.dtype.kind != "f" or array.dtype.name != entry["dtype"]:
        raise _Invalid(f"its array '{key}' has dtype {array.dtype}, but its header says {entry['dtype']}")
    if array.shape != tuple(entry["shape"]):
        raise _Invalid(
            f"its array '{key}' has shape {array.shape}, but its header says {tuple(entry['shape'])}"
        )
    if array.shape != expected_shape:
        raise _Invalid(f"its array '{key}' has shape {array.shape}, but {where} needs {expected_shape}")
    used.add(key)
    return array


def _check(value, kind, what):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Invalid(f"its {what} is {value!r}, expected a {kind.__name__}")
    return value
