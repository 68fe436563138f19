"""Notebooks are documentation that must keep working: execute each one top to bottom."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
#: Notebooks that must exist (a deleted or renamed notebook would otherwise just drop out of the run).
#: quickstart: ingest -> precompute -> backtest -> report -> explain (~15 s);
#: research: tiny training -> walk-forward evaluation of the agents and of the strategy (~35 s).
REQUIRED = {"quickstart.ipynb", "research.ipynb"}


def test_required_notebooks_exist() -> None:
    assert REQUIRED <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: Path, sample_catalog: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
