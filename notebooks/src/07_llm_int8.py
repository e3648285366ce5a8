# %% [markdown]
# # 07 · LLM.int8(): vector-wise quantization and the outlier decomposition
#
# Dettmers et al. (2022, arXiv 2208.07339) found that from about 6.7B parameters on, every layer of a
# transformer has a few hidden **feature dimensions** — about 0.1% of them — whose activations reach
# magnitudes around 60 while the rest stay near 1. Absmax quantization with such outliers in the
# tensor wipes out the small values (notebook 06). LLM.int8() fixes it in two steps:
#
# 1. **vector-wise** quantization: one absmax per row of X (per token) and per row of W (per output);
#    the int8 product is accumulated in int32 and rescaled by the outer product of the two scale vectors;
# 2. **mixed-precision decomposition**: every column of X holding a value with |x| ≥ α = 6 goes through a
#    16-bit matmul; the rest through int8.
#
# `minilora.quant.int8` follows bitsandbytes' inference path step by step (checked against it by golden
# vectors; the rules are in `docs/facts.md` §4); `int8_matmul_parts` returns each piece.

# %%
import matplotlib.pyplot as plt
import numpy as np

from minilora import figures
from minilora.formats import FP16, round_to
from minilora.quant import (
    absmax_dequantize,
    absmax_quantize,
    int8_matmul,
    int8_matmul_parts,
    int8_vectorwise_dequant,
    int8_vectorwise_quant,
)
from minilora.quant.int8 import BNB_INV_127_SQ, INV_127_SQ
from minilora.show import log_ticks, show_source

# %% [markdown]
# ## Vector-wise quantization on a small example
#
# Each row gets its own scale `SCA = max|row|`; `CA = round(x · 127 / SCA)`. With a threshold, the
# outliers are removed *before* the row statistics, and their whole columns are zeroed in CA.

# %%
x = np.array([[0.5, -1.0, 0.25, 2.0],
              [0.1, 8.0, -0.3, 0.2],
              [-1.5, 0.7, 0.0, 1.0]], np.float32)
for threshold in (0.0, 6.0):
    ca, sca, cols = int8_vectorwise_quant(x, threshold)
    print(f"threshold {threshold}: SCA = {sca.tolist()}, outlier columns = {cols.tolist()}")
    print(ca)
    print("dequantized:\n", np.round(int8_vectorwise_dequant(ca, sca), 4))

# %%
ca0, sca0, _ = int8_vectorwise_quant(x, 0.0)
ca6, sca6, cols6 = int8_vectorwise_quant(x, 6.0)
print(f"without a threshold row 1's scale is {sca0[1]:g}, so 0.1 and 0.2 become {ca0[1, 0]} and {ca0[1, 3]} "
      f"out of 127; with α = 6, column(s) {cols6.tolist()} leave the int8 path and row 1's scale drops to "
      f"{sca6[1]:g}")

# %% [markdown]
# Without a threshold the 8.0 stretches row 1's scale (the line above). With the threshold, its column is
# taken out (it will be multiplied in 16 bits), and the row's scale is set by its remaining values.
#
# ## The decomposition, in the library's code
#
# `int8_matmul_parts` is the whole algorithm (`docs/facts.md` §4, steps 1–5): round X to FP16 and quantize it
# row-wise with the threshold, quantize W row-wise, multiply the int8 codes with an int32 accumulator, rescale
# by the outer product of the two scale vectors, and add the 16-bit product of the outlier columns:

# %%
show_source(int8_matmul_parts, span=("ca, sca, cols = int8_vectorwise_quant", "y = (int_part"))

# %% [markdown]
# ### Build it yourself: the decomposed product
#
# From the pieces the library returns, rebuild `y` as "int8 part + outlier part" and check it:

