# %% [markdown]
# # 09 · Double quantization: quantizing the quantization constants
#
# Block-wise 4-bit quantization stores one float32 absmax per block of 64 weights: 32 bits shared by 64
# parameters, **0.5 bit per parameter** on top of the 4 bits. QLoRA's double quantization quantizes those
# constants again: subtract their mean (the `offset`), quantize them to 8 bits with bitsandbytes' dynamic
# map in blocks of 256, and keep one float32 per 256 blocks. This notebook does the arithmetic, measures
# the bytes of a real 4096 × 4096 quantization, and asks what the saving costs in accuracy.

# %%
import numpy as np
import matplotlib.pyplot as plt

from minilora.quant import quantize_4bit, dequantize_4bit, create_dynamic_map
from minilora.quant import bounds
from minilora.quant.double_quant import decompress_absmax, exact_mean_f32

# %% [markdown]
# ## The arithmetic: 0.5 → 0.127 bit per parameter

# %%
bs, bs2 = 64, 256
plain = 32 / bs
dq = 8 / bs + 32 / (bs * bs2)
print(f"without DQ: 32/{bs} = {plain} bit/param")
print(f"with DQ   : 8/{bs} + 32/({bs}·{bs2}) = {dq} bit/param  (≈ {dq:.3f})")
print(f"saved     : {plain - dq} bit/param")
print(f"for a 65B-parameter model: {(plain - dq) * 65e9 / 8 / 1e9:.2f} GB saved")

# %% [markdown]
# 0.126953125 ≈ 0.127, as the paper says, and about 3 GB on a 65B model. The blog writes "8/16 + …":
# that is a typo for 8/64 — with blocks of 16 the 8-bit constants alone would cost 0.5 bit per parameter
# and there would be nothing to save.
#
# ## Measured from the bytes actually stored
#
# `QuantState.nbytes` counts the packed codes, the per-block statistics and the fixed per-tensor constants
# (the 16-entry NF4 table, the 256-entry 8-bit map, the float32 offset). `bits_per_param` is the per-block
# figure the paper quotes; `bits_per_param_total` adds the constants.

# %%
w = (np.random.default_rng(0).standard_normal((4096, 4096)) * 0.02).astype(np.float32)
packed, st = quantize_4bit(w, blocksize=64)
packed_dq, st_dq = quantize_4bit(w, blocksize=64, compress_statistics=True)
print(f"{'':>10} {'codes B':>10} {'stats B':>10} {'const B':>8} {'total B':>10} {'bits/param':>12} {'incl. const':>12}")
for name, s in (("NF4", st), ("NF4 + DQ", st_dq)):
    print(f"{name:>10} {s.data_nbytes:>10} {s.stats_nbytes:>10} {s.const_nbytes:>8} {s.nbytes:>10} "
          f"{s.bits_per_param:>12.9f} {s.bits_per_param_total:>12.9f}")
print("float32 original:", w.nbytes, "bytes;  compression", round(w.nbytes / st_dq.nbytes, 3), "x")
print(st_dq)

# %% [markdown]
# The measured figures are exactly 4.5 and 4.126953125 bits per parameter: 262,144 float32 absmax values
# (1 MiB) shrink to 262,144 uint8 codes plus 1,024 second-level float32 scales. The constants add 1,092
# bytes for the whole matrix.
#
# ## The 8-bit dynamic map
#
# The second level uses bitsandbytes' "dynamic" 8-bit type: a decimal exponent 10^(i−6) and a linear
# fraction with 2^i steps. It spans 7 orders of magnitude — useful, because absmax − offset is centred on 0.

# %%
m = create_dynamic_map()
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
ax.plot(np.arange(256), m, ".", ms=3)
ax.set_xlabel("code")
ax.set_ylabel("value")
ax.set_title(f"dynamic map: {(m < 0).sum()} negative values, {(m == 0).sum()} zero, {(m > 0).sum()} positive "
             f"(max {m.max()})")
pos = m[m > 0]
ax2.semilogy(np.arange(pos.size), pos, ".", ms=3)
ax2.set_xlabel("index among positive values")
ax2.set_ylabel("value (log scale)")
ax2.set_title(f"smallest magnitude {pos.min():.3g}, largest gap {np.diff(m).max():.4f}")
plt.show()

