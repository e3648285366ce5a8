"""Tiny timing helpers shared by the benchmarks (best of several runs, same process)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Best wall time in seconds of ``number`` calls of ``fn``, over ``repeat`` runs (after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def report(label: str, t: float, baseline: float | None, baseline_name: str) -> None:
    if baseline is None:
        print(f"{label:<34} {t * 1e3:9.1f} ms   ({baseline_name} not installed: no ratio)")
    else:
        print(f"{label:<34} {t * 1e3:9.1f} ms   {baseline_name} {baseline * 1e3:8.1f} ms   ratio {t / baseline:5.2f}x")
