"""Speed of minilora's 4-bit quantization on a 4096×4096 float32 matrix, as ratios to baselines.

    python benchmarks/bench_quant.py [--size 4096] [--repeat 5]

Baselines, run in the same process: a plain ``numpy`` copy of the same array (always), and
bitsandbytes on CPU when it is installed (``bitsandbytes.functional.quantize_4bit`` /
``dequantize_4bit``, its native CPU kernels). Each time is the best of ``--repeat`` runs.
Goals (issue 3): quantize ≤ 1.0× bitsandbytes, dequantize ≤ 3× bitsandbytes' native kernel.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))          # run from a checkout
from minilora.quant import dequantize_4bit, quantize_4bit  # noqa: E402


def best(fn: Callable[[], object], repeat: int) -> float:
    fn()                                                   # warm up (tables, caches, allocations)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32) * 0.02
    r = args.repeat
    print(f"{args.size}x{args.size} float32, NF4, blocksize 64, best of {r} (cpus: {os.cpu_count()})")

    t_copy = best(lambda: x.copy(), r)
    packed, st = quantize_4bit(x, quant_type="nf4")
    packed_dq, st_dq = quantize_4bit(x, quant_type="nf4", compress_statistics=True)
    ours = {
        "quantize_4bit": best(lambda: quantize_4bit(x, quant_type="nf4"), r),
        "quantize_4bit (double quant)": best(lambda: quantize_4bit(x, quant_type="nf4", compress_statistics=True),
                                             r),
        "dequantize_4bit": best(lambda: dequantize_4bit(packed, st), r),
        "dequantize_4bit (double quant)": best(lambda: dequantize_4bit(packed_dq, st_dq), r),
    }

    bnb_times: dict[str, float] = {}
    try:
        import torch  # noqa: PLC0415
        from bitsandbytes import functional as F  # noqa: PLC0415
    except ImportError as err:
        print(f"bitsandbytes baseline skipped: {err}")
    else:
        xt = torch.from_numpy(x)
        bp, bs = F.quantize_4bit(xt, blocksize=64, quant_type="nf4")
        bpd, bsd = F.quantize_4bit(xt, blocksize=64, quant_type="nf4", compress_statistics=True)
        with torch.inference_mode():
            bnb_times = {
                "quantize_4bit": best(lambda: F.quantize_4bit(xt, blocksize=64, quant_type="nf4"), r),
                "quantize_4bit (double quant)": best(lambda: F.quantize_4bit(
                    xt, blocksize=64, quant_type="nf4", compress_statistics=True), r),
                "dequantize_4bit": best(lambda: F.dequantize_4bit(bp, bs), r),
                "dequantize_4bit (double quant)": best(lambda: F.dequantize_4bit(bpd, bsd), r),
            }
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    print(f"{'operation':34s} {'minilora s':>10s} {'/ np.copy':>10s} {'bnb s':>10s} {'/ bnb':>8s}")
    for name, t in ours.items():
        tb = bnb_times.get(name)
        extra = f"{tb:10.4f} {t / tb:8.2f}" if tb else f"{'-':>10s} {'-':>8s}"
        print(f"{name:34s} {t:10.4f} {t / t_copy:10.2f} {extra}")
    print(f"{'numpy copy (baseline)':34s} {t_copy:10.4f}")


if __name__ == "__main__":
    main()
