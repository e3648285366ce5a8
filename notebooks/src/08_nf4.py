# %% [markdown]
# # 08 · 4-bit NormalFloat (NF4): building the levels, quantizing, packing
#
# QLoRA (Dettmers et al. 2023, arXiv 2305.14314) stores the frozen base model in **NF4**, a 4-bit data
# type whose 16 levels sit at quantiles of the standard normal distribution: pretrained weights are
# roughly zero-mean normal, so each level ends up used about equally often. This notebook rebuilds the
# NF4 table bit for bit, explains the strange offset 0.9677083, shows why the paper's formula cannot be
# taken literally, compares NF4 with FP4 and int4, and looks at the packed bytes.

# %%
import numpy as np
import matplotlib.pyplot as plt
from scipy.stats import norm

from minilora import figures
from minilora.quant import nf4_code, fp4_code, create_normal_map, quantize_4bit, dequantize_4bit
from minilora.quant.blockwise import linspace_f32, unpack_nibbles
from minilora.quant.compare import METHODS, reconstruction_error

# %% [markdown]
# ## The paper's formula, and why it gives ±∞
#
# QLoRA's Eq. 4 estimates the 2^k quantiles of N(0, 1) as
#
# $$ q_i = \tfrac12\Big(Q_X\big(\tfrac{i}{2^k+1}\big) + Q_X\big(\tfrac{i+1}{2^k+1}\big)\Big). $$
#
# (The blog writes "z^k + 1"; it is 2^k + 1.) Taken literally for k = 4 and i = 0 … 15:

# %%
k = 4
i = np.arange(2**k)
with np.errstate(divide="ignore"):
    q_paper = 0.5 * (norm.ppf(i / (2**k + 1)) + norm.ppf((i + 1) / (2**k + 1)))
print(np.round(q_paper, 4))
print("below zero:", int((q_paper < 0).sum()), " exactly zero:", int((q_paper == 0).sum()),
      " above zero:", int((q_paper > 0).sum()), " largest finite magnitude:", round(float(q_paper[-1]), 4))

# %% [markdown]
# Q_X(0) = −∞, so the first level is −∞ (the top one is finite only because (i+1)/(2^k+1) stops at 16/17;
# symmetrically, i = 16 would give +∞). The set is also lopsided: the i = 8 level is 0, with 8 levels below it
# and 7 above, and since one end is infinite there is nothing finite to normalize by. bitsandbytes'
# `create_normal_map` builds the levels differently.
#
# ## How NF4 is actually built
#
# * 8 positive quantiles at `linspace(offset, 0.5, 9)[:-1]` (probabilities from `offset` down to 0.5),
# * 7 negative ones at `linspace(offset, 0.5, 8)[:-1]`, mirrored,
# * plus an exact 0; sort, and divide by the largest so the range is exactly [−1, 1].
#
# So NF4 has 2^(k−1) = 8 levels on the negative side counting zero and 2^(k−1) + 1 = 9 on the positive side
# counting zero; merging the two halves drops one zero and leaves 2^k = 16 levels — asymmetric, with −1 and
# +1 both present and an exact 0. (The blog's garbled "r << min(d, k)" / "called 2^{k−1}+1" paragraph means
# this.)

# %%
code = nf4_code()
print("NF4 levels:", np.round(code.astype(np.float64), 4).tolist())
print("negative:", int((code < 0).sum()), " zero:", int((code == 0).sum()), " positive:", int((code > 0).sum()))

# %% [markdown]
# ## The offset 0.9677083
#
# The outermost probability cannot be 1 (that is +∞ again). bitsandbytes picks 0.9677083. The blog writes
# "1 − 1/(215)", which is 1 − 1/(2·15): the offset is the mean of 1 − 1/(2·15) and 1 − 1/(2·16), halfway
# between the "half a bin from the top" choices for 15 and 16 bins.

# %%
a, b = 1 - 1 / (2 * 15), 1 - 1 / (2 * 16)
print(f"1 - 1/30 = {a:.7f},  1 - 1/32 = {b:.7f},  mean = {(a + b) / 2:.7f}")
print(f"torch's float32 linspace starts at {float(linspace_f32(0.9677083, 0.5, 9)[0]):.16f}")
print(f"norm.ppf(offset) = {norm.ppf(0.9677083):.6f}: level 1.0 sits this many standard deviations out")

# %% [markdown]
# ## Bit for bit — and only the library's way
#
# `create_normal_map()` follows bitsandbytes' mixed precision: torch's float32 `linspace`, `norm.ppf` in
# float64 on those float32 points, cast to float32, then divide by the max in float32. Doing everything in
# float64 and rounding once (the "cleaner" recipe) gives a *different* table:

# %%
exact = create_normal_map()
clean = create_normal_map(recipe="float64")
ulps = clean.view(np.int32).astype(np.int64) - code.view(np.int32).astype(np.int64)
print("library recipe == NF4 table, bit for bit:", np.array_equal(exact.view(np.uint32), code.view(np.uint32)))
print("float64 recipe, difference in ulps per level:", ulps.tolist())

