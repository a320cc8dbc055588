"""The notebooks: stored without outputs, and executed top to bottom (kernel ``python3``) against a tiny run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from helpers import tiny_sweep
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("quickstart.ipynb", "results_analysis.ipynb")


@pytest.fixture(scope="module")
def run_dir(synthetic_classic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run logged to TensorBoard with a checkpoint (shared with test_report in one session)."""
    return tiny_sweep(synthetic_classic, tmp_path_factory.getbasetemp() / "report_runs") / "0"


def execute(name: str, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run a notebook from ``notebooks/`` in a fresh kernel whose environment holds ``env``; raises on a cell error."""
    for key, value in {**env, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)  # the kernel is a child process: it inherits them
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, mime: str) -> list[str]:
    """Every output of ``mime`` type (``text/plain`` includes printed streams)."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if mime == "text/plain" and output.get("output_type") == "stream":
                found.append(output["text"])
            elif mime in output.get("data", {}):
                found.append(output["data"][mime])
    return found


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: commit it with outputs cleared"


@pytest.mark.slow
def test_results_analysis_notebook_runs(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = tmp_path / "report"
    notebook = execute(
        "results_analysis.ipynb",
        {"MAMMODET_RUN_DIR": str(run_dir), "MAMMODET_REPORT_DIR": str(report)},
        tmp_path,
        monkeypatch,
    )
    assert (report / "analysis_report.md").is_file() and (report / "project_summary.csv").is_file()
    markdown = "\n".join(outputs(notebook, "text/markdown"))
    for title in ("Executive summary", "Findings", "Training", "Data", "Efficiency", "Evaluation"):
        assert f"## {title}" in markdown
    assert len(outputs(notebook, "image/png")) >= 8  # the report's 7 figures and one drawn in the notebook


@pytest.mark.slow
def test_quickstart_notebook_runs(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    notebook = execute("quickstart.ipynb", {"MAMMODET_CHECKPOINT": str(checkpoint)}, tmp_path, monkeypatch)
    text = "\n".join(outputs(notebook, "text/plain"))
    assert "frcnn_small" in text and "detections," in text and "synthetic.dcm" in text
    assert len(outputs(notebook, "image/png")) == 1