# %% [markdown]
# ## What double quantization costs in accuracy
#
# The 4-bit codes do not change (they are chosen with the exact absmax); only the scale each block is
# multiplied by does. Compare the reconstructed absmax and the dequantized weights with and without DQ:

# %%
absmax = st.absmax
rec = decompress_absmax(st_dq.absmax, st_dq.offset, st_dq.state2)
rel = np.abs(rec - absmax) / absmax
w1, w2 = dequantize_4bit(packed, st), dequantize_4bit(packed_dq, st_dq)
rmse1 = float(np.sqrt(np.mean((w1 - w) ** 2)))
rmse2 = float(np.sqrt(np.mean((w2 - w) ** 2)))
print("same 4-bit codes:", np.array_equal(packed, packed_dq))
print(f"offset = mean(absmax) = {float(st_dq.offset):.8g}")
print(f"absmax relative error: mean {rel.mean():.2e}, max {rel.max():.2e}")
print(f"weight RMSE: NF4 {rmse1:.6e} ({rmse1 / 0.02:.4f} σ), NF4 + DQ {rmse2:.6e}  (+{100 * (rmse2 / rmse1 - 1):.3f}%)")
bound = bounds.double_quant_absmax_bound(absmax, st_dq.offset, st_dq.state2.absmax, st_dq.state2.code)
print(f"worst |absmax error| / its guaranteed bound: {float(np.max(np.abs(rec - absmax) / bound)):.5f}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.hist(rel, bins=80, color="#59a14f")
ax.set_xlabel("|â − a| / a  (relative error of a block's absmax)")
ax.set_ylabel("blocks")
ax.set_title("double quantization perturbs each block's scale slightly")
plt.show()

# %% [markdown]
# A block's scale moves by about a tenth of a percent on average and about one percent at worst (the numbers
# above), and the worst case sits right at the guaranteed bound of `minilora.quant.bounds`. The 4-bit rounding
# itself moves weights by about 9% of σ, so the weight RMSE barely changes — for 0.373 bit per parameter saved.
#
# ### The offset: correctly rounded
#
# bitsandbytes takes the offset as torch's float32 mean of absmax. A float32 mean depends on the order of the
# additions: NumPy sums pairwise, torch in its own blocks, a plain loop one by one — and each can land away
# from the exact mean (FACTS.md measured up to ~4 ulp for torch and NumPy; a running sum drifts much further). minilora takes the correctly rounded one, `float32(mean in float64)`:

# %%
exact = exact_mean_f32(absmax)
candidates = {"NumPy pairwise float32": np.float32(absmax.mean(dtype=np.float32)),
              "sequential float32 sum": np.float32(np.cumsum(absmax, dtype=np.float32)[-1] / np.float32(absmax.size))}
for name, v in candidates.items():
    print(f"{name:>24}: {v!r}, {int(v.view(np.int32)) - int(exact.view(np.int32)):+d} ulp from the correctly rounded {exact!r}")

# %% [markdown]
# ## How do you know a quantizer is right?
#
# A quantizer loses information by design, so "right" cannot mean "gives back the input". It means three
# things, each checked by a different tool:
#
# 1. **it never errs by more than it promises** — a bound on `|x − x̂|`, *derived* from the algorithm, not
#    measured from it;
# 2. **it keeps that promise on every input**, not just on friendly normal data — hypothesis hunts for the
#    input that breaks it;
# 3. **it agrees bit for bit with the library it mirrors** — where the question is exactness, compare codes.
#
# ### The bound, derived
#
# `minilora.quant.bounds` derives the bound of every quantizer in its docstring. For NF4 with double
# quantization it is two steps: the 4-bit code of each weight is chosen with the true absmax `a`, so its
# error is at most `a · e4` (`e4` = half the widest gap of the NF4 table) plus a few float32 roundings of
# `u = 2⁻²⁴` each; then the dequantizer multiplies by the reconstructed `â` instead of `a`, which adds at
# most `|c| · |a − â| ≤ Δa`, itself bounded by the 8-bit quantization of `a − offset`:

# %%
import inspect

doc = bounds.__doc__
print(doc[doc.index("double quantization ("):doc.index("LLM.int8 matmul")].rstrip())
print(inspect.getsource(bounds.nf4_double_quant_bound))

# %% [markdown]
# The testing kit `minilora.testing` turns it into an assertion that names the worst element if it fails,
# and returns how much of the bound was used. On the 4096 × 4096 matrix above:

# %%
from minilora.testing import assert_within_bound, tensors

used = assert_within_bound(w, w2, "nf4_dq", state=st_dq)
print(f"worst |error| / bound over {w.size:,} weights: {used:.5f}")

# %% [markdown]
# Normal weights are the friendly case. `tensors()` draws the hostile ones: any shape, values from float32
# subnormals to near overflow, heavy tails, planted outliers, all-zero blocks, and values exactly on the
# midpoint between two NF4 codes. hypothesis runs the property on 200 of them:

# %%
from hypothesis import Phase, given, settings
from hypothesis import strategies as hst

used_by_example = []


@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          phases=[Phase.generate, Phase.shrink])
@given(data=hst.data(), blocksize=hst.sampled_from([32, 64, 256]))
def nf4_dq_keeps_its_bound(data, blocksize):
    x = data.draw(tensors(blocksize=blocksize, max_size=4096))
    packed, state = quantize_4bit(x, blocksize=blocksize, compress_statistics=True)
    used = assert_within_bound(x, dequantize_4bit(packed, state), "nf4_dq", state=state)
    used_by_example.append((float(np.abs(x).max()), used))


