"""The notebook's progress bars."""

from __future__ import annotations

import importlib.util
import sys





def progress_bar(**options):
    """A tqdm bar: a notebook widget inside Jupyter when ipywidgets is installed, text otherwise.

    Bars stay on screen when done (``leave=True``), as in the notebook's recorded output. A process
    whose standard error is closed (started without a terminal, with ``2>&-``) gets no bars.
    """
    options.setdefault("leave", True)
    stream = options.get("file", sys.stderr)
    if stream is None or getattr(stream, "closed", False):
        options["disable"] = True
    return _bar_class()(**options)


def _bar_class():
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if (shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
            and importlib.util.find_spec("ipywidgets") is not None):
        from tqdm.notebook import tqdm

        return tqdm
    from tqdm.std import tqdm

    return tqdm
