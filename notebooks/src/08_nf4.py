# %% [markdown]
# # 08 · 4-bit NormalFloat (NF4): building the levels, quantizing, packing
#
# QLoRA (Dettmers et al. 2023, arXiv 2305.14314) stores the frozen base model in **NF4**, a 4-bit data
# type whose 16 levels sit at quantiles of the standard normal distribution. The premise: pretrained
# weights are roughly zero-mean normal, so levels placed at equal-probability quantiles would each be used
# about equally often. This notebook measures that premise on the shipped base GPT, rebuilds the NF4 table
# bit for bit, explains the strange offset 0.9677083, shows why the paper's formula cannot be taken
# literally, measures how equally the levels are really used, compares NF4 with FP4 and int4, and looks at
# the packed bytes.

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import norm

import minilora
from minilora import figures
from minilora import qlora_experiments as Q
from minilora.quant import create_normal_map, dequantize_4bit, fp4_code, nf4_code, quantize_4bit
from minilora.quant.blockwise import linspace_f32, midpoints, nearest_code, unpack_nibbles
from minilora.quant.compare import METHODS, reconstruction_error
from minilora.show import show_source

# %% [markdown]
# ## The premise, measured: are pretrained weights zero-mean normal?
#
# The blog says the weights "have a normal distribution with standard deviation 0" (标准差位0); it means
# **mean** 0 (`docs/errata.md`, erratum 7: a standard deviation of 0 would be a constant). Here are the mean,
# the standard deviation and the kurtosis (3 for a normal distribution) of every weight matrix of the
# shipped base GPT (`minilora.qlora_experiments.weight_statistics`):

# %%
base = minilora.load_base_model()
stats = Q.weight_statistics(base)
print(f"{'weight':30s} {'shape':>10s} {'mean':>9s} {'std':>7s} {'mean/std':>9s} {'kurtosis':>9s}")
for name, v in stats.items():
    print(f"{name:30s} {str(v['shape']):>10s} {v['mean']:+9.5f} {v['std']:7.4f} {v['mean'] / v['std']:+9.4f} "
          f"{v['kurtosis']:9.2f}")
premise = Q.normal_premise_verdict(stats)
print(f"every matrix zero-mean to within {premise['max_abs_mean_over_std']:.1%} of its std: {premise['zero_mean']}")
print(f"kurtosis of all standardized weights together {premise['pooled_kurtosis']:.2f} (a normal: 3): heavier tails "
      f"{premise['heavier_tails']}; per matrix from {premise['min_kurtosis']:.2f} to {premise['max_kurtosis']:.2f}, "
      f"significantly above 3 in {premise['n_heavy']} of {premise['n_matrices']}")
assert premise["zero_mean"] and premise["heavier_tails"]  # what docs/errata.md (erratum 7) says of this model

# %%
z = np.concatenate([v["standardized"] for name, v in stats.items() if name.startswith("blocks.")])
t = np.linspace(-6, 6, 400)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, scale in zip(axes, ("linear", "log")):
    ax.hist(z, bins=120, range=(-6, 6), density=True, color="#9ecae1", label="block weights, standardized")
    ax.plot(t, norm.pdf(t), "k", lw=1.2, label="N(0, 1)")
    ax.set(yscale=scale, xlabel="(w − mean) / std, per matrix", ylabel="density",
           title=f"base GPT weights vs a normal ({scale} scale)")
axes[1].set_ylim(1e-5, 1)
axes[0].legend(fontsize=8)
plt.show()
print(f"{z.size:,d} weights; beyond 4 std: {np.mean(np.abs(z) > 4):.2e} of them (a normal: {2 * norm.sf(4):.2e})")

# %% [markdown]
# The weights are centred (the mean is a small fraction of the standard deviation, so "mean 0" is right),
# but the log-scale histogram and the kurtosis show tails heavier than a normal's: more weights far out
# than N(0, 1) predicts (the last line). NF4's levels are placed for a normal; what that costs on these real
# weights is measured below, next to synthetic normal ones.
#
# ## The paper's formula, and why it gives ±∞
#
# QLoRA's Eq. 4 estimates the 2^k quantiles of N(0, 1) as
#
# $$ q_i = \tfrac12\Big(Q_X\big(\tfrac{i}{2^k+1}\big) + Q_X\big(\tfrac{i+1}{2^k+1}\big)\Big). $$
#
# (The blog writes "z^k + 1"; it is 2^k + 1, `docs/errata.md` erratum 5. Its recipe also says to estimate
# "2^{k+1}" quantiles: the formula's denominator shows it is 2^k + 1 boundaries, erratum 11.) Taken
# literally for k = 4 and i = 0 … 15:

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
# this, erratum 6; the type is called 4-bit NormalFloat.)

