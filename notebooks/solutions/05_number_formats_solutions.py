# %% [markdown]
# # 05 · Floating-point formats: worked solutions
#
# The three exercises of `05_number_formats`, computed and checked with `assert`s (CI runs this notebook).

# %%
import numpy as np

from minilora.formats import BF16, FP16, round_to, running_sum

# %% [markdown]
# ## 1. The smallest x with `round_to(1 + x, BF16) > 1`
#
# BF16's neighbours of 1 are 1 and 1 + eps = 1 + 2^-7. Their midpoint 1 + 2^-8 is a tie and goes to the
# even neighbour, 1; anything above it rounds up. `1 + x` is computed in float32 first, and the float32
# number right after 1 + 2^-8 is 1 + 2^-8 + 2^-23. So we need `float32(1 + x) ≥ 1 + 2^-8 + 2^-23`. The sum
# 1 + 2^-8 + 2^-24 is a float32 tie, and its even neighbour is 1 + 2^-8 (rounded to 1 again); so x must lie
# just above 2^-8 + 2^-24: the answer is the float32 after it, 2^-8 + 2^-24 + 2^-31 (float32's spacing
# near 2^-8 is 2^-31). Two roundings, float32 then BF16, both ties to even.

# %%
one = np.float32(1)
x = np.float32(2**-8)
while round_to(np.atleast_1d(one + x), BF16)[0] == 1:  # walk up float32 by float32 until it rounds up
    x = np.nextafter(x, np.float32(1))
print(f"smallest x = {float(x)!r} = 2^-8 + 2^-24 + 2^-31: {float(x) == 2**-8 + 2**-24 + 2**-31}")
assert float(x) == 2**-8 + 2**-24 + 2**-31
assert round_to(np.atleast_1d(one + np.nextafter(x, np.float32(0))), BF16)[0] == 1

# %% [markdown]
# ## 2. The largest n with every integer in [0, n] exact
#
# With m mantissa bits a format holds every integer up to 2^(m+1) (the implicit bit plus m); above that
# the spacing is 2, so 2^(m+1) + 1 is the first integer lost: FP16 (m = 10) up to 2048, BF16 (m = 7) up to 256.

# %%
for fmt in (FP16, BF16):
    ints = np.arange(0, 5000, dtype=np.float32)
    lost = ints[round_to(ints, fmt) != ints]
    n = int(lost[0]) - 1
    first_lost = float(round_to(lost[:1], fmt)[0])
    print(f"{fmt.name}: every integer up to {n} is exact; {int(lost[0])} rounds to {first_lost:g}")
    assert n == 2 ** (fmt.man_bits + 1)

# %% [markdown]
# ## 3. Summing zero-mean terms in FP16 and BF16
#
# Each addition rounds the running total T to the format, an error of at most `eps/2 · |T|`. With terms
# of mean 0 the total wanders like a random walk and stays small (about √n), so the errors stay small:
# they are bounded by `Σ_i eps/2 · |T_i|`, which grows with the totals actually reached, not with n alone.

# %%
terms = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
exact = np.cumsum(terms.astype(np.float64))
for fmt in (FP16, BF16):
    total = running_sum(terms, fmt).astype(np.float64)
    err = abs(total[-1] - exact[-1])
    bound = float(np.sum(fmt.eps / 2 * np.abs(total)))  # one rounding of each running total
    print(f"{fmt.name}: final total {total[-1]:+.3f} (exact {exact[-1]:+.3f}), error {err:.3f} "
          f"≤ Σ eps/2·|T_i| = {bound:.3f}; largest |T| reached {np.abs(total).max():.1f}")
    assert err <= bound
