"""The blog's training-strategy claims (its section 训练策略), tested by LoRA fine-tuning of the shipped base GPT.

Every experiment is one call of :func:`minilora.experiments.recipe.finetune` with one
:class:`~minilora.experiments.recipe.Recipe` — the same pair the CLI, the other chapters and the method comparison
use — on the shipped base GPT (:func:`minilora.load_base_model`) with LoRA (:data:`LORA`: ``r = 8``,
``lora_alpha = 16`` on ``q_proj`` and ``v_proj``) on the held-out task (:data:`minilora.data.HELDOUT_TASK`, a task
the base model never saw), scored by its held-out cross-entropy on the :data:`EVAL_SIZE` fixed sequences of
:func:`minilora.data.heldout_eval_batch`, which the training stream never draws. Each number that carries a verdict
is run with several seeds (the recipe's ``seed`` draws the adapter's initial ``A`` and the training batches) and is
reported as mean ± standard deviation.

The claims and how each is tested:

* **"cosine annealing helps SGD a lot, Adam/AdamW little"** (经验：对于SGD提升比较明显，但是对Adam，AdamW影响较小)
  — :func:`schedule_study`. Each optimizer × schedule pair gets its own learning rate from a small sweep
  (:func:`tune_lr`, the blog's lr among the points), then the two schedules are compared per seed. Each half
  of the claim has its own test: :func:`helps` for SGD, :func:`little_effect` for Adam and AdamW.
* **the recipe** (lr 3e-4, warmup 100, weight decay 0.1; SGD lr 0.1, momentum 0.9: :data:`BLOG_ADAMW`,
  :data:`BLOG_SGD`) — one point of each sweep, and :func:`recipe_ablations` changes one of its settings at a time.
* **"repeating the data does not help and may hurt"** (对数据循环多次使用，并不会提升性能，相反可能会导致结果的恶化)
  — :func:`repetition_study`: 1, 2, 4 and 8 epochs over the same N examples (``finetune(train_data=...)``).
  More epochs are more steps: the claim is about passing over *the same data* again, so the data is fixed and
  the number of passes varies (a fixed number of steps would fix the number of passes too). With a constant
  learning rate after warmup, the first E epochs of an 8-epoch run *are* an E-epoch run, so one run per seed is
  evaluated after each epoch (``finetune(eval_at=...)``). The same steps on fresh examples are the control that
  separates "more passes" from "more data".
* **"SGD saves the memory of Adam's extra state"** and **gradient accumulation**: see
  :mod:`minilora.experiments.memory`.

A verdict is ``"supported"``, ``"not supported"`` or ``"inconclusive at this budget"``, decided from the
per-seed differences (a 95 % Student-t interval) against the seed spread of the final loss: see
:class:`Effect`. Results are memoised per recipe (a frozen dataclass, seed included), so a notebook that reuses
a run pays for it once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from minilora import data
from minilora.experiments.recipe import Recipe, finetune, prepare
from minilora.experiments.verdicts import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Effect,
    Summary,
    Verdict,
    all_of,
    any_of,
    helps,
    little_effect,
    none_of,
    paired_effect,
    verdict_table,
)
from minilora.peft import LoraConfig
from minilora.train import History

__all__ = ["SEEDS", "EVAL_SIZE", "LORA", "LR_GRID", "OPTIMIZERS", "Recipe", "BLOG_ADAMW", "BLOG_SGD", "BASE",
           "blog_optimizer", "lora_model", "RunResult", "run", "losses", "exact_matches", "Tuned", "tune_lr",
           "schedule_study", "schedule_verdicts", "optimizer_verdict", "late_improvement", "recipe_ablations",
           "ablation_verdicts", "epoch_stream", "repetition_study", "repetition_verdicts",
           # re-exported from minilora.experiments.verdicts
           "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE", "Summary", "Effect", "paired_effect", "helps",
           "little_effect", "all_of", "any_of", "none_of", "Verdict", "verdict_table"]

#: seeds of every run that carries a verdict (the first one also tunes the learning rates)
SEEDS = (0, 1, 2)
#: held-out sequences scored after each run: all of :func:`minilora.data.heldout_eval_batch`, as ``finetune`` does
EVAL_SIZE = len(data.heldout_eval_batch()[0])
#: the adapter of every run: LoRA r = 8, alpha = 16 on q_proj and v_proj
LORA = LoraConfig(r=8, lora_alpha=16, target_modules=("q_proj", "v_proj"))
#: the learning rates swept per optimizer: half-decades, each containing the blog's value (3e-4; SGD 0.1)
LR_GRID = {"sgd": (0.003, 0.01, 0.03, 0.1), "adam": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
           "adamw": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)}
#: the optimizers compared, in the chapter's order
OPTIMIZERS = ("sgd", "adam", "adamw")
LABELS = {"sgd": "SGD (momentum 0.9)", "adam": "Adam", "adamw": "AdamW (weight decay 0.1)"}

#: the blog's recipe for AdamW: lr 3e-4, warmup 100, weight decay 0.1, cosine (150 steps of 16 sequences here)
BLOG_ADAMW = Recipe(steps=150, batch_size=16, lr=3e-4, schedule="cosine", warmup_steps=100, weight_decay=0.1,
                    optimizer="adamw")
#: the blog's SGD: lr 0.1, momentum 0.9 (no weight decay: torch's SGD decay is L2, not the AdamW 0.1)
BLOG_SGD = BLOG_ADAMW.replace(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0)
#: the starting point of the sweeps: the blog's recipe with a warmup that fits the 150-step budget
BASE = BLOG_ADAMW.replace(warmup_steps=10)


def blog_optimizer(recipe: Recipe, optimizer: str) -> Recipe:
    """``recipe`` with ``optimizer`` at the blog's settings: SGD with momentum 0.9 and no weight decay, Adam with
    no weight decay, AdamW with weight decay 0.1."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    return recipe.replace(optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0,
                          weight_decay=0.1 if optimizer == "adamw" else 0.0)


