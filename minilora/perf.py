"""Opt-in process settings that make the engine faster on a CPU without changing any result.

:func:`tune_allocator` is the only one (:func:`openblas_function` finds the BLAS that NumPy bundles, for
the callers that read or pin its thread count). The engine's forward allocates what it returns and keeps (a cache owns
what it holds, :mod:`minilora.nn.module`), so a training step makes and frees a few hundred arrays of up to
several MB. glibc's ``malloc`` serves arrays above its mmap threshold (128 kB, raised on the fly up to 32 MB
as such arrays are freed) with fresh pages from the kernel, and hands freed memory at the top of the heap back
to the kernel once more than the trim threshold (twice the mmap threshold) is free. Each step then
faults the same memory in again: a minor page fault per 4 kB page (the kernel zeroes it), tens of thousands per
step of the benchmark's GPT, a tenth of its time or more (``benchmarks/bench_train.py`` prints the faults).

``tune_allocator()`` fixes both thresholds through ``mallopt`` (``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``):
arrays below the mmap threshold come from the heap, and freed memory stays in the process for the next step.
The cost is memory: the process keeps up to ``trim_threshold`` bytes of freed heap instead of returning them.
The same settings are glibc's environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
(read at start-up). It is a no-op (returning None) where there is no glibc ``mallopt`` (macOS, Windows, musl).

``python -m minilora`` calls it for its commands; the library never does on its own (importing minilora
changes nothing about the process). CuPy keeps its own memory pool on the device, so this concerns host
memory only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit (``HEAP_MAX_SIZE / 2``; its dynamic threshold's ceiling)
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
#: default freed heap kept in the process
DEFAULT_TRIM_THRESHOLD = 512 * 1024 * 1024


def _mallopt():
    """glibc's ``mallopt(int, int) -> int``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def tune_allocator(mmap_threshold: int = MAX_MMAP_THRESHOLD,
                   trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> dict[str, int] | None:
    """Keep freed memory in the process instead of returning it to the OS and faulting it in again.

    Parameters
    ----------
    mmap_threshold : int
        Bytes: arrays at least this large get their own ``mmap`` (returned to the OS when freed); smaller ones
        come from the heap. ``0 <= mmap_threshold <= MAX_MMAP_THRESHOLD`` (32 MiB, glibc's ceiling).
    trim_threshold : int
        Bytes of free memory at the top of the heap kept before glibc returns it to the OS;
        ``0 <= trim_threshold < 2**31``.

    Returns
    -------
    ``{"mmap_threshold": ..., "trim_threshold": ...}`` as set, or None where glibc's ``mallopt`` is not
    available (nothing is changed then).
    """
    for name, value, top in (("mmap_threshold", mmap_threshold, MAX_MMAP_THRESHOLD),
                             ("trim_threshold", trim_threshold, 2**31 - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"{name} must be an int in [0, {top}], got {value!r}")
    mallopt = _mallopt()
    if mallopt is None:
        return None
    if not mallopt(M_MMAP_THRESHOLD, mmap_threshold):
        return None  # refused: then change nothing else either
    if not mallopt(M_TRIM_THRESHOLD, trim_threshold):  # pragma: no cover - glibc accepts any int here
        return None
    return {"mmap_threshold": mmap_threshold, "trim_threshold": trim_threshold}


def openblas_function(name: str):
    """The ctypes function ``name`` (e.g. ``"get_num_threads"``) of the OpenBLAS bundled in NumPy's wheel, or None.

    The wheels rename its symbols (``scipy_openblas_<name>64_``, ``openblas_<name>64_`` or ``openblas_<name>``);
    a NumPy built against another BLAS has no ``numpy.libs`` and gives None.
    """
    import glob
    from pathlib import Path

    import numpy

    libdir = Path(numpy.__file__).parent.parent / "numpy.libs"
    for lib in sorted(glob.glob(str(libdir / "*openblas*"))):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
            func = getattr(handle, f"{prefix}_{name}{suffix}", None)
            if func is not None:
                return func
    return None


__all__ = ["DEFAULT_TRIM_THRESHOLD", "MAX_MMAP_THRESHOLD", "openblas_function", "tune_allocator"]
