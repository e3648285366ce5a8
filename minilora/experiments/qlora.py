"""The QLoRA experiments of the notebook, figure and CLI, as functions (no logic lives only in a notebook).

* :func:`compare_methods` — full fine-tuning, LoRA and QLoRA from the same base, each through
  :func:`minilora.experiments.recipe.finetune` with one :class:`~minilora.experiments.recipe.Recipe` (same data
  stream, optimizer, seed and LoRA initialization), so the three are directly comparable; QLoRA is
  ``finetune(base, config, recipe, quantization=QuantizationConfig())``;
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
from minilora.experiments.recipe import Recipe, finetune, prepare
from minilora.optim import AdamW
from minilora.peft import LoraConfig, QuantizationConfig
from minilora.peft.memory import METHODS, MemoryBreakdown, activation_bytes, measure, weight_bytes
from minilora.peft.paged import DeviceMemory, PagedAdamW, train_steps

#: the adapter used for both LoRA and QLoRA here: QLoRA's choice of every linear layer, r = 8, α = 16
QLORA_CONFIG = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")


def compare_methods(base, config: LoraConfig | None = None, recipe: Recipe | None = None, *,
                    methods: tuple[str, ...] = METHODS, **recipe_changes) -> dict[str, tuple]:
    """Fine-tune a copy of ``base`` with each method; ``{method: (model, history, report)}``.

    Every run is :func:`~minilora.experiments.recipe.finetune` with one recipe (default ``Recipe(eval_every=10)``,
    then ``recipe_changes``: ``steps=100``, ``seed=1``, ...) and one adapter ``config`` (default
    :data:`QLORA_CONFIG`): ``"full"`` trains every parameter, ``"lora"`` the adapter on the float base,
    ``"qlora"`` the same adapter on the base stored in NF4 (:class:`~minilora.peft.QuantizationConfig`).
    """
    recipe = (recipe or Recipe(eval_every=10)).replace(**recipe_changes)
    return {method: finetune(copy.deepcopy(base), *_method_args(method, config), recipe) for method in methods}


def _method_args(method: str, config: LoraConfig | None) -> tuple:
    """``(peft_config, quantization)`` of ``"full"``, ``"lora"`` or ``"qlora"`` with the adapter ``config``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    config = config or QLORA_CONFIG
    return {"full": (None, None), "lora": (config, None), "qlora": (config, QuantizationConfig())}[method]


def prepared(base, method: str, config: LoraConfig | None = None, seed: int = 0):
    """A copy of ``base`` ready for ``method``: all trainable (full), LoRA-injected or QLoRA-prepared."""
    peft_config, quantization = _method_args(method, config)
    return prepare(copy.deepcopy(base), peft_config, quantization, seed=seed)


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


__all__ = ["QLORA_CONFIG", "compare_methods", "memory_table", "paging_demo", "prepared"]
