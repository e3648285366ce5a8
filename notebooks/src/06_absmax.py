# %% [markdown]
# # 06 · Absmax quantization: from the blog's toy example to block-wise int8 and int4
#
# The blog's "Quantize" section explains quantization with a toy: values stored on the levels
# A = {0, 1, 2, 3, 4, 5} are squeezed onto the coarser levels B = {0, 2, 4} and back. This notebook
# replays that walkthrough step by step with `minilora.quant`, then turns it into the real thing:
# symmetric **absmax** quantization to b-bit integers,
#
# $$ q = \operatorname{round}\Big(x \cdot \frac{q_{\max}}{\operatorname{absmax}}\Big), \qquad
#    \hat x = q \cdot \frac{\operatorname{absmax}}{q_{\max}}, \qquad q_{\max} = 2^{b-1} - 1, $$
#
# with one absmax per tensor, per row/column, or per block of consecutive values — and shows why the
# size of the group that shares one absmax matters so much once an outlier appears.

# %%
import numpy as np
import matplotlib.pyplot as plt

from minilora.quant import absmax_quantize, absmax_dequantize, quantize_to_levels, toy_walkthrough
from minilora.quant import bounds

# %% [markdown]
# ## The toy walkthrough, every step
#
# Normalize so the largest magnitude (3) lands on B's largest level (4), round to the nearest level
# of B, divide by 4 to get back to [−1, 1], multiply by the absmax 3, and round onto A again.

# %%
s = toy_walkthrough()
for name in s._fields:
    print(f"{name:>10}: {np.round(getattr(s, name), 4).tolist()}")

# %% [markdown]
# That is the blog's chain `[3, 1, 2, 3] → [4, 1.33, 2.66, 4] → [4, 2, 2, 4] → [1, 0.5, 0.5, 1] →
# [3, 1.5, 1.5, 3] → [3, 2, 2, 3]`, with one small correction: 2 · 4/3 is 2.667 (the blog truncates it
# to 2.66). The round trip lost information — the 1 came back as a 2. The last step also hides a
# choice: 1.5 is exactly halfway between 1 and 2. The blog (and `quantize_to_levels`' default) sends a
# tie up; bitsandbytes' 4-bit quantizer sends it down; NumPy's `rint` and the absmax quantizer below
# send it to the even integer.

# %%
print("ties up  :", quantize_to_levels([0.5, 1.5, 2.5], [0, 1, 2, 3]).tolist())
print("ties down:", quantize_to_levels([0.5, 1.5, 2.5], [0, 1, 2, 3], ties="down").tolist())
print("rint     :", np.rint([0.5, 1.5, 2.5]).tolist(), " (round half to even)")

# %% [markdown]
# ## Absmax int8 on a weight matrix with one outlier
#
# A 64 × 256 matrix of N(0, 0.02²) weights, with a single entry set to 1.0 (50 standard deviations).
# We quantize to int8 with one absmax for the whole tensor, one per row (`axis=-1`: the axis that is
# *reduced*, as in NumPy), one per column (`axis=0`) and one per block of 64 consecutive values.

# %%
rng = np.random.default_rng(0)
w = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
w[10, 100] = 1.0
modes = {"tensor": {}, "per row": {"axis": -1}, "per column": {"axis": 0}, "block 64": {"blocksize": 64}}
errors = {}
for name, kw in modes.items():
    q, a = absmax_quantize(w, bits=8, **kw)
    w_hat = absmax_dequantize(q, a, bits=8, **kw)
    errors[name] = np.abs(w_hat - w)
    n_zero = int((q == 0).sum())
    print(f"{name:>11}: mean |error| {errors[name].mean():.2e}   weights rounded to 0: {n_zero} of {w.size}")

# %% [markdown]
# With one absmax for the tensor, the outlier sets the step to 1/127 ≈ 0.0079, so most weights
# (σ = 0.02) land on only a handful of levels and many become exactly 0. Per row or per block, the
# outlier only spoils its own row or block. Where does the error live? The heat maps show it.

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), sharey=True)
vmax = max(e.max() for e in errors.values())
for ax, (name, e) in zip(axes, errors.items()):
    im = ax.imshow(e, aspect="auto", cmap="magma", vmin=0, vmax=vmax)
    ax.set_title(f"{name}: mean {e.mean():.1e}")
    ax.set_xlabel("column")
axes[0].set_ylabel("row")
fig.colorbar(im, ax=axes, label="|ŵ − w|")
plt.show()

# %% [markdown]
# ## The guarantee, and int8 vs int4
#
# Rounding to the nearest of the levels spaced absmax/qmax apart is off by at most half a step:
# |x − x̂| ≤ absmax / (2·qmax), plus a few float32 roundings. `minilora.quant.bounds.absmax_bound`
# computes it (the tests check it on thousands of random inputs). Here it is against the observed
# worst error, for every bit width from 2 to 8, tensor-wise and block-wise:

# %%
bits_list = list(range(2, 9))
rows = []
for bits in bits_list:
    for name, kw in (("tensor", {}), ("block 64", {"blocksize": 64})):
        q, a = absmax_quantize(w, bits=bits, **kw)
        err = np.abs(absmax_dequantize(q, a, bits=bits, **kw) - w)
        bound = bounds.absmax_bound(a, bits)
        worst_bound = float(np.max(bound))
        rows.append((bits, name, float(err.mean()), float(err.max()), worst_bound))
print(f"{'bits':>4} {'mode':>9} {'mean err':>10} {'max err':>10} {'bound':>10}")
for r in rows:
    print(f"{r[0]:>4} {r[1]:>9} {r[2]:10.2e} {r[3]:10.2e} {r[4]:10.2e}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for name, style in (("tensor", "o-"), ("block 64", "s-")):
    ax.semilogy(bits_list, [r[2] for r in rows if r[1] == name], style, label=f"{name}: mean |error|")
ax.set_xlabel("bits")
ax.set_ylabel("mean |ŵ − w|")
ax.set_title("each extra bit halves the error; small blocks buy several bits' worth")
ax.legend()
plt.show()

# %%
e8 = next(r[2] for r in rows if r[0] == 8 and r[1] == "tensor")
e4 = next(r[2] for r in rows if r[0] == 4 and r[1] == "block 64")
print(f"int4 with blocks of 64: mean error {e4:.2e};  int8 for the whole tensor: {e8:.2e}")

# %% [markdown]
# Going from int8 to int4 multiplies the step by 127/7 ≈ 18. With an outlier in the tensor, int4 in
# blocks of 64 is still in the same range as tensor-wise int8, which is why every 4-bit scheme that
# works (NF4, notebook 08) is block-wise.
#
# ## Exercises
#
# 1. Move the outlier to another row and column and rerun: which of the four modes changes its error,
#    and why does the per-column mode now behave like the per-row one did?
# 2. Use `toy_walkthrough(x=..., target_levels=...)` with B = {0, 1, 2, 3, 4} (five levels). Which inputs
#    on A survive the round trip exactly now?
# 3. The bound has a term 4u·absmax for float32 rounding. Find, with `absmax_quantize`, an input where the
#    error exceeds absmax / (2·qmax) at all (hint: try values just below a half-step in float32).
