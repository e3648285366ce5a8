"""The experiments of chapters 11–13 (prompt tuning, p-tuning, prefix tuning / p-tuning v2, adapters), as functions.

* :func:`parameter_counts`: every method's trainable parameters on the tiny GPT, GPT-3 175B and LLaMA-7B;
* :func:`finetune` / :func:`seed_runs`: the shipped base GPT fine-tuned on :data:`minilora.data.HELDOUT_TASK`
  with any method (finetune_gpt's recipe, AdamW without weight decay at a constant rate for 150 steps, with
  batches of 16 instead of 32 so that each chapter's runs fit in well under a minute), over seeds, with the
  spread a verdict needs (:class:`Runs`, :func:`verdict`);
* positions: the base model's exact match when its positions are shifted (:func:`shifted_exact_match`), and
  :func:`keep_positions`, a variant of the prompt methods whose real tokens keep their pretraining positions.
  It is NOT PEFT's behaviour (the methods themselves follow PEFT); it separates the cost of the shift from what
  a prompt can do;
* what each method can change (the layer-0 attention identity, prompt tuning written as prefix tuning, a change
  of the values that an adapter can learn and a prefix cannot) is :mod:`minilora.experiments.methods_probe`.

The wiring of all methods into one entry point and one recipe (``get_peft_model``, chapter 14) replaces
:func:`apply_method` and the keyword recipe here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from minilora import data
from minilora.base_model import BASE_CONFIG, load_base_model
from minilora.nn import functional as F
from minilora.nn.gpt import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.peft import LoraConfig, inject_lora, p_tuning, prefix_tuning, prompt_tuning
from minilora.peft import adapters as adapters_mod
from minilora.peft.adapters import BnConfig, adapter_parameter_count
from minilora.peft.memory import ModelShape
from minilora.peft.prefix_tuning import PrefixTuningModel
from minilora.peft.prompt_learning import PromptLearningModel
from minilora.train import History, evaluate, train

#: GPT-3 175B (Brown et al. 2020, Table 2.1): 96 layers, d_model 12288, 96 heads, 2048 positions, vocab 50257
GPT3_175B = ModelShape("GPT-3 175B", 50257, 12288, 96, 96, 4 * 12288, 2, True, 4 * 12288, 2 * 12288, 2048 * 12288)
SHAPES = {"tiny GPT": ModelShape.from_gpt(BASE_CONFIG), "GPT-3 175B": GPT3_175B, "LLaMA-7B": ModelShape.llama("7B")}

#: constant learning rates per method (AdamW), from a sweep over factors of ~3 on seed 0 (notebooks show it)
DEFAULT_LR = {"prompt": 0.3, "ptuning": 3e-3, "prefix": 0.1, "prefix_projection": 3e-3, "adapter": 1e-2,
              "lora": 1e-2, "full": 1e-3}


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
class _KeptPositions:
    """Mixin: the real tokens keep positions 0 .. T-1 (the virtual tokens of prompt tuning take 0 .. p-1 too)."""

    def position_ids(self, seq_len: int) -> np.ndarray:
        real = np.arange(seq_len)
        if isinstance(self, PrefixTuningModel):
            return real
        return np.concatenate([np.arange(self.num_virtual_tokens), real])


class KeptPositionsPromptModel(_KeptPositions, PromptLearningModel):
    """Prompt tuning / p-tuning with the real tokens at their pretraining positions (NOT PEFT)."""


class KeptPositionsPrefixModel(_KeptPositions, PrefixTuningModel):
    """Prefix tuning with the real tokens at positions 0 .. T-1 (NOT PEFT, which gives p .. p+T-1)."""


def keep_positions(model: PromptLearningModel) -> PromptLearningModel:
    """The same base and prompt encoder, with the real tokens at positions 0 .. T-1 (an experiment, not PEFT).

    A virtual token's position only adds a constant to a trainable vector, so moving the virtual tokens costs
    prompt tuning nothing; moving the real tokens changes what the frozen model computes for them.
    """
    cls = KeptPositionsPrefixModel if isinstance(model, PrefixTuningModel) else KeptPositionsPromptModel
    return cls(model.base_model, model.prompt_encoder, model.peft_config)


def shifted_exact_match(model: GPT, shifts, tasks=data.PRETRAIN_TASKS, n: int = 256, seed: int = 12345) -> dict:
    """Exact match of ``model`` on each task with its positions shifted: ``position_ids = s .. s+T-1``.

    Returns ``{task: array over shifts}``. Shift ``p`` is where PEFT's prompt methods put the real tokens.
    """
    out = {}
    for task in tasks:
        idx, targets = data.task_batch(task, n, np.random.default_rng([seed, 1 << 30]))
        row = []
        for s in shifts:
            logits, _ = model.forward(idx, position_ids=np.arange(s, s + idx.shape[1]))
            mask = targets != F.IGNORE_INDEX
            row.append(float(((logits.argmax(-1) == targets) | ~mask).all(axis=1).mean()))
        out[task] = np.array(row)
    return out


# ----------------------------------------------------------------------------- training
def method_name(config) -> str:
    """The key of :data:`DEFAULT_LR` for a config (None = full fine-tuning)."""
    if config is None:
        return "full"
    if isinstance(config, LoraConfig):
        return "lora"
    if isinstance(config, prompt_tuning.PromptTuningConfig):
        return "prompt"
    if isinstance(config, p_tuning.PromptEncoderConfig):
        return "ptuning"
    if isinstance(config, prefix_tuning.PrefixTuningConfig):
        return "prefix_projection" if config.prefix_projection else "prefix"
    if isinstance(config, BnConfig):
        return "adapter"
    raise TypeError(f"config must be a method config or None (full fine-tuning), got {type(config).__name__}")


def apply_method(base: GPT, config, seed: int = 0):
    """Apply the method of ``config`` to ``base`` (None: full fine-tuning); returns the model to train."""
    name = method_name(config)
    if name == "full":
        return base.unfreeze()
    if name == "lora":
        return inject_lora(base, config, seed=seed)
    if name == "prompt":
        return prompt_tuning.apply(base, config, seed=seed, tokenizer=toy_tokenizer)
    if name == "ptuning":
        return p_tuning.apply(base, config, seed=seed)
    if name.startswith("prefix"):
        return prefix_tuning.apply(base, config, seed=seed)
    return adapters_mod.apply(base, config, seed=seed)


def finetune(config, seed: int = 0, steps: int = 150, batch_size: int = 16, lr: float | None = None,
             kept_positions: bool = False, eval_every: int = 0, base: GPT | None = None) -> tuple:
    """Fine-tune a fresh copy of the shipped base (or ``base``) on the held-out task with ``config``'s method.

    Returns ``(model, history, report)``; ``report`` has ``method``, ``lr``, ``trainable``, ``total``,
    ``exact_match_before`` / ``_after``, ``token_acc_before`` / ``_after``, ``loss_before`` / ``_after`` and
    ``seconds`` (training only). "Before" is the model as training starts (after the method was applied); the
    history's evaluations start with it, at step 0.
    """
    model = apply_method(load_base_model() if base is None else base, config, seed)
    if kept_positions:
        model = keep_positions(model)
    name = method_name(config)
    lr = DEFAULT_LR[name] if lr is None else lr
    eval_batch = data.heldout_eval_batch()
    before, loss_before = data.accuracy(model, *eval_batch), evaluate(model, eval_batch)
    t0 = time.perf_counter()
    hist = train(model, data.heldout_train_data(batch_size, seed=seed), AdamW(model, lr=lr, weight_decay=0.0),
                 steps=steps, eval_every=eval_every, eval_data=eval_batch,
                 eval_fn=lambda m: data.accuracy(m, *eval_batch), progress=False, desc=f"finetune ({name})")
    seconds = time.perf_counter() - t0
    after = hist.eval_metrics[-1] if steps else before
    if steps:  # the history starts with the model as training starts (step 0)
        hist.eval_step.insert(0, 0)
        hist.eval_loss.insert(0, loss_before)
        hist.eval_metrics.insert(0, before)
    report = {"method": name, "lr": lr, "trainable": model.num_params(trainable_only=True),
              "total": model.num_params(), "exact_match_before": before["exact_match"],
              "exact_match_after": after["exact_match"], "token_acc_before": before["token_acc"],
              "token_acc_after": after["token_acc"], "loss_before": loss_before,
              "loss_after": hist.eval_loss[-1] if steps else loss_before, "seconds": seconds}
    return model, hist, report


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


def seed_runs(config, seeds=(0, 1, 2), label: str | None = None, keep_models: bool = False, **kw) -> Runs:
    """:func:`finetune` once per seed (keyword arguments go to it); ``keep_models`` keeps the trained models."""
    runs = Runs(label or method_name(config))
    for seed in seeds:
        model, hist, report = finetune(config, seed=seed, **kw)
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


__all__ = ["DEFAULT_LR", "GPT3_175B", "KeptPositionsPrefixModel", "KeptPositionsPromptModel", "Runs", "SHAPES",
           "apply_method", "compared", "finetune", "gradcheck_gpt", "keep_positions", "method_name", "parameter_counts",
           "runs_table", "seed_runs", "shifted_exact_match", "toy_tokenizer", "verdict"]
