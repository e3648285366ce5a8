"""Every notebook matches its source in notebooks/src and runs top to bottom in a fresh kernel."""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbbuild  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))


def test_every_source_has_a_notebook():
    assert {p.stem for p in SOURCES} == {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_source(path):
    committed = nbformat.read(path, as_version=4)
    fresh = nbbuild.to_notebook((ROOT / "notebooks" / "src" / f"{path.stem}.py").read_text(encoding="utf-8"))
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in fresh.cells], (
        f"{path.name} is out of date: run python tools/nbbuild.py {path.stem}"
    )
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name} is committed unexecuted"


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbbuild.execute(nb, path.parent)  # raises CellExecutionError on the first failing cell