# %%
code = nf4_code()
print("NF4 levels:", np.round(code.astype(np.float64), 4).tolist())
print("negative:", int((code < 0).sum()), " zero:", int((code == 0).sum()), " positive:", int((code > 0).sum()))

# %% [markdown]
# ### Build it yourself: NF4 from normal quantiles
#
# The recipe above in four lines, done the library's way (`docs/facts.md` §2: PyTorch's float32 `linspace`,
# the quantile function in float64 on those float32 points, a float32 cast, the division in float32), and
# checked **bit for bit** against bitsandbytes' table:

# %%
def my_nf4(offset=0.9677083):
    """NF4's 16 levels: 8 positive and 7 negative standard-normal quantiles, 0, sorted, divided by the max."""
    positive = norm.ppf(linspace_f32(offset, 0.5, 9)[:-1]).astype(np.float32)
    negative = (-norm.ppf(linspace_f32(offset, 0.5, 8)[:-1])).astype(np.float32)
    levels = np.sort(np.concatenate([negative, [np.float32(0)], positive]))
    return levels / levels.max()


assert np.array_equal(my_nf4().view(np.uint32), nf4_code().view(np.uint32))
print("my_nf4() equals nf4_code() bit for bit")

# %% [markdown]
# ## The offset 0.9677083
#
# The outermost probability cannot be 1 (that is +∞ again). bitsandbytes picks 0.9677083. The blog writes
# "1 − 1/(215)", which is 1 − 1/(2·15) (erratum 8): the offset is the mean of 1 − 1/(2·15) and
# 1 − 1/(2·16), halfway between the "half a bin from the top" choices for 15 and 16 bins.

# %%
a, b = 1 - 1 / (2 * 15), 1 - 1 / (2 * 16)
print(f"1 - 1/30 = {a:.7f},  1 - 1/32 = {b:.7f},  mean = {(a + b) / 2:.7f}")
print(f"torch's float32 linspace starts at {float(linspace_f32(0.9677083, 0.5, 9)[0]):.16f}")
print(f"norm.ppf(offset) = {norm.ppf(0.9677083):.6f}: level 1.0 sits this many standard deviations out")

# %% [markdown]
# ## Bit for bit — and only the library's way
#
# `create_normal_map()` follows bitsandbytes' mixed precision, like `my_nf4` above. Doing everything in
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
# ## The levels on the normal density, and how often each is used

# %%
fig = figures.draw("nf4_levels")

# %%
w_normal = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
usage = {qt: Q.usage_fractions(w_normal, qt, 64) for qt in ("nf4", "fp4")}
for qt, u in usage.items():
    print(f"{qt.upper()} on N(0, 1) weights, blocks of 64: each level takes {u.min():.1%} … {u.max():.1%} of the "
          f"weights (equal use would be {1 / 16:.2%}); spread (std) {u.std():.2%}")
gaps = {name: Q.largest_gap(c, -0.5, 0.5) for name, c in (("NF4", nf4_code()), ("FP4", fp4_code()))}
print(f"widest gap between neighbouring levels in [−0.5, 0.5]: NF4 {gaps['NF4']:.3f}, FP4 {gaps['FP4']:.3f}")
print(f"FP4's two smallest magnitudes: {sorted(set(np.abs(fp4_code()).tolist()))[:2]} (a ±0 pair and ±1/192)")

# %% [markdown]
# On the left, each level owns the values between the midpoints to its neighbours. On the right, and in
# the first two lines above, how often each level is used: NF4's usage is flatter than FP4's (the spreads
# printed), but far from equal (the ranges printed), because the block absmax, not σ, sets the scale: the
# largest value of every block lands exactly on ±1, and the other 63 spread over the levels in between.
# FP4 wastes a code on
# −0 (positions 7 and 8 on the right), spends another on ±1/192, a near-duplicate of zero, and then leaves a
# wide gap near zero; NF4 is the finer of the two around 0, where most weights are (the widest gaps above).
#
# ## NF4 vs FP4 vs int4, beside QLoRA's Table 2
#
# QLoRA's Table 2 reports mean Pile Common Crawl perplexity for each data type, averaged over OPT, BLOOM,
# LLaMA and Pythia models of 125M to 13B parameters (lower is better): Int4 34.34, FP4 (E2M1) 31.07,
# NF4 + DQ 27.41 (quoted from the paper, `docs/facts.md` §6). We cannot run those models here, but we can
# measure the step before perplexity — the weight reconstruction error — on N(0, σ²) weights and on the base
# GPT's real weights, at the same blocksizes for all (int4 = symmetric absmax int4, notebook 06):

