"""The diagrams and plots of chapters 11–13: where each method puts its trainable numbers.

Each diagram is drawn from its arguments (the number of virtual tokens, layers, ...), so the positions it
prints are the ones the code uses: prompt tuning and p-tuning number the virtual tokens 0 .. p-1 and the real
tokens p .. p+T-1; prefix tuning gives the real tokens p .. p+T-1 after a key/value prefix (PEFT's, and
transformers' GPT-2's, numbering). Every function returns a :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

TRAINED, FROZEN, DATA = "#e07b39", "#9fb7d4", "#d9d9d9"


def _box(ax, x, y, w, h, text, color, fontsize=8):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="0.3", lw=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, x0, y0, x1, y1):
    ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="0.3", lw=0.8))


def _legend(ax, items, dx=2.4, y=-1.35):
    for i, (label, color) in enumerate(items):
        _box(ax, 0.2 + dx * i, y, 0.4, 0.3, "", color)
        ax.text(0.75 + dx * i, y + 0.15, label, va="center", fontsize=8)


def prompt_diagram(num_virtual_tokens: int = 3, seq_len: int = 4, encoder: bool = False) -> Figure:
    """Prompt tuning (``encoder=False``) or p-tuning (``encoder=True``): virtual tokens before the input."""
    p, T = num_virtual_tokens, seq_len
    fig, ax = plt.subplots(figsize=(7.2, 3.6 if encoder else 2.9))
    row = 1.6 if encoder else 0.3  # the row of the GPT's inputs
    top = row + 1.1
    _box(ax, 0, top, p + T - 0.1, 0.6, "frozen GPT (every block, ln_f, lm_head)", FROZEN, 9)
    for j in range(p + T):
        virtual = j < p
        _box(ax, j, row, 0.8, 0.5, f"P{j}" if virtual else f"x{j - p}", TRAINED if virtual else DATA)
        ax.text(j + 0.4, row - 0.2, f"pos {j}", ha="center", fontsize=7, color="0.35")
        _arrow(ax, j + 0.4, row + 0.5, j + 0.4, top)
        if not virtual:
            ax.text(j + 0.4, top + 0.95, "logits", ha="center", fontsize=7)
            _arrow(ax, j + 0.4, top + 0.6, j + 0.4, top + 0.85)
    ax.text(p + T / 2 - 0.5, row - 0.45, "wte(x): frozen token embeddings", ha="center", fontsize=7)
    if encoder:
        _box(ax, 0, 0.7, p - 0.2, 0.4, "MLP (or BiLSTM + MLP)", TRAINED, 7)
        _arrow(ax, p / 2 - 0.1, 1.1, p / 2 - 0.1, row - 0.28)
        for j in range(p):
            _box(ax, j, 0.0, 0.8, 0.45, f"E{j}", TRAINED)
        _arrow(ax, p / 2 - 0.1, 0.45, p / 2 - 0.1, 0.7)
    _legend(ax, [("trained", TRAINED), ("frozen", FROZEN), ("input", DATA)])
    title = "p-tuning: an encoder turns a table E into the virtual tokens P" if encoder else \
        "prompt tuning: p trainable vectors P before the input"
    ax.set(xlim=(-0.3, p + T + 0.2), ylim=(-1.7, top + 1.2), title=title)
    ax.axis("off")
    return fig


def prefix_diagram(num_virtual_tokens: int = 2, seq_len: int = 4, n_layer: int = 2) -> Figure:
    """Prefix tuning / p-tuning v2: trained keys and values before every layer's attention."""
    p, T, L = num_virtual_tokens, seq_len, n_layer
    fig, ax = plt.subplots(figsize=(7.2, 1.6 + 1.1 * L))
    for layer in range(L):
        y = 1.0 + 1.1 * layer
        for j in range(p):
            _box(ax, j, y, 0.8, 0.6, f"K,V\nP{j}", TRAINED, 7)
        _box(ax, p, y, T - 0.1, 0.6, f"block {layer}: attention sees the {p} prefix keys/values + the tokens", FROZEN,
             7)
        if layer:
            _arrow(ax, p + T / 2, y - 0.5, p + T / 2, y)
    for j in range(T):
        _box(ax, p + j, 0.0, 0.8, 0.5, f"x{j}", DATA)
        ax.text(p + j + 0.4, -0.2, f"pos {p + j}", ha="center", fontsize=7, color="0.35")
    _arrow(ax, p + T / 2, 0.5, p + T / 2, 1.0)
    ax.text(p / 2, -0.2, "no positions:\na key/value cache", ha="center", fontsize=7, color="0.35")
    _legend(ax, [("trained", TRAINED), ("frozen", FROZEN), ("input", DATA)])
    ax.set(xlim=(-0.3, p + T + 0.2), ylim=(-1.8, 1.3 + 1.1 * L),
           title=f"prefix tuning: p · L · 2 · C trained numbers, a prefix in each of the L = {L} layers")
    ax.axis("off")
    return fig


