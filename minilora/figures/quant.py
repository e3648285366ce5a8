"""Figures of the quantization chapters: LLM.int8's decomposition (the blog's ``block-wise.jpeg``),
the NF4 levels on the normal density, and the reconstruction error of int4 / FP4 / NF4 / NF4 + DQ."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from minilora.figures import register
from minilora.quant import fp4_code, int8_matmul_parts, int8_vectorwise_dequant, nf4_code
from minilora.quant.compare import METHODS, code_usage, reconstruction_error
from minilora.quant.nf4 import NF4_OFFSET

COLORS = {"int4": "#9c755f", "fp4": "#e15759", "nf4": "#4e79a7", "nf4+dq": "#59a14f", "int8": "#f28e2b",
          "outlier": "#d62728"}


def _matrix(ax, a, title, fmt="{:.1f}", vmax=None, cmap="RdBu_r", rows=(), cols=(), fontsize=7.5):
    """An annotated heat map: every cell shows its number; outlier ``rows``/``cols`` framed in red;
    a colour bar below."""
    a = np.asarray(a, dtype=np.float64)
    if vmax is None:
        vmax = float(np.abs(a).max()) or 1.0
    im = ax.imshow(a, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest", aspect="auto")
    for (i, j), v in np.ndenumerate(a):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color="white" if abs(v) > 0.6 * vmax else "black")
    for r in rows:
        ax.add_patch(Rectangle((-0.5, r - 0.5), a.shape[1], 1, fill=False, ec=COLORS["outlier"], lw=2.2))
    for c in cols:
        ax.add_patch(Rectangle((c - 0.5, -0.5), 1, a.shape[0], fill=False, ec=COLORS["outlier"], lw=2.2))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    cb = ax.figure.colorbar(im, ax=ax, orientation="horizontal", fraction=0.06, pad=0.04, aspect=14)
    step = 10.0 ** np.floor(np.log10(vmax))
    top = float(np.floor(vmax / step) * step)  # three ticks inside the range, so that wide numbers do not collide
    cb.set_ticks([-top, 0, top], labels=[f"{-top:g}", "0", f"{top:g}"])
    cb.ax.tick_params(labelsize=7)
    return ax


@register("llm_int8_decomposition", blog_name="block-wise.jpeg")
def llm_int8_decomposition() -> Figure:
    """LLM.int8: outlier feature columns of X and rows of Wᵀ go through FP16, the rest through int8."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    x[:, [2, 5]] *= 30                                      # two outlier features (|x| up to ~50, as in the paper)
    w = (rng.standard_normal((4, 8)) * 0.4).astype(np.float32)
    p = int8_matmul_parts(x, w, threshold=6.0)
    cols = p.outlier_cols.tolist()
    rest = [j for j in range(x.shape[1]) if j not in cols]
    wt = w.T                                                # (in, out): outlier features are rows, as in the paper
    w_deq = int8_vectorwise_dequant(p.CB, p.SCB).T          # the outlier path uses W dequantized from its int8 copy
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    plain = int8_matmul_parts(x, w, threshold=0.0).y        # vector-wise int8 without the decomposition
    vx, vw, vy = float(np.abs(x).max()), float(np.abs(w).max()), float(np.abs(exact).max())

    fig = plt.figure(figsize=(15.5, 8.4))
    gs = fig.add_gridspec(2, 6, width_ratios=[1.6, 1, 1, 1, 1, 1], height_ratios=[1, 1.15],
                          hspace=0.42, wspace=0.3, left=0.02, right=0.98, top=0.87, bottom=0.08)
    _matrix(fig.add_subplot(gs[0, 0]), x, f"X (tokens × features), FP16\noutlier columns O = {cols}: |x| ≥ 6",
            vmax=vx, cols=cols)
    _matrix(fig.add_subplot(gs[1, 0]), wt, "Wᵀ (features × outputs)\nrows O meet X's outlier columns",
            fmt="{:.2f}", vmax=vw, rows=cols)
    # top row: the outlier path, in 16 bit
    _matrix(fig.add_subplot(gs[0, 1]), x[:, cols], "X[:, O]\n(FP16)", vmax=vx)
    _matrix(fig.add_subplot(gs[0, 2]), w_deq[cols], "Wᵀ[O, :] (16 bit, from\nW's int8 copy, as bitsandbytes)",
            fmt="{:.2f}", vmax=vw)
    ax = fig.add_subplot(gs[0, 3])
    ax.axis("off")
    ax.text(0.5, 0.55, "outlier path:\nan FP16 matmul\nover the few\noutlier features\n⟶", ha="center",
            va="center", fontsize=10)
    _matrix(fig.add_subplot(gs[0, 4]), p.outlier_part, "FP16 part\nX[:, O] · Wᵀ[O, :]", vmax=vy)
    # bottom row: the int8 path, vector-wise scales, int32 accumulation
    ax = _matrix(fig.add_subplot(gs[1, 1]), p.CA[:, rest], "CA = int8(X[:, rest])\n(ticks: row absmax SCA)",
                 fmt="{:.0f}", vmax=127, cmap="PuOr_r")
    ax.set_yticks(range(x.shape[0]), [f"{v:.2f}" for v in p.SCA], fontsize=7)
    ax.yaxis.tick_right()
    ax = _matrix(fig.add_subplot(gs[1, 2]), p.CB[:, rest].T, "CBᵀ = int8(Wᵀ[rest, :])\n(ticks: column absmax SCB)",
                 fmt="{:.0f}", vmax=127, cmap="PuOr_r")
    ax.set_xticks(range(w.shape[0]), [f"{v:.2f}" for v in p.SCB], fontsize=7)
    ax.xaxis.tick_top()
    ax.set_title(ax.get_title(), fontsize=9, pad=13)
    _matrix(fig.add_subplot(gs[1, 3]), p.acc, "CA · CBᵀ in int32\n(exact integer sums)", fmt="{:.0f}",
            cmap="PuOr_r", fontsize=7)
    _matrix(fig.add_subplot(gs[1, 4]), p.int_part, "int8 part, dequantized:\nint32 · SCA ⊗ SCB / 127²", vmax=vy)
    _matrix(fig.add_subplot(gs[0, 5]), p.y, "Y = FP16 part\n+ int8 part", vmax=vy)
    ax = fig.add_subplot(gs[1, 5])
    ax.axis("off")
    paper = p.int_part + x[:, cols] @ w[:, cols].T           # the paper's figure: W's outlier rows kept in FP16
    err = {k: float(np.abs(v - exact).mean()) for k, v in (("plain", plain), ("bnb", p.y), ("paper", paper))}
    ax.text(0.0, 0.95, f"mean |Y − X Wᵀ|\n\nint8 for every feature\n(no decomposition):  {err['plain']:.3f}\n\n"
            f"LLM.int8 (α = 6), W[O]\nfrom int8 (bitsandbytes):  {err['bnb']:.3f}\n\n"
            f"LLM.int8, W[O] kept\nin FP16 (the paper):  {err['paper']:.3f}", ha="left", va="top", fontsize=9.5)
    fig.suptitle("LLM.int8(): mixed-precision decomposition of X Wᵀ — outlier features in 16 bit, the rest in "
                 "int8 with vector-wise scales", fontsize=12.5)
    fig.text(0.5, 0.015, "top row: the outlier path (16 bit); bottom row: the int8 path (one scale per row of X and "
             "per output of W, int32 accumulation); the two parts add to Y.  Numbers: "
             "minilora.quant.int8_matmul_parts.", ha="center", fontsize=9, color="0.3")
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
    gap = max(abs(err[("nf4+dq", b)] / err[("nf4", b)] - 1) for b in sizes)
    b_mid = sizes[len(sizes) // 2]
    ax.annotate(f"NF4 and NF4 + DQ overlap: double quantization of the\nabsmax constants changes the error by "
                f"≤ {100 * gap:.2g} % at every blocksize", (b_mid, err[("nf4", b_mid)] / 0.02),
                xytext=(0.44, 0.03), textcoords="axes fraction", fontsize=8, color=COLORS["nf4+dq"],
                arrowprops=dict(arrowstyle="->", color="0.4", lw=0.8))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("blocksize (elements sharing one absmax)")
    ax.set_ylabel("RMSE / σ of the weights")
    ax.set_title("4-bit weight reconstruction error on N(0, σ²) weights (lower is better)", fontsize=10)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
