# %% [markdown]
# # 09 · Double quantization: quantizing the quantization constants
#
# Block-wise 4-bit quantization stores one float32 absmax per block of 64 weights: 32 bits shared by 64
# parameters, **0.5 bit per parameter** on top of the 4 bits. QLoRA's double quantization quantizes those
# constants again: subtract their mean (the `offset`), quantize them to 8 bits with bitsandbytes' dynamic
# map in blocks of 256, and keep one float32 per 256 blocks. This notebook does the arithmetic, measures
# the bytes of a real 4096 × 4096 quantization, and asks what the saving costs in accuracy.

# %%
import matplotlib.pyplot as plt
import numpy as np

from minilora import qlora_experiments as Q
from minilora.formats import FP8_E4M3, FP8_E5M2, decode
from minilora.quant import bounds, create_dynamic_map, dequantize_4bit, quantize_4bit
from minilora.quant.double_quant import compress_absmax, decompress_absmax, exact_mean_f32
from minilora.show import log_ticks, show_source

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
# 0.126953125 ≈ 0.127, as the paper says; the saving on a 65B model is printed above. The blog writes
# "8/16 + …": that is a typo for 8/64 (`docs/errata.md`, erratum 9) — with blocks of 16 the 8-bit constants
# alone would cost 0.5 bit per parameter and there would be nothing to save.
#
# ## Measured from the bytes actually stored
#
# `QuantState.nbytes` counts the packed codes, the per-block statistics and the fixed per-tensor constants
# (the 16-entry NF4 table, the 256-entry 8-bit map, the float32 offset). `bits_per_param` is the per-block
# figure the paper quotes; `bits_per_param_total` adds the constants.

# %%
w = (np.random.default_rng(0).standard_normal((4096, 4096)) * 0.02).astype(np.float32)
packed, st = quantize_4bit(w, blocksize=64, quant_type="nf4")
packed_dq, st_dq = quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
print(f"{'':>10} {'codes B':>10} {'stats B':>10} {'const B':>8} {'total B':>10} {'bits/param':>12} {'incl. const':>12}")
for name, s in (("NF4", st), ("NF4 + DQ", st_dq)):
    print(f"{name:>10} {s.data_nbytes:>10} {s.stats_nbytes:>10} {s.const_nbytes:>8} {s.nbytes:>10} "
          f"{s.bits_per_param:>12.9f} {s.bits_per_param_total:>12.9f}")
print("float32 original:", w.nbytes, "bytes;  compression", round(w.nbytes / st_dq.nbytes, 3), "x")
print(st_dq)
assert st.bits_per_param == 4 + plain and st_dq.bits_per_param == 4 + dq
nblocks = st.absmax.size
print(f"{nblocks:,d} float32 absmax values ({4 * nblocks:,d} bytes) become {st_dq.absmax.size:,d} uint8 codes plus "
      f"{st_dq.state2.absmax.size:,d} second-level float32 scales; the constants add {st_dq.const_nbytes:,d} bytes")

# %% [markdown]
# The measured figures are exactly 4 + 0.5 and 4 + 0.126953125 bits per parameter (asserted above), from the
# array sizes printed.
#
# ## The 8-bit dynamic map
#
# The second level uses bitsandbytes' "dynamic" 8-bit type: a decimal exponent 10^(i−6) and a linear
# fraction with 2^i steps (`docs/facts.md` §3). It spans many orders of magnitude (printed below) — useful,
# because absmax − offset is centred on 0.

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
log_ticks(ax2.yaxis, subs=(1.0,))
plt.show()
decades = np.log10(pos.max() / pos.min())
print(f"positive values from {pos.min():.3g} to {pos.max():g}: {decades:.1f} orders of magnitude")

# %% [markdown]
# ### "8-bit floats" in the paper, the dynamic map in the code
#
# The QLoRA paper says the constants are quantized with "8-bit Floats"; the blog says FP8. What bitsandbytes
# does — and so what every QLoRA checkpoint holds — is this dynamic map: `quantize_4bit(...,
# compress_statistics=True)` calls `quantize_blockwise` without a code, and its default is
# `create_dynamic_map()` (`docs/errata.md`, erratum 13). It is a floating-point type in the broad sense (a
# sign, an exponent, a fraction), but not IEEE-style and not OCP's E4M3 or E5M2. Would E4M3 or E5M2, with
# one float32 scale per 256 constants as well, have done as well? Measured on this matrix's scales:

# %%
absmax = st.absmax
rec = decompress_absmax(st_dq.absmax, st_dq.offset, st_dq.state2)
second_level = {"dynamic map (bitsandbytes)": rec, "FP8 E4M3": Q.fp8_compress_absmax(absmax, FP8_E4M3),
                "FP8 E5M2": Q.fp8_compress_absmax(absmax, FP8_E5M2)}
for name, r in second_level.items():
    e = np.abs(r - absmax) / absmax
    print(f"{name:>27}: absmax relative error mean {e.mean():.2e}, max {e.max():.2e}")
