"""Figures of the quantization chapters: LLM.int8's decomposition (the blog's ``block-wise.jpeg``),
the NF4 levels on the normal density, and the reconstruction error of int4 / FP4 / NF4 / NF4 + DQ."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from minilora.figures import register
from minilora.quant import fp4_code, int8_matmul_parts, nf4_code
from minilora.quant.compare import METHODS, code_usage, reconstruction_error
from minilora.quant.nf4 import NF4_OFFSET

COLORS = {"int4": "#9c755f", "fp4": "#e15759", "nf4": "#4e79a7", "nf4+dq": "#59a14f", "int8": "#f28e2b"}


def _heat(ax, a, title, cmap="RdBu_r", vmax=None, cols=None):
    if vmax is None:
        vmax = float(np.abs(a).max()) or 1.0
    ax.imshow(a, cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if cols is not None:
        for c in cols:
            ax.axvline(c, color="#e15759", lw=2.5, alpha=0.35)


@register("llm_int8_decomposition", blog_name="block-wise.jpeg")
def llm_int8_decomposition() -> Figure:
    """LLM.int8: outlier feature columns go through FP16, the rest through int8; dequantize and add."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 24)).astype(np.float32)
    x[:, [4, 17]] *= 25                                    # two outlier features (|x| ~ 60)
    w = (rng.standard_normal((10, 24)) * 0.3).astype(np.float32)
    p = int8_matmul_parts(x, w, threshold=6.0)
    cols = p.outlier_cols
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    rest = np.setdiff1d(np.arange(x.shape[1]), cols)

    fig = plt.figure(figsize=(12, 6.2))
    gs = fig.add_gridspec(2, 5, width_ratios=[1.6, 1.6, 0.9, 1.0, 1.0], hspace=0.35, wspace=0.25)
    _heat(fig.add_subplot(gs[:, 0]), x, f"X (tokens × features)\noutlier columns {cols.tolist()} (|x| ≥ 6)",
          vmax=20, cols=cols)
    _heat(fig.add_subplot(gs[:, 1]), w, "W (out × in)", vmax=1.0)
    ax = fig.add_subplot(gs[0, 2])
    _heat(ax, x[:, cols], "X[:, O] in FP16", vmax=20)
    ax = fig.add_subplot(gs[1, 2])
    ax.imshow(p.CA[:, rest], cmap="PuOr_r", vmin=-127, vmax=127, aspect="auto", interpolation="nearest")
    ax.set_title("CA = int8(X[:, rest])\nper-row absmax", fontsize=9.5)
    ax.set_xticks([])
    ax.set_yticks([])
    vmax = float(np.abs(exact).max())
    _heat(fig.add_subplot(gs[0, 3]), p.outlier_part, "FP16 part:\nX[:, O] · W[:, O]ᵀ", vmax=vmax)
    _heat(fig.add_subplot(gs[1, 3]), p.int_part,
          "int8 part: int32 acc\n· (SCA ⊗ SCB) / 127²", vmax=vmax)
    _heat(fig.add_subplot(gs[0, 4]), p.y, "Y = FP16 part + int8 part", vmax=vmax)
    ax = fig.add_subplot(gs[1, 4])
    plain = int8_matmul_parts(x, w, threshold=0.0).y
    errs = [np.abs(plain - exact).mean(), np.abs(p.y - exact).mean()]
    ax.bar(["vector-wise\nint8 only", "LLM.int8\n(α = 6)"], errs, color=[COLORS["int8"], COLORS["nf4"]])
    ax.set_title("mean |Y − XWᵀ|", fontsize=9.5)
    ax.tick_params(labelsize=8)
    fig.suptitle("LLM.int8(): mixed-precision decomposition of X Wᵀ "
                 "(outlier features in 16 bit, the rest in int8)", fontsize=11.5)
    return fig


@register("nf4_levels")
def nf4_levels() -> Figure:
    """The 16 NF4 levels on the N(0, 1) density, and how often each 4-bit code is used (NF4 vs FP4)."""
    from scipy.stats import norm  # noqa: PLC0415

    z = float(norm.ppf(np.float32(NF4_OFFSET)))            # level 1.0 sits at this many standard deviations
    code = nf4_code().astype(np.float64)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1.5, 1]})
    t = np.linspace(-2.6, 2.6, 600)
    ax.plot(t, norm.pdf(t), color="0.3", lw=1.5)
    mids = (code[:-1] + code[1:]) / 2 * z
    edges = np.concatenate([[-2.6], mids, [2.6]])
    for i in range(16):
        seg = (t >= edges[i]) & (t <= edges[i + 1])
        ax.fill_between(t[seg], norm.pdf(t[seg]), color=plt.cm.tab20(i % 20), alpha=0.45, lw=0)
    for c in code * z:
        ax.axvline(c, color=COLORS["nf4"], lw=1, ymax=0.92)
    ax.scatter(code * z, np.full(16, 0.43), color=COLORS["nf4"], zorder=3, s=18)
    ax.set_xlabel(f"weight / σ  (level 1.0 ↔ Φ⁻¹(0.9677083) = {z:.3f} σ)")
    ax.set_ylabel("N(0, 1) density")
    ax.set_title("NF4: 16 levels at normal quantiles — 7 negative, an exact 0, 8 positive (asymmetric);\n"
                 "shaded: the values each level takes (bounded by midpoints)", fontsize=9.5)
    w = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
    order_fp4 = np.argsort(fp4_code(), kind="stable")
    for k, (qt, order) in enumerate((("nf4", np.arange(16)), ("fp4", order_fp4))):
        use = code_usage(w, qt, 64)[order] / w.size
        ax2.bar(np.arange(16) + (k - 0.5) * 0.4, use, width=0.4, color=COLORS[qt], label=qt.upper())
    ax2.axhline(1 / 16, color="0.4", ls="--", lw=1)
    ax2.text(15.5, 1 / 16, "1/16", va="bottom", ha="right", fontsize=8)
    ax2.set_xlabel("level, from most negative to most positive")
    ax2.set_ylabel("fraction of weights")
    ax2.set_title("code usage on N(0, 1) weights, blocksize 64", fontsize=9.5)
    ax2.legend(frameon=False)
    fig.tight_layout()
    return fig


@register("quant_error")
def quant_error() -> Figure:
    """Reconstruction error of int4 (absmax), FP4, NF4 and NF4 + DQ on normal weights, by blocksize."""
    x = (np.random.default_rng(0).standard_normal((512, 1024)) * 0.02).astype(np.float32)
    sizes = (32, 64, 128, 256, 512, 1024, 2048, 4096)
    err = reconstruction_error(x, METHODS, sizes, metric="rmse")
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for m in METHODS:
        ax.plot(sizes, [err[(m, b)] / 0.02 for b in sizes], marker="o", color=COLORS[m], label=m.upper(),
                ms=4, lw=1.6, ls="--" if m == "nf4+dq" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("blocksize (elements sharing one absmax)")
    ax.set_ylabel("RMSE / σ of the weights")
    ax.set_title("4-bit weight reconstruction error on N(0, σ²) weights (lower is better)", fontsize=10)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
