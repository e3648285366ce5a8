"""The LoRA experiments of the notebooks, figures and CLI, as functions (no logic lives only in a notebook).

* **Low-rank teacher** (``minilora.data.low_rank_teacher``): a linear "pretrained" layer ``W0`` and a target
  ``W* = W0 + ΔW*`` with ``rank(ΔW*) = r*``. A LoRA adapter of rank r on ``W0`` can fit it exactly iff
  ``r ≥ r*`` (Hu et al. 2021, §4's low-intrinsic-rank hypothesis, made exact). Used for the
  initialization argument (docs/errata.md, erratum 4), the learning-rate sweep (Hayou et al. 2024, arXiv
  2406.08447: B = 0 tolerates larger learning rates than A = 0) and the rank sweep.
* **Base GPT on the held-out task** (``minilora.data.HELDOUT_TASK``): LoRA vs full fine-tuning, used by
  ``python -m minilora finetune`` and the notebooks.

Everything is seeded; the functions return numbers and :class:`~minilora.train.History` objects that the
notebooks print and plot.
"""

from __future__ import annotations

import numpy as np

from minilora.data import LowRankTeacher
from minilora.nn.mlp import MLPRegressor
from minilora.optim import SGD, Adam
from minilora.peft import LoraConfig, count_parameters, inject_lora
from minilora.train import History, evaluate, train

#: finetune_gpt's learning rate per method when ``lr`` is None (AdamW, constant)
DEFAULT_LR = {"lora": 1e-2, "qlora": 1e-2, "full": 1e-3}

#: the four initializations of the blog's argument, with the words the notebook uses
INIT_LABELS = {
    True: "A random, B = 0 (PEFT default)",
    "zero_A": "A = 0, B random",
    "zeros": "A = 0, B = 0",
    "random": "A random, B random",
}


def teacher_base(teacher: LowRankTeacher) -> MLPRegressor:
    """A linear model ``y = x W0ᵀ`` (layer ``fc0``, no bias) holding the teacher's pretrained ``W0``."""
    d_out, d_in = teacher.w0.shape
    model = MLPRegressor([d_in, d_out], bias=False, seed=0)
    model.fc0.weight[...] = teacher.w0
    return model


def teacher_lora(
    teacher: LowRankTeacher,
    r: int = 4,
    lora_alpha: float | None = None,
    init_lora_weights: bool | str = True,
    use_rslora: bool = False,
    seed: int = 0,
) -> MLPRegressor:
    """The teacher's base model with LoRA on ``fc0`` (``lora_alpha`` defaults to ``r``: scaling 1)."""
    config = LoraConfig(
        r=r,
        lora_alpha=r if lora_alpha is None else lora_alpha,
        target_modules=("fc0",),
        init_lora_weights=init_lora_weights,
        use_rslora=use_rslora,
    )
    return inject_lora(teacher_base(teacher), config, seed=seed)


