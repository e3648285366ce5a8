# %% [markdown]
# # 05 · Floating-point formats at the bit level: FP32, FP16, BF16, FP8
#
# The blog's "Quantize" section opens with a picture of three formats — FP32 (8 exponent bits,
# 23 mantissa bits), FP16 (5, 10) and BF16 (8, 7) — and says little more. This notebook takes them
# apart bit by bit with `minilora.formats`, which converts float32 to each format using only integer
# operations on the bit pattern (so you can watch the rounding happen), and agrees bit for bit with
# PyTorch, ml_dtypes and NumPy on every input the tests try (every FP16/BF16/FP8 pattern decoded, 2^20
# random float32 values encoded, and ties at every exponent; `docs/facts.md` §1 lists the rules).
#
# A normal number is stored as sign `s`, exponent field `e` and mantissa field `m` and means
#
# $$ x = (-1)^s \cdot 2^{\,e - \text{bias}} \cdot \left(1 + \frac{m}{2^{M}}\right), $$
#
# with `M` mantissa bits. When `e = 0` the implicit 1 disappears (a *subnormal*: $2^{1-\text{bias}} \cdot m / 2^M$),
# which fills the gap between zero and the smallest normal number.

# %%
import matplotlib.pyplot as plt
import numpy as np

from minilora import figures, formats
from minilora.formats import BF16, FP8_E4M3, FP8_E5M2, FP16, FP32, decode, encode, fields, round_to, running_sum
from minilora.show import show_source

FORMATS = [FP32, FP16, BF16, FP8_E4M3, FP8_E5M2]
fig = figures.draw("float_formats")  # the blog's 量化.jpeg, redrawn: python -m minilora figures float_formats

# %% [markdown]
# ## Range and precision, computed from the bit widths
#
# Every constant below is computed from `exp_bits`, `man_bits` and `bias` (look at the `FloatFormat`
# properties), not typed in. `eps` is the gap between 1 and the next number: the relative precision.

# %%
print(f"{'format':<10}{'s/e/m':>9}{'bias':>6}{'max finite':>16}{'min normal':>14}{'min subnormal':>15}{'eps':>11}")
for f in FORMATS:
    print(f"{f.name:<10}{f'1/{f.exp_bits}/{f.man_bits}':>9}{f.bias:>6}{f.max:>16.8g}{f.min_normal:>14.4g}"
          f"{f.min_subnormal:>15.4g}{f.eps:>11.4g}")

# %% [markdown]
# BF16 has FP32's 8 exponent bits, so its range is FP32's (the table: max ≈ 3.39e38, min normal 2^-126),
# but only 7 mantissa bits: eps = 2^-7 ≈ 0.0078, i.e. two to three significant decimal digits. FP16 is the
# other trade: 10 mantissa bits (eps ≈ 0.001) but a maximum of 65504. This is why BF16 became the training
# format of large models: gradients and activations rarely need more than 3 digits, but they do span
# huge ranges, and FP16 training needs *loss scaling* to keep small gradients from flushing to zero.
# (The blog adds that only recent hardware has BF16; `docs/errata.md`, erratum 14, says which, with sources.)

# %% [markdown]
# ## Rounding to nearest, ties to even — the library's rule
#
# Converting FP32 to a narrower format drops mantissa bits. The whole rounding rule of `encode` is one
# readable function, `_encode_magnitude` (the common case is also computed by a faster in-place twin,
# `_encode_block`, that the tests hold equal to it). Its first step re-biases the exponent and shifts the
# mantissa right with `_shift_round_even`:

# %%
show_source(formats._shift_round_even, formats._encode_magnitude)

# %% [markdown]
# Converting FP32 → BF16 keeps the top 16 bits and drops the low 16. Rounding looks at what is dropped:
# more than half (0x8000) rounds up, less rounds down, and *exactly* half rounds to the neighbour whose
# last kept bit is 0 (even). Here are four values that differ only in the dropped bits:

