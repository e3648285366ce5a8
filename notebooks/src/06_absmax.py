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
import matplotlib.pyplot as plt
import numpy as np

from minilora.quant import absmax_dequantize, absmax_quantize, bounds, quantize_to_levels, toy_walkthrough
from minilora.quant.absmax import qmax_for
from minilora.show import log_ticks, show_source

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
# ## The quantizer
#
# `absmax_quantize` is the formula above with the three choices of group. The last lines are the whole
# quantizer: divide by the group's absmax, scale to `qmax`, round half to even (`rint`):

# %%
show_source(absmax_quantize, span=("xp = backend.xp()", "return q, xp.asarray"))

# %% [markdown]
# ### Build it yourself: tensor-wise absmax in two lines
#
# The formula for one absmax per tensor, checked equal to the library at every bit width:

# %%
def my_absmax_int(x, bits):
    """q = round_half_even(x / absmax · qmax) with one absmax for the whole tensor; returns (q, absmax)."""
    absmax = np.float32(np.abs(x).max())
    return np.rint((x / absmax) * np.float32(qmax_for(bits))).astype(np.int8), absmax


x_demo = (np.random.default_rng(5).standard_normal(1000) * 0.02).astype(np.float32)
for bits in range(2, 9):
    q_lib, a_lib = absmax_quantize(x_demo, bits=bits)
    q_mine, a_mine = my_absmax_int(x_demo, bits)
    assert np.array_equal(q_mine, q_lib) and a_mine == a_lib
print("my_absmax_int equals absmax_quantize (tensor-wise) for bits = 2 … 8")

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
step = float(np.abs(w).max()) / qmax_for(8)
print(f"tensor-wise step = absmax / qmax = {float(np.abs(w).max()):g} / {qmax_for(8)} = {step:.4f}, "
      f"{step / 0.02:.2f} standard deviations of the weights")

# %% [markdown]
# With one absmax for the tensor, the outlier sets the step (printed above, in units of the weights'
# σ = 0.02), so the ordinary weights land on only a handful of levels and many become exactly 0. Per row or
# per block, the outlier only spoils its own row or block. Where does the error live? The heat maps show it.

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
        per_weight = np.broadcast_to(np.repeat(bound, 64) if kw else bound, w.size).reshape(w.shape)
        assert (err <= per_weight).all()  # the guarantee, for every weight
        rows.append((bits, name, float(err.mean()), float(err.max()), worst_bound, float((q == 0).mean())))
print(f"{'bits':>4} {'mode':>9} {'mean err':>10} {'max err':>10} {'bound':>10} {'rounded to 0':>13}")
for r in rows:
    print(f"{r[0]:>4} {r[1]:>9} {r[2]:10.2e} {r[3]:10.2e} {r[4]:10.2e} {r[5]:12.1%}")
print("every error is within its bound (asserted element by element)")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for name, style in (("tensor", "o-"), ("block 64", "s-")):
    ax.semilogy(bits_list, [r[2] for r in rows if r[1] == name], style, label=f"{name}: mean |error|")
ax.axhline(float(np.abs(w).mean()), color="0.5", ls=":", label="mean |w|: every weight rounded to 0")
ax.set_xlabel("bits")
ax.set_ylabel("mean |ŵ − w|")
ax.set_title("absmax int-b error on N(0, 0.02²) weights with one outlier")
log_ticks(ax.yaxis)
ax.legend(fontsize=8)
plt.show()
for name in ("tensor", "block 64"):
    errs = [r[2] for r in rows if r[1] == name]
    ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(errs, errs[1:]))
    print(f"{name:>8}: error(b) / error(b + 1) for b = 2 … 7: {ratios}")
tensor_zero = {r[0]: r[5] for r in rows if r[1] == "tensor"}
flat = [b for b in bits_list if tensor_zero[b] > 0.99]
print(f"tensor-wise, at bits {flat} more than 99 % of the weights round to 0, so the error there is mean |w| = "
      f"{float(np.abs(w).mean()):.2e}")

# %%
e8 = next(r[2] for r in rows if r[0] == 8 and r[1] == "tensor")
e4 = next(r[2] for r in rows if r[0] == 4 and r[1] == "block 64")
print(f"int4 with blocks of 64: mean error {e4:.2e};  int8 for the whole tensor: {e8:.2e} "
      f"(ratio {e4 / e8:.2f})")
print(f"int8 → int4 multiplies the step by qmax(8) / qmax(4) = {qmax_for(8)} / {qmax_for(4)} = "
      f"{qmax_for(8) / qmax_for(4):.1f}")

# %% [markdown]
# Once the step is below the spread of the weights, each extra bit roughly halves the error (the ratios
# near 2 above): the step halves and rounding errors are uniform within a step. Tensor-wise, the low bit
# widths are flat instead: the outlier makes the step so large that (almost) every ordinary weight rounds to
# 0, and the error is simply the weights' mean magnitude, whatever the number of levels. Blocks of 64 confine
# the outlier to one block, and int4 in blocks lands in the range of tensor-wise int8 (the ratio printed
# above): this is why every 4-bit scheme that works (NF4, notebook 08) is block-wise.
#
# ## Exercises
#
# 1. Move the outlier to another row and column and rerun: does any mode's error change? Then add a second
#    outlier in the same row as the first (another column, another block of 64): which modes suffer, and why?
# 2. Use `toy_walkthrough(x=..., target_levels=...)` with B = {0, 1, 2, 3, 4} (five levels). Which inputs
#    on A survive the round trip exactly now?
# 3. The bound has a term 4u·absmax for float32 rounding. Find, with `absmax_quantize`, an input where the
#    error exceeds absmax / (2·qmax) at all (hint: try values just below a half-step in float32).
