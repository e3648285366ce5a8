"""The experiments of chapters 11–13 (prompt tuning, p-tuning, prefix tuning / p-tuning v2, adapters), as functions.

* :func:`parameter_counts`: every method's trainable parameters on the tiny GPT, GPT-3 175B and LLaMA-7B;
* :func:`seed_runs`: the shipped base GPT fine-tuned on :data:`minilora.data.HELDOUT_TASK` with any method,
  once per seed, with the spread a verdict needs (:class:`Runs`, :func:`verdict`). Every run is
  :func:`minilora.experiments.recipe.finetune` with a :class:`~minilora.experiments.recipe.Recipe`
  (:data:`RECIPE`: the library's, with batches of 16 instead of 32 so that each chapter's runs fit in well
  under a minute), each method at its :data:`~minilora.experiments.recipe.DEFAULT_LR`: the one entry point
  (``get_peft_model``) and the one recipe of chapter 14, nothing of its own;
* positions: the base model's exact match when its positions are shifted (:func:`shifted_exact_match`). PEFT's
  prompt methods put the real tokens at positions ``p .. p+T-1``; the shipped base was pretrained at random
  position offsets, and this measures that the shift costs it nothing;
* what each method can change (the layer-0 attention identity, prompt tuning written as prefix tuning, a change
  of the values that an adapter can learn and a prefix cannot) is :mod:`minilora.experiments.methods_probe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from minilora import data
from minilora.base_model import BASE_CONFIG, load_base_model
from minilora.experiments.recipe import Recipe, finetune, method_of
from minilora.nn.gpt import GPT, GPTConfig
from minilora.peft import p_tuning, prefix_tuning, prompt_tuning
from minilora.peft.adapters import adapter_parameter_count
from minilora.peft.memory import ModelShape
from minilora.train import History

#: GPT-3 175B (Brown et al. 2020, Table 2.1): 96 layers, d_model 12288, 96 heads, 2048 positions, vocab 50257
GPT3_175B = ModelShape("GPT-3 175B", 50257, 12288, 96, 96, 4 * 12288, 2, True, 4 * 12288, 2 * 12288, 2048 * 12288)
SHAPES = {"tiny GPT": ModelShape.from_gpt(BASE_CONFIG), "GPT-3 175B": GPT3_175B, "LLaMA-7B": ModelShape.llama("7B")}

#: the chapters' recipe: the library's (AdamW without weight decay, constant per-method learning rate, 150
#: steps), with batches of 16
RECIPE = Recipe(steps=150, batch_size=16)
#: the seeds every chapter runs
SEEDS = (0, 1, 2)


def recipe_line(recipe: Recipe = RECIPE, seeds=SEEDS) -> str:
    """What every run of :func:`seed_runs` does, in words (the learning rate is each method's
    :data:`~minilora.experiments.recipe.DEFAULT_LR`).

    >>> recipe_line().split(", ")  # doctest: +NORMALIZE_WHITESPACE
    ['150 steps of AdamW (weight decay 0)', 'constant learning rate per method (recipe.DEFAULT_LR)',
     'batches of 16', 'seeds (0', '1', '2)']
    """
    lr = recipe.lr_for("lora")
    return (recipe.describe("lora").replace(f"learning rate {lr:g}", "learning rate per method (recipe.DEFAULT_LR)"
                                            if recipe.lr is None else f"learning rate {lr:g}")
            .replace(f", seed {recipe.seed}", f", seeds {tuple(seeds)}"))


# ----------------------------------------------------------------------------- counts
def parameter_counts(shape: ModelShape, num_virtual_tokens: int = 20, reduction_factor: float = 16,
                     lora_r: int = 8) -> dict[str, int]:
    """Trainable parameters of each method on ``shape`` (encoders of width n_embd, as PEFT's default).

    ``"full"`` is every parameter; LoRA is on q and v (PEFT's default targets).
    """
    p, d, L = num_virtual_tokens, shape.d_model, shape.n_layer
    return {
        "full fine-tuning": shape.n_params,
        f"LoRA (r={lora_r}, q and v)": shape.lora_params(lora_r, ("q_proj", "v_proj")),
        f"prompt tuning (p={p})": prompt_tuning.prompt_tuning_parameter_count(p, d),
        f"p-tuning, MLP (p={p}, H=d)": p_tuning.p_tuning_parameter_count(p, d, d),
        f"prefix tuning (p={p})": prefix_tuning.prefix_tuning_parameter_count(p, L, d),
        f"prefix tuning + projection (p={p}, H=d)": prefix_tuning.prefix_tuning_parameter_count(p, L, d, d),
        f"Houlsby adapters (reduction {reduction_factor:g})": adapter_parameter_count(d, L, reduction_factor, 2),
        f"Pfeiffer adapters (reduction {reduction_factor:g})": adapter_parameter_count(d, L, reduction_factor, 1),
    }


def gradcheck_gpt(seed: int = 0, **config) -> GPT:
    """A tiny float64 GPT for gradient checks (vocabulary 7, 9 positions, 2 layers, 2 heads, width 8), its weights
    moved far from GPT-2's small initialization (N(0, 0.3), LayerNorm weights around 1) so that attention is far
    from uniform and no gradient is ~0. ``config`` overrides GPTConfig fields."""
    model = GPT(GPTConfig(**{**dict(vocab_size=7, block_size=9, n_layer=2, n_head=2, n_embd=8, mlp_ratio=2,
                                    dtype="float64"), **config}), seed=seed)
    rng = np.random.default_rng(seed + 100)
    for name, param in model.params.items():
        param[...] = rng.normal(0, 0.3, param.shape) + (1.0 if ".ln_" in name and name.endswith("weight") else 0.0)
    return model


# ----------------------------------------------------------------------------- the toy vocabulary
def toy_tokenizer(text: str) -> list[int]:
    """Whitespace-separated tokens of :data:`minilora.data.VOCAB` as ids: ``"[sort] 3 ="`` -> ``[13, 3, 10]``.

    >>> toy_tokenizer("[sort] 3 =")
    [13, 3, 10]
    """
    ids = []
    for token in text.split():
        if token not in data.VOCAB:
            raise ValueError(f"token {token!r} is not in the toy vocabulary {data.VOCAB}")
        ids.append(data.VOCAB.index(token))
    return ids


# ----------------------------------------------------------------------------- positions
def shifted_exact_match(model: GPT, shifts, tasks=data.PRETRAIN_TASKS, n: int = 256, seed: int = 12345) -> dict:
    """Exact match of ``model`` on each task with its positions shifted: ``position_ids = s .. s+T-1``.

    Returns ``{task: array over shifts}``. Shift ``p`` is where PEFT's prompt methods put the real tokens (after
    ``p`` virtual tokens or a prefix of length ``p``).
    """
    out = {}
    for task in tasks:
        idx, targets = data.task_batch(task, n, np.random.default_rng([seed, 1 << 30]))
        out[task] = np.array([data.accuracy(model, idx, targets, position_ids=np.arange(s, s + idx.shape[1]))
                              ["exact_match"] for s in shifts])
    return out


# ----------------------------------------------------------------------------- training
@dataclass
class Runs:
    """One configuration fine-tuned once per seed: the reports and histories, and their summaries."""

    label: str
    reports: list[dict] = field(default_factory=list)
    histories: list[History] = field(default_factory=list)
    models: list = field(default_factory=list, repr=False)  # kept only with seed_runs(keep_models=True)

    def values(self, key: str = "exact_match_after") -> np.ndarray:
        """One report entry over the seeds."""
        return np.array([r[key] for r in self.reports], dtype=float)

    def mean(self, key: str = "exact_match_after") -> float:
        return float(self.values(key).mean())

    def summary(self, key: str = "exact_match_after", digits: int = 3) -> str:
        """``"mean ± sd (min–max over n seeds)"``."""
        v = self.values(key)
        return (f"{v.mean():.{digits}f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.{digits}f} "
                f"({v.min():.{digits}f}–{v.max():.{digits}f} over {v.size} seeds)")

    @property
    def trainable(self) -> int:
        return int(self.reports[0]["trainable"])

    def __repr__(self) -> str:
        return f"Runs({self.label!r}, exact match {self.summary()}, trainable {self.trainable:,d})"


def runs_table(runs: dict[str, Runs]) -> str:
    """One line per configuration: trained parameters, exact match (mean ± sd, range), mean token accuracy."""
    width = max(len(label) for label in runs) + 2
    lines = [f"{'method':{width}s} {'trained':>8s}  {'exact match (mean ± sd, range)':>40s}  {'token accuracy':>14s}"]
    lines += [f"{label:{width}s} {r.trainable:8,d}  {r.summary():>40s}  {r.mean('token_acc_after'):14.3f}"
              for label, r in runs.items()]
    return "\n".join(lines)


def seed_runs(config, seeds=SEEDS, label: str | None = None, keep_models: bool = False,
              recipe: Recipe = RECIPE, **changes) -> Runs:
    """``config``'s method fine-tuned from a fresh shipped base once per seed.

    Each run is ``recipe.finetune(load_base_model(), config, recipe.replace(seed=seed, **changes),
    include_step0=True)``: ``changes`` are :class:`~minilora.experiments.recipe.Recipe` fields (``steps``, ``lr``,
    ``eval_every``, ...), so every history starts with the model as training starts, at step 0.
    ``keep_models`` keeps the trained models.
    """
    runs = Runs(label or method_of(config))
    for seed in seeds:
        model, hist, report = finetune(load_base_model(), config, recipe.replace(seed=seed, **changes),
                                       include_step0=True)
        runs.reports.append(report)
        runs.histories.append(hist)
        if keep_models:
            runs.models.append(model)
    return runs


def verdict(a: Runs, b: Runs, key: str = "exact_match_after") -> str:
    """``"higher"`` / ``"lower"`` when every seed of ``a`` is above / below every seed of ``b``, else
    ``"not distinguishable"`` (the ranges overlap)."""
    va, vb = a.values(key), b.values(key)
    if va.min() > vb.max():
        return "higher"
    if va.max() < vb.min():
        return "lower"
    return "not distinguishable"


def compared(a: Runs, b: Runs, key: str = "exact_match_after") -> str:
    """:func:`verdict` as words that precede ``b``: ``"higher than"``, ``"lower than"``, ``"not distinguishable
    from"``."""
    return {"higher": "higher than", "lower": "lower than"}.get(verdict(a, b, key), "not distinguishable from")


__all__ = ["GPT3_175B", "RECIPE", "Runs", "SEEDS", "SHAPES", "compared", "gradcheck_gpt", "parameter_counts",
           "recipe_line", "runs_table", "seed_runs", "shifted_exact_match", "toy_tokenizer", "verdict"]
