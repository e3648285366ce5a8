"""The array namespace: NumPy by default, CuPy on request, a strict device emulation for the tests.

Array code in minilora takes its namespace from here instead of importing NumPy directly,
so the same code runs on a GPU with CuPy::

    from minilora import backend
    xp = backend.xp()              # numpy, or cupy after backend.use("cupy")

The backend is chosen, in order of precedence, by :func:`use` or by the environment
variable ``MINILORA_BACKEND`` (``numpy``, ``cupy`` or ``strict``) read at first use. Asking for CuPy
where it is not installed raises an :class:`ImportError` naming the ``gpu`` extra.
Arrays are made on the backend that is current when they are made: choose it before building a model.

The convention (``docs/`` and the team's design notes call it the same):

* a function that creates arrays or calls array functions starts with ``xp = backend.xp()``; operators and
  methods on arrays it was given need nothing;
* host-only work (files, printing, plotting, ``float(loss)``) converts explicitly with :func:`to_numpy`;
  random numbers are drawn on the host (``numpy.random.Generator``, so every backend gets the same ones)
  and moved with ``xp.asarray``;
* a function NumPy and CuPy spell differently gets one helper here (:func:`scatter_add`).

``"strict"`` (:mod:`minilora.backend_strict`) is NumPy behind CuPy's rules: its arrays refuse to mix with
NumPy arrays and to convert to host implicitly, so a test run under it fails on any leaked ``np.`` call.
Bit-level code (``minilora.formats``) only uses ``.view``, shifts, masks and comparisons, which every
backend has.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy", "strict")
_current: ModuleType | None = None
_name: str | None = None


def _load(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "numpy":
        return np
    if name == "strict":
        from minilora.backend_strict import namespace  # noqa: PLC0415

        return namespace
    try:
        import cupy  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError(
            "the 'cupy' backend needs CuPy, which is not installed; "
            "install it with: pip install 'minilora[gpu]' (or the cupy wheel matching your CUDA)"
        ) from err
    return cupy


def use(name: str) -> ModuleType:
    """Select the array backend (``"numpy"``, ``"cupy"`` or ``"strict"``) and return its namespace."""
    global _current, _name
    _current, _name = _load(name), name
    return _current


def xp() -> ModuleType:
    """Return the current array namespace (NumPy unless :func:`use` or ``MINILORA_BACKEND`` said otherwise)."""
    if _current is None:
        use(os.environ.get("MINILORA_BACKEND", "numpy").strip().lower() or "numpy")
    return _current


def name() -> str:
    """Name of the current backend: ``"numpy"``, ``"cupy"`` or ``"strict"``."""
    xp()
    return _name


def array_types() -> tuple[type, ...]:
    """The array classes of the current backend (NumPy's ``ndarray`` is always among them)."""
    return (np.ndarray,) if xp() is np else (np.ndarray, xp().ndarray)


def is_array(a: Any) -> bool:
    """Whether ``a`` is an array of NumPy or of the current backend."""
    return isinstance(a, array_types())


def to_numpy(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array, copying it to the host when it lives on the device (CuPy, strict)."""
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith(("cupy", "minilora.backend_strict")) and hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def asarray(a: Any, dtype: Any = None) -> Any:
    """``xp().asarray``: move ``a`` to the current backend (a no-op for its own arrays)."""
    return xp().asarray(a, dtype=dtype)


def input_array(a: Any, arg: str) -> Any:
    """An input argument as an array of the current backend: lists and scalars are converted, a NumPy
    (host) array on a device backend is refused with an error naming ``arg`` (as torch refuses a CPU
    tensor on a CUDA model): move it with :func:`asarray` first.

    >>> input_array([1, 2], "idx")
    array([1, 2])
    """
    xp_ = xp()
    if xp_ is not np and isinstance(a, np.ndarray):
        raise TypeError(f"{arg} is a NumPy (host) array but the backend is {name()!r}: move it with "
                        f"minilora.backend.asarray({arg})")
    return a if isinstance(a, array_types()) else xp_.asarray(a)


def scatter_add(dst: Any, idx: Any, src: Any) -> None:
    """``dst[idx] += src`` in place, with repeated indices accumulating.

    NumPy spells it ``np.add.at(dst, idx, src)``, CuPy ``cupyx.scatter_add(dst, idx, src)``.

    >>> dst = np.zeros(3)
    >>> scatter_add(dst, np.array([0, 2, 0]), np.array([1.0, 2.0, 3.0]))
    >>> dst
    array([4., 0., 2.])
    """
    backend = name()
    if backend == "cupy":  # pragma: no cover - runs on GPU machines
        import cupyx  # noqa: PLC0415

        cupyx.scatter_add(dst, idx, src)
    elif backend == "strict":
        from minilora.backend_strict import scatter_add as strict_scatter_add  # noqa: PLC0415

        strict_scatter_add(dst, idx, src)
    else:
        np.add.at(dst, idx, src)


__all__ = ["BACKENDS", "array_types", "asarray", "input_array", "is_array", "name", "scatter_add", "to_numpy", "use",
           "xp"]
