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
    runs = {}
    for method in methods:
        peft_config, quantization = _method_args(method, config)
        runs[method] = finetune(copy.deepcopy(base), peft_config, recipe, quantization=quantization)
    return runs


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
    the page statistics, the losses of paged and unpaged training, whether the parameters are identical, and
    ``weights`` (bytes), and ``timeline``: per step, ``peak`` (device bytes at the step's highest point: weights
    + resident optimizer pages + that batch's activations), ``resident_at_peak`` (the optimizer bytes on the
    device at that moment), ``resident`` (optimizer bytes on the device after the step),
    ``activations`` (bytes of that batch's activations), ``page_outs`` / ``page_ins`` (pages moved during it).
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
    losses, timeline = [], []
    for i, batch in enumerate(batches):  # one step at a time, to record the device's state after each
        before = (opt.stats.page_outs, opt.stats.page_ins)
        memory.peak = memory.used
        losses += train_steps(model, opt, [batch], memory, activation_bytes)
        act = acts["spike" if i in spike_steps else "normal"]
        timeline.append({"step": i, "peak": memory.peak, "resident": opt.buffer.resident_bytes,
                         "resident_at_peak": memory.peak - memory.allocations["weights"] - act,
                         "activations": act,
                         "page_outs": opt.stats.page_outs - before[0], "page_ins": opt.stats.page_ins - before[1]})
    memory.peak = max(t["peak"] for t in timeline)
    identical = all(np.array_equal(model.params[k], v) for k, v in ref.params.items())
    return {"budget": memory.budget, "peak": memory.peak, "weights": memory.allocations["weights"],
            "state_bytes": opt.state_bytes(), "pages": opt.buffer.npages,
            "activations": acts, "stats": opt.stats, "losses": losses, "ref_losses": ref_losses,
            "identical": identical and losses == ref_losses, "timeline": timeline}


# ------------------------------------------------------------------ NF4's premise, measured (notebook 08)
def weight_statistics(model) -> dict[str, dict]:
    """Mean, standard deviation and kurtosis of every 2-D weight of ``model`` (its linear layers and embeddings).

    QLoRA's NF4 assumes "pretrained neural network weights usually have a zero-centered normal distribution"
    (§3); these are the numbers that test it. ``kurtosis`` is Pearson's, E[(w − μ)⁴] / σ⁴: 3 for a normal
    distribution, more for heavier tails; ``kurtosis_se`` = √(24 / n) is its sampling error under a normal.
    ``standardized`` holds ``(w − μ) / σ`` (float64, flattened). Computed in float64.
    """
    out = {}
    for name, w in model.params.items():
        if w.ndim != 2:
            continue
        x = np.asarray(w, np.float64).ravel()
        mean, std = float(x.mean()), float(x.std())
        z = (x - mean) / std
        out[name] = {"shape": w.shape, "mean": mean, "std": std, "kurtosis": float(np.mean(z**4)),
                     "kurtosis_se": float(np.sqrt(24 / x.size)), "standardized": z}
    return out


def normal_premise_verdict(stats: dict[str, dict], mean_tolerance: float = 0.05) -> dict:
    """Summarize :func:`weight_statistics`.

    ``zero_mean``: every ``|mean| ≤ mean_tolerance · std``. ``pooled_kurtosis``: the kurtosis of all standardized
    weights together; ``heavier_tails``: it exceeds 3 by more than four of its sampling errors. ``n_heavy``: the
    matrices whose own kurtosis exceeds 3 by more than two sampling errors (of ``n_matrices``). Also the
    extremes ``max_abs_mean_over_std``, ``min_kurtosis``, ``max_kurtosis``.
    """
    if not stats:
        raise ValueError("stats is empty")
    ratio = max(abs(v["mean"]) / v["std"] for v in stats.values())
    kurt = [v["kurtosis"] for v in stats.values()]
    z = np.concatenate([v["standardized"] for v in stats.values()])
    pooled = float(np.mean(z**4))
    return {"zero_mean": bool(ratio <= mean_tolerance), "max_abs_mean_over_std": float(ratio),
            "pooled_kurtosis": pooled, "heavier_tails": bool(pooled > 3 + 4 * np.sqrt(24 / z.size)),
            "n_heavy": sum(v["kurtosis"] > 3 + 2 * v["kurtosis_se"] for v in stats.values()),
            "n_matrices": len(stats), "min_kurtosis": float(min(kurt)), "max_kurtosis": float(max(kurt))}


def usage_fractions(x, quant_type: str = "nf4", blocksize: int = 64) -> np.ndarray:
    """The fraction of the elements of ``x`` that each 4-bit level takes, ordered from the most negative level
    to the most positive (:func:`minilora.quant.compare.code_usage`, normalized; FP4's codes sorted by value)."""
    from minilora.quant.compare import code_usage
    from minilora.quant.nf4 import get_4bit_code

    order = np.argsort(get_4bit_code(quant_type), kind="stable")
    return code_usage(x, quant_type, blocksize)[order] / np.size(x)


def largest_gap(code, lo: float = -0.5, hi: float = 0.5) -> float:
    """The widest gap between neighbouring levels of a codebook inside ``[lo, hi]`` (fine = small)."""
    c = np.unique(np.asarray(code, np.float64))
    inside = c[(c >= lo) & (c <= hi)]
    if inside.size < 2:
        raise ValueError(f"fewer than two levels of the codebook lie in [{lo}, {hi}]")
    return float(np.diff(inside).max())


# ------------------------------------------------------------------ double quantization with FP8 (notebook 09)
def fp8_compress_absmax(absmax, fmt=None, blocksize: int = 256) -> np.ndarray:
    """Double quantization of block scales with an OCP FP8 format instead of bitsandbytes' dynamic map.

    What the QLoRA paper's "8-bit floats" could also have meant (docs/errata.md, erratum 13), at the same
    storage: subtract the offset ``mean(absmax)`` (correctly rounded, as
    :func:`minilora.quant.double_quant.compress_absmax` does), then per block of ``blocksize`` scales divide by
    ``s = max|a − offset| / fmt.max`` (one float32 per block), round to ``fmt`` (default E4M3) and scale back.
    Returns the reconstructed float32 scales, shape of ``absmax``.
    """
    from minilora.formats import FP8_E4M3, round_to
    from minilora.quant.double_quant import exact_mean_f32

    fmt = FP8_E4M3 if fmt is None else fmt
    a = np.asarray(absmax, np.float32)
    offset = exact_mean_f32(a)
    centred = a - offset
    pad = (-a.size) % blocksize
    blocks = np.concatenate([centred, np.zeros(pad, np.float32)]).reshape(-1, blocksize)
    scale = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(fmt.max)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1))
    rec = (round_to((blocks / scale).astype(np.float32), fmt) * scale).astype(np.float32)
    return (rec.reshape(-1)[: a.size] + offset).astype(np.float32)


