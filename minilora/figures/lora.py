"""Figures of the LoRA chapter: the blog's ``lora.png`` diagram, ``lora_init`` and ``lora_rank``."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon

from minilora.figures import register
from minilora.peft.config import LoraConfig, lora_parameter_count
from minilora.show import log_ticks

_FROZEN = "#9ecae1"
_TRAIN = "#fdae6b"


#: losses below this are float32 round-off, not learning: forcing other OpenBLAS kernels (other processors)
#: changes them by up to 100 % (1e-13) and by ~1 % at 1e-11, against < 1e-4 above 1e-9. The trained figures
#: draw them at the floor, in a grey band that says so, so that their pixels do not depend on the machine.
ROUNDOFF_FLOOR = 1e-9
#: the same floor for a loss relative to the teachers' initial losses (0.1–0.5)
RELATIVE_FLOOR = 1e-8


def _roundoff_band(ax, floor: float, what: str = "loss") -> None:
    """Grey band below ``floor`` on a log y axis, labelled: what is drawn there is clipped to the floor."""
    ax.axhspan(floor / 30, floor, color="0.92", lw=0, zorder=0)
    ax.set_ylim(bottom=floor / 30)
    f = f"{floor:.0e}".replace("e-0", "e-")
    ax.text(0.99, floor / 5.5, f"{what} ≤ {f} is float32 round-off (it differs between CPUs): drawn at {f}",
            transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=7.5, color="0.35")


def _arrow(ax, xy0, xy1):
    ax.add_patch(FancyArrowPatch(xy0, xy1, arrowstyle="-|>", mutation_scale=14, lw=1.4, color="0.25"))


@register("lora", blog_name="lora.png")
def lora_diagram() -> Figure:
    """LoRA: frozen W0 beside the trainable down-projection A and up-projection B (h = W0 x + s·BAx)."""
    cfg = LoraConfig()
    d = k = 4096  # an example layer (a 7B model's attention projection), for the parameter counts
    fig, ax = plt.subplots(figsize=(7.6, 5.6))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.9, 8.2)
    ax.axis("off")

    # input and output
    for y, label in ((0.1, r"input $x \in \mathbb{R}^{k}$"), (7.2, r"output $h \in \mathbb{R}^{d}$")):
        ax.add_patch(FancyBboxPatch((2.3, y), 5.4, 0.6, boxstyle="round,pad=0.05", fc="0.93", ec="0.3"))
        ax.text(5.0, y + 0.3, label, ha="center", va="center", fontsize=12)

    # frozen pretrained weight
    ax.add_patch(
        FancyBboxPatch((0.6, 2.0), 3.6, 3.4, boxstyle="round,pad=0.05", fc=_FROZEN, ec="#3182bd", lw=1.5)
    )
    ax.text(2.4, 4.3, "pretrained weight", ha="center", fontsize=11)
    ax.text(2.4, 3.6, r"$W_0 \in \mathbb{R}^{d\times k}$", ha="center", fontsize=14)
    ax.text(2.4, 2.7, "frozen (no gradient)", ha="center", fontsize=10, style="italic")

    # A: down-projection k -> r (trapezoid narrowing upwards); B: up-projection r -> d
    ax.add_patch(
        Polygon(
            [(5.6, 2.0), (9.0, 2.0), (7.75, 3.5), (6.85, 3.5)], closed=True, fc=_TRAIN, ec="#e6550d", lw=1.5
        )
    )
    ax.text(7.3, 2.65, r"$A \in \mathbb{R}^{r\times k}$", ha="center", fontsize=13)
    ax.text(9.15, 2.35, "down-projection\ntrainable\nA ~ U(±1/√k)\n(PEFT default;\nthe paper: Gaussian)",
            fontsize=8.5, va="center")
    ax.add_patch(
        Polygon(
            [(6.85, 3.9), (7.75, 3.9), (9.0, 5.4), (5.6, 5.4)], closed=True, fc=_TRAIN, ec="#e6550d", lw=1.5
        )
    )
    ax.text(7.3, 4.7, r"$B \in \mathbb{R}^{d\times r}$", ha="center", fontsize=13)
    ax.text(9.15, 5.0, "up-projection\ntrainable\nB = 0", fontsize=8.5, va="center")
    ax.text(7.3, 3.68, f"r  (e.g. {cfg.r})", ha="center", va="center", fontsize=9)

    # sum node and arrows
    ax.add_patch(plt.Circle((5.0, 6.3), 0.28, fc="white", ec="0.25", lw=1.4))
    ax.text(5.0, 6.3, "+", ha="center", va="center", fontsize=16)
    _arrow(ax, (3.6, 0.75), (2.4, 1.95))
    _arrow(ax, (6.4, 0.75), (7.3, 1.95))
    _arrow(ax, (2.4, 5.5), (4.75, 6.2))
    _arrow(ax, (7.3, 5.5), (5.25, 6.2))
    ax.text(6.55, 5.95, r"$\times\, s = \alpha / r$", fontsize=11, ha="center")
    _arrow(ax, (5.0, 6.6), (5.0, 7.15))

    n_full = d * k
    n_lora = lora_parameter_count(k, d, cfg.r)
    ax.text(
        5.0,
        -0.35,
        r"$h = W_0 x + s\,B A x$,   $\Delta W = s\,BA$ starts at 0 because B = 0",
        ha="center",
        fontsize=11,
    )
    ax.text(
        5.0,
        -0.8,
        f"d = k = {d}, r = {cfg.r}: trainable r(d+k) = {n_lora:,} vs dk = {n_full:,} "
        f"({100 * n_lora / n_full:.2f}%)",
        ha="center",
        fontsize=9.5,
        color="0.3",
    )
    fig.tight_layout()
    return fig


@register("lora_init", trained=True)
def lora_init() -> Figure:
    """A/B initialization: step-0 gradients, curves on the teacher and on the base GPT, largest stable lr."""
    import numpy as np

    from minilora import lora_experiments as E
    from minilora.data import low_rank_teacher
    from minilora.peft import LoraConfig

    teacher = low_rank_teacher(32, 32, rank=4, seed=0)
    fig, axes = plt.subplots(2, 2, figsize=(12.5, 8.4))
    (ax_grad, ax_teacher), (ax_gpt, ax_lr) = axes
    inits = list(E.INIT_LABELS)
    grads = [E.step0_gradients(teacher, init) for init in inits]
    pos = np.arange(len(inits))
    for j, (key, label) in enumerate([("BA", "‖BA‖ at step 0"), ("dA", "‖dA‖"), ("dB", "‖dB‖")]):
        bars = ax_grad.bar(pos + (j - 1) * 0.27, [g[key] for g in grads], 0.27, label=label)
        ax_grad.bar_label(bars, fmt="%.2g", fontsize=7, padding=1)
    ax_grad.set_xticks(
        pos, [E.INIT_LABELS[i].replace(" (PEFT default)", "").replace(", ", ",\n") for i in inits], fontsize=8
    )
    ax_grad.set_title("teacher, step 0: which gradients are zero")
    ax_grad.legend(fontsize=8)
    for init in inits:
        hist = E.finetune_teacher(E.teacher_lora(teacher, init_lora_weights=init), teacher, lr=2.0, steps=150)
        ax_teacher.semilogy(hist.eval_step, np.maximum(hist.eval_loss, ROUNDOFF_FLOOR), label=E.INIT_LABELS[init])
    _roundoff_band(ax_teacher, ROUNDOFF_FLOOR, "MSE")
    ax_teacher.set(title="LoRA r = 4 on the rank-4 teacher (SGD, lr 2)", xlabel="step", ylabel="eval MSE")
    ax_teacher.legend(fontsize=8)
    runs = E.gpt_runs(
        {init: LoraConfig(r=8, lora_alpha=16, init_lora_weights=init) for init in inits},
        steps=150, batch_size=16, eval_every=25, include_step0=True,
    )
    for init, run in runs.items():
        hist = run["histories"][0]
        ax_gpt.semilogy(hist.eval_step, hist.eval_loss, marker="o", ms=3, label=E.INIT_LABELS[init])
    ax_gpt.set(
        title="base GPT → sort descending (LoRA r = 8 on q, v; AdamW, lr 0.01)",
        xlabel="step",
        ylabel="held-out cross-entropy",
    )
    log_ticks(ax_gpt.yaxis)
    ax_gpt.legend(fontsize=8)
    lrs = np.geomspace(1, 64, 7)
    for d, style in ((32, "-"), (128, "--")):
        t = low_rank_teacher(d, d, rank=4, seed=0)
        sweep = E.lr_sweep(t, lrs, optimizer="sgd", steps=100)
        for init, color in ((True, "C0"), ("zero_A", "C1")):
            final = np.where(np.isfinite(sweep[init]), sweep[init] / sweep["initial"], np.nan)
            final = np.maximum(final, RELATIVE_FLOOR)
            ax_lr.loglog(
                lrs,
                final,
                style,
                color=color,
                marker="o",
                ms=3,
                label=f"{E.INIT_LABELS[init].split(' (')[0]}, d = {d}",
            )
    ax_lr.axhline(1.0, color="0.5", lw=0.8)
    _roundoff_band(ax_lr, RELATIVE_FLOOR, "final / initial")
    ax_lr.set(
        title="teacher: final / initial loss after 100 SGD steps\n(missing points: diverged)",
        xlabel="learning rate",
        ylabel="relative final loss",
    )
    ax_lr.legend(fontsize=7)
    fig.tight_layout()
    return fig


@register("lora_rank", trained=True)
def lora_rank() -> Figure:
    """Rank sweep on a rank-4 teacher: LoRA with r < r*, = r*, > r* against full fine-tuning."""
    import numpy as np

    from minilora import lora_experiments as E
    from minilora.data import low_rank_teacher

    teacher = low_rank_teacher(32, 32, rank=4, seed=0)
    runs = E.rank_sweep(teacher, (1, 2, 4, 8))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, hist in runs.items():
        label = (
            "full fine-tuning (1024 params)" if key == "full" else f"LoRA r = {key} ({2 * 32 * key} params)"
        )
        ax.semilogy(hist.eval_step, np.maximum(hist.eval_loss, ROUNDOFF_FLOOR), "k--" if key == "full" else "-",
                    label=label)
    _roundoff_band(ax, ROUNDOFF_FLOOR, "MSE")
    ax.set(title="rank-4 teacher: LoRA needs r ≥ r* = 4 (Adam, lr 0.02)", xlabel="step", ylabel="eval MSE")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 0.1))
    fig.tight_layout()
    return fig
