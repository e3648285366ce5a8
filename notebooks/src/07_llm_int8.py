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
# vectors); `int8_matmul_parts` returns each piece.

# %%
import numpy as np
import matplotlib.pyplot as plt

from minilora import figures
from minilora.quant import (absmax_quantize, absmax_dequantize, int8_vectorwise_quant, int8_vectorwise_dequant,
                            int8_matmul, int8_matmul_parts)
from minilora.quant.int8 import INV_127_SQ, BNB_INV_127_SQ

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

# %% [markdown]
# Without a threshold the 8.0 stretches row 1's scale: 0.1 and 0.2 become 2 and 3 out of 127. With the
# threshold, column 1 is taken out (it will be multiplied in 16 bits), and row 1's scale drops to 0.3.
#
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

# %% [markdown]
# Vector-wise scales halve the error of one tensor-wide scale; the decomposition divides it again by
# several (the numbers above): the outlier columns skip the activation rounding and the other columns
# enjoy small row scales. This mirrors the paper's perplexities at 125M parameters
# on C4 (fp32 25.65, absmax int8 87.76, vector-wise 35.84, LLM.int8 25.83 — quoted from the paper, not
# computed here). The decomposition, drawn from the same functions:

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
fig.legend(loc="upper center", bbox_to_anchor=(0.45, 0.85))
plt.show()
for t, e, f in zip(thresholds, errs, frac):
    print(f"α = {t:>4}: error {e:.2e}, {100 * f:5.1f}% of columns in 16 bit")

# %% [markdown]
# Read the table from both ends:
#
# * Below α ≈ 4 ordinary N(0, 1) values start to count as outliers and the share of 16-bit columns shoots
#   up — yet the error does not go to zero. It levels off at the rounding error of **W**: bitsandbytes
#   stores the weights only in int8, so even the 16-bit path multiplies by `dequant(CB)`.
# * Between 6 and the outliers' size the planted columns are still found, but the error grows with α:
#   only the *elements* above α are removed before the row statistics, so the smaller entries of an
#   outlier column still stretch each row's scale SCA (the column is zeroed in CA only afterwards).
# * Above the outliers' size nothing is an outlier, and the error is that of vector-wise int8.
#
# α = 6 keeps only the planted columns in 16 bit and is close to the floor.
#
# ## A typo in bitsandbytes
#
# The int8 product must be rescaled by SCA ⊗ SCB / 127². bitsandbytes' pure-PyTorch kernel multiplies
# by the literal `6.200124e-05`; 1/127² is 6.2000124e-05 — a digit got dropped:

# %%
rel = (float(BNB_INV_127_SQ) - float(INV_127_SQ)) / float(INV_127_SQ)
print(f"1/127²            = {float(INV_127_SQ):.8e}")
print(f"bitsandbytes uses = {float(BNB_INV_127_SQ):.8e}   relatively {rel:.2e} too large")
int_part_bnb = parts.acc.astype(np.float32) * np.outer(parts.SCA, parts.SCB) * BNB_INV_127_SQ
print("effect on the int8 part: max relative difference",
      f"{float(np.max(np.abs(int_part_bnb - parts.int_part) / np.abs(parts.int_part).max())):.2e}")

# %% [markdown]
# minilora uses 1/127²; the golden-vector tests compare with bitsandbytes at a relative tolerance of 1e-4,
# which covers the 1.8e-5 difference. It is far below the int8 rounding error, so it does no harm — but it
# is a wrong constant all the same.
#
# ## Exercises
#
# 1. Make the outlier columns ten times smaller (magnitude ~6) and sweep α again. Where does the knee move?
# 2. `int8_matmul_parts` returns `acc` (int32). How large can the inner dimension k get before an int32
#    accumulator could overflow? Check your answer against `minilora.quant.int8.MAX_K`.
# 3. The paper zeroes whole outlier columns of CA only when there is more than one row. Build a one-row X
#    and compare `CA` with and without the threshold: which entries differ?