def make_optimizer(model, name: str, lr: float):
    """``"sgd"`` (plain SGD) or ``"adam"`` over the model's trainable parameters."""
    if name == "sgd":
        return SGD(model, lr=lr)
    if name == "adam":
        return Adam(model, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def finetune_teacher(
    model: MLPRegressor,
    teacher: LowRankTeacher,
    lr: float,
    steps: int = 200,
    optimizer: str = "sgd",
    batch_size: int = 64,
    eval_every: int = 10,
    seed: int = 0,
) -> History:
    """Train ``model`` (its trainable parameters) on the teacher's data; eval loss on 1024 fixed samples.

    The history's ``eval_loss`` starts with the loss before training (step 0).
    """
    eval_data = teacher.sample(1024, seed=10_000 + seed)
    before = evaluate(model, eval_data)
    with np.errstate(over="ignore", invalid="ignore"):
        hist = train(
            model,
            teacher.stream(batch_size, seed=seed),
            make_optimizer(model, optimizer, lr),
            steps=steps,
            eval_every=eval_every,
            eval_data=eval_data,
            progress=False,
        )
    hist.eval_step.insert(0, 0)
    hist.eval_loss.insert(0, before)
    return hist


def step0_gradients(
    teacher: LowRankTeacher, init_lora_weights: bool | str, r: int = 4, batch_size: int = 256, seed: int = 0
) -> dict[str, float]:
    """At step 0 of LoRA fine-tuning on the teacher: ``‖BA‖``, ``‖dA‖``, ``‖dB‖`` (Frobenius) and the change
    of the model's output caused by the adapter, ``‖y_lora − y_base‖ / ‖y_base‖``.

    From ``dA = s (G B)ᵀ X`` and ``dB = s Gᵀ (X Aᵀ)``: B = 0 ⇒ dA = 0; A = 0 ⇒ dB = 0; both ⇒ both zero.
    """
    model = teacher_lora(teacher, r=r, init_lora_weights=init_lora_weights, seed=seed)
    layer = model.fc0
    x, y = teacher.sample(batch_size, seed=seed)
    y_lora, _ = model.forward(x, y)
    model.zero_grad()
    model.backward()
    y_base = x @ layer.weight.T
    return {
        "BA": float(np.linalg.norm(layer.B @ layer.A)),
        "dA": float(np.linalg.norm(model.grads["fc0.lora_A.weight"])),
        "dB": float(np.linalg.norm(model.grads["fc0.lora_B.weight"])),
        "output_change": float(np.linalg.norm(y_lora - y_base) / np.linalg.norm(y_base)),
    }


def lr_sweep(
    teacher: LowRankTeacher,
    lrs,
    inits=(True, "zero_A"),
    r: int = 4,
    steps: int = 100,
    optimizer: str = "sgd",
    seed: int = 0,
) -> dict:
    """Final eval loss after ``steps`` of LoRA training, for each init and learning rate.

    Returns ``{init: array of final losses (inf where training diverged to inf/NaN)}`` plus ``"initial"``,
    the eval loss before training (the same for every init whose product BA starts at 0).
    """
    out: dict = {}
    for init in inits:
        finals = []
        for lr in lrs:
            hist = finetune_teacher(
                teacher_lora(teacher, r=r, init_lora_weights=init, seed=seed),
                teacher,
                lr=lr,
                steps=steps,
                optimizer=optimizer,
                eval_every=0,
                seed=seed,
            )
            out.setdefault("initial", hist.eval_loss[0])
            final = hist.eval_loss[-1]
            finals.append(final if np.isfinite(final) else np.inf)
        out[init] = np.array(finals)
    return out


def max_stable_lr(lrs, final_losses, initial_loss: float) -> float:
    """The largest learning rate whose run ended finite and below ``initial_loss`` (0.0 when none did)."""
    lrs, final_losses = np.asarray(lrs, float), np.asarray(final_losses, float)
    ok = np.isfinite(final_losses) & (final_losses < initial_loss)
    return float(lrs[ok].max()) if ok.any() else 0.0


def rank_sweep(
    teacher: LowRankTeacher, ranks, lr: float = 0.02, steps: int = 300, optimizer: str = "adam", seed: int = 0
) -> dict:
    """Eval-loss histories of LoRA at each rank (``lora_alpha = r``) and of full fine-tuning (``"full"``)."""
    out: dict = {}
    for r in ranks:
        out[r] = finetune_teacher(
            teacher_lora(teacher, r=r, seed=seed), teacher, lr=lr, steps=steps, optimizer=optimizer, seed=seed
        )
    full = teacher_base(teacher)
    out["full"] = finetune_teacher(full, teacher, lr=lr, steps=steps, optimizer=optimizer, seed=seed)
    return out


# ------------------------------------------------------------------ the base GPT on the held-out task
def finetune_gpt(
    base,
    method: str = "lora",
    config: LoraConfig | None = None,
    steps: int = 150,
    lr: float | None = None,
    batch_size: int = 32,
    eval_every: int = 0,
    seed: int = 0,
    progress: bool = False,
    include_step0: bool = False,
    pretrained: bool = False,
    quant: dict | None = None,
) -> tuple:
    """Fine-tune ``base`` (a GPT, changed in place) on :data:`minilora.data.HELDOUT_TASK`.

    The recipe: AdamW (no weight decay) at a constant learning rate on micro-batches of
    :func:`minilora.data.heldout_train_data`; evaluation on :func:`minilora.data.heldout_eval_batch`
    (512 sequences the training stream never draws).

    Parameters
    ----------
    method : ``"lora"`` (inject ``config``, default ``LoraConfig()``), ``"qlora"`` (the same adapters on a 4-bit
        base: :func:`minilora.peft.qlora.prepare_qlora`, which ``quant`` configures) or ``"full"`` (every
        parameter trains).
    lr : AdamW learning rate (default :data:`DEFAULT_LR`: 1e-2 for LoRA and QLoRA, 1e-3 for full fine-tuning).
    eval_every : evaluate (held-out loss and accuracies) every this many steps and after the last (0: only
        after the last).
    include_step0 : put the evaluation of the model as it starts (after injection, before any step) at the
        front of the history, as step 0.
    pretrained : also measure the mean exact match over :data:`minilora.data.PRETRAIN_TASKS` before and after
        (what fine-tuning does to the skills the base model had); costs eight extra 512-sequence forwards.

    Returns
    -------
    ``(model, history, report)``; ``report`` has ``trainable``, ``total`` (PEFT's counts,
    :func:`~minilora.peft.mapping.count_parameters`: 4-bit weights by their elements), ``exact_match_before``,
    ``exact_match_after``, ``token_acc_before``, ``token_acc_after``, ``loss_before``, ``loss_after``
    (held-out cross-entropy) and, with ``pretrained``, ``pretrained_before`` / ``pretrained_after``.
    """
    from minilora.data import PRETRAIN_TASKS, accuracy, exact_match, heldout_eval_batch, heldout_train_data
    from minilora.optim import AdamW

    if method not in ("lora", "qlora", "full"):
        raise ValueError(f"method must be 'lora', 'qlora' or 'full', got {method!r}")
    eval_batch = heldout_eval_batch()
    before = accuracy(base, *eval_batch)
    loss_before = evaluate(base, eval_batch)
    report: dict = {}
    if pretrained:
        report["pretrained_before"] = float(np.mean([exact_match(base, task) for task in PRETRAIN_TASKS]))
    if method == "lora":
        model = inject_lora(base, config or LoraConfig(), seed=seed)
    elif method == "qlora":
        from minilora.peft.qlora import prepare_qlora

        model = prepare_qlora(base, config or LoraConfig(), seed=seed, **(quant or {}))
    else:
        model = base.unfreeze()
    lr = DEFAULT_LR[method] if lr is None else lr
    if include_step0:  # the model as training starts: the base model's output unless B A ≠ 0 at init
        start = (evaluate(model, eval_batch), accuracy(model, *eval_batch))
    hist = train(
        model,
        heldout_train_data(batch_size, seed=seed),
        AdamW(model, lr=lr, weight_decay=0.0),
        steps=steps,
        eval_every=eval_every,
        eval_data=eval_batch,
        eval_fn=lambda m: accuracy(m, *eval_batch),
        progress=progress,
        desc=f"finetune ({method})",
    )
    if steps:
        loss_after, after = hist.eval_loss[-1], hist.eval_metrics[-1]
    else:
        loss_after, after = evaluate(model, eval_batch), accuracy(model, *eval_batch)
    if include_step0:
        hist.eval_step.insert(0, 0)
        hist.eval_loss.insert(0, start[0])
        hist.eval_metrics.insert(0, start[1])
    trainable, total = count_parameters(model)  # a 4-bit weight counts by its elements, as PEFT counts it
    report.update(
        trainable=trainable,
        total=total,
        exact_match_before=before["exact_match"],
        exact_match_after=after["exact_match"],
        token_acc_before=before["token_acc"],
        token_acc_after=after["token_acc"],
        loss_before=loss_before,
        loss_after=loss_after,
    )
    if pretrained:
        report["pretrained_after"] = float(np.mean([exact_match(model, task) for task in PRETRAIN_TASKS]))
    return model, hist, report


def gpt_runs(
    configs: dict,
    seeds=(0,),
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    eval_every: int = 0,
    include_step0: bool = False,
    pretrained: bool = False,
    keep_models: bool = False,
) -> dict:
    """Fine-tune a fresh copy of the shipped base GPT once per (configuration, seed).

    ``configs`` maps a label to a :class:`LoraConfig` (LoRA) or to None (full fine-tuning). Returns
    ``{label: {"reports": [report per seed], "histories": [History per seed], "loss": mean loss_after,
    "exact_match": mean exact_match_after, "trainable": trainable parameters}}``, plus ``"models"`` (the trained
    model per seed) with ``keep_models``. The other arguments go to :func:`finetune_gpt`; ``steps``,
    ``batch_size`` and ``lr`` left None take its defaults (:func:`recipe`).
    """
    from minilora.base_model import load_base_model

    recipe_args = {k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None}
    out: dict = {}
    for label, config in configs.items():
        method = "full" if config is None else "lora"
        runs = [
            finetune_gpt(
                load_base_model(), method, config, lr=lr, eval_every=eval_every, seed=seed,
                include_step0=include_step0, pretrained=pretrained, **recipe_args,
            )
            for seed in seeds
        ]
        reports = [rep for _, _, rep in runs]
        out[label] = {
            "reports": reports,
            "histories": [h for _, h, _ in runs],
            "loss": float(np.mean([rep["loss_after"] for rep in reports])),
            "exact_match": float(np.mean([rep["exact_match_after"] for rep in reports])),
            "trainable": reports[0]["trainable"],
        }
        if keep_models:
            out[label]["models"] = [m for m, _, _ in runs]
    return out


def alpha_verdict(alphas, losses, r: int, tolerance: float = 0.1) -> dict:
    """Test the blog's "r = α/2" heuristic on an α sweep at fixed ``r``.

    ``losses`` are the (seed-averaged) held-out losses for each α. Returns ``best_alpha`` (lowest loss),
    ``heuristic_alpha`` (2r, which must be in ``alphas``), ``heuristic_excess`` (its loss / the best − 1),
    ``is_best`` and ``near_best`` (the α whose loss is within ``tolerance`` (relative) of the best).
    """
    alphas, losses = list(alphas), np.asarray(losses, float)
    if 2 * r not in alphas:
        raise ValueError(f"alphas must contain 2r = {2 * r} to test r = alpha/2, got {alphas}")
    best = int(np.argmin(losses))
    h = alphas.index(2 * r)
    return {
        "best_alpha": alphas[best],
        "heuristic_alpha": 2 * r,
        "heuristic_excess": float(losses[h] / losses[best] - 1.0),
        "is_best": h == best,
        "near_best": [a for a, loss in zip(alphas, losses) if loss <= (1 + tolerance) * losses[best]],
    }


# ------------------------------------------------------------------ helpers the notebooks' sentences are computed with
def recipe(method: str = "lora") -> dict:
    """The fine-tuning recipe of :func:`finetune_gpt` for ``method``, read from its signature (what its defaults are).

    Returns ``steps``, ``batch_size``, ``lr`` (the per-method default), ``seed``, ``optimizer`` and ``eval_sequences``
    (the size of :func:`minilora.data.heldout_eval_batch`), so that a sentence describing the recipe cannot drift
    from the code.
    """
    import inspect

    from minilora.data import heldout_eval_batch

    if method not in ("lora", "qlora", "full"):
        raise ValueError(f"method must be 'lora', 'qlora' or 'full', got {method!r}")
    defaults = {k: p.default for k, p in inspect.signature(finetune_gpt).parameters.items()}
    return {
        "steps": defaults["steps"],
        "batch_size": defaults["batch_size"],
        "lr": DEFAULT_LR[method],
        "seed": defaults["seed"],
        "optimizer": "AdamW (weight decay 0, constant learning rate)",
        "eval_sequences": int(heldout_eval_batch()[0].shape[0]),
    }


def pretrained_skill(model) -> float:
    """Mean exact match of ``model`` over the pretraining tasks (:data:`minilora.data.PRETRAIN_TASKS`)."""
    from minilora.data import PRETRAIN_TASKS, exact_match

    return float(np.mean([exact_match(model, task) for task in PRETRAIN_TASKS]))


def power_law_exponent(x, y) -> float:
    """The exponent ``p`` of the least-squares fit ``y ≈ c · x^p`` (a line through ``(log x, log y)``).

    >>> round(power_law_exponent([1, 2, 4, 8], [3.0, 1.5, 0.75, 0.375]), 6)
    -1.0
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.size < 2 or (x <= 0).any() or (y <= 0).any():
        raise ValueError(f"x and y must be positive arrays of one shape with at least 2 points, got {x} and {y}")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def first_step_update(teacher: LowRankTeacher, ranks, lora_alpha: float = 8, lr: float = 0.5,
                      use_rslora: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """``‖ΔW‖`` (Frobenius) after one plain-SGD step of LoRA on the teacher, for each rank.

    With B = 0 at the start, one step gives ``B = −lr · s · Gᵀ X Aᵀ`` and so ``ΔW = s B A = −lr · s² · Gᵀ X AᵀA``:
    the scaling enters squared. Returns ``{"scaling": s per rank, "delta": ‖ΔW‖ per rank, "rest": ‖ΔW‖ / s²}``
    (``rest`` = ``lr ‖Gᵀ X AᵀA‖``, the part that does not come from the scaling).
    """
    scaling, delta = [], []
    for r in ranks:
        model = teacher_lora(teacher, r=r, lora_alpha=lora_alpha, use_rslora=use_rslora, seed=seed)
        finetune_teacher(model, teacher, lr=lr, steps=1, eval_every=0, seed=seed)
        scaling.append(model.fc0.scaling)
        delta.append(float(np.linalg.norm(model.fc0.delta_weight())))
    scaling, delta = np.array(scaling), np.array(delta)
    return {"scaling": scaling, "delta": delta, "rest": delta / scaling**2}


def compare_losses(a, b, z: float = 2.0) -> dict:
    """Compare two sets of per-seed results (e.g. held-out losses): is ``a`` lower, higher, or within the noise?

    The difference of the means is compared with its standard error ``sqrt(var_a / n_a + var_b / n_b)``
    (sample variances over the seeds): beyond ``z`` standard errors the verdict is ``"lower"`` or ``"higher"``
    (for ``a`` against ``b``), otherwise ``"within seed spread"``. With one seed on either side there is no
    spread to compare with and the verdict is ``"one seed: no spread"``.

    >>> compare_losses([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])["verdict"]
    'lower'
    >>> compare_losses([1.0, 1.5, 0.5], [1.2, 0.8, 1.6])["verdict"]
    'within seed spread'
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 1 or b.size < 1:
        raise ValueError("a and b need at least one value each")
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": diff, "se": float("nan"),
                "verdict": "one seed: no spread"}
    se = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    verdict = "within seed spread" if abs(diff) <= z * se else ("lower" if diff < 0 else "higher")
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": diff, "se": se, "verdict": verdict}


