"""Figures of the LoRA chapter: the blog's ``lora.png`` diagram, ``lora_init`` and ``lora_rank``."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon

from minilora.figures import register
from minilora.peft.config import LoraConfig, lora_parameter_count

_FROZEN = "#9ecae1"
_TRAIN = "#fdae6b"


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
    ax.add_patch(FancyBboxPatch((0.6, 2.0), 3.6, 3.4, boxstyle="round,pad=0.05", fc=_FROZEN, ec="#3182bd", lw=1.5))
    ax.text(2.4, 4.3, "pretrained weight", ha="center", fontsize=11)
    ax.text(2.4, 3.6, r"$W_0 \in \mathbb{R}^{d\times k}$", ha="center", fontsize=14)
    ax.text(2.4, 2.7, "frozen (no gradient)", ha="center", fontsize=10, style="italic")

    # A: down-projection k -> r (trapezoid narrowing upwards); B: up-projection r -> d
    ax.add_patch(Polygon([(5.6, 2.0), (9.0, 2.0), (7.75, 3.5), (6.85, 3.5)], closed=True,
                         fc=_TRAIN, ec="#e6550d", lw=1.5))
    ax.text(7.3, 2.65, r"$A \in \mathbb{R}^{r\times k}$", ha="center", fontsize=13)
    ax.text(9.15, 2.35, "down-projection\ntrainable\nA ~ U(±1/√k)\n(PEFT default)", fontsize=8.5, va="center")
    ax.add_patch(Polygon([(6.85, 3.9), (7.75, 3.9), (9.0, 5.4), (5.6, 5.4)], closed=True,
                         fc=_TRAIN, ec="#e6550d", lw=1.5))
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
    ax.text(5.0, -0.35, r"$h = W_0 x + s\,B A x$,   $\Delta W = s\,BA$ starts at 0 because B = 0", ha="center",
            fontsize=11)
    ax.text(5.0, -0.8, f"d = k = {d}, r = {cfg.r}: trainable r(d+k) = {n_lora:,} vs dk = {n_full:,} "
            f"({100 * n_lora / n_full:.2f}%)", ha="center", fontsize=9.5, color="0.3")
    fig.tight_layout()
    return fig
