"""The LoRA experiments of the notebooks, figures and CLI, as functions (no logic lives only in a notebook).

* **Low-rank teacher** (``minilora.data.low_rank_teacher``): a linear "pretrained" layer ``W0`` and a target
  ``W* = W0 + ΔW*`` with ``rank(ΔW*) = r*``. A LoRA adapter of rank r on ``W0`` can fit it exactly iff
  ``r ≥ r*`` (Hu et al. 2021, §4's low-intrinsic-rank hypothesis, made exact). Used for the
  initialization argument (SEED-NOTES errata 4), the learning-rate sweep (Hayou et al. 2024, arXiv
  2406.08447: B = 0 tolerates larger learning rates than A = 0) and the rank sweep.
* **Base GPT on the held-out task** (``minilora.data.HELDOUT_TASK``): :func:`gpt_runs` repeats
  :func:`minilora.experiments.recipe.finetune` (the one fine-tuning function, with the one
  :class:`~minilora.experiments.recipe.Recipe`) over configurations and seeds.

Everything is seeded; the functions return numbers and :class:`~minilora.train.History` objects that the
notebooks print and plot.
"""

from __future__ import annotations

import numpy as np

from minilora.data import LowRankTeacher
from minilora.experiments.recipe import Recipe, finetune
from minilora.nn.mlp import MLPRegressor
from minilora.optim import SGD, Adam
from minilora.peft import LoraConfig, inject_lora
from minilora.train import History, evaluate, train

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
def gpt_runs(
    configs: dict,
    seeds=(0,),
    recipe: Recipe | None = None,
    *,
    include_step0: bool = False,
    pretrained: bool = False,
    keep_models: bool = False,
    **recipe_changes,
) -> dict:
    """Fine-tune a fresh copy of the shipped base GPT once per (configuration, seed) with :func:`finetune`.

    ``configs`` maps a label to a :class:`LoraConfig` (LoRA), None (full fine-tuning) or any PEFT config.
    Every run follows ``recipe`` (default :class:`~minilora.experiments.recipe.Recipe`) with its ``seed``
    replaced by the run's and ``recipe_changes`` applied (``steps=20``, ``lr=5e-3``, ...). Returns
    ``{label: {"reports": [report per seed], "histories": [History per seed], "loss": mean loss_after,
    "exact_match": mean exact_match_after, "trainable": trainable parameters}}``, plus ``"models"`` (the
    trained model per seed) with ``keep_models``.
    """
    from minilora.base_model import load_base_model

    recipe = (recipe or Recipe()).replace(**recipe_changes)
    out: dict = {}
    for label, config in configs.items():
        runs = [
            finetune(load_base_model(), config, recipe.replace(seed=seed), include_step0=include_step0,
                     pretrained=pretrained)
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
