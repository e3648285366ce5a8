# %% [markdown]
# # 06 · Absmax quantization: worked solutions
#
# The three exercises of `06_absmax`, computed and checked with `assert`s (CI runs this notebook).

# %%
import itertools

import numpy as np

from minilora.quant import absmax_dequantize, absmax_quantize, bounds, toy_walkthrough
from minilora.quant.absmax import qmax_for

MODES = {"tensor": {}, "per row": {"axis": -1}, "per column": {"axis": 0}, "block 64": {"blocksize": 64}}


def mean_errors(w):
    out = {}
    for name, kw in MODES.items():
        q, a = absmax_quantize(w, bits=8, **kw)
        out[name] = float(np.abs(absmax_dequantize(q, a, bits=8, **kw) - w).mean())
    return out


rng = np.random.default_rng(0)
w0 = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)

# %% [markdown]
# ## 1. Where the outlier sits, and a second one in the same row
#
# Each mode's error depends on how many weights share the outlier's absmax: all of them (tensor), its row
# (256), its column (64) or its block (64). Moving the outlier keeps those group sizes, so no error changes
# much. A second outlier in the *same row* spoils nothing new per row, but a new column and a new block.

# %%
one = w0.copy()
one[10, 100] = 1.0
moved = w0.copy()
moved[40, 200] = 1.0
two = one.copy()
two[10, 10] = 1.0  # same row, another column, another block of 64 (columns 0-63 vs 64-127)
e_one, e_moved, e_two = mean_errors(one), mean_errors(moved), mean_errors(two)
print(f"{'mode':>11} {'one outlier':>12} {'moved':>10} {'two, same row':>14}")
for name in MODES:
    print(f"{name:>11} {e_one[name]:12.3e} {e_moved[name]:10.3e} {e_two[name]:14.3e}")
assert all(abs(e_moved[m] / e_one[m] - 1) < 0.1 for m in MODES)  # moving it changes no mode by 10 %
change = {m: e_two[m] / e_one[m] - 1 for m in MODES}
assert abs(change["tensor"]) < 0.001  # the same absmax for the whole tensor
assert abs(change["per row"]) < 0.01  # the row was spoiled already
assert change["per column"] > 0.05 and change["block 64"] > 0.05  # one more spoiled group of 64 (of 256)
print(f"moving the outlier changes no mode's error by 10 %; a second one in the same row changes per-row by "
      f"{change['per row']:+.2%} and raises per-column by {change['per column']:+.1%}, block 64 by "
      f"{change['block 64']:+.1%}: one more spoiled group of 64 weights out of 256")

# %% [markdown]
# ## 2. Five target levels: which inputs survive the round trip?
#
# Try every vector of four values from A = {0, …, 5} with B = {0, 2, 4} (the blog's) and with B = {0, …, 4}.

# %%
survive = {}
for levels in ((0, 2, 4), (0, 1, 2, 3, 4)):
    ok = [x for x in itertools.product(range(6), repeat=4) if any(x)
          and np.array_equal(toy_walkthrough(x=x, target_levels=levels).restored, x)]
    survive[levels] = ok
    print(f"B = {set(levels)}: {len(ok)} of {6**4 - 1} non-zero vectors come back exactly")
assert (3, 1, 2, 3) in survive[(0, 1, 2, 3, 4)] and (3, 1, 2, 3) not in survive[(0, 2, 4)]
print("the blog's [3, 1, 2, 3] survives with five levels:", toy_walkthrough(target_levels=(0, 1, 2, 3, 4)).restored)

# %% [markdown]
# ## 3. An error above half a step
#
# In exact arithmetic the error is at most half a step, `absmax / (2·qmax)`. In float32, `x / absmax · qmax`
# and `q · (absmax / qmax)` are each rounded, so a value within a few ulp of a half-step can come back
# slightly more than half a step away. Search next to the half-steps:

# %%
found = None
search = np.random.default_rng(1)
while found is None:
    bits = 8
    qmax = qmax_for(bits)
    a = np.float32(search.uniform(0.5, 2.0))
    half = np.float32((search.integers(0, qmax) + 0.5) * a / qmax)
    x = np.concatenate([[a], half + np.arange(-50, 50, dtype=np.float32) * np.spacing(half)]).astype(np.float32)
    q, am = absmax_quantize(x, bits=bits)
    err = np.abs(absmax_dequantize(q, am, bits=bits) - x).astype(np.float64)
    excess = err - float(am) / (2 * qmax)
    if excess.max() > 0:
        found = (x[excess.argmax()], float(am), excess.max())
value, absmax, excess = found
slack = float(bounds.absmax_bound(np.float32(absmax), 8)) - absmax / (2 * qmax)
print(f"x = {value!r} with absmax {absmax!r}: error exceeds half a step by {excess:.2e}")
print(f"the bound's float32 allowance 4u·absmax (+ subnormal term) is {slack:.2e}")
assert 0 < excess <= slack
