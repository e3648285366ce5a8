"""Every notebook (chapters and worked solutions) matches its source, is lint-clean, and runs in a fresh kernel.

Chapters: sources ``notebooks/src/NN_topic.py``, notebooks ``notebooks/NN_topic.ipynb``; solutions: both in
``notebooks/solutions/``. ``python tools/nbbuild.py NAME`` rebuilds one.
"""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbbuild  # noqa: E402

SOURCES = nbbuild.sources()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))


def test_every_source_has_a_notebook():
    assert {nbbuild.notebook_path(p) for p in SOURCES} == set(NOTEBOOKS)


def test_every_chapter_has_solutions():
    chapters = {p.stem for p in (ROOT / "notebooks" / "src").glob("*.py")}
    solved = {p.stem.removesuffix("_solutions") for p in (ROOT / "notebooks" / "solutions").glob("*.py")}
    assert solved <= chapters, f"solutions without a chapter: {sorted(solved - chapters)}"
    # chapters whose solutions are still to be written (owned elsewhere); shrink this set, never grow it
    pending: set[str] = set()
    assert chapters - solved <= pending, f"chapters without worked solutions: {sorted(chapters - solved - pending)}"


def test_check_source_refuses_an_uncommented_markdown_line():
    good = "# %% [markdown]\n# # Title\n# prose\n\n# %%\nx = 1\n"
    nbbuild.check_source(good)
    with pytest.raises(ValueError, match="canonical percent format"):
        nbbuild.check_source(good.replace("# prose", "prose"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_source_is_canonical_percent_format(path):
    nbbuild.check_source(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_source_is_lint_clean(path):
    ruff = pytest.importorskip("ruff.__main__", reason="ruff is in the test extra")
    result = subprocess.run([ruff.find_ruff_bin(), "check", "--quiet", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_source(path):
    committed = nbformat.read(path, as_version=4)
    src = nbbuild.source_path(path.stem)
    fresh = nbbuild.to_notebook(src.read_text(encoding="utf-8"), str(src.relative_to(ROOT)))
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in fresh.cells], (
        f"{path.name} is out of date: run python tools/nbbuild.py {path.stem}"
    )
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name} is committed unexecuted"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} is committed with an error output"
    warnings = [o.text for c in code for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not warnings, f"{path.name} is committed with output on stderr (a warning?): {warnings[0][:300]}"


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbbuild.execute(nb, path.parent)  # raises CellExecutionError on the first failing cell
    stderr = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{path.name} wrote to stderr (a warning?): {stderr[0][:300]}"