# %%
w = (np.random.default_rng(0).standard_normal((512, 1024)) * 0.02).astype(np.float32)
w_gpt = np.concatenate([p.ravel() for name, p in base.params.items() if name.startswith("blocks.") and p.ndim == 2])
blocksizes = (64, 256, 1024)
rmse = reconstruction_error(w, METHODS, blocksizes, "rmse")
rmse_gpt = reconstruction_error(w_gpt, METHODS, blocksizes, "rmse")
paper = {"int4": 34.34, "fp4": 31.07, "nf4": None, "nf4+dq": 27.41}
print(f"{'type':>7} {'RMSE/σ normal':>14} {'RMSE/σ base GPT':>16} {'QLoRA Table 2 PPL':>18}   (blocksize 64)")
for m in METHODS:
    ppl = "—" if paper[m] is None else f"{paper[m]:.2f}"
    print(f"{m:>7} {rmse[(m, 64)] / w.std():14.4f} {rmse_gpt[(m, 64)] / w_gpt.std():16.4f} {ppl:>18}")
for label, r in (("normal", rmse), ("base GPT", rmse_gpt)):
    orders = {bs: sorted(METHODS, key=lambda m: r[(m, bs)]) for bs in blocksizes}
    nf4_first = all(o[0] in ("nf4", "nf4+dq") for o in orders.values())
    dq_cost = max(r[("nf4+dq", bs)] / r[("nf4", bs)] - 1 for bs in blocksizes)
    int4_vs_fp4 = ["int4" if r[("int4", bs)] < r[("fp4", bs)] else "fp4" for bs in blocksizes]
    print(f"{label:>8}: NF4 (with or without DQ) lowest at every blocksize {blocksizes}: {nf4_first}; DQ adds at "
          f"most {dq_cost:.3%} to NF4's RMSE; lower of int4 / fp4 at each blocksize: {int4_vs_fp4}")

# %%
fig = figures.draw("quant_error")

# %% [markdown]
# What these numbers show (each line above is computed from them):
#
# * Whether **NF4 has the lowest weight error** at every blocksize, on normal and on the real weights, and how
#   little double quantization adds (next notebook); NF4 + DQ is also the best in QLoRA's table.
# * Which of **int4 and FP4** reconstructs better here. In QLoRA's table FP4 gives the *lower* perplexity;
#   where the weight error orders them the other way, the two measures disagree. Weight RMSE treats every
#   weight alike; perplexity depends on which errors the network is sensitive to, and on the models' own
#   weights. This notebook cannot say which effect wins there — weight error is a useful first check, not a
#   substitute for evaluating the model.
# * The real weights have heavier tails than a normal (the first section), which is why their relative errors
#   differ from the synthetic ones.
#
# ## The toy Table 2: the base GPT's loss with its weights stored in each format
#
# Weight error is the step *before* model quality. `quant_eval` takes the step itself, on the model at hand:
# every weight of every linear layer except `lm_head` is replaced by its round trip through a format, the
# held-out loss is measured, and the weights are put back bit for bit. We evaluate on the four tasks the base
# GPT was pretrained on (on the held-out task it has learned nothing yet, so its loss there says nothing about
# quantization), on three disjoint evaluation sets, so that an ordering can be told from noise:

# %%
from minilora.data import PRETRAIN_TASKS, task_batch  # noqa: E402
from minilora.experiments.quant_eval import quant_eval  # noqa: E402


def pretrain_eval_batches(seed, n=512):
    return [task_batch(task, n, seed=np.random.default_rng([seed, i])) for i, task in enumerate(PRETRAIN_TASKS)]


tables = [quant_eval(base, pretrain_eval_batches(seed)) for seed in (101, 102, 103)]
print(tables[0])
fmts = [r.format for r in tables[0].rows]
losses = np.array([[t[f].loss for f in fmts] for t in tables])  # (seeds, formats)
orderings = [t.paper_ordering() for t in tables]
excess = losses - losses[:, [fmts.index("fp32")]]  # paired: the same evaluation set, with and without quantization
print("\nloss added to FP32's, mean [min, max] over the 3 evaluation sets (nats per answer token):")
for f, col in zip(fmts, excess.T):
    print(f"  {f:>8}: {col.mean():+.2e}  [{col.min():+.2e}, {col.max():+.2e}]")
wide = [f for f in fmts if f in ("bf16", "fp16", "int8", "llm.int8")]
four = [f for f in fmts if f in ("int4", "fp4", "nf4", "nf4+dq")]
ratio = max(abs(excess[:, fmts.index(f)]).max() for f in wide) / min(excess[:, fmts.index(f)].mean() for f in four)
print(f"\nlargest |loss added| by a 16- or 8-bit format on any set: {ratio:.1%} of the smallest mean loss added "
      "by a 4-bit one")
