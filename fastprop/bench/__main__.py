"""``python -m fastprop.bench``: ``fastprop bench``'s options, or the fresh process of a cold start."""

import argparse
import json
import sys

from . import __doc__ as summary
from .cli import add_arguments, command
from .timing import cold_start

if sys.argv[1:2] == ["--cold-start"]:  # the fresh process that cold_start() starts
    name, dtype, workload, rows, source = sys.argv[2:7]
    fast = "--step-loop" not in sys.argv[7:]
    print(json.dumps({**cold_start(name, dtype, workload, int(rows), source, fresh_process=False, fast=fast),
                      "fresh_process": True}))
else:
    arguments = argparse.ArgumentParser(prog="python -m fastprop.bench", description=summary.split("\n")[0])
    add_arguments(arguments)
    sys.exit(command(arguments.parse_args()))
