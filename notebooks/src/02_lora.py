# %% [markdown]
# # 02 · LoRA: a frozen weight plus a low-rank side path
#
# LoRA (Hu et al. 2021, arXiv 2106.09685) starts from the observation that fine-tuning updates have a low
# "intrinsic rank". It freezes the pretrained weight `W0 ∈ R^{d×k}` and learns the update as a product:
#
# `h = W0 x + ΔW x = W0 x + s · B A x`, with `B ∈ R^{d×r}`, `A ∈ R^{r×k}`, `r ≪ min(d, k)`, `s = α / r`.
#
# **Two corrections to the blog** (SEED-NOTES errata 1–2): the blog writes `A ∈ R^{d×r}`, but A must be
# `r × k` for `BA` to be `d × k`. It also ends the forward pass with `(W0 + AB)x`, but `AB` is `r × r` and
# cannot be added to W0; it is `(W0 + BA)x`. Errata 3: the element-wise formula is
# `h_i = Σ_j (Σ_k B_ik A_kj) x_j`.
#
# minilora stores weights as PyTorch and PEFT do, `(out, in)`, so `lora_A.weight` is `(r, in)` and
# `lora_B.weight` is `(out, r)`.

# %%
import matplotlib.pyplot as plt
import numpy as np

from minilora import lora_experiments as E
from minilora.data import low_rank_teacher
from minilora.nn import Linear
from minilora.peft import LoRALinear

d, k, r = 6, 10, 2
layer = LoRALinear(Linear(k, d, seed=0), r=r, lora_alpha=4, init_lora_weights="random", seed=1)
print(layer)
print({name: p.shape for name, p in layer.params.items()}, " trainable:", layer.trainable_names())

x = np.random.default_rng(0).standard_normal(k).astype(np.float32)
h = layer.forward(x)
h_by_formula = layer.weight @ x + layer.bias + layer.scaling * (layer.B @ layer.A) @ x
h_elementwise = np.array([sum(sum(layer.B[i, kk] * layer.A[kk, j] for kk in range(r)) * x[j] for j in range(k))
                          for i in range(d)]) * layer.scaling + layer.weight @ x + layer.bias
print("max |forward - (W0 + sBA)x - b| =", float(np.abs(h - h_by_formula).max()))
print("max |forward - element-wise formula| =", float(np.abs(h - h_elementwise).max()))

# %% [markdown]
# The element-wise sum above is the blog's formula written out with Python loops, only as a check. The
# layer itself never builds `BA` in the forward pass: it computes `(x Aᵀ) Bᵀ`. That costs `r (d + k)`
# multiply-adds per token instead of `d k`.
#
# ## Scaling: α / r, and rsLoRA's α / √r
#
# PEFT multiplies the side path by `s = lora_alpha / r`. If you double r and keep α, s halves. The idea is
# that you can change r without re-tuning the learning rate. Kalajdzievski (2023, rsLoRA) argues that
# `α / r` shrinks the update too much at large r, so learning stalls, and proposes `α / √r`
# (`use_rslora=True`). Here is the step-0 size of the update `‖ΔW‖` after one SGD step on the teacher,
# for several r:

# %%
teacher = low_rank_teacher(64, 64, rank=4, seed=0)
print(f"{'r':>3s} {'s = α/r':>8s} {'‖ΔW‖ (α/r)':>11s} {'s = α/√r':>9s} {'‖ΔW‖ (α/√r)':>12s}")
for r_ in (1, 4, 16, 64):
    out = []
    for rs in (False, True):
        m = E.teacher_lora(teacher, r=r_, lora_alpha=8, use_rslora=rs)
        E.finetune_teacher(m, teacher, lr=0.5, steps=1, eval_every=0)
        out += [m.fc0.scaling, float(np.linalg.norm(m.fc0.delta_weight()))]
    print(f"{r_:3d} {out[0]:8.3f} {out[1]:11.5f} {out[2]:9.3f} {out[3]:12.5f}")

# %% [markdown]
# With α / r the first update shrinks roughly in proportion to 1/r as r grows. With α / √r it shrinks far
# less, so a large rank still learns at the same learning rate.
#
# ## Merging: no extra inference cost
#
# After training, `W = W0 + s·BA` can be computed once (`merge()`), and the layer is a plain Linear
# again. `unmerge()` subtracts it. In float32 neither step is exact: the error is rounding-sized.

# %%
y = layer.forward(x)
layer.merge()
y_merged = layer.forward(x)
layer.unmerge()
print("merged vs unmerged output, max abs diff:", float(np.abs(y - y_merged).max()))
W_before = Linear(k, d, seed=0).weight
print("W0 after merge + unmerge, max abs diff:", float(np.abs(layer.weight - W_before).max()))

# %% [markdown]
# ## How large must r be? A rank sweep
#
# The low-rank teacher has a known update rank, `r* = 4` (`W* = W0 + ΔW*`). LoRA with rank r can
# represent ΔW* only if `r ≥ r*`. Full fine-tuning can represent anything, but it trains 1024 parameters
# instead of `2 · 32 · r`. Each run is Adam, lr 0.02, 300 steps.

# %%
teacher32 = low_rank_teacher(32, 32, rank=4, seed=0)
runs = E.rank_sweep(teacher32, (1, 2, 4, 8))
fig, ax = plt.subplots(figsize=(6.4, 4))
for key, hist in runs.items():
    ax.semilogy(hist.eval_step, hist.eval_loss, "k--" if key == "full" else "-",
                label="full fine-tuning" if key == "full" else f"LoRA r = {key}")
    print(f"{str(key):>5s}: final eval MSE {hist.eval_loss[-1]:.2e}")
ax.set(xlabel="step", ylabel="eval MSE", title="rank-4 teacher")
ax.legend()
plt.show()

# %% [markdown]
# Below r* the loss plateaus: ranks 1 and 2 cannot represent a rank-4 change. From r = r* on, LoRA fits the
# teacher. In this run it ends lower than full fine-tuning (whose Adam run is noisier at this learning
# rate), with a quarter of the parameters or fewer. The figure `lora_rank.png` shows the same sweep.
#
# ## Exercises
#
# 1. Add noise to the teacher (`low_rank_teacher(..., noise=0.1)`) and repeat the rank sweep. Does a larger
#    r still help, or does it only fit the noise?
# 2. Use `delta_weight()` and `np.linalg.svd` to check that the learned `s·BA` of the r = 8 run has
#    (numerically) rank 4.
# 3. Repeat the scaling table with Adam (`optimizer="adam"` in `finetune_teacher`). Adam normalises the
#    gradient's size. Does the choice between α / r and α / √r still matter at step 1?
