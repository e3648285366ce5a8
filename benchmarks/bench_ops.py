"""The engine's ops before and after the readability rewrite, and the fast paths beside them, at the GPT's shapes.

Three columns per op, timed in interleaved rounds in one process on the shapes of ``bench_train.py``'s model
(B=32, T=64, C=128, 4 heads, MLP width 512, vocab 64):

* ``old``: the op as it was at ``--old-rev`` (default 96ad800, before issue 11: in-place chains, ``alloc=``
  work buffers kept by the module between steps, bias gradients as a GEMV with a ones vector), read from git
  with ``git show`` and called with a persistent work-buffer dict, as its modules called it;
* ``readable``: today's :mod:`minilora.nn.functional` op, the formula on one line;
* ``fast``: the named fast path the engine runs (:mod:`minilora.nn.fast`), where there is one.

Times are medians over the rounds (``--clock cpu`` is CPU time, for a loaded machine: one thread), each op's
spread (min–max over the rounds) beside it. ``--tune-allocator`` calls :func:`minilora.perf.tune_allocator` first
(the freshly allocated temporaries of the readable ops then stop being returned to the OS and faulted in again).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_ops.py --clock cpu [--tune-allocator]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minilora import perf  # noqa: E402
from minilora.nn import fast  # noqa: E402
from minilora.nn import functional as F  # noqa: E402

B, T, C, NH, HIDDEN, V = 32, 64, 128, 4, 512, 64


def old_functional(rev: str) -> types.ModuleType:
    """``minilora/nn/functional.py`` as it was at ``rev``, imported as a module of its own."""
    try:
        src = subprocess.run(["git", "show", f"{rev}:minilora/nn/functional.py"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"cannot read minilora/nn/functional.py at {rev!r} from git ({err}); run this in a "
                         "clone with history, or pass --old-rev") from err
    mod = types.ModuleType(f"functional_at_{rev}")
    exec(compile(src, f"{rev}:minilora/nn/functional.py", "exec"), mod.__dict__)  # noqa: S102 - our own history
    return mod


def work_buffers():
    """An ``alloc`` that hands back the same array for the same name every call (the old ``Module._buf``)."""
    bufs: dict[str, np.ndarray] = {}

    def alloc(name, shape, dtype):
        a = bufs.get(name)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = bufs[name] = np.empty(shape, dtype)
        return a
    return alloc


def cases(old: types.ModuleType) -> dict[str, dict[str, object]]:
    """``{op: {"old": fn, "readable": fn, "fast": fn}}``: each fn runs the op once on fixed inputs."""
    rng = np.random.default_rng(0)
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    x, w, b = r(B, T, C), r(C) + 1, r(C)
    h, dh = r(B, T, HIDDEN), r(B, T, HIDDEN)
    q, k, v, dy = r(B, T, C), r(B, T, C), r(B, T, C), r(B, T, C)
    logits, targets = r(B, T, V), rng.integers(0, V, (B, T))
    scores = r(B, NH, T, T)
    wl, xl, doutl = r(HIDDEN, C), r(B, T, C), r(B, T, HIDDEN)
    a_ln, a_gelu, a_att, a_ce = work_buffers(), work_buffers(), work_buffers(), work_buffers()
    _, ln_cache = F.layernorm_forward(x, w, b)
    _, ln_cache_old = old.layernorm_forward(x, w, b)
    _, att_cache = F.attention_forward(q, k, v, NH)
    _, att_cache_old = old.attention_forward(q, k, v, NH)
    _, ce_cache = F.cross_entropy_forward(logits, targets)
    _, ce_cache_old = old.cross_entropy_forward(logits, targets)
    _, gelu_cache_old = old.gelu_forward(h)
    lin_cache = (xl, wl, True)
    dout2 = doutl.reshape(-1, HIDDEN)
    out = {
        "bias gradient (N, 512)": {
            "old": lambda: np.ones(dout2.shape[0], dtype=dout2.dtype) @ dout2,  # 96ad800's GEMV with ones
            "readable": lambda: dout2.sum(axis=0)},
        "linear_backward (dx, dw, db)": {
            "old": lambda: old.linear_backward(doutl, lin_cache),
            "readable": lambda: F.linear_backward(doutl, lin_cache)},
        "layernorm_forward": {
            "old": lambda: old.layernorm_forward(x, w, b, alloc=a_ln),
            "readable": lambda: F.layernorm_forward(x, w, b),
            "fast": lambda: fast.layernorm_forward(x, w, b)},
        "layernorm_backward": {
            "old": lambda: old.layernorm_backward(dy, ln_cache_old),
            "readable": lambda: F.layernorm_backward(dy, ln_cache),
            "fast": lambda: fast.layernorm_backward(dy, ln_cache)},
        "gelu_forward": {
            "old": lambda: old.gelu_forward(h, alloc=a_gelu),
            "readable": lambda: F.gelu_forward(h),
            "fast": lambda: fast.gelu_forward(h)},
        "gelu_backward": {
            "old": lambda: old.gelu_backward(dh, gelu_cache_old, alloc=a_gelu),
            "readable": lambda: F.gelu_backward(dh, h),
            "fast": lambda: fast.gelu_backward(dh, h)},
        "softmax (B, nh, T, T)": {
            "old": lambda: old.softmax_forward(scores),
            "readable": lambda: F.softmax(scores),
            "fast": lambda: fast.softmax(scores)},
        "attention_forward": {
            "old": lambda: old.attention_forward(q, k, v, NH, alloc=a_att),
            "readable": lambda: F.attention_forward(q, k, v, NH),
            "fast": lambda: fast.attention_forward(q, k, v, NH)},
        "attention_backward": {
            "old": lambda: old.attention_backward(dy, att_cache_old, alloc=a_att),
            "readable": lambda: F.attention_backward(dy, att_cache),
            "fast": lambda: fast.attention_backward(dy, att_cache)},
        "cross_entropy_forward": {
            "old": lambda: old.cross_entropy_forward(logits, targets, alloc=a_ce),
            "readable": lambda: F.cross_entropy_forward(logits, targets)},
        "cross_entropy_backward": {
            "old": lambda: old.cross_entropy_backward(1.0, ce_cache_old, alloc=a_ce),
            "readable": lambda: F.cross_entropy_backward(1.0, ce_cache)},
    }
    for variants in out.values():  # a fast path the engine does not have yet is not timed
        if variants.get("fast") is not None and not _exists(variants["fast"]):
            del variants["fast"]
    return out


def _exists(fn) -> bool:
    try:
        fn()
    except AttributeError:
        return False
    return True


def time_rounds(fns: dict[str, object], rounds: int, clock) -> dict[str, list[float]]:
    """Per-call times of every fn over ``rounds`` rounds, the fns interleaved within each round."""
    for fn in fns.values():
        fn(), fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    reps = 5
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            for _ in range(reps):
                fn()
            times[name].append((clock() - t0) / reps)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default="96ad800", help="git revision of the old ops (default 96ad800)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tune-allocator", action="store_true", help="minilora.perf.tune_allocator() first")
    args = parser.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    if args.clock == "cpu" and threads != 1:
        parser.error(f"--clock cpu needs OMP_NUM_THREADS=1 (CPU time of {threads} threads is not a call's time)")
    tuned = perf.tune_allocator() if args.tune_allocator else None
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    table = cases(old_functional(args.old_rev))
    flat = {(op, col): fn for op, cols in table.items() for col, fn in cols.items()}
    times = time_rounds({f"{op}|{col}": fn for (op, col), fn in flat.items()}, args.rounds, clock)
    print(f"ops at B={B}, T={T}, C={C}, nh={NH}, MLP {HIDDEN}, V={V}, float32; {threads} thread(s), {args.clock} "
          f"clock, median of {args.rounds} interleaved rounds [min-max]; allocator: "
          f"{'tuned ' + str(tuned) if args.tune_allocator else 'default'}")
    print(f"{'op':<30} {'old ' + args.old_rev:>20} {'readable':>20} {'fast':>20} {'readable/old':>12} "
          f"{'fast/old':>9}")
    for op, cols in table.items():
        med = {col: statistics.median(times[f"{op}|{col}"]) for col in cols}
        cells = {col: f"{med[col] * 1e3:7.3f} [{min(times[f'{op}|{col}']) * 1e3:.2f}-"
                      f"{max(times[f'{op}|{col}']) * 1e3:.2f}]" for col in cols}
        ratios = {col: f"{med[col] / med['old']:.2f}x" for col in cols}
        print(f"{op:<30} {cells['old']:>20} {cells['readable']:>20} {cells.get('fast', '-'):>20} "
              f"{ratios['readable']:>12} {ratios.get('fast', '-'):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
