"""Build the committed notebooks from their plain-text sources and execute them.

Each notebook is written as ``notebooks/src/NN_topic.py`` in the "percent" format::

    # %% [markdown]
    # # A title
    # Some prose.

    # %%
    import minilora
    ...

and ``python tools/nbbuild.py [NAME ...]`` turns it into ``notebooks/NN_topic.ipynb``, executed
in a fresh kernel (working directory ``notebooks/``) so the committed notebook shows its outputs.
``tests/test_notebooks.py`` checks that every ``.ipynb`` matches its source and executes it again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Split a percent-format source into ``(kind, source)`` pairs, kind "markdown" or "code"."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            cells.append((kind, []))
            continue
        if not cells:
            if line.strip():
                raise ValueError("notebook source must start with a '# %%' cell marker")
            continue
        kind, lines = cells[-1]
        if kind == "markdown":
            if line.startswith("# "):
                line = line[2:]
            elif line.strip() == "#":
                line = ""
        lines.append(line)
    out = []
    for kind, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        out.append((kind, "\n".join(lines)))
    return out


def to_notebook(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in parse_cells(text):
        maker = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(maker(source))
    # stable cell ids so that rebuilding an unchanged source changes nothing but outputs
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    import os

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
    src = SRC / f"{name}.py"
    nb = to_notebook(src.read_text(encoding="utf-8"))
    if run:
        execute(nb, OUT)
    path = OUT / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names without suffix (default: all)")
    parser.add_argument("--no-run", action="store_true", help="write without executing")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem for p in SRC.glob("*.py"))
    for name in names:
        t0 = time.perf_counter()
        path = build(name, run=not args.no_run)
        print(f"{path.relative_to(ROOT)}  ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
