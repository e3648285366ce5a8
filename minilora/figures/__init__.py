"""Every figure of the blog post and of the notebooks, one function per figure.

A figure function takes no arguments, draws with fixed seeds and returns a
:class:`matplotlib.figure.Figure`; :func:`register` adds it to :data:`REGISTRY` under its
file name (``float_formats`` is written as ``float_formats.png``) and, for a figure that stands for one
of the blog's pictures, the blog's file name (``量化.jpeg``). Figures are written with the Agg renderer
(the CLI selects the Agg backend; in a notebook they display inline) and without timestamps or version
metadata.

What determines a figure's bytes (recorded in ``figures/MANIFEST.json``):

* **exact figures** (diagrams, formats, quantization): the code and the drawing libraries only
  (matplotlib with its bundled FreeType, Pillow with zlib and libjpeg, NumPy, SciPy). The same versions
  give the same bytes on every x86-64 machine, so ``python -m minilora figures`` leaves them untouched.
* **trained figures** (``trained=True``: ``lora_init``, ``lora_rank``): also the float32 round-off of the
  training runs they plot, which depends on the BLAS kernel OpenBLAS picks for the processor and on its
  thread count. The CLI pins BLAS to one thread; a fresh render that is within
  :data:`minilora.figures.compare.TOLERANCE` of the committed file (pixels compared, as pytest-mpl does)
  leaves the committed file untouched, so a fresh clone on another machine stays clean; a real change
  exceeds the tolerance and is written.

Chapters live in submodules (``formats``, ``quant``, ``training``, ``lora``, ``qlora``, ``methods``); each
registers its figures on import. The library never imports this package: it sits on top.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from minilora.figures.compare import TOLERANCE, PixelDifference, pixel_difference

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
    """A registered figure.

    Attributes
    ----------
    name : the figure's name, also its file name (``name.png``).
    func : the drawing function (no arguments, returns a Figure).
    blog_name : the file name of the blog picture it stands for (``量化.jpeg``), or None.
    description : the first line of the function's docstring.
    trained : the figure plots float32 training runs, so its pixels carry BLAS round-off and are compared
        with :data:`~minilora.figures.compare.TOLERANCE` instead of byte for byte.
    """

    name: str
    func: Callable[[], Figure]
    blog_name: str | None = None
    description: str = ""
    trained: bool = False

    @property
    def files(self) -> list[str]:
        """The file names the CLI writes: ``name.png`` and, if different, the blog's file name."""
        files = [f"{self.name}.png"]
        if self.blog_name and self.blog_name not in files:
            files.append(self.blog_name)
        return files


REGISTRY: dict[str, FigureSpec] = {}


def register(
    name: str, blog_name: str | None = None, trained: bool = False
) -> Callable[[Callable[[], Figure]], Callable[[], Figure]]:
    """Decorator: register a figure function under ``name`` (see :class:`FigureSpec` for the rest)."""

    def deco(func: Callable[[], Figure]) -> Callable[[], Figure]:
        if name in REGISTRY and REGISTRY[name].func is not func:
            raise ValueError(f"figure name {name!r} is registered twice")
        doc = (func.__doc__ or "").strip().splitlines()
        REGISTRY[name] = FigureSpec(name, func, blog_name, doc[0] if doc else "", trained)
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
    """Draw figure ``name`` and write it to ``out_dir`` (overwriting); return the written paths.

    With ``blog_names=True`` a figure that stands for one of the blog's pictures is also written
    under the blog's file name and format (``量化.jpeg``, ``余弦退火.png``, ...).
    """
    spec = load_all().get(name)
    if spec is None:
        raise ValueError(f"unknown figure {name!r}; valid names: {', '.join(REGISTRY)}")
    fig = draw(name)
    with plt.rc_context(RC):
        try:
            return [save(fig, Path(out_dir) / f) for f in (spec.files if blog_names else spec.files[:1])]
        finally:
            plt.close(fig)


# ------------------------------------------------------------------ what determines the bytes: the manifest
MANIFEST = "MANIFEST.json"


def determined_by() -> dict[str, str]:
    """The library versions that determine every figure's bytes (matplotlib draws and rasterises the text
    with its bundled FreeType; Pillow compresses PNGs with zlib and JPEGs with libjpeg; NumPy and SciPy
    compute what is drawn)."""
    import numpy
    import PIL
    import scipy
    from matplotlib import ft2font
    from PIL import features

    return {"matplotlib": matplotlib.__version__, "freetype": ft2font.__freetype_version__,
            "pillow": PIL.__version__, "zlib": str(features.version("zlib")),
            "libjpeg": str(features.version("jpg")), "numpy": numpy.__version__, "scipy": scipy.__version__}


