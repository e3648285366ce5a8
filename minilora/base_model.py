"""The small pretrained GPT shipped with minilora, and how it is made.

``python -m minilora pretrain`` trains :data:`BASE_CONFIG` from seed 0 on the mixture of
:data:`minilora.data.PRETRAIN_TASKS` (copy, reverse, sort, add1 over 8 digits) with AdamW and a
half-cycle cosine schedule, and writes ``minilora/assets/base_gpt.npz`` (float32, ~0.4 MB, no pickle).
On 2 CPU cores it takes about 3-4 minutes; the run is deterministic for a fixed BLAS thread count.

Every training sequence is placed at a random position offset (:class:`AtRandomPositions`): positions
``o .. o + T - 1`` with ``o`` uniform in ``[0, block_size - T]``. A model pretrained only at positions
``0 .. T - 1`` fails its own tasks when they start anywhere else — and prompt tuning, p-tuning and prefix
tuning put ``p`` virtual tokens first, so that the real tokens take positions ``p .. p + T - 1`` (Hugging
Face GPT-2's and PEFT's convention, ``docs/facts.md`` §8). Trained at every offset, the base model answers
wherever its input starts, so those methods are judged on what they learn, not on a position shift.
The held-out task :data:`minilora.data.HELDOUT_TASK` (sort descending) is never shown to it: the
fine-tuning chapters (LoRA, QLoRA, prompt tuning, adapters) teach it that task.

``load_base_model()`` reads the shipped file (``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minilora import backend, data, optim, schedules
from minilora.nn.gpt import GPT, GPTConfig
from minilora.nn.module import Module
from minilora.train import History, train

ASSET = Path(__file__).resolve().parent / "assets" / "base_gpt.npz"

#: 2 layers, 4 heads, width 64; block_size 32 leaves room for soft prompts before the 17-token tasks
BASE_CONFIG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=32, n_layer=2, n_head=4, n_embd=64)

#: the pretraining recipe (its numbers are what ``python -m minilora pretrain`` uses)
RECIPE = dict(steps=4000, batch_size=64, lr=3e-3, warmup=100, lr_min=3e-4, weight_decay=0.01,
              max_grad_norm=1.0, seed=0)


class AtRandomPositions(Module):
    """Pretraining wrapper: each sequence of a batch is seen at a random position offset.

    ``forward(idx, targets)`` calls ``gpt.forward(idx, targets, position_ids=o + arange(T))`` with one offset
    ``o`` per row, uniform in ``[0, block_size - T]`` and drawn on the host from ``numpy.random.default_rng([seed,
    7])`` (so the run is the same on every backend); ``backward`` is the GPT's. The parameters are the GPT's
    (named ``gpt.*`` here); save ``wrapper.gpt``.
    """

    def __init__(self, gpt: GPT, seed: int = 0) -> None:
        super().__init__()
        self.gpt = gpt
        self.rng = np.random.default_rng([seed, 7])

    def forward(self, idx, targets=None):
        B, T = idx.shape
        offsets = self.rng.integers(0, self.gpt.config.block_size - T + 1, size=(B, 1))  # (B, 1)
        return self.gpt.forward(idx, targets, position_ids=backend.xp().asarray(offsets + np.arange(T)))  # (B, T)

    def backward(self, dloss: float = 1.0) -> None:
        self.gpt.backward(dloss)


def pretrain(steps: int = RECIPE["steps"], seed: int = RECIPE["seed"], progress: bool = True
             ) -> tuple[GPT, History]:
    """Train the base model from scratch; returns ``(model, history)``."""
    r = {**RECIPE, "steps": steps, "seed": seed}
    model = GPT(BASE_CONFIG, seed=seed)
    wrapped = AtRandomPositions(model, seed)
    opt = optim.AdamW(wrapped, lr=r["lr"], weight_decay=r["weight_decay"])
    sched = schedules.make("cosine", total=steps, warmup=min(r["warmup"], steps), lr_max=r["lr"],
                           lr_min=r["lr_min"])
    stream = data.task_stream(data.PRETRAIN_TASKS, r["batch_size"], seed=seed)
    hist = train(wrapped, stream, opt, sched, steps=steps, max_grad_norm=r["max_grad_norm"], progress=progress,
                 desc="pretrain")
    return model, hist


def load_base_model(path: str | os.PathLike | None = None) -> GPT:
    """The shipped pretrained GPT (or one written by ``python -m minilora pretrain --out PATH``)."""
    path = Path(path) if path is not None else ASSET
    if not path.exists():
        raise FileNotFoundError(f"no base model at {path}; make it with: python -m minilora pretrain")
    return GPT.load(path)


__all__ = ["BASE_CONFIG", "RECIPE", "AtRandomPositions", "pretrain", "load_base_model", "ASSET"]
