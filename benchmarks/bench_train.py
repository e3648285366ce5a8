"""One GPT training step (forward + backward + AdamW): minilora's NumPy engine vs PyTorch CPU autograd.

The model: n_layer=4, n_embd=128, n_head=4, block_size=64, vocab 64, batch 32, float32. PyTorch runs the same
architecture with the same weights (copied from minilora's state_dict; the script checks the two losses
agree) in the same process with the same number of threads. Also timed: a "LoRA-style" step with all
weights frozen except the q/v projection biases, whose frozen weight gradients minilora skips. The three
steps are timed in interleaved rounds and each reports its best round (robust on a shared machine).

Run: ``python benchmarks/bench_train.py`` (PyTorch is optional; without it only minilora is timed).
``--clock cpu`` times CPU time (``time.process_time``) instead of wall time: on a machine other processes
load, a descheduled step then costs nothing. It needs one thread (``OMP_NUM_THREADS=1``), where CPU time is
the step's time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minilora.nn.gpt import GPT, GPTConfig  # noqa: E402
from minilora.optim import AdamW  # noqa: E402

CFG = GPTConfig(vocab_size=64, block_size=64, n_layer=4, n_head=4, n_embd=128)
BATCH, REPEATS = 32, 20


def batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, CFG.vocab_size, (BATCH, CFG.block_size))
    return idx, np.roll(idx, -1, axis=1)


def best_times(steps: dict, rounds: int = REPEATS, clock=time.perf_counter) -> dict[str, float]:
    """Best wall time of each step over ``rounds`` rounds, the steps interleaved within every round.

    On a shared machine another process steals time in bursts: interleaving makes a burst hit every step
    alike, and the best of the rounds is each step's time without interference (``timeit``'s advice).
    """
    for step in steps.values():  # warm-up: first-touch allocations, BLAS thread start-up
        step()
        step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = clock()
            step()
            best[name] = min(best[name], clock() - t0)
    return best


def minilora_step(model: GPT, opt: AdamW, idx, targets):
    def step():
        model.zero_grad()
        _, loss = model.forward(idx, targets)
        model.backward()
        opt.step()
        return loss
    return step


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (default) or CPU time of this process (one thread only)")
    args = parser.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    if args.clock == "cpu" and threads != 1:
        parser.error(f"--clock cpu needs OMP_NUM_THREADS=1 (CPU time of {threads} threads is not a step time)")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    idx, targets = batch()
    tokens = BATCH * CFG.block_size
    model = GPT(CFG, seed=0)
    state = model.state_dict()
    frozen = GPT(CFG, seed=0)
    frozen.freeze()
    frozen.unfreeze([n for n in frozen.params if n.endswith(("q_proj.bias", "v_proj.bias"))])
    n_train = frozen.num_params(trainable_only=True)
    steps = {"full": minilora_step(model, AdamW(model, lr=3e-4, weight_decay=0.1), idx, targets),
             "lora": minilora_step(frozen, AdamW(frozen, lr=3e-4), idx, targets)}
    try:
        import torch
    except ImportError:
        torch = None
        print("torch not installed: PyTorch baseline skipped (pip install torch to compare)")
    if torch is not None:
        torch.set_num_threads(threads)
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
    t = best_times(steps, clock=clock)
    print(f"config: {CFG}, batch {BATCH}, {tokens} tokens/step, {threads} threads, {args.clock} clock, best of "
          f"{REPEATS} interleaved rounds")
    print(f"minilora full step       : {t['full'] * 1e3:7.1f} ms  {tokens / t['full']:9.0f} tokens/s")
    print(f"minilora LoRA-style step : {t['lora'] * 1e3:7.1f} ms  {tokens / t['lora']:9.0f} tokens/s  "
          f"({n_train} of {frozen.num_params()} params trainable) = {t['lora'] / t['full']:.2f}x the full step")
    if torch is not None:
        print(f"torch {torch.__version__} CPU step: {t['torch'] * 1e3:7.1f} ms  {tokens / t['torch']:9.0f} tokens/s  "
              f"({torch.get_num_threads()} threads; same loss at init: {ref:.5f} vs {ours:.5f})")
        print(f"ratio minilora / torch (time per step): {t['full'] / t['torch']:.2f}x  (goal <= 1.0x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