# %%
rng_small = np.random.default_rng(3)
xs = rng_small.standard_normal((5, 16)).astype(np.float32)
xs[:, 4] *= 20  # one outlier feature
ws = rng_small.standard_normal((3, 16)).astype(np.float32)
p = int8_matmul_parts(xs, ws, threshold=6.0)
int_part = p.acc.astype(np.float32) * np.outer(p.SCA, p.SCB).astype(np.float32) * BNB_INV_127_SQ
outlier_part = xs[:, p.outlier_cols] @ int8_vectorwise_dequant(p.CB, p.SCB)[:, p.outlier_cols].T
assert np.array_equal(p.acc, p.CA.astype(np.int64) @ p.CB.astype(np.int64).T)  # the int32 accumulator is exact
np.testing.assert_allclose(int_part + outlier_part, p.y, rtol=1e-6, atol=1e-6)
print(f"outlier columns {p.outlier_cols.tolist()}; int part + outlier part = y "
      f"(max |difference| {float(np.abs(int_part + outlier_part - p.y).max()):.1e})")

# %% [markdown]
# ## Planted outlier features
#
# 256 tokens × 1024 features of N(0, 1) activations, with 4 feature columns scaled to magnitude ~60
# (0.4% of the features), and a 512 × 1024 weight matrix. We compare three ways of computing X Wᵀ:
# absmax int8 with one scale per tensor, vector-wise int8 (threshold 0), and LLM.int8 (threshold 6).

# %%
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 1024)).astype(np.float32)
outlier_features = rng.choice(1024, 4, replace=False)
X[:, outlier_features] *= 60 / 3
W = (rng.standard_normal((512, 1024)) * 0.02).astype(np.float32)
Y = X.astype(np.float64) @ W.T.astype(np.float64)
print("largest |x| in outlier columns:", float(np.abs(X[:, outlier_features]).max().round(1)),
      " elsewhere:", float(np.abs(np.delete(X, outlier_features, axis=1)).max().round(2)))

qx, ax_ = absmax_quantize(X)
qw, aw = absmax_quantize(W)
y_naive = absmax_dequantize(qx, ax_) @ absmax_dequantize(qw, aw).T
y_vec = int8_matmul(X, W, threshold=0.0)
parts = int8_matmul_parts(X, W, threshold=6.0)
outputs = {"absmax int8 (tensor)": y_naive, "vector-wise int8": y_vec, "LLM.int8 (α = 6)": parts.y}
results = {k: float(np.linalg.norm(y - Y) / np.linalg.norm(Y)) for k, y in outputs.items()}
for k, v in results.items():
    print(f"{k:>22}: relative error {v:.2e}")
print("16-bit columns:", parts.outlier_cols.tolist(), "— the planted ones:", sorted(outlier_features.tolist()))
errs = list(results.values())
print(f"vector-wise divides the tensor-wise error by {errs[0] / errs[1]:.1f}; the decomposition divides it again "
      f"by {errs[1] / errs[2]:.1f}")

# %% [markdown]
# The ratios above: the outlier columns skip the activation rounding and the other columns enjoy small row
# scales. The ordering mirrors the paper's perplexities at 125M parameters on C4 (fp32 25.65, absmax int8
# 87.76, vector-wise 35.84, LLM.int8 25.83 — quoted from the paper, `docs/facts.md` §4, not computed here).
# The decomposition, drawn from the same functions:

# %%
fig = figures.draw("llm_int8_decomposition")  # the blog's block-wise.jpeg, redrawn

# %% [markdown]
# ## The threshold: error against the fraction of 16-bit columns
#
# A lower α moves more columns to 16 bits (more accurate, slower and more memory); a higher α keeps
# more in int8. Sweep it:

# %%
thresholds = [0.5, 1, 2, 3, 4, 5, 6, 8, 12, 20, 40, 80]
sweep = [(t, int8_matmul_parts(X, W, t)) for t in thresholds]
errs = [float(np.linalg.norm(p.y - Y) / np.linalg.norm(Y)) for _, p in sweep]
frac = [len(p.outlier_cols) / X.shape[1] for _, p in sweep]
fig, ax = plt.subplots(figsize=(7, 3.8))
ax.loglog(thresholds, errs, "o-", label="relative error of X Wᵀ")
ax.set_xlabel("threshold α")
ax.set_ylabel("relative error")
ax2 = ax.twinx()
ax2.semilogx(thresholds, frac, "s--", color="C1", label="fraction of 16-bit columns")
ax2.set_ylabel("fraction of columns in 16 bit", color="C1")
ax.axvline(6, color="0.5", lw=0.8)
ax.set_title("LLM.int8: accuracy vs the share of 16-bit columns")
ax.set_xticks(thresholds, [f"{t:g}" for t in thresholds])
ax.minorticks_off()
log_ticks(ax.yaxis)
fig.legend(loc="upper center", bbox_to_anchor=(0.45, 0.85))
plt.show()
for t, e, f in zip(thresholds, errs, frac):
    print(f"α = {t:>4}: error {e:.2e}, {100 * f:5.1f}% of columns in 16 bit")