def adapter_diagram(houlsby: bool = True) -> Figure:
    """A pre-LN block with Houlsby's two adapters (or Pfeiffer's one), and the bottleneck inside one."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.0, 4.6), gridspec_kw={"width_ratios": [1.2, 1]})
    rows = [("x", DATA), ("LayerNorm ln_1", FROZEN), ("attention", FROZEN)]
    rows += [("adapter", TRAINED)] if houlsby else []
    rows += [("+", DATA), ("LayerNorm ln_2", FROZEN), ("MLP", FROZEN), ("adapter", TRAINED), ("+", DATA)]
    for i, (text, color) in enumerate(rows):
        _box(ax, 0, i * 0.8, 2.4, 0.55, text, color)
        if i:
            _arrow(ax, 1.2, i * 0.8 - 0.25, 1.2, i * 0.8)
    plus = [i for i, (text, _) in enumerate(rows) if text == "+"]
    for start, end in zip([0, plus[0]], plus):  # the block's two residual connections
        ax.annotate("", (2.45, end * 0.8 + 0.27), (2.45, start * 0.8 + 0.27),
                    arrowprops=dict(arrowstyle="->", color="0.3", lw=0.8, connectionstyle="arc3,rad=0.35"))
    ax.text(2.95, plus[0] * 0.4, "residual", fontsize=7, rotation=90, va="center")
    ax.set(xlim=(-0.3, 3.1), ylim=(-1.6, len(rows) * 0.8),
           title="Houlsby (DoubleSeqBn): 2 per block" if houlsby else "Pfeiffer (SeqBn): 1 per block, reading h + x")
    ax.axis("off")
    _legend(ax, [("trained", TRAINED), ("frozen", FROZEN)], dx=1.5, y=-1.2)
    for i, (text, width, color) in enumerate([("input h (d)", 2.4, DATA), ("adapter_down.0: d → m", 1.8, TRAINED),
                                              ("non_linearity", 1.8, TRAINED), ("adapter_up: m → d", 2.4, TRAINED),
                                              ("h + g(h)", 2.4, DATA)]):
        _box(bx, (2.4 - width) / 2, i * 0.9, width, 0.6, text, color, 7)
        if i:
            _arrow(bx, 1.2, i * 0.9 - 0.3, 1.2, i * 0.9)
    bx.annotate("", (2.5, 3.9), (2.5, 0.3), arrowprops=dict(arrowstyle="->", color="0.3", lw=0.8,
                                                             connectionstyle="arc3,rad=0.4"))
    bx.text(3.15, 2.1, "skip", fontsize=8)
    bx.set(xlim=(-0.3, 3.4), ylim=(-0.5, 4.8), title="one adapter: 2md + d + m numbers")
    bx.axis("off")
    return fig


def lambda_histogram(lam: np.ndarray, title: str) -> Figure:
    """Histogram of λ, the share of every real token's attention that goes to the virtual positions."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.hist(np.asarray(lam).ravel(), bins=40, range=(0, 1), color=TRAINED, alpha=0.85)
    ax.set(xlabel="λ = attention weight on the prompt (per token and head, layer 0)", ylabel="count", title=title)
    return fig


def runs_plot(runs: dict, key: str = "exact_match", title: str = "held-out task") -> Figure:
    """Evaluation curves (``key`` of the eval metrics) of several :class:`~minilora.experiments.methods.Runs`,
    the mean over seeds with the min–max band."""
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    for label, r in runs.items():
        steps = np.array(r.histories[0].eval_step)
        values = np.array([[m[key] for m in h.eval_metrics] for h in r.histories])
        line, = ax.plot(steps, values.mean(axis=0), ".-", label=f"{label} ({r.trainable:,d} trained)")
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel=key.replace("_", " "), title=title)
    ax.legend(fontsize=8)
    return fig


__all__ = ["adapter_diagram", "lambda_histogram", "prefix_diagram", "prompt_diagram", "runs_plot"]