def lora_model(seed: int):
    """A fresh copy of the shipped base GPT with the chapter's adapter (:data:`LORA`), as every run starts."""
    import minilora

    return prepare(minilora.load_base_model(), LORA, seed=seed)


@dataclass(frozen=True)
class RunResult:
    """One run: held-out cross-entropy and exact match at the end, the held-out loss at the steps asked for
    (``curve``: step -> loss), the training history and ``finetune``'s report."""

    loss: float
    exact_match: float
    history: History = field(repr=False, compare=False)
    curve: dict[int, float] = field(default_factory=dict, repr=False, compare=False)
    report: dict = field(default_factory=dict, repr=False, compare=False)


def run(recipe: Recipe, train_data: Callable[[int], tuple] | None = None, eval_at: Sequence[int] = ()) -> RunResult:
    """``finetune`` a fresh LoRA model (:data:`LORA`) with ``recipe``; memoised when ``train_data`` and ``eval_at``
    are the defaults.

    Parameters
    ----------
    recipe : the settings; its ``seed`` draws the adapter's A and (by default) the training batches.
    train_data : ``train_data(i) -> (idx, targets)`` for micro-batch ``i`` (default: the held-out task's stream).
    eval_at : also score the held-out loss after these steps (``curve``); each must be in 1 … ``steps``.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a minilora.experiments.recipe.Recipe, got {type(recipe).__name__}")
    eval_at = tuple(sorted(set(eval_at)))
    if eval_at and not all(isinstance(s, (int, np.integer)) and 1 <= s <= recipe.steps for s in eval_at):
        raise ValueError(f"eval_at must lie in 1 … {recipe.steps}, got {eval_at}")
    if train_data is None and not eval_at:
        return _run_default(recipe)
    return _run(recipe, train_data, eval_at)


def _run(recipe: Recipe, train_data, eval_at: tuple[int, ...]) -> RunResult:
    import minilora

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a too-large lr may diverge: inf/NaN
        _, hist, report = finetune(minilora.load_base_model(), LORA, recipe, train_data=train_data, eval_at=eval_at)
    curve = {s: loss for s, loss in zip(hist.eval_step, hist.eval_loss) if s in eval_at}
    loss = report["loss_after"]
    return RunResult(float(loss) if np.isfinite(loss) else math.inf, float(report["exact_match_after"]), hist, curve,
                     report)


@functools.cache
def _run_default(recipe: Recipe) -> RunResult:
    return _run(recipe, None, ())


# ------------------------------------------------------------------ the runs over seeds
def losses(recipe: Recipe, seeds: Sequence[int] = SEEDS) -> Summary:
    """Held-out loss of ``recipe`` over ``seeds``."""
    return Summary(tuple(run(recipe.replace(seed=s)).loss for s in seeds))


def exact_matches(recipe: Recipe, seeds: Sequence[int] = SEEDS) -> Summary:
    """Held-out exact match of ``recipe`` over ``seeds``."""
    return Summary(tuple(run(recipe.replace(seed=s)).exact_match for s in seeds))


# ------------------------------------------------------------------ learning rates and schedules
@dataclass(frozen=True)
class Tuned:
    """A learning-rate sweep on one seed: the loss at each lr and the best lr (``at_edge``: the best is
    the smallest or largest lr tried, after extending the grid as far as allowed)."""

    recipe: Recipe
    sweep: dict[float, float]
    best_lr: float
    at_edge: bool


def tune_lr(recipe: Recipe, lrs: Sequence[float], seed: int = SEEDS[0], extend: int = 2) -> Tuned:
    """Sweep ``lrs`` (ascending) for ``recipe``; while the best is at an end, try the next half-decade out
    (up to ``extend`` more points). Diverged runs count as infinitely bad."""
    lrs = sorted(float(x) for x in lrs)
    if len(lrs) < 2:
        raise ValueError(f"lrs needs at least 2 learning rates, got {lrs}")
    sweep = {lr: run(recipe.replace(lr=lr, seed=seed)).loss for lr in lrs}
    factor = math.sqrt(10)
    for _ in range(extend):
        best = min(sweep, key=sweep.get)
        ordered = sorted(sweep)
        if best == ordered[0]:
            new = float(f"{ordered[0] / factor:.2g}")
        elif best == ordered[-1]:
            new = float(f"{ordered[-1] * factor:.2g}")
        else:
            break
        sweep[new] = run(recipe.replace(lr=new, seed=seed)).loss
    sweep = dict(sorted(sweep.items()))
    best = min(sweep, key=sweep.get)
    return Tuned(recipe, sweep, best, best in (min(sweep), max(sweep)))


def schedule_study(optimizers: Sequence[str] = OPTIMIZERS, seeds: Sequence[int] = SEEDS, base: Recipe = BASE,
                   grids: dict[str, Sequence[float]] | None = None) -> dict:
    """Each optimizer under each schedule at its own tuned learning rate, over ``seeds``.

    Returns ``{optimizer: {"constant": Tuned, "cosine": Tuned, "loss": {schedule: Summary},
    "exact_match": {schedule: Summary}, "effect": Effect of constant − cosine}}``; SGD uses momentum 0.9 and
    no weight decay, Adam no weight decay, AdamW weight decay 0.1 (the blog's settings).
    """
    grids = {**LR_GRID, **(grids or {})}
    out = {}
    for name in optimizers:
        rec = blog_optimizer(base, name)
        res: dict = {"loss": {}, "exact_match": {}}
        for sched in ("constant", "cosine"):
            tuned = tune_lr(rec.replace(schedule=sched), grids[name], seed=seeds[0])
            res[sched] = tuned
            final = tuned.recipe.replace(lr=tuned.best_lr)
            res["loss"][sched] = losses(final, seeds)
            res["exact_match"][sched] = exact_matches(final, seeds)
        res["effect"] = paired_effect(res["loss"]["constant"], res["loss"]["cosine"])
        out[name] = res
    return out


def schedule_verdicts(study: dict) -> list[Verdict]:
    """The cosine claim, half by half: "helps SGD" and "little effect on Adam / AdamW", and the whole."""
    rows, halves = [], []
    for name in study:
        eff = study[name]["effect"]
        lrs = f"lr {study[name]['constant'].best_lr:g} / {study[name]['cosine'].best_lr:g}"
        text = (f"{LABELS[name]}: constant {study[name]['loss']['constant']} vs cosine "
                f"{study[name]['loss']['cosine']} ({lrs}); gain from cosine {eff}")
        if name == "sgd":
            v = helps(eff)
            rows.append(Verdict("cosine annealing helps SGD noticeably", text, v))
        else:
            v = little_effect(eff)
            rows.append(Verdict(f"cosine annealing has little effect on {LABELS[name].split(' (')[0]}", text, v))
        halves.append(v)
    rows.append(Verdict("对于SGD提升比较明显，但是对Adam，AdamW影响较小 (the whole claim)",
                        "all halves above", all_of(*halves)))
    return rows


def optimizer_verdict(study: dict) -> Verdict:
    """The other side of "why not SGD?": SGD (momentum 0.9) against AdamW, each with its better schedule at
    its tuned lr, paired by seed; the claim "SGD trains the adapter as well" is not supported when AdamW is
    noticeably better."""
    best = {n: min(study[n]["loss"].values(), key=lambda s: s.mean) for n in ("sgd", "adamw")}
    eff = paired_effect(best["sgd"], best["adamw"])  # > 0: AdamW is better
    return Verdict("with LoRA, SGD (momentum 0.9) trains the adapter as well as AdamW (each at its best)",
                   f"SGD {best['sgd']} vs AdamW {best['adamw']}: AdamW better by {eff}", none_of(helps(eff)))


def late_improvement(history: History, window: int = 25) -> float:
    """How much the training loss still fell at the end of a run: ``1 − mean(last window) / mean(the window
    before)`` (0.1: the last ``window`` steps averaged 10 % lower than the ``window`` steps before them)."""
    loss = np.asarray(history.loss, float)
    if len(loss) < 2 * window:
        raise ValueError(f"the run has {len(loss)} steps, fewer than 2 windows of {window}")
    return float(1 - loss[-window:].mean() / loss[-2 * window:-window].mean())


def recipe_ablations(tuned_lr: float, seeds: Sequence[int] = SEEDS) -> list[tuple[str, Recipe, Summary]]:
    """The blog's AdamW recipe as written, then at a tuned learning rate with one setting changed at a time.

    Returns ``[(label, recipe, held-out loss Summary)]``; the second row is the reference of the others.
    """
    at_lr = BLOG_ADAMW.replace(lr=tuned_lr)
    rows = [("the blog's recipe: AdamW lr 3e-4, warmup 100, wd 0.1, cosine", BLOG_ADAMW),
            (f"… at the tuned lr {tuned_lr:g}", at_lr),
            ("… and warmup 10 instead of 100", at_lr.replace(warmup_steps=10)),
            ("… and weight decay 0 instead of 0.1", at_lr.replace(weight_decay=0.0)),
            ("… and a constant lr instead of cosine", at_lr.replace(schedule="constant"))]
    return [(label, rec, losses(rec, seeds)) for label, rec in rows]


def ablation_verdicts(rows: list[tuple[str, Recipe, Summary]]) -> list[Verdict]:
    """Each of the recipe's settings against its ablation, at the tuned learning rate (paired by seed), and
    the recipe's own learning rate against the tuned one."""
    (_, _, blog), (_, tuned, ref) = rows[0], rows[1]
    out = [Verdict("the recipe's lr 3e-4 (warmup 100, wd 0.1, cosine) suits this budget",
                   f"lr 3e-4: {blog} vs lr {tuned.lr:g}: {ref}", none_of(helps(paired_effect(blog, ref))))]
    names = {"warmup_steps": "warmup 100 beats warmup 10", "weight_decay": "weight decay 0.1 beats 0",
             "schedule": "cosine beats a constant lr"}
    for _, rec, summary in rows[2:]:
        changed = next(k for k in names if getattr(rec, k) != getattr(tuned, k))
        eff = paired_effect(summary, ref)  # > 0: the recipe's setting is better
        out.append(Verdict(f"the recipe's {names[changed]} (at lr {tuned.lr:g})",
                           f"{ref} vs {summary}: gain {eff}", helps(eff)))
    return out


# ------------------------------------------------------------------ repeated epochs
def epoch_stream(n_examples: int, batch_size: int, seed: int) -> tuple[Callable[[int], tuple], int]:
    """``(data_fn, steps_per_epoch)``: epochs over one fixed set of ``n_examples`` held-out-task examples,
    reshuffled every epoch (seeded). ``n_examples`` must be a multiple of ``batch_size``."""
    if n_examples < batch_size or n_examples % batch_size:
        raise ValueError(f"n_examples must be a positive multiple of batch_size {batch_size}, got {n_examples}")
    x, y = data.task_batch(data.HELDOUT_TASK, n_examples, np.random.default_rng([seed, 7]))
    per_epoch = n_examples // batch_size

    def data_fn(i: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, j = divmod(i, per_epoch)
        rows = np.random.default_rng([seed, 99, epoch]).permutation(n_examples)[j * batch_size:(j + 1) * batch_size]
        return x[rows], y[rows]

    return data_fn, per_epoch


def repetition_study(n_examples: int = 512, epochs: Sequence[int] = (1, 2, 4, 8), seeds: Sequence[int] = SEEDS,
                     recipe: Recipe | None = None) -> dict:
    """Held-out loss after E passes over the same ``n_examples``, and after the same steps on fresh data.

    ``recipe`` must have a constant schedule (default: AdamW lr 0.01, warmup 10, wd 0.1), so that the first
    E epochs of one run are an E-epoch run. Returns ``{"repeated": {E: Summary}, "fresh": {E: Summary},
    "steps_per_epoch": int, "histories": {kind: [History per seed]}}``.
    """
    recipe = recipe or BASE.replace(lr=0.01, schedule="constant")
    if recipe.schedule != "constant":
        raise ValueError("repetition_study needs a constant schedule (an E-epoch run is then a prefix)")
    epochs = sorted(int(e) for e in epochs)
    out: dict = {"repeated": {}, "fresh": {}, "histories": {"repeated": [], "fresh": []}}
    per = {"repeated": [], "fresh": []}
    for seed in seeds:
        stream, per_epoch = epoch_stream(n_examples, recipe.batch_size, seed)
        rec = recipe.replace(steps=per_epoch * epochs[-1], seed=seed)
        for kind, fn in (("repeated", stream), ("fresh", None)):  # None: the recipe's stream of fresh examples
            result = run(rec, train_data=fn, eval_at=[e * per_epoch for e in epochs])
            out["histories"][kind].append(result.history)
            per[kind].append([result.curve[e * per_epoch] for e in epochs])
    out["steps_per_epoch"] = per_epoch
    for kind in ("repeated", "fresh"):
        arr = np.array(per[kind])
        out[kind] = {e: Summary(tuple(arr[:, k])) for k, e in enumerate(epochs)}
    return out


def repetition_verdicts(study: dict, n_examples: int) -> list[Verdict]:
    """"Repeating does not improve": no E > 1 noticeably better than 1 epoch; "may worsen": some doubling
    of the epochs noticeably worse."""
    rep = study["repeated"]
    epochs = sorted(rep)
    gains = {e: paired_effect(rep[epochs[0]], rep[e]) for e in epochs[1:]}
    worse = {(a, b): paired_effect(rep[b], rep[a]) for a, b in zip(epochs, epochs[1:])}  # > 0: b is worse
    curve = ", ".join(f"{e}: {rep[e]}" for e in epochs)
    return [Verdict(f"repeating the data does not improve the result ({n_examples} examples; epochs: loss)",
                    curve, none_of(*(helps(g) for g in gains.values()))),
            Verdict("… and may make it worse (change from E to 2E epochs; + is worse)",
                    "; ".join(f"{a}→{b}: {w.mean:+.3f} (CI {w.lo:+.3f} … {w.hi:+.3f})" for (a, b), w in worse.items()),
                    any_of(*(helps(w) for w in worse.values())))]
