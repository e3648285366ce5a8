# %% [markdown]
# # 05 · Floating-point formats at the bit level: FP32, FP16, BF16, FP8
#
# The blog's "Quantize" section opens with a picture of three formats — FP32 (8 exponent bits,
# 23 mantissa bits), FP16 (5, 10) and BF16 (8, 7) — and says little more. This notebook takes them
# apart bit by bit with `minilora.formats`, which converts float32 to each format using only integer
# operations on the bit pattern (so you can watch the rounding happen), and agrees bit for bit with
# PyTorch, ml_dtypes and NumPy on every input the tests try (all 2^16 FP16/BF16 patterns, 2^20 random
# float32 values, and every tie at every exponent).
#
# A normal number is stored as sign `s`, exponent field `e` and mantissa field `m` and means
#
# $$ x = (-1)^s \cdot 2^{\,e - \text{bias}} \cdot \left(1 + \frac{m}{2^{M}}\right), $$
#
# with `M` mantissa bits. When `e = 0` the implicit 1 disappears (a *subnormal*: $2^{1-\text{bias}} \cdot m / 2^M$),
# which fills the gap between zero and the smallest normal number.

# %%
import numpy as np
import matplotlib.pyplot as plt

from minilora import figures
from minilora.formats import FP32, FP16, BF16, FP8_E4M3, FP8_E5M2, encode, decode, round_to, fields, running_sum

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
# BF16 has FP32's 8 exponent bits, so its range is FP32's (max ≈ 3.39e38, min normal 2^-126), but only
# 7 mantissa bits: eps = 2^-7 ≈ 0.0078, i.e. two to three significant decimal digits. FP16 is the other
# trade: 10 mantissa bits (eps ≈ 0.001) but a maximum of 65504. This is why BF16 became the training
# format of large models: gradients and activations rarely need more than 3 digits, but they do span
# huge ranges, and FP16 training needs *loss scaling* to keep small gradients from flushing to zero.

# %% [markdown]
# ## Rounding to nearest, ties to even — on concrete bits
#
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
# The relative rounding error of a format is at most eps/2 wherever numbers are normal, and grows in
# the subnormal range until it reaches 1 (the value rounds to zero). The plot rounds 20,000
# log-spaced float32 values to each format: BF16 spans FP32's whole range at a constant ~0.4% error;
# FP16 is 8× more precise but covers only about 6e-8 to 65504.

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
ax.legend(markerscale=8, ncol=5, fontsize=8, loc="lower left");

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
ax.legend();

# %% [markdown]
# The FP16 total stops at 0.25 and BF16's at 0.03125. Once half the gap between the total `T` and its
# next neighbour, `eps · 2^⌊log2 T⌋ / 2`, reaches the addend, `T + 0.0001` rounds back to `T`. The
# smallest power of two where that happens predicts each stall:

# %%
addend = 1e-4
for f in (FP16, BF16, FP32):
    k = int(np.ceil(np.log2(addend * 2 / f.eps)))  # smallest k with eps·2^k/2 >= addend
    print(f"{f.name}: stalls at T = 2^{k} = {2.0**k:g}")
print(f"FP32's total is not exact either: error {abs(float(sums['fp32'][-1]) - 1):.1e} after 10,000 additions")

# %% [markdown]
# ## FP8: E4M3 or E5M2, and what to do on overflow
#
# The two 8-bit formats of the OCP FP8 standard split 7 bits differently. E5M2 is a truncated FP16
# (same exponent, inf and NaN). E4M3 gives up infinity and keeps a single NaN pattern per sign
# (S.1111.111), which frees the top binade and stretches its maximum (the IEEE-style layout's maximum
# is computed below for comparison). Without inf, an
# overflow has to become something else: ml_dtypes (and minilora by default) gives NaN; PyTorch
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
ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5));

# %% [markdown]
# ## Exercises
#
# 1. Find the smallest positive float32 `x` for which `round_to(1 + x, BF16) > 1`. Explain it with eps.
# 2. Which is the largest integer `n` such that every integer in `[0, n]` is exact in FP16? In BF16? Check
#    your answer with `round_to(np.arange(...), ...)`.
# 3. Use `running_sum` on 1000 random normal values with mean 0 in FP16 and in BF16. Does the error still
#    grow without bound when positive and negative terms cancel? Why, or why not?
