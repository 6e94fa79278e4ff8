"""``python -m fastprop`` runs the ``fastprop`` command."""

import sys

from .cli import main

sys.exit(main())
