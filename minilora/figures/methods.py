"""Figure of the comparison chapter (14): every PEFT method on one task from one base (``peft_methods.png``).

Drawn from :func:`minilora.experiments.compare.comparison` (computed once per process, so the notebook and this
figure show the same run). Step times are left out: they depend on the machine, and a figure must regenerate to
the same bytes; the notebook prints them as ratios.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from minilora.figures import register

#: one colour per method, in the comparison's order
COLORS = {"full": "0.25", "lora": "C0", "qlora": "C9", "prompt": "C1", "ptuning": "C3", "prefix": "C2",
          "adapter": "C4"}
LABEL_OFFSETS = {"prefix": (-8, -14), "adapter": (4, 8), "prompt": (-4, 8), "ptuning": (6, 6)}
PARTS = (("weights", "0.55"), ("gradients", "C3"), ("optimizer", "C1"), ("activations", "C0"))


def _running_mean(x: np.ndarray, window: int) -> np.ndarray:
    return np.convolve(x, np.ones(window) / window, mode="valid")


@register("peft_methods", trained=True)
def peft_methods() -> Figure:
    """Full fine-tuning, LoRA, QLoRA, prompt tuning, p-tuning, prefix tuning and adapters on one task, over seeds."""
    from minilora.experiments import compare as C

    res = C.comparison()
    rows, budget = res["defaults"], res["budget"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.8))
    (ax_em, ax_loss), (ax_mem, ax_bytes) = axes

    for rowset, filled in ((rows, True), (budget, False)):
        for label, r in rowset.items():
            mean, sd = C.spread(r["exact_match"])
            color = COLORS[r["method"]]
            ax_em.errorbar(r["trainable"], mean, yerr=sd, fmt="o" if filled else "s", ms=7, capsize=3,
                           color=color, mfc=color if filled else "white", mew=1.5)
            if filled:  # labels of the points that crowd near exact match 0 are staggered
                ax_em.annotate(label, (r["trainable"], mean), xytext=LABEL_OFFSETS.get(label, (6, 4)),
                               textcoords="offset points", fontsize=8)
    ax_em.plot([], [], "o", color="0.3", label="each method's defaults")
    ax_em.plot([], [], "s", color="0.3", mfc="white", label=f"budget-matched (≈{C.BUDGET:,d} trainable)")
    ax_em.set_xscale("log")
    ax_em.set(xlabel="trainable parameters (log)", ylabel=f"held-out exact match (mean ± std, {len(C.SEEDS)} seeds)",
              title=f"what {C.CHAPTER_RECIPE.steps} steps buy, per trainable parameter", ylim=(-0.05, 1.05))
    ax_em.legend(fontsize=8, loc="upper left")

    for label, r in rows.items():
        curves = np.mean(np.stack(r["curve"]), axis=0)
        smooth = _running_mean(curves, C.SMOOTHING)
        ax_loss.plot(np.arange(C.SMOOTHING, len(curves) + 1), smooth, color=COLORS[r["method"]], label=label)
    ax_loss.axhline(C.LOSS_THRESHOLD, color="0.5", lw=0.8, ls="--")
    # labelled outside the axes, at the right end of the line, where no curve can run through the label
    ax_loss.annotate(f"threshold\n{C.LOSS_THRESHOLD:g}", (1, C.LOSS_THRESHOLD), xycoords=ax_loss.get_yaxis_transform(),
                     xytext=(4, 0), textcoords="offset points", fontsize=8, color="0.4", ha="left", va="center")
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel=f"training loss (running mean of {C.SMOOTHING}, mean of {len(C.SEEDS)} seeds)",
                title="training curves (defaults)")
    ax_loss.legend(fontsize=8, ncol=2)

    labels = list(rows)
    pos = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for part, color in PARTS:
        values = np.array([getattr(rows[k]["memory"], part) for k in labels]) / 2**20
        ax_mem.bar(pos, values, 0.6, bottom=bottom, color=color, label=part)
        bottom += values
    ax_mem.set_xticks(pos, labels, fontsize=9)
    ax_mem.set(ylabel="MiB after one training step (measured arrays)",
               title=f"training memory, batch {C.CHAPTER_RECIPE.batch_size}",
               ylim=(0, 1.3 * bottom.max()))  # room above the bars for the legend
    ax_mem.legend(fontsize=8, ncol=2)

    disk = np.array([rows[k]["bytes"] for k in labels])
    infer = np.array([rows[k]["inference_bytes"] for k in labels])
    bars = ax_bytes.bar(pos, disk, 0.6, color=[COLORS[rows[k]["method"]] for k in labels], alpha=0.35,
                        label="written by save (with a resumable encoder)")
    ax_bytes.bar(pos, infer, 0.6, color=[COLORS[rows[k]["method"]] for k in labels], label="needed for inference")
    ax_bytes.bar_label(bars, labels=[f"{b / 1024:.1f} kB" for b in disk], fontsize=7, padding=1)
    ax_bytes.set_yscale("log")
    ax_bytes.set_xticks(pos, labels, fontsize=9)
    ax_bytes.set(ylabel="bytes on disk (log)", title="what you ship: the adapter (full: the whole model)")
    ax_bytes.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