def seed_losses(run: dict, key: str = "loss_after") -> np.ndarray:
    """The per-seed values of ``key`` in one entry of :func:`gpt_runs`."""
    return np.array([rep[key] for rep in run["reports"]], float)


def energy_rank(singular_values, fraction: float = 0.9) -> int:
    """The number of leading singular values that hold ``fraction`` of ``Σ s²`` (the squared Frobenius norm).

    >>> energy_rank([3.0, 1.0, 0.0], 0.9), energy_rank([1.0, 1.0, 1.0, 1.0], 0.9), energy_rank([0.0, 0.0])
    (1, 4, 0)
    """
    s = np.sort(np.asarray(singular_values, float))[::-1]
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not np.any(s):
        return 0  # a zero matrix: no direction holds any energy
    energy = np.cumsum(s**2) / np.sum(s**2)
    return int(np.searchsorted(energy, fraction - 1e-12) + 1)


def update_spectra(base, tuned, fraction: float = 0.9, seed: int = 0) -> dict[str, dict]:
    """Singular values of the update ``ΔW = W_tuned − W_base`` of every 2-D weight inside the blocks.

    LoRA's premise (Hu et al. 2021, §4: "the change in weights during model adaptation also has a low intrinsic
    rank") measured on a real fine-tuning run. For each weight: ``shape``, ``s`` (singular values, float64,
    descending), ``relative_change`` ``‖ΔW‖ / ‖W_base‖``, ``energy_rank`` (:func:`energy_rank` at ``fraction``)
    and ``random_energy_rank``, the same for a Gaussian random matrix of that shape (no low-rank structure).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, w0 in base.params.items():
        if w0.ndim != 2 or not name.startswith("blocks."):
            continue
        delta = tuned.params[name].astype(np.float64) - w0.astype(np.float64)
        s = np.linalg.svd(delta, compute_uv=False)
        s_random = np.linalg.svd(rng.standard_normal(w0.shape), compute_uv=False)
        out[name] = {
            "shape": w0.shape,
            "s": s,
            "relative_change": float(np.linalg.norm(delta) / np.linalg.norm(w0)),
            "energy_rank": energy_rank(s, fraction),
            "random_energy_rank": energy_rank(s_random, fraction),
        }
    return out


def low_rank_verdict(spectra: dict[str, dict]) -> dict:
    """Summarize :func:`update_spectra`: the largest energy rank of any update, the smallest of the random
    matrices, the smallest dimension of any weight, and ``low_rank``: every update needs fewer directions than
    a random matrix of its shape and at most a quarter of its smaller dimension.
    """
    if not spectra:
        raise ValueError("spectra is empty")
    max_rank = max(v["energy_rank"] for v in spectra.values())
    low = all(v["energy_rank"] < v["random_energy_rank"] and 4 * v["energy_rank"] <= min(v["shape"])
              for v in spectra.values())
    return {"max_energy_rank": max_rank,
            "min_random_energy_rank": min(v["random_energy_rank"] for v in spectra.values()),
            "min_dim": min(min(v["shape"]) for v in spectra.values()),
            "low_rank": bool(low)}


def steps_to_fraction(hist: History, fraction: float = 0.01) -> int | None:
    """The first evaluated step whose eval loss is at most ``fraction`` × the step-0 loss (None: never).

    ``hist.eval_loss[0]`` must be the loss before training (as :func:`finetune_teacher` records it).
    """
    if not hist.eval_loss:
        raise ValueError("the history has no evaluations")
    target = fraction * hist.eval_loss[0]
    return next((s for s, loss in zip(hist.eval_step, hist.eval_loss) if loss <= target), None)


def is_stuck(hist: History) -> bool:
    """Whether every evaluation of the run gave exactly (bit for bit) the loss of its first evaluation."""
    if not hist.eval_loss:
        raise ValueError("the history has no evaluations")
    return all(loss == hist.eval_loss[0] for loss in hist.eval_loss)


def stable_lr_verdict(lrs, sweeps: dict, inits=(True, "zero_A")) -> dict:
    """Hayou et al. 2024's prediction on :func:`lr_sweep` results at several widths.

    ``sweeps`` maps a width to an :func:`lr_sweep` result. For each width: the largest stable learning rate
    of both initializations (:func:`max_stable_lr`), their ratio (B = 0 over A = 0), and the fraction of the
    learning rates stable for both at which B = 0 ends lower. ``agrees``: the ratio is above 1 at the largest
    width and not smaller than at the smallest width (B = 0 tolerates larger rates, more so when wider).
    """
    b0, a0 = inits
    lrs = np.asarray(lrs, float)
    widths = sorted(sweeps)
    per_width = {}
    for d in widths:
        sw = sweeps[d]
        lr_b0, lr_a0 = max_stable_lr(lrs, sw[b0], sw["initial"]), max_stable_lr(lrs, sw[a0], sw["initial"])
        both = np.isfinite(sw[b0]) & np.isfinite(sw[a0]) & (sw[b0] < sw["initial"]) & (sw[a0] < sw["initial"])
        per_width[d] = {
            "max_stable_b0": lr_b0,
            "max_stable_a0": lr_a0,
            "ratio": lr_b0 / lr_a0 if lr_a0 > 0 else float("inf"),
            "b0_lower_where_both_stable": float(np.mean(sw[b0][both] < sw[a0][both])) if both.any() else float("nan"),
        }
    small, large = per_width[widths[0]]["ratio"], per_width[widths[-1]]["ratio"]
    return {"per_width": per_width, "agrees": bool(large > 1 and large >= small)}