# %%
for b in [0x3F80_7FFF, 0x3F80_8000, 0x3F81_8000, 0x3F80_8001]:
    x = np.array([b], np.uint32).view(np.float32)
    kept, dropped = b >> 16, b & 0xFFFF
    out = int(encode(x, BF16)[0])
    verdict = "tie → even (down)" if dropped == 0x8000 and kept % 2 == 0 else (
        "tie → even (up)" if dropped == 0x8000 else ("up" if dropped > 0x8000 else "down"))
    print(f"fp32 {b:#010x} = {x[0]:.9g}: keep {kept:#06x}, drop {dropped:#06x} → {verdict:<18}"
          f"bf16 {out:#06x} = {decode(np.uint16(out), BF16):.9g}")

# %% [markdown]
# ### Build it yourself: FP32 → BF16 in three integer operations
#
# For normal numbers the rule is: add `0x7FFF` plus the last kept bit to the pattern, then drop the low 16
# bits. A carry out of the dropped half is exactly "round up". Checked against `encode` on a million random
# float32 values and on exact ties:

# %%
def my_bf16_bits(x):
    """BF16 bit patterns of float32 x (finite values that stay finite): round to nearest, ties to even."""
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


rng = np.random.default_rng(0)
xs = (rng.standard_normal(1_000_000) * np.exp(rng.uniform(-30, 30, 1_000_000))).astype(np.float32)
ties = (rng.integers(0, 1 << 16, 100_000, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
ties = ties[np.isfinite(ties) & (np.abs(ties) < BF16.max)]
for name, v in (("random", xs), ("ties", ties)):
    assert np.array_equal(my_bf16_bits(v), encode(v, BF16))
    print(f"{name}: my_bf16_bits equals encode(x, BF16) on all {v.size:,} values")

# %% [markdown]
# ### The blog's "truncation" is a different rule
#
# The blog calls BF16 a *truncation* of FP32 (`docs/errata.md`, erratum 12). Truncation — keep the top 16
# bits, drop the rest — is a valid rule, but not the one PyTorch, ml_dtypes, NumPy or the hardware use,
# and it is biased: it always rounds towards zero. The same numbers both ways:

# %%
def truncate_bf16(x):
    """The blog's rule, for comparison only: drop the low 16 bits (round towards zero)."""
    return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


w = np.random.default_rng(1).standard_normal(1_000_000).astype(np.float32)
rel = {"round to nearest even (encode)": (round_to(w, BF16).astype(np.float64) - w) / w,
       "truncation (the blog)": (truncate_bf16(w).astype(np.float64) - w) / w}
for name, e in rel.items():
    print(f"{name:31s}: mean signed relative error {e.mean():+.2e}, max |error| {np.abs(e).max():.2e}")
print(f"eps/2 = {BF16.eps / 2:.2e}: round-to-nearest stays within it, truncation reaches eps = {BF16.eps:.2e}")
assert np.abs(rel["round to nearest even (encode)"]).max() <= BF16.eps / 2
assert (np.abs(truncate_bf16(w)) <= np.abs(w)).all()  # truncation never rounds away from zero
u = np.random.default_rng(2).uniform(1, 2, 100_000).astype(np.float32)
exact = u.astype(np.float64).sum()
for name, v in (("round to nearest even", round_to(u, BF16)), ("truncation", truncate_bf16(u))):
    print(f"sum of 100,000 values in [1, 2) after BF16 {name:21s}: relative error "
          f"{(v.astype(np.float64).sum() - exact) / exact:+.1e}")

# %% [markdown]
# Round-to-nearest errors have both signs and average out (the mean above is tiny compared with the
# maximum); truncation's all point the same way, so they add up. Both are bounded, by eps/2 and eps.
#
# The same rule in FP16. `1 + 2^-10` is the number right after 1, so `1 + 2^-11` lies exactly half-way
# between 1 and it: a tie, which goes to the even neighbour, 1. In FP16, **1 + 2^-11 == 1**.

# %%
for x in [1 + 2**-11, 1 + 2**-11 + 2**-20, 1 + 2**-10]:
    r = round_to(np.float32(x), FP16)
    s, e, m = fields(np.float32(x), FP16)
    print(f"{x!r:>22} → {float(r)!r:<22} sign {int(s)} exponent {int(e):05b} mantissa {int(m):010b}")
print("1 + 2**-11 == 1 in FP16:", bool(round_to(np.float32(1 + 2**-11), FP16) == 1.0))

# %% [markdown]
# ## FP16 overflows at 65520, not at 65504
#
# 65504 is FP16's largest number; the next one *would* be 65536 = 2^16, which needs an exponent FP16
# doesn't have. Values between round as if it existed: up to 65519.99 they round to 65504, and from
# 65520 — the midpoint, a tie whose even neighbour is "65536" — they become +inf.

# %%
for x in [65504.0, 65519.0, 65519.996, 65520.0, 70000.0]:
    print(f"{x:>10} → {float(round_to(np.float32(x), FP16))}")
print("BF16 keeps FP32's range: 1e38 →", float(round_to(np.float32(1e38), BF16)),
      " FP16:", float(round_to(np.float32(1e38), FP16)))

# %% [markdown]
# ## Precision across the range
#
# The relative rounding error of a format is at most eps/2 wherever numbers are normal (the guarantee of
# round-to-nearest), and grows in the subnormal range until it reaches 1 (the value rounds to zero). The
# plot rounds 20,000 log-spaced float32 values to each format; the dashed lines are the bounds eps/2.

# %%
x = np.logspace(-45, 38.5, 20_000).astype(np.float32)
fig, ax = plt.subplots(figsize=(9, 3.8))
for f, c in [(BF16, "C0"), (FP16, "C1"), (FP8_E4M3, "C2"), (FP8_E5M2, "C3")]:
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(round_to(x, f).astype(np.float64) - x) / x
    ax.loglog(x, np.where(np.isfinite(rel) & (rel > 0), rel, np.nan), ".", ms=1, color=c, label=f.name)
    ax.axhline(f.eps / 2, color=c, lw=0.6, ls="--")
ax.set(xlabel="|x|", ylabel="relative rounding error", ylim=(1e-8, 2),
       title="rounding float32 to each format (dashed: eps/2); points stop where the format overflows")
ax.legend(markerscale=8, ncol=5, fontsize=8, loc="lower left")
plt.show()
for f in (BF16, FP16):
    normal = (x >= f.min_normal) & (x <= f.max)
    e = np.abs(round_to(x[normal], f).astype(np.float64) - x[normal]) / x[normal]
    print(f"{f.name}: normal range {f.min_normal:.3g} … {f.max:.5g}, relative error there median {np.median(e):.2e}, "
          f"max {e.max():.2e} ≤ eps/2 = {f.eps / 2:.2e}; subnormals down to {f.min_subnormal:.3g}")
print(f"FP16's eps is {BF16.eps / FP16.eps:g}x smaller than BF16's; BF16's range is FP32's "
      f"(max {BF16.max:.4g} vs {FP32.max:.4g})")

# %% [markdown]
# ## Why accumulation happens in FP32
#
# Matrix units multiply FP16/BF16 operands but add the products in an FP32 accumulator. The reason is
# shown by `running_sum`, which adds numbers one by one and rounds the running total to a format after
# each step. Summing 10,000 copies of 0.0001 should give 1:

# %%
x = np.full(10_000, 1e-4, np.float32)
sums = {f.name: running_sum(x, f) for f in (FP32, FP16, BF16)}
for name, s in sums.items():
    print(f"{name}: total {s[-1]:.6f}")
fig, ax = plt.subplots(figsize=(7, 3.2))
for name, s in sums.items():
    ax.plot(s, label=name)
ax.plot(np.arange(1, x.size + 1) * 1e-4, "k:", lw=1, label="exact")
ax.set(xlabel="number of terms added", ylabel="running total", title="summing 0.0001 again and again")
ax.legend()
plt.show()

# %% [markdown]
# The FP16 and BF16 totals stop growing (printed above). Once half the gap between the total `T` and its
# next neighbour, `eps · 2^⌊log2 T⌋ / 2`, reaches the addend, `T + 0.0001` rounds back to `T`. The
# smallest power of two where that happens predicts each stall:

# %%
addend = 1e-4
for f in (FP16, BF16, FP32):
    k = int(np.ceil(np.log2(addend * 2 / f.eps)))  # smallest k with eps·2^k/2 >= addend
    stall = float(sums[f.name][-1])
    if 2.0**k < x.size * addend:
        print(f"{f.name}: predicted stall at T = 2^{k} = {2.0**k:g}; the running sum ended at {stall:g}")
    else:
        print(f"{f.name}: would stall only at T = 2^{k} = {2.0**k:g}, beyond the exact total {x.size * addend:g}")
print(f"FP32's total is not exact either: error {abs(float(sums['fp32'][-1]) - 1):.1e} after 10,000 additions")

# %% [markdown]
# ## FP8: E4M3 or E5M2, and what to do on overflow
#
# The two 8-bit formats of the OCP FP8 standard split 7 bits differently. E5M2 has FP16's exponent, inf
# and NaN, and keeps 2 of its 10 mantissa bits (converting to it rounds, like every format here). E4M3
# gives up infinity and keeps a single NaN pattern per sign (S.1111.111), which frees the top binade and
# stretches its maximum (the IEEE-style layout's maximum is computed below for comparison). Without inf,
# an overflow has to become something else: ml_dtypes (and minilora by default) gives NaN; PyTorch
# *saturates* to ±448. minilora offers both (`saturate=True`). Note the tie at 464: the midpoint between
# 448 and the (non-existent) 480 rounds to even, 448.

# %%
from minilora.formats import FloatFormat

e4m3_ieee = FloatFormat("e4m3_ieee_style", 4, 3, 7)  # the same bits, but with inf and NaN like FP16
print(f"max finite: IEEE-style E4M3 {e4m3_ieee.max:g}, OCP E4M3fn {FP8_E4M3.max:g}, E5M2 {FP8_E5M2.max:g}")
x = np.array([240, 448, 464, 465, 1000, np.inf], np.float32)
print("x                 ", x)
print("E4M3              ", round_to(x, FP8_E4M3))
print("E4M3 saturate=True", round_to(x, FP8_E4M3, saturate=True))
print("E5M2              ", round_to(x, FP8_E5M2))

# %%
fig, ax = plt.subplots(figsize=(8, 2.2))
for y, f in [(1, FP8_E4M3), (0, FP8_E5M2)]:
    v = decode(np.arange(128, dtype=np.uint8), f)
    v = v[np.isfinite(v) & (v > 0)]
    ax.plot(v, np.full(v.size, y), "|", ms=14, label=f"{f.name}: {v.size} positive values")
ax.set(xscale="log", yticks=[0, 1], yticklabels=["E5M2", "E4M3"], xlabel="value", ylim=(-0.7, 1.7),
       title="every positive FP8 value: E4M3 is denser, E5M2 reaches further")
ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
plt.show()

# %% [markdown]
# ## Exercises
#
# 1. Find the smallest positive float32 `x` for which `round_to(1 + x, BF16) > 1`. Explain it with eps.
# 2. Which is the largest integer `n` such that every integer in `[0, n]` is exact in FP16? In BF16? Check
#    your answer with `round_to(np.arange(...), ...)`.
# 3. Use `running_sum` on 1000 random normal values with mean 0 in FP16 and in BF16. Does the error still
#    grow without bound when positive and negative terms cancel? Why, or why not?
