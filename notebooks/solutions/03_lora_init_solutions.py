# %% [markdown]
# # 03 · Initializing A and B: worked solutions
#
# The three exercises of `03_lora_init`, computed and checked with `assert`s (CI runs this notebook).

# %%
import numpy as np

from minilora.data import low_rank_teacher
from minilora.experiments import lora as E

teacher = low_rank_teacher(d_in=32, d_out=32, rank=4, seed=0)

# %% [markdown]
# ## 1. A = B = 0 stays stuck, with SGD and with Adam
#
# `dA = s (G B)ᵀ X` is zero when B = 0 and `dB = s Gᵀ (X Aᵀ)` is zero when A = 0. With both zero, both
# gradients are zero; an optimizer step moves a parameter only in proportion to its gradient history, so
# nothing moves, and at the next step A and B are still zero: by induction, forever. Adam does not rescue it:
# its update is `m̂ / (√v̂ + ε)` with `m = v = 0`, which is exactly 0 (ε keeps it from being 0/0).

# %%
for optimizer in ("sgd", "adam"):
    model = E.teacher_lora(teacher, init_lora_weights="zeros")
    hist = E.finetune_teacher(model, teacher, lr=0.5 if optimizer == "adam" else 2.0, steps=100,
                              optimizer=optimizer)
    assert E.is_stuck(hist) and not model.fc0.A.any() and not model.fc0.B.any()
    print(f"{optimizer}: loss {hist.eval_loss[0]:.4f} at every evaluation; A and B still all zero")

# %% [markdown]
# ## 2. Does the gap depend on the scale of the random B?
#
# Scale the random B of `"zero_A"` by 0.1 after injection and redo the d = 128 sweep for both variants.

# %%
lrs = np.geomspace(1, 64, 7)
teacher128 = low_rank_teacher(128, 128, rank=4, seed=0)


def sweep_zero_A(scale):
    finals = []
    for lr in lrs:
        model = E.teacher_lora(teacher128, init_lora_weights="zero_A")
        model.fc0.B[...] *= scale
        hist = E.finetune_teacher(model, teacher128, lr=lr, steps=100, eval_every=0)
        finals.append(hist.eval_loss[-1] if np.isfinite(hist.eval_loss[-1]) else np.inf)
    return np.array(finals), hist.eval_loss[0]


default = E.lr_sweep(teacher128, lrs, inits=(True,), optimizer="sgd", steps=100)
stable = {"B = 0 (A random)": E.max_stable_lr(lrs, default[True], default["initial"])}
for scale in (1.0, 0.1):
    finals, initial = sweep_zero_A(scale)
    stable[f"A = 0, B random × {scale:g}"] = E.max_stable_lr(lrs, finals, initial)
for name, lr in stable.items():
    print(f"{name:24s} largest stable lr {lr:5.1f}")
assert stable["A = 0, B random × 0.1"] != stable["A = 0, B random × 1"]
print("the largest stable learning rate of A = 0 changes with the scale of B: the gap is not a property of "
      "'which factor is zero' alone, it depends on how large the random one is")

# %% [markdown]
# Why: with A = 0 the first steps move A by `dA ∝ B`, and the product BA then grows like `|B|²`. A smaller B
# slows the start and shrinks the effective step, which changes where training diverges. Hayou et al.'s
# result is about the scaling of these factors with the width, not about one fixed draw.
#
# ## 3. Adam, and a wider layer
#
# The same sweep with Adam (learning rates 0.01 to 3) at d = 32 and d = 256.

# %%
adam_lrs = np.geomspace(0.01, 3, 7)
adam = {d: E.lr_sweep(low_rank_teacher(d, d, rank=4, seed=0), adam_lrs, optimizer="adam", steps=100)
        for d in (32, 256)}
verdict = E.stable_lr_verdict(adam_lrs, adam)
for d, v in verdict["per_width"].items():
    print(f"Adam, d = {d:3d}: largest stable lr {v['max_stable_b0']:.3g} (B = 0) vs {v['max_stable_a0']:.3g} "
          f"(A = 0), ratio {v['ratio']:.2g}")
assert set(verdict["per_width"]) == {32, 256}
print("with Adam, B = 0's advantage grows with the width here" if verdict["agrees"] else
      "with Adam, this sweep shows no advantage of B = 0 growing with the width: Adam's normalized steps take "
      "the gradient's scale, which is where the two initializations differ, out of the update")
