# %% [markdown]
# # 07 · LLM.int8(): worked solutions
#
# The three exercises of `07_llm_int8`, computed and checked with `assert`s (CI runs this notebook).

# %%
import numpy as np

from minilora.quant import int8_matmul_parts, int8_vectorwise_quant
from minilora.quant.int8 import MAX_K

# %% [markdown]
# ## 1. Smaller outliers: where does the knee move?
#
# The notebook's data, once with outlier features of magnitude ~60 and once ~6. The knee is the largest
# threshold that still sends every planted column to the 16-bit path.

# %%
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 1024)).astype(np.float32)
planted = rng.choice(1024, 4, replace=False)
W = (rng.standard_normal((512, 1024)) * 0.02).astype(np.float32)
thresholds = [0.5, 1, 2, 3, 4, 5, 6, 8, 12, 20, 40, 80]
knee = {}
for size in (60, 6):
    Xs = X.copy()
    Xs[:, planted] *= size / 3
    Y = Xs.astype(np.float64) @ W.T.astype(np.float64)
    found = []
    for t in thresholds:
        p = int8_matmul_parts(Xs, W, t)
        err = np.linalg.norm(p.y - Y) / np.linalg.norm(Y)
        found.append(set(planted.tolist()) <= set(p.outlier_cols.tolist()))
        print(f"outliers ~{size:2d}, α = {t:>4}: error {err:.2e}, {len(p.outlier_cols):4d} columns in 16 bit")
    knee[size] = max(t for t, ok in zip(thresholds, found) if ok)
    top_out, top_rest = np.abs(Xs[:, planted]).max(), np.abs(np.delete(Xs, planted, 1)).max()
    print(f"→ largest α that still catches every planted column: {knee[size]} "
          f"(the outliers reach {top_out:.1f}, ordinary values {top_rest:.1f})\n")
assert knee[6] < 6 < knee[60]
print(f"the knee moves from α = {knee[60]} down to α = {knee[6]}: at the paper's α = 6, outliers of magnitude ~6 "
      "are not all caught (the table), and the threshold must sit between the ordinary values and the outliers")

# %% [markdown]
# ## 2. How long can the dot product get?
#
# Each int8 × int8 product is at most 127² = 16,129 in magnitude, so a sum of k of them stays below the int32
# maximum 2^31 − 1 as long as k ≤ (2^31 − 1) // 127².

# %%
k_max = (2**31 - 1) // 127**2
print(f"(2^31 - 1) // 127^2 = {k_max:,d}; minilora.quant.int8.MAX_K = {MAX_K:,d}")
assert k_max == MAX_K
assert k_max * 127**2 <= 2**31 - 1 < (k_max + 1) * 127**2

# %% [markdown]
# ## 3. One row: what the threshold changes in CA
#
# With a threshold the outlier *elements* are set to 0 before the row statistics, in every case; only with
# more than one row are their whole columns zeroed afterwards. With one row, the outlier column holds only
# the outlier itself, so CA differs in two ways: the outlier's entry becomes 0, and every other entry is
# rescaled by the smaller row absmax.

# %%
x = np.array([[0.5, -1.0, 8.0, 0.25, 2.0]], np.float32)
ca0, sca0, _ = int8_vectorwise_quant(x, 0.0)
ca6, sca6, cols = int8_vectorwise_quant(x, 6.0)
print("no threshold:", ca0.tolist(), "SCA", sca0.tolist())
print("α = 6       :", ca6.tolist(), "SCA", sca6.tolist(), "outlier columns", cols.tolist())
assert cols.tolist() == [2] and ca6[0, 2] == 0
others = [0, 1, 3, 4]
assert np.array_equal(ca6[0, others], np.rint(x[0, others] * np.float32(np.float32(1 / sca6[0]) * 127)))
assert (ca6[0, others] != ca0[0, others]).all()
print("entries that differ:", np.flatnonzero(ca6[0] != ca0[0]).tolist(),
      "(all of them: a new scale, and the outlier → 0)")
