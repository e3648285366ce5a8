"""Encode/decode of 16M float32 values with minilora.formats, as a ratio to ml_dtypes / NumPy.

    PYTHONPATH=$PWD python benchmarks/bench_formats.py [--n 16777216] [--repeat 3] [--fresh-repeat 3]

Baselines, on the same array: ``x.astype(ml_dtypes.bfloat16)`` (and the FP8 types) and NumPy's
``x.astype(np.float16)``; decode is the reverse ``bits.view(type).astype(np.float32)``. Three figures per row:

* **fresh** — what a user sees: the first call in a new process, which allocates a new output (32 MB for
  BF16) and pays its page faults. Each side runs in its own subprocess (``--fresh-repeat`` times, best
  kept), so neither inherits memory the other freed; the input is made before the clock starts.
* **warm** — the same call repeated in this process after a warm-up (best of ``--repeat``): the allocator
  then serves the output from memory it keeps.
* **out=** — writing into a preallocated output: ``encode(x, fmt, out=buf)`` / ``decode(bits, fmt, out=buf)``
  against ``np.copyto(buf, x, casting="unsafe")`` into an array of the baseline's type.

ml_dtypes is optional: without it the BF16/FP8 rows print their time alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from _timing import best_time  # noqa: E402

from minilora.formats import BF16, FP8_E4M3, FP8_E5M2, FP16, decode, encode, get_format  # noqa: E402

try:
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None


def baseline_type(fmt):
    """The reference library's dtype for a format (None when ml_dtypes is missing)."""
    if fmt == FP16:
        return np.float16
    names = {"bf16": "bfloat16", "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}
    return getattr(ml_dtypes, names[fmt.name], None) if ml_dtypes is not None else None


def make_input(n: int) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(n) * 100).astype(np.float32)


def child(op: str, fmt_name: str, impl: str, n: int) -> None:
    """Time the first call of one operation in this (fresh) process; print seconds."""
    fmt = get_format(fmt_name)
    ref = baseline_type(fmt)
    x = make_input(n)
    if op == "decode":
        with np.errstate(all="ignore"):
            bits = x.astype(ref).view(fmt.storage_dtype) if ref is not None else encode(x, fmt)
    with np.errstate(all="ignore"):
        t0 = time.perf_counter()
        if op == "encode":
            encode(x, fmt) if impl == "minilora" else x.astype(ref)
        else:
            decode(bits, fmt) if impl == "minilora" else bits.view(ref).astype(np.float32)
        t1 = time.perf_counter()
    print(repr(t1 - t0))


def fresh_time(op: str, fmt, impl: str, n: int, repeat: int) -> float:
    cmd = [sys.executable, __file__, "--child", op, fmt.name, impl, "--n", str(n)]
    return min(float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])
               for _ in range(repeat))


def row(label: str, figures: list[tuple[float, float | None]]) -> str:
    cells = []
    for t, b in figures:
        cells.append(f"{t * 1e3:7.1f} ms / " + (f"{b * 1e3:7.1f} ms = {t / b:5.2f}x" if b else "   (no baseline)   "))
    return f"{label:<26}" + " | ".join(cells)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fresh-repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("OP", "FORMAT", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.n)
        return
    x = make_input(args.n)
    print(f"n = {args.n:,} float32 values, numpy {np.__version__}"
          + (f", ml_dtypes {ml_dtypes.__version__}" if ml_dtypes else ", ml_dtypes not installed"))
    print("each cell: minilora / baseline (numpy for fp16, ml_dtypes otherwise) = ratio")
    print(f"{'':<26}{'fresh process (new output)':^37} | {'warm, same process (new output)':^37} | "
          f"{'out= (preallocated output)':^37}")
    targets = [FP16, BF16, FP8_E4M3, FP8_E5M2]
    with np.errstate(all="ignore"):
        for fmt in targets:   # warm up every path once: see the docstring's "warm"
            ref = baseline_type(fmt)
            decode(encode(x, fmt), fmt)
            if ref is not None:
                x.astype(ref).astype(np.float32)
        for fmt in targets:
            measure(fmt, x, args)


def measure(fmt, x: np.ndarray, args: argparse.Namespace) -> None:
    """Print the encode and decode rows of one format."""
    ref = baseline_type(fmt)
    bits = encode(x, fmt)
    if ref is not None:
        assert np.array_equal(x.astype(ref).view(fmt.storage_dtype), bits)
    buf_bits, buf_f32, buf_f32_b = np.empty_like(bits), np.empty_like(x), np.empty_like(x)
    buf_ref = np.empty(x.shape, ref) if ref is not None else None
    calls = {  # op -> (minilora new output, minilora out=, baseline new output, baseline into a buffer)
        "encode": (lambda: encode(x, fmt), lambda: encode(x, fmt, out=buf_bits),
                   lambda: x.astype(ref), lambda: np.copyto(buf_ref, x, casting="unsafe")),
        "decode": (lambda: decode(bits, fmt), lambda: decode(bits, fmt, out=buf_f32),
                   lambda: bits.view(ref).astype(np.float32), lambda: np.copyto(buf_f32_b, bits.view(ref))),
    }
    for op, (new, into, new_b, into_b) in calls.items():
        fresh = fresh_time(op, fmt, "minilora", args.n, args.fresh_repeat)
        ours = [fresh, best_time(new, args.repeat), best_time(into, args.repeat)]
        base = [None] * 3 if ref is None else [fresh_time(op, fmt, "baseline", args.n, args.fresh_repeat),
                                               best_time(new_b, args.repeat), best_time(into_b, args.repeat)]
        figures = list(zip(ours, base))
        label = f"{op} {'float32 -> ' + fmt.name if op == 'encode' else fmt.name + ' -> float32'}"
        print(row(label, figures), flush=True)
    assert np.array_equal(buf_bits, bits)                               # out= wrote the same bits
    assert np.array_equal(buf_f32.view(np.uint32), decode(bits, fmt).view(np.uint32))


if __name__ == "__main__":
    main()
