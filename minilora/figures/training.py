"""Figures of the training-strategy chapter (blog §8): the cosine schedule."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from minilora import schedules
from minilora.figures import register


@register("cosine_annealing", blog_name="余弦退火.png")
def cosine_annealing() -> Figure:
    """Half-cycle cosine learning-rate schedule after a linear warmup (the blog's 余弦退火.png)."""
    total, warmup, lr_max = 1000, 100, 3e-4
    steps = np.arange(total + 1)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(steps, schedules.cosine_with_warmup(steps, total, warmup, lr_max), lw=2.2, color="C0",
            label=f"cosine with warmup (warmup={warmup})")
    ax.plot(steps, schedules.cosine_with_warmup(steps, total, 0, lr_max), lw=1.3, ls="--", color="C1",
            label="cosine, no warmup")
    ax.plot(steps, schedules.constant(steps, lr_max), lw=1.0, ls=":", color="0.4", label="constant")
    ax.axvline(warmup, color="0.75", lw=0.8)
    ax.annotate("end of warmup", (warmup, lr_max), xytext=(warmup + 40, lr_max * 1.04), fontsize=9)
    half = warmup + (total - warmup) // 2
    ax.annotate("half way: lr_max / 2", (half, lr_max / 2), xytext=(half + 60, lr_max * 0.62), fontsize=9,
                arrowprops=dict(arrowstyle="->", color="0.3"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_ylim(0, lr_max * 1.15)
    ax.set_xlim(0, total)
    ax.set_title("Cosine annealing: half a cosine period from lr_max to 0")
    ax.legend(loc="lower left", bbox_to_anchor=(0.1, 0.02), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig
