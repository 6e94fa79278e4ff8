"""examples/backpropagation_lab.ipynb runs top to bottom on a real Jupyter kernel and learns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOK = EXAMPLES / "backpropagation_lab.ipynb"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
COST_LINE = re.compile(r"^cost=(\d+\.\d{6}), accuracy=(\d\.\d{6})$", re.MULTILINE)
EPOCHS = 2


def stdout_of(cell) -> str:
    """Everything a code cell printed to stdout."""
    return "".join(out.get("text", "") for out in cell.get("outputs", ())
                   if out.get("output_type") == "stream" and out.get("name") == "stdout")


def tagged(nb, tag):
    """The one code cell carrying ``tag`` in its metadata."""
    cells = [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", ())]
    assert len(cells) == 1, f"expected one cell tagged {tag!r} in {NOTEBOOK.name}, found {len(cells)}"
    return cells[0]


def epoch_lines(cell):
    """The (cost, accuracy) pairs a cell printed, one per epoch."""
    return [(float(cost), float(accuracy)) for cost, accuracy in COST_LINE.findall(stdout_of(cell))]


@pytest.fixture(scope="module")
def executed_notebook():
    """The notebook after a run on the python3 kernel, with FASTPROP_EXAMPLE_EPOCHS set small."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed: pip install fastprop[test]")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed: pip install fastprop[test]")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed: pip install fastprop[test]")
    if not FASHION_MNIST.is_dir():
        pytest.skip(f"the notebook trains on the real Fashion-MNIST, which is not in {FASHION_MNIST}; "
                    "apt-get install dataset-fashion-mnist installs it")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as monkeypatch:  # the kernel inherits this process's environment
        monkeypatch.setenv("FASTPROP_EXAMPLE_EPOCHS", str(EPOCHS))
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(EXAMPLES)}})
        client.execute()  # raises CellExecutionError, naming the cell, when any cell raises
    return nb


def test_the_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed: pip install fastprop[test]")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_every_cell_runs_and_no_cell_reports_an_error(executed_notebook):
    for cell in executed_notebook.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None
            assert not [out for out in cell.outputs if out.output_type == "error"]


@pytest.mark.slow
def test_task_4_prints_the_labs_line_once_per_epoch(executed_notebook):
    lines = epoch_lines(tagged(executed_notebook, "task4"))
    assert len(lines) == EPOCHS
    assert all(cost > 0 and 0.1 < accuracy <= 1 for cost, accuracy in lines)  # better than guessing


@pytest.mark.slow
def test_train_prints_the_same_line_for_task_6e_and_task_5(executed_notebook):
    for tag in ("task6e", "task5"):
        assert len(epoch_lines(tagged(executed_notebook, tag))) == EPOCHS, tag


@pytest.mark.slow
def test_the_better_network_of_task_5_beats_the_labs_network(executed_notebook):
    lab_accuracy = epoch_lines(tagged(executed_notebook, "task4"))[-1][1]
    better_accuracy = epoch_lines(tagged(executed_notebook, "task5"))[-1][1]
    assert better_accuracy > max(lab_accuracy, 0.7), (lab_accuracy, better_accuracy)


@pytest.mark.slow
def test_a_students_own_layer_trains_inside_a_fastprop_network(executed_notebook):
    lines = epoch_lines(tagged(executed_notebook, "student_layer"))
    assert len(lines) == EPOCHS and lines[-1][1] > 0.1
