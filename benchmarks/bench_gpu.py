"""CPU vs GPU: one training step of a d=512, 8-layer GPT on the NumPy backend and on CuPy, in one process.

The model: n_layer=8, n_embd=512, n_head=8, block_size=128, vocab 256, batch 16 (2048 tokens per step),
float32, AdamW; the same weights and batch on every backend (drawn on the host, moved with ``xp.asarray``).
Two steps per backend: ``full`` (every parameter trained) and ``lora`` (q_proj, v_proj, r=8). Each reports the
median [min-max] of ``--steps`` timed steps after ``--warmup`` untimed ones (CuPy compiles its kernels on first
use); a CuPy step is timed up to ``cupy.cuda.Stream.null.synchronize()``. The ratio printed is CPU time per step
over GPU time per step (goal: at least 10x). The first loss of each backend is printed and checked to agree.

Run on a GPU machine (``tools/gpu_check.sh`` does): ``python benchmarks/bench_gpu.py``. Without a GPU,
``--quick --backends numpy,strict`` runs the same code on a tiny model with the strict device emulation in place
of CuPy (a check that the script works, not a speed figure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minilora import backend, perf  # noqa: E402
from minilora.nn.gpt import GPT, GPTConfig  # noqa: E402
from minilora.optim import AdamW  # noqa: E402
from minilora.peft import LoraConfig, inject_lora  # noqa: E402

CFG = GPTConfig(vocab_size=256, block_size=128, n_layer=8, n_head=8, n_embd=512)
QUICK = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)
LORA = LoraConfig(r=8, lora_alpha=16, target_modules=("q_proj", "v_proj"))


def _sync(name: str):
    if name == "cupy":  # pragma: no cover - GPU machines
        import cupy

        return cupy.cuda.Stream.null.synchronize
    return lambda: None


def time_method(name: str, method: str, cfg: GPTConfig, batch: int, steps: int, warmup: int):
    """``(times in s, first loss)`` of ``steps`` training steps of ``method`` on backend ``name``."""
    backend.use(name)
    try:
        xp, sync = backend.xp(), _sync(name)
        model = GPT(cfg, seed=0)
        if method == "lora":
            inject_lora(model, LORA, seed=0)
        opt = AdamW(model, lr=1e-4)
        rng = np.random.default_rng(0)
        idx_host = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
        idx, targets = xp.asarray(idx_host), xp.asarray(np.roll(idx_host, -1, axis=1))
        losses = []

        def step():
            model.zero_grad()
            _, loss = model.forward(idx, targets)
            model.backward()
            opt.step()
            sync()
            losses.append(loss)

        for _ in range(warmup):
            step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return times, losses[0]
    finally:
        backend.use("numpy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numpy,cupy",
                        help="comma-separated: the CPU baseline first, then the device (default numpy,cupy)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per backend and method (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (default 16)")
    parser.add_argument("--quick", action="store_true", help="a tiny model: checks that the script runs")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    if len(names) != 2 or any(n not in backend.BACKENDS for n in names):
        parser.error(f"--backends must name two of {backend.BACKENDS}, the CPU baseline first; got {args.backends!r}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    cfg = QUICK if args.quick else CFG
    tuned = perf.tune_allocator()
    tokens = args.batch * cfg.block_size
    print(f"config: {cfg}, batch {args.batch}, {tokens} tokens/step; {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, allocator {tuned or 'glibc default'}")
    if "cupy" in names:  # pragma: no cover - GPU machines
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        print(f"GPU: {props['name'].decode()}, CuPy {cupy.__version__}, CUDA runtime "
              f"{cupy.cuda.runtime.runtimeGetVersion()}")
    results = {}
    for method in ("full", "lora"):
        for name in names:
            results[name, method] = time_method(name, method, cfg, args.batch, args.steps, args.warmup)
    print(f"step times in ms, median [min-max] of {args.steps} steps after {args.warmup} warm-up steps:")
    for (name, method), (times, loss) in results.items():
        ms = [t * 1e3 for t in times]
        print(f"  {name:<7} {method:<5} {statistics.median(ms):9.1f} [{min(ms):.1f}-{max(ms):.1f}]  "
              f"{tokens / statistics.median(times):10.0f} tokens/s  first loss {loss:.5f}")
    cpu, dev = names
    for method in ("full", "lora"):
        (t_cpu, l_cpu), (t_dev, l_dev) = results[cpu, method], results[dev, method]
        if abs(l_cpu - l_dev) > 1e-3 * abs(l_cpu):
            print(f"error: {method}: the first losses disagree ({l_cpu!r} on {cpu}, {l_dev!r} on {dev})")
            return 1
        print(f"{method}: {cpu} / {dev} step time = {statistics.median(t_cpu) / statistics.median(t_dev):.1f}x "
              f"(goal >= 10x on a GPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
