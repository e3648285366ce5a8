"""Chapter 14: every PEFT method on one task, from one base, with one recipe — side by side.

:func:`compare` fine-tunes a fresh copy of the shipped base GPT on :data:`minilora.data.HELDOUT_TASK` with each
configuration and seed, every run through :func:`minilora.experiments.recipe.finetune` with the same
:class:`~minilora.experiments.recipe.Recipe` (:data:`CHAPTER_RECIPE`: only the learning rate is the method's
default), and measures per configuration:

* ``trainable`` — PEFT's count of trainable parameters;
* ``bytes`` — what :func:`minilora.peft.save_adapter` writes (the whole model's ``GPT.save`` for full
  fine-tuning), and ``inference_bytes``, the part inference needs (p-tuning and a reparameterized prefix
  also write their encoder, to resume training; PEFT's file holds only its output);
* ``memory`` — :func:`minilora.peft.memory.measure` after one training step (bytes of the real arrays);
* ``step_ratio`` — median step time over full fine-tuning's, timed round-robin in one process
  (:func:`step_time_ratios`), so a busy machine slows every method alike;
* ``steps_to_threshold`` — per seed, the first step at which the running mean of the training loss over
  :data:`SMOOTHING` steps is at most :data:`LOSS_THRESHOLD` (None: not reached);
* ``exact_match`` and ``loss`` — per seed, on the 512 held-out sequences after the last step.

:func:`default_configs` are each method's defaults (:data:`minilora.experiments.recipe.METHOD_DEFAULTS`);
:func:`budget_configs` give every method the configuration whose trainable-parameter count is nearest a budget.
:func:`comparison` caches the chapter's run (numbers only), so the notebook and ``figures/peft_methods.png`` show
the same one.
"""

from __future__ import annotations

import copy
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from minilora import data
from minilora.base_model import load_base_model
from minilora.experiments.recipe import METHOD_DEFAULTS, METHODS, Recipe, finetune, method_config, method_of, prepare
from minilora.peft import count_parameters, peft_config_of, save_adapter
from minilora.peft.memory import MemoryBreakdown, measure
from minilora.peft.prompt_io import ENCODER_NAME

#: the chapter's recipe: the library's (AdamW, constant per-method learning rate), shortened to fit CI
CHAPTER_RECIPE = Recipe(steps=100, batch_size=16)
SEEDS = (0, 1, 2)
#: the training-loss level "steps to threshold" waits for (mean cross-entropy per answer token, nats)
LOSS_THRESHOLD = 1.5
#: steps in the running mean of the training loss that is compared with the threshold
SMOOTHING = 10
#: the trainable-parameter budget of the budget-matched comparison (prefix tuning's default, p = 8)
BUDGET = 2048
#: the learning rates :func:`lr_sweep` tries (how :data:`minilora.experiments.recipe.DEFAULT_LR` was chosen)
LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def default_configs() -> dict[str, tuple[Any, Any]]:
    """``{method: (peft_config, quantization)}`` of every method at its defaults, in :data:`METHODS` order."""
    return {method: method_config(method) for method in METHODS}


#: per method, the option that :func:`budget_configs` varies, and its candidate values
BUDGET_KNOBS: dict[str, tuple[str, tuple]] = {
    "lora": ("r", tuple(range(1, 17))),
    "qlora": ("r", tuple(range(1, 17))),
    "prompt": ("num_virtual_tokens", tuple(range(1, 16))),
    "ptuning": ("encoder_hidden_size", tuple(range(1, 65))),
    "prefix": ("num_virtual_tokens", tuple(range(1, 16))),
    "adapter": ("reduction_factor", tuple(64 / m for m in range(1, 33))),
}


def budget_configs(budget: int = BUDGET) -> dict[str, tuple[Any, Any]]:
    """Every PEFT method at the configuration (of :data:`BUDGET_KNOBS`) with the trainable count nearest
    ``budget``; QLoRA's LoRA goes on q and v, as LoRA's default does (its default is every linear layer)."""
    out = {}
    for method, (knob, values) in BUDGET_KNOBS.items():
        fixed = {"target_modules": METHOD_DEFAULTS["lora"]["target_modules"]} if method == "qlora" else {}
        candidates = [method_config(method, **fixed, **{knob: v}) for v in values]
        counts = [count_parameters(prepare(load_base_model(), cfg, None))[0] for cfg, _ in candidates]
        best = int(np.argmin([abs(c - budget) for c in counts]))  # the first of equally near ones
        out[method] = candidates[best]
    return out