nf4_dq_keeps_its_bound()
scale, frac = np.array(used_by_example).T
print(f"{len(used_by_example)} examples, every one within the bound; the worst used {frac.max():.7f} of it")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
nonzero = scale > 0
ax.semilogx(scale[nonzero], frac[nonzero], ".", ms=5, color="#4e79a7")
ax.axhline(1.0, color="#e15759", lw=1)
ax.set_xlabel("max |x| of the example (log scale)")
ax.set_ylabel("worst |error| / bound")
ax.set_title(f"NF4 + DQ on {nonzero.sum()} hypothesis examples: never above 1")
plt.show()

# %% [markdown]
# ### A broken quantizer caught
#
# Now a classic slip: a dequantizer that rebuilds each block's absmax from its 8-bit code but forgets to add
# the `offset` back. It is only wrong by the mean of the scales — on data where that mean is small, easy to
# miss by eye. hypothesis finds it and shrinks the input until it is as simple as it can be:

# %%
import dataclasses


def dequantize_forgetting_the_offset(packed, state):
    return dequantize_4bit(packed, dataclasses.replace(state, offset=np.float32(0)))


@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          phases=[Phase.generate, Phase.shrink])
@given(x=tensors(blocksize=64, max_size=4096))
def broken_keeps_its_bound(x):
    packed, state = quantize_4bit(x, blocksize=64, compress_statistics=True)
    assert_within_bound(x, dequantize_forgetting_the_offset(packed, state), "nf4_dq", state=state)


try:
    broken_keeps_its_bound()
    print("no counterexample found")
except AssertionError as e:
    print("\n".join(getattr(e, "__notes__", [])))
    print(e)

# %% [markdown]
# The report names the element, its value, what came back, the bound and by how much it was exceeded — a
# ready bug report. The same kit tests quantizers minilora did not write: docs/testing.md holds bitsandbytes'
# own CPU functions to these bounds, and walks through a quantizer with three classic mistakes (a tie rounded
# away from zero, the absmax over the wrong axis, a forgotten exact zero).

# %% [markdown]
# ## Exercises
#
# 1. Double-quantize with blocks of 64 for the second level instead of 256 (call
#    `minilora.quant.quantize_blockwise` on `absmax - offset` yourself). How many bits per parameter, and how
#    much smaller is the absmax error?
# 2. Skip the offset (quantize absmax itself, not absmax − mean). The dynamic map is symmetric around 0 —
#    what happens to the absmax error, and why?
# 3. Use `QuantState.nbytes` to compute the memory of a 7B model's linear layers in NF4 + DQ.