best = min(second_level, key=lambda k: float(np.mean(np.abs(second_level[k] - absmax) / absmax)))
print(f"lowest mean error: {best}")
for name, fmt in (("FP8 E4M3", FP8_E4M3), ("FP8 E5M2", FP8_E5M2)):
    v = decode(np.arange(256, dtype=np.uint8), fmt)
    top = int(np.sum((np.abs(v) >= 0.1 * fmt.max) & (np.abs(v) <= fmt.max)))
    print(f"{name}: {top} of its values lie in the top decade [0.1, 1] × max")
print(f"dynamic map: {int(np.sum((np.abs(m) >= 0.1) & (np.abs(m) <= 1)))} of its values lie in [0.1, 1]")

# %% [markdown]
# The lines above say which 8-bit type reconstructs these scales best at the same storage, and one reason:
# each block of centred scales is divided by its own largest magnitude, so most of them land within a decade
# of ±1, where the dynamic map packs a linear fraction with many steps, while E4M3 and E5M2 keep a fixed,
# coarser relative precision across all their binades.
#
# ## The code
#
# Double quantization is two small functions on top of the block-wise quantizer (`docs/facts.md` §3):

# %%
show_source(compress_absmax, decompress_absmax)

# %% [markdown]
# ### Build it yourself: the reconstruction formula
#
# `absmax[i] ≈ float32(code8[q[i]] · absmax2[i // 256]) + offset`, from the stored pieces, checked bit for bit:

# %%
q8, st2 = st_dq.absmax, st_dq.state2
mine = (st2.code[q8] * np.repeat(st2.absmax, 256)[: q8.size]).astype(np.float32) + np.float32(st_dq.offset)
assert np.array_equal(mine, rec)
print(f"my reconstruction equals decompress_absmax on all {q8.size:,d} block scales")

# %% [markdown]
# ## What double quantization costs in accuracy
#
# The 4-bit codes do not change (they are chosen with the exact absmax); only the scale each block is
# multiplied by does. Compare the reconstructed absmax and the dequantized weights with and without DQ:

# %%
rel = np.abs(rec - absmax) / absmax
w1, w2 = dequantize_4bit(packed, st), dequantize_4bit(packed_dq, st_dq)
rmse1 = float(np.sqrt(np.mean((w1 - w) ** 2)))
rmse2 = float(np.sqrt(np.mean((w2 - w) ** 2)))
print("same 4-bit codes:", np.array_equal(packed, packed_dq))
print(f"offset = mean(absmax) = {float(st_dq.offset):.8g}")
print(f"absmax relative error: mean {rel.mean():.2e}, max {rel.max():.2e}")
print(f"weight RMSE: NF4 {rmse1:.6e} ({rmse1 / 0.02:.4f} σ), NF4 + DQ {rmse2:.6e}  "
      f"(+{100 * (rmse2 / rmse1 - 1):.3f}%)")
bound = bounds.double_quant_absmax_bound(absmax, st_dq.offset, st_dq.state2.absmax, st_dq.state2.code)
worst = float(np.max(np.abs(rec - absmax) / bound))
assert worst <= 1.0
print(f"worst |absmax error| / its guaranteed bound: {worst:.5f}")
print(f"a block's scale moves by {rel.mean():.2%} on average and {rel.max():.2%} at worst; the 4-bit rounding "
      f"moves weights by {rmse1 / 0.02:.1%} of σ; DQ adds {100 * (rmse2 / rmse1 - 1):.3f} % to the weight RMSE "
      f"and saves {plain - dq:.3f} bit per parameter")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.hist(rel, bins=80, color="#59a14f")
ax.set_xlabel("|â − a| / a  (relative error of a block's absmax)")
ax.set_ylabel("blocks")
ax.set_title("double quantization: relative error of each block's scale")
plt.show()

# %% [markdown]
# The last printed lines put the two errors side by side: the scale error of double quantization against the
# 4-bit rounding error it multiplies, and how close the worst block comes to the guarantee of
# `minilora.quant.bounds` (the bound holds for every block; the assert checks it).
#
# ### The offset: correctly rounded
#
# bitsandbytes takes the offset as torch's float32 mean of absmax. A float32 mean depends on the order of the
# additions: NumPy sums pairwise, torch in its own blocks, a plain loop one by one — and each can land away
# from the exact mean (`docs/facts.md` §3: up to about 4 ulp for torch and NumPy; a running sum can drift
# further). minilora takes the correctly rounded one, `float32(mean in float64)`:

# %%
exact = exact_mean_f32(absmax)
candidates = {"NumPy pairwise float32": np.float32(absmax.mean(dtype=np.float32)),
              "sequential float32 sum": np.float32(np.cumsum(absmax, dtype=np.float32)[-1] / np.float32(absmax.size))}
for name, v in candidates.items():
    ulp = int(v.view(np.int32)) - int(exact.view(np.int32))
    print(f"{name:>24}: {v!r}, {ulp:+d} ulp from the correctly rounded {exact!r}")

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
    packed, state = quantize_4bit(x, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
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
    packed, state = quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
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
