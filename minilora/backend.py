"""The array namespace: NumPy by default, CuPy on request.

Array code in minilora takes its namespace from here instead of importing NumPy directly,
so the same code runs on a GPU with CuPy::

    from minilora import backend
    xp = backend.xp()              # numpy, or cupy after backend.use("cupy")

The backend is chosen, in order of precedence, by :func:`use` or by the environment
variable ``MINILORA_BACKEND`` (``numpy`` or ``cupy``) read at first use. Asking for CuPy
where it is not installed raises an :class:`ImportError` naming the ``gpu`` extra.
Bit-level code (``minilora.formats``) only uses ``.view``, shifts, masks and comparisons,
which both libraries have.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy")
_current: ModuleType | None = None


def _load(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "numpy":
        return np
    try:
        import cupy  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError(
            "the 'cupy' backend needs CuPy, which is not installed; "
            "install it with: pip install 'minilora[gpu]' (or the cupy wheel matching your CUDA)"
        ) from err
    return cupy


def use(name: str) -> ModuleType:
    """Select the array backend (``"numpy"`` or ``"cupy"``) and return its module."""
    global _current
    _current = _load(name)
    return _current


def xp() -> ModuleType:
    """Return the current array module (NumPy unless :func:`use` or ``MINILORA_BACKEND`` said otherwise)."""
    global _current
    if _current is None:
        _current = _load(os.environ.get("MINILORA_BACKEND", "numpy").strip().lower() or "numpy")
    return _current


def name() -> str:
    """Name of the current backend: ``"numpy"`` or ``"cupy"``."""
    return "numpy" if xp() is np else "cupy"


def to_numpy(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array, copying from the GPU when it is a CuPy array."""
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def asarray(a: Any, dtype: Any = None) -> Any:
    """``xp().asarray``: move ``a`` to the current backend."""
    return xp().asarray(a, dtype=dtype)
