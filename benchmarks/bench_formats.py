"""Encode/decode of 16M float32 values with minilora.formats, as a ratio to ml_dtypes / NumPy.

    python benchmarks/bench_formats.py [--n 16777216]

Baselines, run in the same process on the same array: ``x.astype(ml_dtypes.bfloat16)`` (and the
FP8 types) and NumPy's ``x.astype(np.float16)``; decode is the reverse ``astype(np.float32)``.
ml_dtypes is optional: without it the BF16/FP8 rows print their time alone. Goal (issue 2): within
2x of the baseline for BF16 and FP16.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from _timing import best_time, report  # noqa: E402

from minilora.formats import BF16, FP8_E4M3, FP8_E5M2, FP16, decode, encode  # noqa: E402

try:
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None
    print("ml_dtypes is not installed: BF16/FP8 rows have no baseline (pip install ml_dtypes)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    x = (np.random.default_rng(0).standard_normal(args.n) * 100).astype(np.float32)
    print(f"n = {args.n:,} float32 values, numpy {np.__version__}"
          + (f", ml_dtypes {ml_dtypes.__version__}" if ml_dtypes else ""))
    targets = [(FP16, np.float16), (BF16, getattr(ml_dtypes, "bfloat16", None)),
               (FP8_E4M3, getattr(ml_dtypes, "float8_e4m3fn", None)),
               (FP8_E5M2, getattr(ml_dtypes, "float8_e5m2", None))]
    # warm up every path once first: the first large allocations of a process pay page faults that
    # later ones (served from memory the allocator keeps) do not, which would bias whichever runs first
    with np.errstate(all="ignore"):
        for fmt, ref_type in targets:
            decode(encode(x, fmt), fmt)
            if ref_type is not None:
                x.astype(ref_type).astype(np.float32)
    for fmt, ref_type in targets:
        t_enc = best_time(lambda fmt=fmt: encode(x, fmt), args.repeat)
        base = None
        if ref_type is not None:
            with np.errstate(all="ignore"):
                base = best_time(lambda t=ref_type: x.astype(t), args.repeat)
                assert np.array_equal(x.astype(ref_type).view(fmt.storage_dtype), encode(x, fmt))
        name = "numpy" if ref_type is np.float16 else "ml_dtypes"
        report(f"encode float32 -> {fmt.name}", t_enc, base, name)
        bits = encode(x, fmt)
        t_dec = best_time(lambda b=bits, fmt=fmt: decode(b, fmt), args.repeat)
        base = None if ref_type is None else best_time(lambda b=bits, t=ref_type: b.view(t).astype(np.float32),
                                                       args.repeat)
        report(f"decode {fmt.name} -> float32", t_dec, base, name)


if __name__ == "__main__":
    main()