# %% [markdown]
# The differences are a few units in the last place — harmless for accuracy, but a quantizer that wants to
# match bitsandbytes' bytes must use the table itself. minilora hard-codes it (`nf4_code()`) and the tests
# show the recipe rebuilds it.
#
# ## The levels on the normal density

# %%
fig = figures.draw("nf4_levels")

# %% [markdown]
# On the left, each level owns the values between the midpoints to its neighbours; near 0 the levels are
# dense, in the tails sparse. On the right, how often each code is used for N(0, 1) weights in blocks of 64.
# NF4's usage is flatter than FP4's; it is not perfectly flat because the block absmax (not σ) sets the scale.
# FP4 wastes a code: it has both +0 and −0 (positions 7 and 8 here), and its levels are E2M1 floats, crowded
# near zero.
#
# ## NF4 vs FP4 vs int4, beside QLoRA's Table 2
#
# QLoRA's Table 2 reports mean Pile-CC perplexity of quantized LLaMA models (lower is better): Int4 34.34,
# FP4 (E2M1) 31.07, NF4 + DQ 27.41 (quoted from the paper). We cannot run LLaMA here, but we can measure
# the step before perplexity — the weight reconstruction error — on N(0, σ²) weights, at the same blocksize
# 64 for all (int4 = symmetric absmax int4, notebook 06):

# %%
w = (np.random.default_rng(0).standard_normal((1024, 1024)) * 0.02).astype(np.float32)
rmse = reconstruction_error(w, METHODS, (64,), "rmse")
paper = {"int4": 34.34, "fp4": 31.07, "nf4": None, "nf4+dq": 27.41}
print(f"{'type':>7} {'RMSE / σ':>9} {'QLoRA Table 2 PPL':>18}")
for m in METHODS:
    ppl = "—" if paper[m] is None else f"{paper[m]:.2f}"
    print(f"{m:>7} {rmse[(m, 64)] / 0.02:9.4f} {ppl:>18}")
order_err = sorted(METHODS, key=lambda m: rmse[(m, 64)])
print("ordered by weight error:", order_err)

# %%
fig = figures.draw("quant_error")

# %% [markdown]
# What these numbers show:
#
# * **NF4 has the lowest weight error** of the three 4-bit types, at every blocksize, and NF4 + DQ is the best
#   in QLoRA's table as well. Double quantization adds almost nothing to the error (next notebook).
# * **int4 and FP4 swap places.** On normal weights, symmetric int4 reconstructs *better* than FP4 (lower
#   RMSE), yet in QLoRA's table FP4 gives the *lower* perplexity. Weight RMSE treats every weight alike;
#   perplexity depends on which errors the network is sensitive to, and on real weights rather than a normal
#   sample. This notebook cannot say which effect wins there — only that the two orderings differ, so weight
#   error is a useful first check, not a substitute for evaluating the model.
# * Our weights are synthetic N(0, σ²); real LLaMA weights have heavier tails, which changes the margins.
#
# ## Quantizing and packing, on real bytes
#
# `quantize_4bit` cuts the flattened tensor into blocks of 64, divides each by its absmax, picks the nearest
# level (a value exactly on a midpoint takes the lower code) and packs two 4-bit codes per byte — the even
# element in the **high** nibble. An odd length gets a 0.0 appended first, which is code 7 in NF4.

# %%
x = np.array([0.9, -0.35, 0.0, 2.0, -2.0], np.float32)
packed, state = quantize_4bit(x, blocksize=64, quant_type="nf4")
codes = unpack_nibbles(packed, 6)
print("absmax:", state.absmax.tolist())
print("scaled:", (x / state.absmax[0]).tolist())
print("codes :", codes.tolist(), "(the sixth is the padding)")
print("bytes :", [f"0x{b:02X}" for b in packed.tolist()], "=", [f"{b:08b}" for b in packed.tolist()])
print("back  :", dequantize_4bit(packed, state).tolist())
print(state)

# %% [markdown]
# 0.9 / 2 = 0.45 is nearest to level 12 (0.4407), −0.35/2 = −0.175 to level 5 (−0.1848); 0 is code 7 exactly;
# ±2 are the absmax, codes 15 and 0. The bytes read `0xC5` = (12 << 4) | 5, `0x7F` = (7 << 4) | 15, `0x07`
# = (0 << 4) | 7.
#
# ## Exercises
#
# 1. `create_normal_map(use_extra_value=False)` builds a symmetric 15-level type. Compare its reconstruction
#    error with NF4's on the same weights (use `quantize_blockwise` with `code=`).
# 2. Replace the weights by a Laplace or Student-t sample with the same standard deviation. Does NF4 still beat
#    int4 and FP4? By how much?
# 3. Find an input where FP4 reconstructs a block *better* than NF4. What do such blocks look like?