def merge_effect(model, eval_batch, seed: int = 0) -> dict:
    """What merging a trained QLoRA model's adapters into its 4-bit weights changes (``model`` is left as it is).

    Per QLoRA layer, :func:`minilora.peft.qlora.merge_rounding_error` (``delta_lost``: the fraction of ‖s·BA‖ the
    requantized weight does not carry; ``delta_rel``: ‖s·BA‖ / ‖W‖, how large the update is against the weight).
    For the whole model on ``eval_batch`` (idx, targets): exact match and token accuracy before and after
    :func:`~minilora.peft.merge_and_unload` (on a copy), the largest logit change and the fraction of positions
    whose predicted token changes. PEFT's merge warning is caught; ``warning`` holds its text.
    """
    import warnings

    from minilora.peft import merge_and_unload
    from minilora.peft.qlora import QLoRALinear, merge_rounding_error

    rng = np.random.default_rng(seed)
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, QLoRALinear):
            x = rng.standard_normal((16, m.in_features)).astype(np.float32)
            err = merge_rounding_error(m, x)
            w = m.qweight.dequantize()
            delta = m.delta_weight().astype(np.float32)
            err["delta_rel"] = float(np.linalg.norm(delta) / np.linalg.norm(w))
            layers[name] = err
    idx, targets = eval_batch
    before = data.accuracy(model, idx, targets)
    logits = model.forward(idx)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = merge_and_unload(copy.deepcopy(model))
    after = data.accuracy(merged, idx, targets)
    logits_merged = merged.forward(idx)[0]
    return {"layers": layers, "before": before, "after": after,
            "max_logit_change": float(np.abs(logits_merged - logits).max()),
            "changed_predictions": float(np.mean(logits_merged.argmax(-1) != logits.argmax(-1))),
            "warning": str(caught[0].message) if caught else ""}


__all__ = ["QLORA_CONFIG", "compare_methods", "fp8_compress_absmax", "largest_gap", "memory_table",
           "merge_effect", "normal_premise_verdict", "paging_demo", "prepared", "usage_fractions",
           "weight_statistics"]
