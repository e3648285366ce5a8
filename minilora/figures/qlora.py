"""Figures of the QLoRA chapter: the blog's ``qlora.png`` (full fine-tuning vs LoRA vs QLoRA)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from minilora.figures import register
from minilora.peft.memory import PAPER_16BIT, ModelShape, estimate

_BASE16 = "#9ecae1"
_BASE4 = "#c6dbef"
_ADAPTER = "#fdae6b"
_OPTIM = "#a1d99b"
_CPU = "#dadaeb"
_KINDS = ("weights", "gradients", "optimizer", "activations")
_KIND_COLORS = ("#6baed6", "#fd8d3c", "#74c476", "#bdbdbd")


def _box(ax, x, y, w, h, fc, text, fontsize=9):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=fc, ec="0.35", lw=1.0))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, xy0, xy1, color="0.3", style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch(xy0, xy1, arrowstyle=style, mutation_scale=11, lw=1.2, color=color, ls=ls))


def memory_rows(size: str = "65B") -> dict[str, dict[str, int]]:
    """Bytes per kind for the three methods on a LLaMA shape, with the QLoRA paper's precisions and recipe."""
    shape = ModelShape.llama(size)
    kw = dict(precision=PAPER_16BIT, r=64, batch_size=1, seq_len=512, checkpointing=True)
    return {"Full fine-tuning": estimate(shape, "full", **kw).as_dict(),
            "LoRA": estimate(shape, "lora", **kw).as_dict(),
            "QLoRA": estimate(shape, "qlora", **kw).as_dict()}


@register("qlora", blog_name="qlora.png")
def qlora_diagram() -> Figure:
    """Full fine-tuning vs LoRA vs QLoRA: 16-bit or 4-bit base, adapters, optimizer state, paging to CPU."""
    rows = memory_rows("65B")
    fig = plt.figure(figsize=(10.5, 7.2))
    ax = fig.add_axes((0.02, 0.34, 0.96, 0.64))
    ax.set_xlim(0, 15)
    ax.set_ylim(0, 7.4)
    ax.axis("off")
    titles = ("Full fine-tuning (no adapters)", "LoRA", "QLoRA")
    for c, title in enumerate(titles):
        x0 = 0.3 + 5 * c
        ax.text(x0 + 2.0, 7.1, title, ha="center", fontsize=12, weight="bold")
        if c == 2:
            base_fc, base_txt = _BASE4, "4-bit NF4 transformer\n(frozen, double-quantized,\nBF16 compute)"
        else:
            base_fc, base_txt = _BASE16, "16-bit transformer" + ("\n(trainable)" if c == 0 else "\n(frozen)")
        # the base: its name in a header above a stack of layers, so that no line crosses the text
        ax.add_patch(FancyBboxPatch((x0, 3.4), 3.0, 3.2, boxstyle="round,pad=0.02", fc=base_fc, ec="0.35", lw=1.0))
        ax.text(x0 + 1.5, 6.05, base_txt, ha="center", va="center", fontsize=9)
        layer_y = [3.55 + 0.6 * k for k in range(3)]  # bottom of each layer, first layer lowest
        for k, y in enumerate(layer_y):
            ax.add_patch(FancyBboxPatch((x0 + 0.2, y), 2.6, 0.42, boxstyle="round,pad=0.01", fc="white",
                                        ec="0.55", lw=0.7, alpha=0.55))
            ax.text(x0 + 1.5, y + 0.21, ("layer 1", "layer 2", "layer L")[k], ha="center", va="center",
                    fontsize=7.5, color="0.3")
        if c == 0:
            _box(ax, x0, 1.2, 3.0, 1.3, _OPTIM, "32-bit optimizer state\n(Adam m, v for every weight)")
            _arrow(ax, (x0 + 1.5, 2.55), (x0 + 1.5, 3.35), style="<|-|>")
        else:
            for y in layer_y:  # one adapter per layer, beside it
                _box(ax, x0 + 3.25, y, 0.95, 0.42, _ADAPTER, "A, B", 8)
                _arrow(ax, (x0 + 2.8, y + 0.21), (x0 + 3.22, y + 0.21), style="-")
            ax.text(x0 + 3.72, 5.5, "16-bit\nadapters", ha="center", fontsize=8)
            _box(ax, x0 + 2.6, 1.2, 1.9, 1.3, _OPTIM, "optimizer state\n(adapters only)", 8.5)
            _arrow(ax, (x0 + 3.7, 2.55), (x0 + 3.7, 3.5), style="<|-|>")
        if c == 2:
            _box(ax, x0, 0.15, 1.9, 0.8, _CPU, "CPU RAM", 9)
            _arrow(ax, (x0 + 2.55, 1.45), (x0 + 1.95, 0.75), color="#756bb1", ls="--")
            _arrow(ax, (x0 + 1.95, 0.45), (x0 + 2.75, 1.15), color="#756bb1", ls="--")
            ax.text(x0 + 0.95, 1.55, "paged out on a\nmemory spike,\npaged in for the\nupdate", ha="center",
                    fontsize=7.5, color="#54278f")
        gb = {k: v / 1e9 for k, v in rows[("Full fine-tuning", "LoRA", "QLoRA")[c]].items()}
        ax.text(x0 + 1.5, 6.75, f"LLaMA-65B: {gb['total']:,.0f} GB", ha="center", fontsize=9.5, color="0.15")
    ax.text(0.3, 0.35, "arrows ⇅: gradients flow to what is trained;\nthe frozen base only passes dx through",
            fontsize=8, color="0.35")

    bx = fig.add_axes((0.17, 0.07, 0.78, 0.22))
    names = list(rows)[::-1]
    left = [0.0] * len(names)
    for kind, color in zip(_KINDS, _KIND_COLORS):
        vals = [rows[n][kind] / 1e9 for n in names]
        bx.barh(names, vals, left=left, color=color, label=kind, height=0.6)
        left = [a + b for a, b in zip(left, vals)]
    for i, n in enumerate(names):
        bx.text(left[i] + 8, i, f"{rows[n]['total'] / 1e9:,.1f} GB", va="center", fontsize=9)
    bx.axvline(48, color="#d62728", lw=1, ls=":")
    bx.text(52, 2.45, "one 48 GB GPU", color="#d62728", fontsize=8, va="center")
    bx.set_xlim(0, 900)
    bx.set_xlabel("GB (decimal), LLaMA-65B: 16-bit weights/grads, 32-bit Adam, r = 64 on all linear layers, "
                  "batch 1×512 with checkpointing  (minilora.peft.memory.estimate)", fontsize=8)
    bx.legend(ncol=4, fontsize=8, loc="center right", frameon=False)
    return fig
