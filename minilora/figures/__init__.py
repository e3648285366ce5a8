"""Every figure of the blog post and of the notebooks, one function per figure.

A figure function takes no arguments, draws with fixed seeds and returns a
:class:`matplotlib.figure.Figure`; :func:`register` adds it to :data:`REGISTRY` under its
file name (``float_formats`` is written as ``float_formats.png``). Figures are written with
the Agg renderer (the CLI selects the Agg backend; in a notebook they display inline) and
without timestamps or version metadata, so regenerating one changes no bytes
(``python -m minilora figures``).

Chapters live in submodules (``formats``, ``quant``, ``training``, ``lora``, ``qlora``, ``methods``); each
registers its figures on import. The library never imports this package: it sits on top.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

#: chapter submodules that register figures, in reading order
CHAPTERS = ("lora", "training", "formats", "quant", "qlora", "methods")

#: matplotlib settings shared by every figure (fixed so output is reproducible)
RC = {
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "minilora",
}


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: its name, drawing function and (optionally) the blog's file name."""

    name: str
    func: Callable[[], Figure]
    blog_name: str | None = None
    description: str = ""


REGISTRY: dict[str, FigureSpec] = {}


def register(name: str, blog_name: str | None = None) -> Callable[[Callable[[], Figure]], Callable[[], Figure]]:
    """Decorator: register a figure function under ``name`` (and the blog's file name, if any)."""

    def deco(func: Callable[[], Figure]) -> Callable[[], Figure]:
        if name in REGISTRY and REGISTRY[name].func is not func:
            raise ValueError(f"figure name {name!r} is registered twice")
        doc = (func.__doc__ or "").strip().splitlines()
        REGISTRY[name] = FigureSpec(name, func, blog_name, doc[0] if doc else "")
        return func

    return deco


def load_all() -> dict[str, FigureSpec]:
    """Import every chapter so that all figures are registered; return the registry."""
    for chapter in CHAPTERS:
        importlib.import_module(f"{__name__}.{chapter}")
    return REGISTRY


def names() -> list[str]:
    """Names of all figures, in reading order."""
    return list(load_all())


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (PNG or JPEG by suffix) without timestamps or version metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".png":
        fig.savefig(path, format="png", metadata={"Software": None})
    elif suffix in (".jpg", ".jpeg"):
        fig.savefig(path, format="jpeg", pil_kwargs={"quality": 92, "optimize": False})
    else:
        raise ValueError(f"figure path must end in .png, .jpg or .jpeg, got {path.name!r}")
    return path


def draw(name: str) -> Figure:
    """Draw figure ``name`` with the shared style and return it (for notebooks: it displays inline)."""
    registry = load_all()
    if name not in registry:
        raise ValueError(f"unknown figure {name!r}; valid names: {', '.join(registry)}")
    # Create (and drop) one figure outside the style context first: the first figure made in a Jupyter
    # kernel sets up the inline backend's rcParams, and rc_context would undo that setup on exit,
    # silently stopping every later plot of the notebook from being shown.
    plt.close(plt.figure())
    with plt.rc_context(RC):
        return registry[name].func()


def render(name: str, out_dir: str | os.PathLike = "figures", blog_names: bool = False) -> list[Path]:
    """Draw figure ``name`` and write it to ``out_dir``; return the written paths.

    With ``blog_names=True`` a figure that stands for one of the blog's pictures is also written
    under the blog's file name and format (``量化.jpeg``, ``余弦退火.png``, ...).
    """
    spec = load_all().get(name)
    fig = draw(name)
    with plt.rc_context(RC):
        try:
            paths = [save(fig, Path(out_dir) / f"{name}.png")]
            if blog_names and spec.blog_name:
                paths.append(save(fig, Path(out_dir) / spec.blog_name))
        finally:
            plt.close(fig)
    return paths


MANIFEST = "MANIFEST.json"


def versions() -> dict[str, str]:
    """What determines a figure's bytes besides the code: library versions and the machine.

    A different matplotlib or NumPy may draw or compute differently, and figures that train a model
    depend on the BLAS library's summation order, which changes with the number of threads it uses
    (by default one per core) and with the processor.
    """
    import platform

    import numpy

    return {"matplotlib": matplotlib.__version__, "numpy": numpy.__version__,
            "machine": platform.machine(), "cpus": str(os.cpu_count()),
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "default"))}


def update_manifest(out_dir: str | os.PathLike, paths: Iterable[Path]) -> Path:
    """Record the SHA-256 of each written figure and the library versions in ``out_dir/MANIFEST.json``.

    ``tests/test_figures.py`` regenerates every figure and compares it with the committed bytes when
    the installed versions equal the recorded ones (and skips, saying why, when they differ).
    """
    path = Path(out_dir) / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if manifest.get("versions") != versions():
        manifest = {"versions": versions(), "sha256": {}}
    for p in paths:
        manifest["sha256"][p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    manifest["sha256"] = dict(sorted(manifest["sha256"].items()))
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def render_many(selected: Iterable[str] | None = None, out_dir: str | os.PathLike = "figures",
                blog_names: bool = False) -> list[Path]:
    """Render the named figures (all when ``selected`` is empty or None)."""
    registry = load_all()
    selected = list(selected or registry)
    unknown = [n for n in selected if n not in registry]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(registry)}")
    paths: list[Path] = []
    for n in selected:
        paths += render(n, out_dir, blog_names)
    update_manifest(out_dir, paths)
    return paths