def steps_to_threshold(history, threshold: float = LOSS_THRESHOLD, window: int = SMOOTHING) -> int | None:
    """The first step (1-based count of steps taken) whose running mean of the last ``window`` training losses
    is at most ``threshold``; None if no step gets there.

    >>> from minilora.train import History
    >>> steps_to_threshold(History(loss=[3.0, 2.0, 0.5, 0.4, 0.3]), threshold=1.0, window=2)
    4
    """
    loss = np.asarray(history.loss, float)
    if loss.size < window:
        return None
    running = np.convolve(loss, np.ones(window) / window, mode="valid")  # running[i]: steps i .. i+window-1
    hit = np.flatnonzero(running <= threshold)
    return int(hit[0] + window) if hit.size else None


def saved_bytes(model) -> tuple[int, int]:
    """``(bytes on disk, bytes inference needs)`` of what saving ``model`` writes: the adapter directory
    (:func:`minilora.peft.save_adapter`), or for a fully fine-tuned GPT its ``GPT.save`` file."""
    with tempfile.TemporaryDirectory() as tmp:
        if peft_config_of(model) is None:  # full fine-tuning: the whole model
            file = Path(tmp) / "model.npz"
            model.save(file)
            size = file.stat().st_size
            return size, size
        path = save_adapter(model, Path(tmp) / "adapter")
        sizes = {f.name: f.stat().st_size for f in Path(path).iterdir()}
    return sum(sizes.values()), sum(v for k, v in sizes.items() if k != ENCODER_NAME)


def measure_memory(method: str, config: Any, quantization: Any, recipe: Recipe = CHAPTER_RECIPE) -> MemoryBreakdown:
    """:func:`~minilora.peft.memory.measure` of one training step of a fresh prepared copy of the base."""
    model = prepare(load_base_model(), config, quantization, seed=recipe.seed)
    batch = data.heldout_train_data(recipe.batch_size, seed=recipe.seed)(0)
    return measure(model, recipe.make_optimizer(model, method), batch, method)


def step_time_ratios(configs: dict[str, tuple[Any, Any]], recipe: Recipe = CHAPTER_RECIPE, steps: int = 20,
                     reference: str = "full") -> dict[str, float]:
    """Median seconds per training step of each configuration over ``reference``'s, timed round-robin.

    Every configuration gets a prepared copy of the base and its optimizer; then ``steps`` times, each takes one
    step (forward, backward, update) on the same batch in turn, so the machine's load is shared alike. The
    first round is a warm-up and is not counted.
    """
    if reference not in configs:
        raise ValueError(f"reference {reference!r} must be one of the configurations {list(configs)}")
    x, y = data.heldout_train_data(recipe.batch_size, seed=recipe.seed)(0)
    runs = {}
    for label, (config, quantization) in configs.items():
        model = prepare(load_base_model(), config, quantization, seed=recipe.seed)
        runs[label] = (model, recipe.make_optimizer(model, method_of(config, quantization)))
    times: dict[str, list[float]] = {label: [] for label in configs}
    for i in range(steps + 1):
        for label, (model, opt) in runs.items():
            t0 = time.perf_counter()
            model.zero_grad()
            model.forward(x, y)
            model.backward()
            opt.step()
            if i:
                times[label].append(time.perf_counter() - t0)
    ref = float(np.median(times[reference]))
    return {label: float(np.median(t)) / ref for label, t in times.items()}


def compare(configs: dict[str, tuple[Any, Any]], seeds=SEEDS, recipe: Recipe = CHAPTER_RECIPE,
            timing: bool = True) -> dict[str, dict]:
    """Train every configuration from the shipped base for every seed and measure it (module docstring).

    Returns ``{label: row}``, each row with ``method``, ``config`` (its repr), ``trainable``, ``bytes``,
    ``inference_bytes``, ``memory`` (a MemoryBreakdown), ``step_ratio`` (None without ``timing`` or without a
    ``"full"`` configuration), ``lr``, and per seed ``exact_match``, ``loss``, ``steps_to_threshold``, ``curve``
    (the training loss, a float array per step).
    """
    ratios = step_time_ratios(configs, recipe) if timing and "full" in configs else {}
    out = {}
    for label, (config, quantization) in configs.items():
        method = method_of(config, quantization)
        row: dict[str, Any] = {"method": method, "config": "every parameter" if config is None else repr(config),
                               "exact_match": [], "loss": [], "steps_to_threshold": [], "curve": []}
        for seed in seeds:
            model, hist, rep = finetune(load_base_model(), copy.deepcopy(config), recipe.replace(seed=seed),
                                        quantization=quantization)
            row["exact_match"].append(rep["exact_match_after"])
            row["loss"].append(rep["loss_after"])
            row["steps_to_threshold"].append(steps_to_threshold(hist))
            row["curve"].append(np.asarray(hist.loss, float))
            if seed == seeds[0]:
                row["bytes"], row["inference_bytes"] = saved_bytes(model)
                row["trainable"], row["lr"] = rep["trainable"], rep["lr"]
        row["memory"] = measure_memory(method, config, quantization, recipe)
        row["step_ratio"] = ratios.get(label)
        out[label] = row
    return out


