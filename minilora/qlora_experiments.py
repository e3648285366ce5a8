"""The QLoRA experiments of the notebook, figure and CLI, as functions (no logic lives only in a notebook).

* :func:`finetune_qlora` — the shipped base GPT fine-tuned on :data:`minilora.data.HELDOUT_TASK` with QLoRA,
  with the recipe of :func:`minilora.lora_experiments.finetune_gpt` (same data stream, AdamW, learning rate,
  seed and LoRA initialization), so that its result is directly comparable with ``"lora"`` and ``"full"``;
* :func:`compare_methods` — full fine-tuning, LoRA and QLoRA from the same base: histories and reports;
* :func:`memory_table` — the bytes of each method measured on the real arrays of the base GPT
  (:func:`minilora.peft.memory.measure`);
* :func:`paging_demo` — QLoRA training with a paged AdamW under a device budget that a long-sequence batch
  overflows, against the unpaged optimizer.

The reports count parameters as PEFT does (:func:`minilora.peft.mapping.count_parameters`: a 4-bit weight by
its elements), so LoRA and QLoRA with the same adapter report the same ``total`` and ``trainable``.
"""

from __future__ import annotations

import copy

import numpy as np

from minilora import data
from minilora.lora_experiments import finetune_gpt
from minilora.optim import AdamW
from minilora.peft import LoraConfig, inject_lora
from minilora.peft.memory import METHODS, MemoryBreakdown, activation_bytes, measure, weight_bytes
from minilora.peft.paged import DeviceMemory, PagedAdamW, train_steps
from minilora.peft.qlora import prepare_qlora

#: the adapter used for both LoRA and QLoRA here: QLoRA's choice of every linear layer, r = 8, α = 16
QLORA_CONFIG = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")


def finetune_qlora(base, config: LoraConfig | None = None, steps: int = 150, lr: float = 1e-2,
                   batch_size: int = 32, eval_every: int = 0, seed: int = 0, progress: bool = False,
                   **quant) -> tuple:
    """QLoRA-fine-tune ``base`` (changed in place) on the held-out task; returns ``(model, history, report)``.

    The recipe of :func:`~minilora.lora_experiments.finetune_gpt` (same data, AdamW, seed) on a 4-bit base;
    ``quant`` goes to :func:`~minilora.peft.qlora.prepare_qlora` (blocksize, quant_type, compress_statistics,
    compute_format). ``config`` defaults to QLoRA's all-linear adapters.
    """
    return finetune_gpt(base, "qlora", config or QLORA_CONFIG, steps=steps, lr=lr, batch_size=batch_size,
                        eval_every=eval_every, seed=seed, progress=progress, quant=quant)


def compare_methods(base, config: LoraConfig | None = None, steps: int = 150, eval_every: int = 10,
                    seed: int = 0, methods: tuple[str, ...] = METHODS) -> dict[str, tuple]:
    """Fine-tune a copy of ``base`` with each method; ``{method: (model, history, report)}``."""
    config = config or QLORA_CONFIG
    out = {}
    for method in methods:
        model = copy.deepcopy(base)
        if method == "qlora":
            out[method] = finetune_qlora(model, config, steps=steps, eval_every=eval_every, seed=seed)
        else:
            out[method] = finetune_gpt(model, method, config, steps=steps, eval_every=eval_every, seed=seed)
    return out


def prepared(base, method: str, config: LoraConfig | None = None, seed: int = 0):
    """A copy of ``base`` ready for ``method``: all trainable (full), LoRA-injected or QLoRA-prepared."""
    model = copy.deepcopy(base)
    if method == "full":
        return model.unfreeze()
    if method == "lora":
        return inject_lora(model, config or QLORA_CONFIG, seed=seed)
    if method == "qlora":
        return prepare_qlora(model, config or QLORA_CONFIG, seed=seed)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def memory_table(base, config: LoraConfig | None = None, batch_size: int = 32,
                 seed: int = 0) -> dict[str, MemoryBreakdown]:
    """Bytes of each method measured after one AdamW step on a held-out batch (copies of ``base``)."""
    batch = data.heldout_train_data(batch_size, seed=seed)(0)
    out = {}
    for method in METHODS:
        model = prepared(base, method, config, seed)
        out[method] = measure(model, AdamW(model, lr=1e-3, weight_decay=0.0), batch, method)
    return out


def paging_demo(base, config: LoraConfig | None = None, steps: int = 12, spike_steps: tuple[int, ...] = (5, 6),
                batch_size: int = 2, spike_digits: int = 10, page_size: int = 4096, lr: float = 1e-2,
                seed: int = 0) -> dict:
    """QLoRA training with :class:`~minilora.peft.paged.PagedAdamW` under a budget a long batch overflows.

    The device budget is weights + all optimizer pages + the activations of a normal batch; the batches at
    ``spike_steps`` have ``spike_digits`` digits instead of 8 (longer sequences), so their activations do
    not fit and optimizer pages are evicted. Returns the budget, the activation bytes of both batch kinds,
    the page statistics, the losses of paged and unpaged training and whether the parameters are identical.
    """
    batches = [data.task_batch(data.HELDOUT_TASK, batch_size, seed=np.random.default_rng([seed, i]),
                               n_digits=spike_digits if i in spike_steps else data.N_DIGITS) for i in range(steps)]
    ref = prepared(base, "qlora", config, seed)
    ref_losses = train_steps(ref, AdamW(ref, lr=lr, weight_decay=0.0), batches)
    model = prepared(base, "qlora", config, seed)
    memory = DeviceMemory(budget=1 << 40)
    opt = PagedAdamW(model, memory, lr=lr, weight_decay=0.0, page_size=page_size)
    acts = {}
    for kind, i in (("normal", 0), ("spike", spike_steps[0])):
        model.forward(*batches[i])
        acts[kind] = activation_bytes(model)
    pages = opt.buffer.npages * page_size
    memory.budget = weight_bytes(model) + pages + acts["normal"]
    memory.allocate("weights", weight_bytes(model))
    losses = train_steps(model, opt, batches, memory, activation_bytes)
    identical = all(np.array_equal(model.params[k], v) for k, v in ref.params.items())
    return {"budget": memory.budget, "peak": memory.peak, "state_bytes": opt.state_bytes(), "pages": opt.buffer.npages,
            "activations": acts, "stats": opt.stats, "losses": losses, "ref_losses": ref_losses,
            "identical": identical and losses == ref_losses}


__all__ = ["QLORA_CONFIG", "compare_methods", "finetune_qlora", "memory_table", "paging_demo", "prepared"]
