"""Learning curves of a :class:`~fastprop.History` as a PNG (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from .files import write_atomically
from .history import History


def require_matplotlib():
    """Import matplotlib's figure and Agg canvas, or fail with one sentence saying what to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "drawing charts needs matplotlib; install the plot extra: pip install 'fastprop[plot]'"
        ) from None
    return Figure, FigureCanvasAgg


def learning_curves(history, path, *, title=None):
    """Draw training cost and validation accuracy per epoch, side by side, to the PNG ``path``.

    ``history`` is a :class:`~fastprop.History` (or its ``to_dict()``). The figure is rendered with
    matplotlib's Agg canvas directly, so the caller's pyplot backend and open figures are untouched.
    Returns ``path``.
    """
    Figure, FigureCanvasAgg = require_matplotlib()
    if isinstance(history, dict):
        history = History.from_dict(history)
    cost, accuracy = list(history.cost), list(history.accuracy)
    if not cost or len(cost) != len(accuracy):
        raise ValueError(
            f"learning_curves needs at least one epoch with both a cost and an accuracy, got "
            f"{len(cost)} costs and {len(accuracy)} accuracies."
        )
    epochs = range(1, len(cost) + 1)
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    cost_axes, accuracy_axes = figure.subplots(1, 2)
    cost_axes.plot(epochs, cost, marker="o", markersize=3)
    cost_axes.set(xlabel="epoch", ylabel="mean cost per element", title="training cost")
    accuracy_axes.plot(epochs, accuracy, marker="o", markersize=3, color="tab:green")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    for axes in (cost_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=120), "plot")
    return path
