"""The small pretrained GPT shipped with minilora, and how it is made.

``python -m minilora pretrain`` trains :data:`BASE_CONFIG` from seed 0 on the mixture of
:data:`minilora.data.PRETRAIN_TASKS` (copy, reverse, sort, add1 over 8 digits) with AdamW and a
half-cycle cosine schedule, and writes ``minilora/assets/base_gpt.npz`` (float32, ~0.4 MB, no pickle).
On 2 CPU cores it takes about 1-2 minutes; the run is deterministic for a fixed BLAS thread count.
The held-out task :data:`minilora.data.HELDOUT_TASK` (sort descending) is never shown to it: the
fine-tuning chapters (LoRA, QLoRA, prompt tuning, adapters) teach it that task.

``load_base_model()`` reads the shipped file (``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

import os
from pathlib import Path

from minilora import data, optim, schedules
from minilora.nn.gpt import GPT, GPTConfig
from minilora.train import History, train

ASSET = Path(__file__).resolve().parent / "assets" / "base_gpt.npz"

#: 2 layers, 4 heads, width 64; block_size 32 leaves room for soft prompts before the 17-token tasks
BASE_CONFIG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=32, n_layer=2, n_head=4, n_embd=64)

#: the pretraining recipe (its numbers are what ``python -m minilora pretrain`` uses)
RECIPE = dict(steps=2000, batch_size=64, lr=3e-3, warmup=100, lr_min=3e-4, weight_decay=0.01,
              max_grad_norm=1.0, seed=0)


def pretrain(steps: int = RECIPE["steps"], seed: int = RECIPE["seed"], progress: bool = True
             ) -> tuple[GPT, History]:
    """Train the base model from scratch; returns ``(model, history)``."""
    r = {**RECIPE, "steps": steps, "seed": seed}
    model = GPT(BASE_CONFIG, seed=seed)
    opt = optim.AdamW(model, lr=r["lr"], weight_decay=r["weight_decay"])
    sched = schedules.make("cosine", total=steps, warmup=min(r["warmup"], steps), lr_max=r["lr"],
                           lr_min=r["lr_min"])
    stream = data.task_stream(data.PRETRAIN_TASKS, r["batch_size"], seed=seed)
    hist = train(model, stream, opt, sched, steps=steps, max_grad_norm=r["max_grad_norm"], progress=progress,
                 desc="pretrain")
    return model, hist


def load_base_model(path: str | os.PathLike | None = None) -> GPT:
    """The shipped pretrained GPT (or one written by ``python -m minilora pretrain --out PATH``)."""
    path = Path(path) if path is not None else ASSET
    if not path.exists():
        raise FileNotFoundError(f"no base model at {path}; make it with: python -m minilora pretrain")
    return GPT.load(path)


__all__ = ["BASE_CONFIG", "RECIPE", "pretrain", "load_base_model", "ASSET"]