# the floor: X exact (no activation rounding at all), W as bitsandbytes stores it (int8 rows)
cb, scb, _ = int8_vectorwise_quant(round_to(W, FP16), 0.0)
floor = float(np.linalg.norm(X @ int8_vectorwise_dequant(cb, scb).T - Y) / np.linalg.norm(Y))
at, err_at = dict(zip(thresholds, [p for _, p in sweep])), dict(zip(thresholds, errs))
print(f"floor (exact X, int8 W): {floor:.2e}; at α = {thresholds[0]} the error is "
      f"{err_at[thresholds[0]] / floor:.2f}x it")
planted = sorted(at[6].outlier_cols.tolist()) == sorted(outlier_features.tolist())
print(f"α = 6: the 16-bit columns are exactly the planted ones: {planted}; error {err_at[6] / floor:.2f}x the floor")
big = [t for t in thresholds if t > np.abs(X).max()]
print(f"α above every |x| ({big}): no outliers, the product equals vector-wise int8's: "
      f"{all(np.array_equal(at[t].y, y_vec) for t in big)}")

# %% [markdown]
# Read the table from both ends (the last three lines are computed from it):
#
# * At small α ordinary N(0, 1) values count as outliers and the share of 16-bit columns shoots up — yet the
#   error does not go to zero. It approaches a floor, the rounding error of **W**: bitsandbytes stores the
#   weights only in int8, so even the 16-bit path multiplies by `dequant(CB)`.
# * Between 6 and the outliers' size the planted columns are still found, but the error grows with α:
#   only the *elements* above α are removed before the row statistics, so the smaller entries of an
#   outlier column still stretch each row's scale SCA (the column is zeroed in CA only afterwards).
# * Above every |x| nothing is an outlier, and the product is exactly vector-wise int8's.
#
# ## A typo in bitsandbytes
#
# The int8 product must be rescaled by SCA ⊗ SCB / 127². bitsandbytes' pure-PyTorch kernel multiplies
# by the literal `6.200124e-05`; 1/127² is 6.2000124e-05 — a digit got dropped:

# %%
rel = (float(BNB_INV_127_SQ) - float(INV_127_SQ)) / float(INV_127_SQ)
print(f"1/127²            = {float(INV_127_SQ):.8e}")
print(f"bitsandbytes uses = {float(BNB_INV_127_SQ):.8e}   relatively {rel:.2e} too large")
exact = int8_matmul_parts(X, W, threshold=6.0, rescale="exact")  # 1/127² instead of bitsandbytes' constant
print("effect on the int8 part: max relative difference",
      f"{float(np.max(np.abs(parts.int_part - exact.int_part) / np.abs(exact.int_part).max())):.2e}")

# %% [markdown]
# minilora reproduces bitsandbytes exactly by default (`rescale="bitsandbytes"`): its int8 part equals
# bitsandbytes' `int8_mm_dequant` bit for bit (golden-vector test), constant included. `rescale="exact"`
# multiplies by 1/127² instead. The difference printed above is far below the int8 rounding error (compare
# the relative errors of the planted-outlier example), so it does no harm — but it is a wrong constant all
# the same, and a reference that wants to agree bit for bit has to copy it.
#
# ## Exercises
#
# 1. Make the outlier columns ten times smaller (magnitude ~6) and sweep α again. Where does the knee move?
# 2. `int8_matmul_parts` returns `acc` (int32). How large can the inner dimension k get before an int32
#    accumulator could overflow? Check your answer against `minilora.quant.int8.MAX_K`.
# 3. The paper zeroes whole outlier columns of CA only when there is more than one row. Build a one-row X
#    and compare `CA` with and without the threshold: which entries differ?
