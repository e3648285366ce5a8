# %% [markdown]
# # 14 · Every method on one page: worked solutions
#
# The three exercises of `14_peft_methods`, computed and checked with `assert`s (CI runs this notebook).

# %%
import numpy as np

from minilora.experiments import compare as C
from minilora.experiments.recipe import DEFAULT_LR, method_config

# %% [markdown]
# ## 1. The adapters' learning rate
#
# `C.lr_sweep` trains the default adapter configuration once per learning rate of `C.LR_GRID` with the chapter's
# recipe and seed 0, and returns the held-out loss of each run. The default learning rate is the one with the
# lowest loss.

# %%
sweep = C.lr_sweep("adapter")
for lr, loss in sweep.items():
    print(f"lr {lr:<6g} held-out loss {loss:.4f}")
best = min(sweep, key=sweep.get)
assert best == DEFAULT_LR["adapter"]
second = sorted(sweep, key=sweep.get)[1]
print(f"lowest at {best:g} (DEFAULT_LR['adapter'] = {DEFAULT_LR['adapter']:g}); the runner-up {second:g} is "
      f"{sweep[second] / sweep[best] - 1:.0%} higher")

# %%
lrs, losses = list(sweep), list(sweep.values())
i = lrs.index(best)
neighbours = [losses[j] for j in (i - 1, i + 1) if 0 <= j < len(lrs)]
print(f"both neighbouring rates end higher: {all(v > sweep[best] for v in neighbours)}; the smallest rate ends at "
      f"{losses[0] / sweep[best]:.1f}x the best loss (too slow), the largest at {losses[-1] / sweep[best]:.1f}x")

# %% [markdown]
# The sweep uses one seed, so two neighbouring rates whose losses are close would need more seeds to tell
# apart.
#
# ## 2. A larger bottleneck
#
# `reduction_factor=4` gives m = 64 / 4 = 16 hidden units per adapter. One adapter has `2·m·d + d + m`
# parameters, and Houlsby puts two in each of the two blocks.

# %%
small = method_config("adapter")
large = method_config("adapter", reduction_factor=4)
rows = C.compare({"adapter m=4": small, "adapter m=16": large, "lora (default)": method_config("lora")},
                 seeds=(0,), timing=False)
d, n_layer = 64, 2
for label, r in rows.items():
    print(f"{label:15s} trainable {r['trainable']:>6,d}  bytes {r['bytes']:>7,d}  "
          f"exact match {r['exact_match'][0]:.3f}  loss {r['loss'][0]:.4f}")
m = 16
assert rows["adapter m=16"]["trainable"] == 2 * n_layer * (2 * m * d + d + m)
growth = rows["adapter m=16"]["trainable"] / rows["adapter m=4"]["trainable"]
print(f"4x the hidden units gives {growth:.2f}x the parameters: the d-sized up-projection bias does not grow with m.")
print(f"with m = 16 the held-out loss goes from {rows['adapter m=4']['loss'][0]:.4f} to "
      f"{rows['adapter m=16']['loss'][0]:.4f}; LoRA's default ({rows['lora (default)']['trainable']:,d} parameters) "
      f"reaches {rows['lora (default)']['loss'][0]:.4f}")

# %% [markdown]
# ## 3. Where LoRA saves time
#
# In the backward of a frozen Linear, minilora computes only `dx = G W` and skips the weight gradient
# `dW = Gᵀ X`. With LoRA on q and v, every other Linear is a plain frozen layer. With LoRA on every Linear,
# each one also runs the side path: two thin matmuls forward and four backward (dA, dB and their share of dx).

# %%
configs = {"full": method_config("full"), "lora q,v": method_config("lora"),
           "lora all-linear": method_config("lora", target_modules="all-linear")}
ratios = C.step_time_ratios(configs, steps=20)
for label, ratio in ratios.items():
    print(f"{label:16s} {ratio:.2f}x full fine-tuning's step")
faster = "q,v" if ratios["lora q,v"] < ratios["lora all-linear"] else "all-linear"
print(f"LoRA on {faster} is the faster of the two here; both skip every weight gradient, and all-linear adds "
      "the side path to six Linears per block instead of two.")
assert np.isfinite(list(ratios.values())).all()
