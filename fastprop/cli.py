"""The ``fastprop`` command: ``train``, ``backends`` and ``bench``."""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy

from . import backends as _backends
from .datasets import DATASETS
from .models import MODELS, RENAMED_MODELS


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _natural(text):
    """A whole number >= 0 from the command line."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _add_train(commands):
    parser = commands.add_parser(
        "train",
        help="train a model with the notebook's output, then report test accuracy",
        description="Train a model; per-epoch lines as in the notebook, then the test accuracy.",
    )
    parser.add_argument("--backend", default=None,
                        help="backend name, or 'auto' (the default unless FASTPROP_BACKEND is set): "
                             "the fastest one available here, cupy on a GPU, else numba, else numpy")
    parser.add_argument("--model", choices=sorted(MODELS) + sorted(RENAMED_MODELS), default="notebook",
                        help="; ".join(f"{name}: {spec.description}" for name, spec in MODELS.items()))
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--data-dir", default=None, help="folder holding the four IDX files")
    parser.add_argument("--epochs", type=_positive(int), default=None, help="default: the model's")
    parser.add_argument("--batch-size", type=_positive(int), default=None, help="default: the model's")
    parser.add_argument("--learning-rate", type=_positive(float), default=None, help="default: the model's")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds initialisation, shuffling, augmentation and the split")
    parser.add_argument("--augment", type=_natural, default=None, metavar="PIXELS",
                        help="move training images by up to this many pixels (0: off); default: the model's")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="also mirror half the training images left to right (clothing, not digits); "
                             "default: the model's")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None)
    parser.add_argument("--patience", type=_positive(int), default=None,
                        help="stop after this many epochs without a better validation accuracy")
    parser.add_argument("--checkpoint", default=None, help="save after every epoch; resume when it exists")
    parser.add_argument("--plot", default=None, help="draw the learning curves to this PNG (plot extra)")
    parser.add_argument("--history", default=None, help="write the per-epoch history to this .csv or .json")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--distributed", action="store_true",
                        help="train data-parallel over the MPI ranks this was started with "
                             "(mpiexec -n 4 fastprop train --distributed ...; needs the mpi extra)")
    parser.set_defaults(handler=_train)


def _train(args, parser) -> int:
    from .datasets import load_split_and_test
    from .training import train, validate

    if args.model in RENAMED_MODELS:
        print(f"fastprop: --model {args.model} is now called --model {RENAMED_MODELS[args.model]}",
              file=sys.stderr)
    spec = MODELS[RENAMED_MODELS.get(args.model, args.model)]
    from .distributed import Communicator, init

    communicator = init("mpi") if args.distributed else Communicator()
    say = print if communicator.is_root else (lambda *args, **kwargs: None)
    # The cheap choices first: an unknown or unavailable backend is reported before any data is read.
    from_environment = not args.backend and bool(os.environ.get("FASTPROP_BACKEND"))
    backend_name = args.backend or os.environ.get("FASTPROP_BACKEND") or "auto"
    automatic = backend_name == "auto"
    if automatic:
        backend_name = fastest_backend()
    try:
        _backends.load_backend(backend_name)
        dtype = _backends.resolve_dtype(args.dtype or os.environ.get("FASTPROP_DTYPE") or "float32")
    except (_backends.BackendError, _backends.BackendUnavailableError) as error:
        if not from_environment and not os.environ.get("FASTPROP_DTYPE"):
            raise
        raise type(error)(
            f"{error} (FASTPROP_BACKEND={os.environ.get('FASTPROP_BACKEND')!r}, FASTPROP_DTYPE="
            f"{os.environ.get('FASTPROP_DTYPE')!r} in the environment; change or unset them)"
        ) from None
    for option, path in (
        ("--checkpoint", args.checkpoint), ("--history", args.history), ("--plot", args.plot)
    ):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise ValueError(f"{option} {path}: the folder {folder} does not exist; create it first.")
    say(f"backend: {backend_name}, {numpy.dtype(dtype).name}"
        + (" (auto: the fastest available here; choose with --backend)" if automatic else "")
        + (f", {communicator.size} ranks" if communicator.size > 1 else ""), flush=True)
    if args.plot:
        from .plot import require_matplotlib

        require_matplotlib()  # fail now, not after training
    *data, test_images, test_labels = load_split_and_test(args.dataset, args.data_dir, seed=args.seed)
    epochs = args.epochs or spec.epochs
    learning_rate = args.learning_rate or spec.learning_rate
    with _backends.use_backend(backend_name, dtype):
        net = spec.build(rng=args.seed)
        history = train(
            net, spec.cost(), epochs, args.batch_size or spec.batch_size, learning_rate,
            data=data, shuffle=spec.shuffle, seed=args.seed, quiet=args.quiet,
            optimizer=spec.optimizer(learning_rate) if spec.optimizer else None,
            schedule=spec.schedule(epochs) if spec.schedule else None,
            checkpoint=args.checkpoint, patience=args.patience, communicator=communicator,
            augment=_augment(spec.augment, args.augment, args.flip),
        )
        accuracy = validate(net, test_images, test_labels, 10000, communicator=communicator)
    say(
        "training throughput=%.0f samples/s (median over %d epochs, %s backend, %s)"
        % (statistics.median(history.samples_per_second), len(history), backend_name, numpy.dtype(dtype).name)
    )
    if not communicator.is_root:
        return 0
    if args.history:
        (history.to_json if args.history.endswith(".json") else history.to_csv)(args.history)
    if args.plot:
        from .plot import learning_curves

        print(f"learning curves: {learning_curves(history, args.plot)}")
    print("test accuracy=%2.6f" % accuracy)
    return 0


def _augment(default, shift, flip):
    """The model's :class:`Augment` with the command line's ``--augment`` and ``--flip`` applied."""
    from .augment import Augment

    shift = shift if shift is not None else (default.shift if default is not None else 0)
    flip = flip if flip is not None else (default.flip if default is not None else False)
    return Augment(shift, flip) if shift or flip else None


def fastest_backend() -> str:
    """The fastest backend that runs here: ``cupy`` with a GPU, else ``numba``, else ``numpy``."""
    statuses = _backends.available_backends()
    return next(name for name in ("cupy", "numba", "numpy") if name in statuses and statuses[name].available)


def _add_backends(commands):
    parser = commands.add_parser("backends", help="list the backends, whether they run here, and why not")
    parser.add_argument("--no-warmup", action="store_true", help="skip measuring compile time")
    parser.set_defaults(handler=_list_backends)


def _list_backends(args, parser) -> int:
    rows = [("backend", "available", "version", "device", "threads", "first-call compile", "reason")]
    for name, status in _backends.available_backends().items():
        compile_time = "-"
        if status.available and not args.no_warmup:
            compile_time = "%.2f s" % _backends.load_backend(name).warmup(numpy.float32)
        rows.append((
            name, "yes" if status.available else "no", status.version or "-",
            status.device or "-", status.threads or "-", compile_time, status.reason or "",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    from .backends import blas

    try:
        print(f"the numba backend's matrix products: {blas.products().info()}")
    except blas.BlasUnavailableError as error:
        print(f"the numba backend's matrix products: {error}")
        return 1
    return 0


def _add_bench(commands):
    from . import bench

    parser = commands.add_parser("bench", help="throughput of every backend on the W1, W2 and CNN workloads")
    bench.add_arguments(parser)
    parser.set_defaults(handler=lambda args, parser: bench.command(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastprop", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(commands)
    _add_backends(commands)
    _add_bench(commands)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args, parser)
    except (_backends.BackendError, _backends.BackendUnavailableError, ValueError, OSError) as error:
        print(f"fastprop: error: {error}", file=sys.stderr)  # one line, no traceback
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
