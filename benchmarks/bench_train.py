"""One GPT training step (forward + backward + AdamW): minilora's NumPy engine vs PyTorch CPU autograd.

The model: n_layer=4, n_embd=128, n_head=4, block_size=64, vocab 64, batch 32, float32. PyTorch runs the same
architecture with the same weights (copied from minilora's state_dict; the script checks the two losses agree)
in the same process with the same number of threads. Timed, interleaved in every round:

* ``full``: minilora's full fine-tuning step, through the engine's fast paths (:mod:`minilora.nn.fast`);
* ``full, readable ops``: the same step under ``minilora.nn.fast.readable()`` (the formulas of
  :mod:`minilora.nn.functional`, one temporary per operator): what readability costs, step for step;
* ``lora``: LoRA with PEFT's usual targets (q_proj, v_proj, r=8): one extra pair of small GEMMs per target,
  no weight gradient or optimizer state for any frozen weight, and no input gradient for block 0 (nothing below
  it is trained: its q/k/v projections and ln_1 skip their input-gradient GEMMs, ``GPT._needs_input_grad``);
* ``torch``: PyTorch's full step (``torch.optim.AdamW``).

Each step reports the median over the rounds with its spread (min-max), and each ratio is the median of the
per-round ratios (two steps of one round see the same machine load). Before the timing, the per-op profile of
each minilora step (:mod:`_profile`: self time per op) says where the time goes, and ``faults/step`` counts
the minor page faults of one step (fresh memory the kernel had to map and zero). After the rounds, each step runs
``--in-a-row`` times consecutively, as in a training loop, where the allocator setting shows most.

``--allocator tuned`` (the default) calls :func:`minilora.perf.tune_allocator` first, as ``python -m
minilora`` does: glibc then keeps freed memory for the next step instead of returning it to the OS. The
setting is process-wide, so PyTorch runs under it too (its CPU allocator is glibc's malloc);
``--allocator default`` measures both without it.

Run: ``python benchmarks/bench_train.py [--threads 2] [--clock wall|cpu]`` (PyTorch is optional; without it
only minilora is timed). ``--clock cpu`` times CPU time (``time.process_time``): on a machine other processes
load, a descheduled step then costs nothing; it needs ``--threads 1``, where CPU time is the step's time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="BLAS / torch threads (default 2)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (default) or CPU time of this process (--threads 1 only)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    parser.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                        help="tuned: minilora.perf.tune_allocator() first (default); default: glibc's own")
    parser.add_argument("--in-a-row", type=int, default=10,
                        help="consecutive calls of each step timed after the rounds (default 10)")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-op profiles")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.clock == "cpu" and args.threads != 1:
        parser.error(f"--clock cpu needs --threads 1 (CPU time of {args.threads} threads is not a step time)")
    return args


ARGS = parse_args(None) if __name__ == "__main__" else None
if ARGS is not None:  # thread counts are read when NumPy's BLAS and torch load: set them first
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _profile import profile_step  # noqa: E402

from minilora import perf  # noqa: E402
from minilora.nn import fast  # noqa: E402
from minilora.nn.gpt import GPT, GPTConfig  # noqa: E402
from minilora.optim import AdamW  # noqa: E402
from minilora.peft import LoraConfig, inject_lora  # noqa: E402

CFG = GPTConfig(vocab_size=64, block_size=64, n_layer=4, n_head=4, n_embd=128)
BATCH = 32
LORA = LoraConfig(r=8, lora_alpha=16, target_modules=("q_proj", "v_proj"))


def batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, CFG.vocab_size, (BATCH, CFG.block_size))
    return idx, np.roll(idx, -1, axis=1)


def interleaved_times(steps: dict, rounds: int, clock=time.perf_counter) -> dict[str, list[float]]:
    """Each step's time in each of ``rounds`` rounds, the steps interleaved within every round.

    On a shared machine another process steals time in bursts: interleaving makes a burst hit every step of a
    round alike, so per-round ratios are steadier than ratios of separate runs.
    """
    for step in steps.values():  # warm-up: first-touch allocations, BLAS thread start-up
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = clock()
            step()
            times[name].append(clock() - t0)
    return times


def in_a_row(step, n: int, clock) -> tuple[list[float], float]:
    """``n`` calls of ``step`` one after the other, as a training loop makes them: their times and the minor page
    faults per call (``getrusage``; 0 where unavailable). Unlike the interleaved rounds, each call finds the memory
    the previous call of the same step freed: this is where the allocator setting shows."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        resource = None
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0
    times = []
    for _ in range(n):
        t0 = clock()
        step()
        times.append(clock() - t0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0
    return times, (after - before) / n


def faults_per_step(step, n: int = 3) -> float:
    """Minor page faults per call of ``step`` (``getrusage``; 0 where unavailable)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0.0
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n


def minilora_step(model: GPT, opt: AdamW, idx, targets):
    def step():
        model.zero_grad()
        _, loss = model.forward(idx, targets)
        model.backward()
        opt.step()
        return loss
    return step


def readable_step(step):
    def run():
        with fast.readable():
            return step()
    return run


def torch_model(state: dict[str, np.ndarray]):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: GPTConfig):
            super().__init__()
            self.n_head = c.n_head
            self.ln_1, self.ln_2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
            self.attn = nn.Module()
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(self.attn, n, nn.Linear(c.n_embd, c.n_embd))
            self.mlp = nn.Module()
            self.mlp.up_proj = nn.Linear(c.n_embd, c.mlp_ratio * c.n_embd)
            self.mlp.down_proj = nn.Linear(c.mlp_ratio * c.n_embd, c.n_embd)

        def forward(self, x):
            B, T, C = x.shape
            h = self.ln_1(x)
            split = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            q, k, v = split(self.attn.q_proj(h)), split(self.attn.k_proj(h)), split(self.attn.v_proj(h))
            att = (q @ k.transpose(-2, -1)) / (C // self.n_head) ** 0.5
            causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
            att = att.masked_fill(~causal, float("-inf")).softmax(-1)
            x = x + self.attn.o_proj((att @ v).transpose(1, 2).reshape(B, T, C))
            h = nn.functional.gelu(self.mlp.up_proj(self.ln_2(x)), approximate="tanh")
            return x + self.mlp.down_proj(h)

    class TorchGPT(nn.Module):
        def __init__(self, c: GPTConfig):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
            self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
            self.ln_f = nn.LayerNorm(c.n_embd)
            self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.blocks:
                x = b(x)
            logits = self.lm_head(self.ln_f(x))
            return nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    m = TorchGPT(CFG)
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    return m


def spread(ts: list[float], scale: float = 1e3) -> str:
    return f"{statistics.median(ts) * scale:7.1f} [{min(ts) * scale:.1f}-{max(ts) * scale:.1f}]"


def ratio(times: dict[str, list[float]], a: str, b: str) -> str:
    """Median of the per-round ratios a/b, with their min-max."""
    r = [x / y for x, y in zip(times[a], times[b])]
    return f"{statistics.median(r):.2f}x [{min(r):.2f}-{max(r):.2f}]"


def main(args: argparse.Namespace) -> int:
    tuned = perf.tune_allocator() if args.allocator == "tuned" else None
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    idx, targets = batch()
    tokens = BATCH * CFG.block_size
    model = GPT(CFG, seed=0)
    state = model.state_dict()
    lora = inject_lora(GPT(CFG, seed=0), LORA)
    full_step = minilora_step(model, AdamW(model, lr=3e-4, weight_decay=0.1), idx, targets)
    steps = {"full": full_step, "full, readable ops": readable_step(full_step),
             "lora": minilora_step(lora, AdamW(lora, lr=3e-4), idx, targets)}
    try:
        import torch
    except ImportError:
        torch = None
        print("torch not installed: PyTorch baseline skipped (pip install torch to compare)")
    if torch is not None:
        torch.set_num_threads(args.threads)
        tm = torch_model(state)
        topt = torch.optim.AdamW(tm.parameters(), lr=3e-4, weight_decay=0.1)
        ti, tt = torch.from_numpy(idx), torch.from_numpy(targets)
        with torch.no_grad():
            ref = float(tm(ti, tt))
        ours = GPT(CFG, seed=0).forward(idx, targets)[1]
        assert abs(ref - ours) < 1e-4 * abs(ref), (ref, ours)

        def torch_step():
            topt.zero_grad(set_to_none=True)
            loss = tm(ti, tt)
            loss.backward()
            topt.step()
        steps["torch"] = torch_step
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"config: {CFG}, batch {BATCH}, {tokens} tokens/step, {args.threads} thread(s), {args.clock} clock, "
          f"{args.rounds} interleaved rounds; allocator: {tuned if tuned else 'glibc default'}; load average "
          f"{load:.2f} at the start on {os.cpu_count()} CPUs")
    if not args.no_profile:
        for name in ("full, readable ops", "full", "lora"):
            print(profile_step(steps[name], 5, clock, f"per-op profile, minilora {name} step"))
    faults = {name: faults_per_step(step) for name, step in steps.items()}
    times = interleaved_times(steps, args.rounds, clock)
    print(f"step times in ms, median [min-max] of {args.rounds} rounds:")
    for name, ts in times.items():
        print(f"  {name:<20} {spread(ts)}  {tokens / statistics.median(ts):8.0f} tokens/s  "
              f"{faults[name]:8.0f} faults/step")
    print(f"the same steps {args.in_a_row} times in a row each (a training loop), median [min-max]:")
    row = {}
    for name, step in steps.items():
        row[name], faults_row = in_a_row(step, args.in_a_row, clock)
        print(f"  {name:<20} {spread(row[name])}  {faults_row:8.0f} faults/step")
    med = {name: statistics.median(ts) for name, ts in row.items()}
    print(f"  in a row: lora / full {med['lora'] / med['full']:.2f}x, readable / fast "
          f"{med['full, readable ops'] / med['full']:.2f}x"
          + (f", full / torch {med['full'] / med['torch']:.2f}x" if "torch" in med else ""))
    n_train = lora.num_params(trainable_only=True)
    print(f"lora / full            : {ratio(times, 'lora', 'full')}  ({n_train} of {lora.num_params()} "
          f"params trainable; goal <= 0.7x)")
    print(f"readable / fast (full) : {ratio(times, 'full, readable ops', 'full')}")
    if torch is not None:
        print(f"full / torch {torch.__version__}: {ratio(times, 'full', 'torch')}  (goal <= 1.0x; same loss at "
              f"init: {ref:.5f} vs {ours:.5f})")
        print(f"readable / torch       : {ratio(times, 'full, readable ops', 'torch')}")
    end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at the end: {end:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