order4 = sorted(("int4", "fp4", "nf4"), key=lambda f: excess[:, fmts.index(f)].mean())
print(f"QLoRA's ordering NF4 < FP4 < Int4 holds on {sum(orderings)} of {len(orderings)} evaluation sets; "
      f"mean order here: {' < '.join(order4)}")

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.bar(range(len(fmts)), excess.mean(0), color=["0.6"] * 6 + ["C1", "C0", "C0"])
ax.errorbar(range(len(fmts)), excess.mean(0), yerr=[excess.mean(0) - excess.min(0), excess.max(0) - excess.mean(0)],
            fmt="none", ecolor="k", capsize=3)
ax.set_xticks(range(len(fmts)), fmts)
ax.set_ylabel("loss − FP32 loss (nats)")
ax.set_title("Base GPT, pretraining tasks: loss added by each storage format (3 evaluation sets)")
plt.show()

# %% [markdown]
# The verdicts are the printed lines above. Two cautions on reading them: this model has 104 k parameters and
# answers its pretraining tasks almost perfectly, so the loss added is tiny in absolute terms; and QLoRA's
# ordering comes from models of 125 M–13 B parameters on web text, which this toy cannot stand in for. Run
# `python -m minilora quant-eval --base DIR --text FILE` on a real GPT-2 checkpoint to repeat the measurement
# where it means something.
#
# ## The nearest-level search, in the library's code
#
# Quantizing a block means dividing by its absmax and finding the nearest level. bitsandbytes does it by
# comparing with the midpoints between sorted levels, and minilora does the same: the code of a value is
# the number of midpoints strictly below it (`searchsorted(..., side="left")`), so a value exactly on a
# midpoint takes the lower level. (On large arrays the same count is read from a 65,536-entry table keyed
# by the top 16 bits of the float32 pattern; the tests hold both paths equal.)

# %%
show_source(midpoints, nearest_code)

# %% [markdown]
# ### Build it yourself: nearest level by brute force
#
# Two brute-force versions: the definition — the level at the smallest distance — and bitsandbytes' rule
# written as a plain count of the float32 midpoints below each value. Both are checked against the library
# on random scaled values; on the midpoints themselves (where the tie rule matters) only the second agrees
# everywhere:

# %%
def nearest_by_distance(scaled, levels):
    """Index of the level at the smallest (exact) distance; argmin takes the lower one on equal distances."""
    dist = np.abs(scaled[:, None].astype(np.float64) - levels[None, :].astype(np.float64))
    return dist.argmin(axis=1)


def nearest_by_midpoints(scaled, levels):
    """bitsandbytes' rule (levels sorted): how many float32 midpoints lie strictly below the value."""
    mids = ((levels[:-1] + levels[1:]) / np.float32(2)).astype(np.float32)
    return (scaled[:, None] > mids[None, :]).sum(axis=1)


scaled = np.random.default_rng(1).uniform(-1, 1, 100_000).astype(np.float32)
on_midpoints = midpoints(code)[0]
assert np.array_equal(nearest_by_distance(scaled, code), nearest_code(scaled, code))
assert np.array_equal(nearest_by_midpoints(scaled, code), nearest_code(scaled, code))
assert np.array_equal(nearest_by_midpoints(on_midpoints, code), nearest_code(on_midpoints, code))
differ = int((nearest_by_distance(on_midpoints, code) != nearest_code(on_midpoints, code)).sum())
print(f"random values: both versions equal nearest_code on all {scaled.size:,}")
print(f"the {on_midpoints.size} float32 midpoints: the midpoint count agrees on all; the distance rule differs on "
      f"{differ}, because a float32 midpoint is not exactly halfway between two levels")

# %% [markdown]
# ## Quantizing and packing, on real bytes
#
# `quantize_4bit` cuts the flattened tensor into blocks of 64, divides each by its absmax, picks the nearest
# level and packs two 4-bit codes per byte — the even element in the **high** nibble. An odd length gets a
# 0.0 appended first, which is code 7 in NF4.

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
assert codes.tolist() == [12, 5, 7, 15, 0, 7] and packed.tolist() == [0xC5, 0x7F, 0x07]

# %% [markdown]
# 0.9 / 2 = 0.45 is nearest to level 12 (0.4407), −0.35/2 = −0.175 to level 5 (−0.1848); 0 is code 7 exactly;
# ±2 are the absmax, codes 15 and 0. The bytes read `0xC5` = (12 << 4) | 5, `0x7F` = (7 << 4) | 15, `0x07`
# = (0 << 4) | 7 (the assert above checks these codes and bytes).
#
# ## Exercises
#
# 1. `create_normal_map(use_extra_value=False)` builds a symmetric 15-level type. Compare its reconstruction
#    error with NF4's on the same weights (use `quantize_blockwise` with `code=`).
# 2. Replace the weights by a Laplace or Student-t sample with the same standard deviation. Does NF4 still beat
#    int4 and FP4? By how much?
# 3. Find an input where FP4 reconstructs a block *better* than NF4. What do such blocks look like?
