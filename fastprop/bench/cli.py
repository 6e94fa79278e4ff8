"""The options of ``fastprop bench`` and the command that runs it."""

from __future__ import annotations

import argparse
import sys

from ..files import write_text_atomically
from .data import SOURCES
from .report import markdown_table
from .timing import run_bench
from .workloads import WORKLOADS


def _names(text):
    return [name for name in text.split(",") if name]


def _workloads(text):
    names = _names(text)
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown)}; choose from {', '.join(sorted(WORKLOADS))}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastprop bench``."""
    parser.add_argument("--backends", "--backend", type=_names, action="extend", dest="backends",
                        metavar="NAMES",
                        help="backends to time, comma-separated or repeated (default: every registered one); "
                             "each also runs the notebook's step loop, <backend>-steps, which names it alone")
    parser.add_argument("--workloads", "--workload", type=_workloads, action="extend", dest="workloads",
                        metavar="W1,W2,CNN",
                        help="W1: 784-10 sigmoid + MSE, SGD; W2: 784-512-512-10 ReLU + softmax "
                             "cross-entropy, SGD; CNN: two convolutions + 3136-128-10, softmax "
                             "cross-entropy, Adam (default: all)")
    parser.add_argument("--dtype", action="append", dest="dtypes", choices=("float32", "float64"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up (median)")
    own = ", ".join(f"{key} {workload.rows}" for key, workload in WORKLOADS.items())
    parser.add_argument("--rows", type=int,
                        help=f"training rows per epoch of every workload (default: each one's own, {own})")
    parser.add_argument("--data", choices=SOURCES, default="auto",
                        help="auto: Fashion-MNIST when installed locally, else seeded synthetic pixels; "
                             "continuous: seeded uniform floats, not 8-bit pixels")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the full report here")
    parser.add_argument("--markdown", dest="markdown_path", metavar="PATH",
                        help="write the results as a markdown table (the README's Performance table)")
    parser.add_argument("--plot", dest="plot_path", metavar="PNG", help="draw a bar chart (needs matplotlib)")
    parser.add_argument("--no-torch", dest="torch", action="store_false", help="leave out the PyTorch peer")
    parser.add_argument("--no-steps", dest="steps", action="store_false",
                        help="leave out the notebook's hand-written step loop on each backend "
                             "(<backend>-steps)")
    parser.add_argument("--in-process-cold-start", dest="fresh_process", action="store_false",
                        help="measure cold start in this process instead of a fresh one")


def command(args) -> int:
    """Run ``fastprop bench`` with parsed ``args``; return the exit status."""
    try:
        report = run_bench(args.backends, tuple(args.workloads or WORKLOADS), args.epochs, args.json_path,
                  args.plot_path, args.rows, tuple(args.dtypes or ("float32",)), args.torch, sys.stdout,
                  data=args.data, fresh_process=args.fresh_process, steps=args.steps)
    except (ImportError, RuntimeError, ValueError) as error:
        print(f"fastprop bench: {error}", file=sys.stderr)
        return 2
    if args.markdown_path is not None:
        write_text_atomically(args.markdown_path, markdown_table(report) + "\n", "markdown table")
    return 0