def blas_info() -> dict[str, str]:
    """What the trained figures' round-off depends on: the machine, the BLAS library, the kernel it picked
    for this processor and its thread count (read from OpenBLAS itself where it can be; else the
    environment variable that sets it)."""
    import ctypes
    import platform

    import numpy

    info = {"machine": platform.machine(), "blas": "unknown", "blas_kernel": "unknown",
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "default"))}
    try:
        cfg = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{cfg['name']} {cfg['version']}"
    except (KeyError, TypeError, AttributeError):
        pass
    from minilora.perf import openblas_function

    core, threads = openblas_function("get_corename"), openblas_function("get_num_threads")
    if core is not None and threads is not None:
        core.restype = ctypes.c_char_p
        info["blas_kernel"] = core().decode()
        info["blas_threads"] = str(threads())
    return info
    return info


def read_manifest(out_dir: str | os.PathLike = "figures") -> dict:
    """The manifest of ``out_dir`` (an empty one when there is none)."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return {"determined_by": {}, "tolerance": {}, "figures": {}}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if "figures" not in manifest:  # the old layout ({"versions", "sha256"}): start afresh
        return {"determined_by": {}, "tolerance": {}, "figures": {}}
    return manifest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_manifest(out_dir: Path, written: dict[str, FigureSpec]) -> Path | None:
    """Record the written files in the manifest; rewrite it only when its text changes. Returns its path
    when it was written."""
    path = out_dir / MANIFEST
    manifest = read_manifest(out_dir)
    old_text = path.read_text(encoding="utf-8") if path.exists() else None
    if written:
        manifest["determined_by"] = determined_by()
    manifest["tolerance"] = {**TOLERANCE.as_dict(), "applies_to": "trained figures; the others match byte for byte"}
    blas = blas_info()
    for file, spec in written.items():
        entry: dict = {"sha256": _sha256(out_dir / file), "trained": spec.trained}
        if spec.trained:
            entry["rendered_with"] = blas
        manifest["figures"][file] = entry
    manifest = {"about": ("SHA-256 of each figure and what its bytes depend on. Exact figures depend only on "
                          "the code and determined_by; trained figures also on the float32 round-off of the "
                          "BLAS kernel and thread count in rendered_with, and are kept when a fresh render "
                          "is within tolerance (pixels compared; see minilora/figures/compare.py)."),
                "determined_by": manifest["determined_by"], "tolerance": manifest["tolerance"],
                "figures": dict(sorted(manifest["figures"].items()))}
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    if text == old_text:
        return None
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class Outcome:
    """What :func:`render_many` did with one file.

    Attributes
    ----------
    path : the file in the output directory.
    status : ``"new"`` (there was none), ``"unchanged"`` (the fresh render has the same bytes),
        ``"kept"`` (a trained figure whose fresh render is within tolerance of the file: the file is left as
        it was) or ``"rewritten"``.
    difference : the pixel comparison, when the bytes differed.
    """

    path: Path
    status: str
    difference: PixelDifference | None = None

    def __str__(self) -> str:
        detail = f"  ({self.difference})" if self.difference is not None else ""
        return f"{self.status:<9} {self.path}{detail}"


def _place(fresh: Path, target: Path, spec: FigureSpec) -> Outcome:
    """Move ``fresh`` onto ``target`` unless ``target`` already shows the same figure."""
    if not target.exists():
        shutil.move(fresh, target)
        return Outcome(target, "new")
    if fresh.read_bytes() == target.read_bytes():
        return Outcome(target, "unchanged")
    diff = pixel_difference(fresh, target)
    if spec.trained and diff.within(TOLERANCE):
        return Outcome(target, "kept", diff)
    shutil.move(fresh, target)
    return Outcome(target, "rewritten", diff)


def render_many(selected: Iterable[str] | None = None, out_dir: str | os.PathLike = "figures",
                blog_names: bool = True) -> list[Outcome]:
    """Render the named figures (all when ``selected`` is empty or None) into ``out_dir``.

    A file is written only when it is new or shows a different figure: the same bytes, or for a trained
    figure pixels within :data:`~minilora.figures.compare.TOLERANCE`, leave the existing file untouched (so
    regenerating on a fresh clone changes nothing). ``MANIFEST.json`` records what was written.
    """
    registry = load_all()
    selected = list(selected or registry)
    unknown = [n for n in selected if n not in registry]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(registry)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    written: dict[str, FigureSpec] = {}
    manifest = read_manifest(out_dir)["figures"]
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".render-") as tmp:
        for name in selected:
            spec = registry[name]
            for fresh in render(name, tmp, blog_names):
                outcome = _place(fresh, out_dir / fresh.name, spec)
                outcomes.append(outcome)
                recorded = manifest.get(fresh.name, {}).get("sha256")
                if outcome.status in ("new", "rewritten") or recorded != _sha256(outcome.path):
                    written[fresh.name] = spec
    _write_manifest(out_dir, written)
    return outcomes
