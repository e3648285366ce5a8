"""Build the committed notebooks from their plain-text sources (jupytext's percent format) and execute them.

Each notebook is written as ``notebooks/src/NN_topic.py`` and its worked solutions as
``notebooks/solutions/NN_topic_solutions.py``, in jupytext's "percent" format::

    # %% [markdown]
    # # A title
    # Some prose.

    # %%
    import minilora
    ...

``python tools/nbbuild.py [NAME ...]`` reads a source with jupytext, refuses one that is not in jupytext's
canonical form (a markdown line that lost its ``# `` would otherwise slip through as stray text), and
writes ``notebooks/NAME.ipynb`` (solutions: ``notebooks/solutions/NAME.ipynb``), executed in a fresh
kernel whose working directory is the notebook's folder, so the committed notebook shows its outputs.
``tests/test_notebooks.py`` checks that every ``.ipynb`` matches its source and executes it again.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
SOLUTIONS = ROOT / "notebooks" / "solutions"
FORMAT = "py:percent"


def sources() -> list[Path]:
    """Every notebook source: the chapters (``notebooks/src``), then the solutions (``notebooks/solutions``)."""
    return sorted(SRC.glob("*.py")) + sorted(SOLUTIONS.glob("*.py"))


def source_path(name: str) -> Path:
    """The source of notebook ``name`` (a chapter in ``notebooks/src`` or a solution in ``notebooks/solutions``)."""
    for folder in (SRC, SOLUTIONS):
        path = folder / f"{name}.py"
        if path.exists():
            return path
    known = ", ".join(p.stem for p in sources())
    raise FileNotFoundError(f"no notebook source named {name!r} in {SRC} or {SOLUTIONS}; known: {known}")


def notebook_path(source: Path) -> Path:
    """Where the built notebook of ``source`` lives: ``notebooks/`` for chapters, beside it for solutions."""
    return (OUT if source.parent == SRC else source.parent) / f"{source.stem}.ipynb"


def check_source(text: str, name: str = "source") -> None:
    """Raise ValueError unless ``text`` is in jupytext's canonical percent format (it round-trips unchanged).

    This catches what a lenient reader lets through, e.g. a markdown line without its leading ``# ``.
    """
    back = jupytext.writes(jupytext.reads(text, fmt=FORMAT), fmt=FORMAT)
    if back != text:
        diff = "\n".join(list(difflib.unified_diff(text.splitlines(), back.splitlines(), "as written",
                                                   "as jupytext writes it", lineterm="", n=1))[:20])
        raise ValueError(f"{name} is not in jupytext's canonical percent format:\n{diff}")


def to_notebook(text: str, name: str = "source") -> nbformat.NotebookNode:
    """The notebook (unexecuted) of a percent-format source, with stable cell ids and minimal metadata."""
    check_source(text, name)
    nb = jupytext.reads(text, fmt=FORMAT)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    # stable cell ids so that rebuilding an unchanged source changes nothing but outputs
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        cell.metadata = {}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel (working directory ``cwd``); raises on the first failing cell."""
    from nbclient import NotebookClient

    # the kernel imports minilora from this checkout, whether or not (and wherever) it is installed
    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)

    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    for cell in nb.cells:  # drop execution timestamps: a rebuild that changes no output changes no byte
        cell.metadata.pop("execution", None)
    return nb


def build(name: str, run: bool = True) -> Path:
    """Write (and by default execute) the notebook of source ``name``; returns its path."""
    src = source_path(name)
    nb = to_notebook(src.read_text(encoding="utf-8"), str(src.relative_to(ROOT)))
    path = notebook_path(src)
    if run:
        execute(nb, path.parent)
    nbformat.write(nb, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names without suffix (default: all, solutions included)")
    parser.add_argument("--no-run", action="store_true", help="write without executing")
    args = parser.parse_args(argv)
    names = args.names or [p.stem for p in sources()]
    for name in names:
        t0 = time.perf_counter()
        path = build(name, run=not args.no_run)
        print(f"{path.relative_to(ROOT)}  ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