def lr_sweep(method: str, lrs=LR_GRID, recipe: Recipe = CHAPTER_RECIPE) -> dict[float, float]:
    """Held-out loss after ``recipe`` (seed ``recipe.seed``) of ``method`` at its default configuration, per
    learning rate: ``{lr: loss_after}``. Its lowest entry is the method's default learning rate."""
    config, quantization = method_config(method)
    return {lr: finetune(load_base_model(), copy.deepcopy(config), recipe.replace(lr=lr),
                         quantization=quantization)[2]["loss_after"] for lr in lrs}


def spread(values) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` over seeds (std 0 for one seed).

    >>> spread([0.5, 0.7, 0.9])
    (0.7, 0.2)
    """
    v = np.asarray(values, float)
    return float(round(v.mean(), 12)), float(round(v.std(ddof=1), 12)) if v.size > 1 else 0.0


def threshold_summary(steps: list[int | None]) -> str:
    """``"34 ± 5 (3/3)"``: mean ± std of the steps over the seeds that reached the threshold, and how many did.

    >>> threshold_summary([30, 40, None]), threshold_summary([None, None])
    ('35 ± 7 (2/3)', 'not reached (0/2)')
    """
    hit = [s for s in steps if s is not None]
    if not hit:
        return f"not reached (0/{len(steps)})"
    mean, std = spread(hit)
    return f"{mean:.0f} ± {std:.0f} ({len(hit)}/{len(steps)})"


def table(rows: dict[str, dict]) -> str:
    """The comparison as a fixed-width text table (one line per configuration)."""
    head = (f"{'configuration':<22}{'trainable':>10}{'bytes':>10}{'infer. B':>10}{'memory':>11}{'step':>7}"
            f"{'steps to loss ' + format(LOSS_THRESHOLD, 'g'):>22}{'exact match':>16}")
    lines = [head, "-" * len(head)]
    for label, r in rows.items():
        em, em_sd = spread(r["exact_match"])
        ratio = "—" if r["step_ratio"] is None else f"{r['step_ratio']:.2f}x"
        lines.append(f"{label:<22}{r['trainable']:>10,d}{r['bytes']:>10,d}{r['inference_bytes']:>10,d}"
                     f"{r['memory'].total:>11,d}{ratio:>7}{threshold_summary(r['steps_to_threshold']):>22}"
                     f"{f'{em:.3f} ± {em_sd:.3f}':>16}")
    return "\n".join(lines)


def _openblas_threads():
    """``(get, set)`` of the OpenBLAS that NumPy's wheel bundles (ctypes functions), or ``(None, None)``."""
    from minilora.perf import openblas_function

    get, set_ = openblas_function("get_num_threads"), openblas_function("set_num_threads")
    return (get, set_) if get is not None and set_ is not None else (None, None)


@contextmanager
def one_blas_thread():
    """Run the block with NumPy's OpenBLAS on one thread (restored after; a no-op where it cannot be set).

    Float32 round-off depends on how a matrix product is split over threads, and a few of the comparison's
    runs (QLoRA's, with its bf16 compute) amplify it over 100 steps into a different exact match. On one thread
    the chapter's numbers, and ``figures/peft_methods.png`` (which ``python -m minilora figures`` also draws on
    one thread), do not depend on the machine's core count.
    """
    get, set_ = _openblas_threads()
    if get is None:
        yield
        return
    before = int(get())
    set_(1)
    try:
        yield
    finally:
        set_(before)


@lru_cache(maxsize=1)
def comparison(timing: bool = True) -> dict[str, dict[str, dict]]:
    """The chapter's run, computed once per process (treat it as read-only): ``{"defaults":
    compare(default_configs()), "budget": compare(budget_configs())}``; a budget configuration equal to a
    default one reuses its row, and the budget rows are not timed again. It runs on one BLAS thread
    (:func:`one_blas_thread`), so its numbers do not depend on the machine's core count."""
    with one_blas_thread():
        return _comparison(timing)


def _comparison(timing: bool) -> dict[str, dict[str, dict]]:
    defaults = default_configs()
    rows = compare(defaults, timing=timing)
    budget = {}
    for method, pair in budget_configs().items():
        same = defaults.get(method) == pair
        budget[method] = rows[method] if same else compare({method: pair}, timing=False)[method]
    return {"defaults": rows, "budget": budget}


__all__ = ["BUDGET", "BUDGET_KNOBS", "CHAPTER_RECIPE", "LOSS_THRESHOLD", "LR_GRID", "SEEDS", "SMOOTHING",
           "budget_configs", "compare", "comparison", "default_configs", "lr_sweep", "measure_memory",
           "one_blas_thread", "saved_bytes", "spread", "step_time_ratios", "steps_to_threshold", "table",
           "threshold_summary"]
