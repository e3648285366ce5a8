# %% [markdown]
# # 02 · LoRA: worked solutions
#
# The three exercises of `02_lora`, computed and checked with `assert`s (CI runs this notebook).

# %%
import numpy as np

from minilora.data import low_rank_teacher
from minilora.experiments import lora as E
from minilora.optim import Adam
from minilora.peft import LoraConfig

# %% [markdown]
# ## 1. A noisy teacher: does a larger r still help?
#
# With `noise=0.1` every target carries independent N(0, 0.1²) noise, so no model can get the eval MSE
# below `0.1² = 0.01`: that is the floor. A rank-4 adapter can represent the whole signal; more rank can
# only fit the noise of the training batches.

# %%
noisy = low_rank_teacher(32, 32, rank=4, noise=0.1, seed=0)
runs = E.rank_sweep(noisy, (1, 2, 4, 8, 16))
floor = noisy.noise**2
final = {key: hist.eval_loss[-1] for key, hist in runs.items()}
for key, loss in final.items():
    print(f"{str(key):>5s}: final eval MSE {loss:.4f}  ({loss / floor:.2f} x the noise floor)")
assert all(loss > floor for loss in final.values())  # nothing beats the noise
assert final[4] < 1.15 * floor  # rank r* reaches the floor (within 15 %)
assert final[8] >= 0.99 * final[4] and final[16] >= 0.99 * final[4]  # more rank does not help
print("r = r* = 4 reaches the noise floor; larger ranks do not get lower: they have nothing left but noise to fit")

# %% [markdown]
# ## 2. The learned update of the r = 8 run has rank 4
#
# Train r = 8 on the noise-free rank-4 teacher as the rank sweep does (Adam, lr 0.02, 300 steps), then
# look at the singular values of `s·BA`.

# %%
teacher = low_rank_teacher(32, 32, rank=4, seed=0)
model = E.teacher_lora(teacher, r=8)
E.finetune_teacher(model, teacher, lr=0.02, steps=300, optimizer="adam")
s = np.linalg.svd(model.fc0.delta_weight().astype(np.float64), compute_uv=False)
print("singular values of s·BA / the largest:", np.array2string(s[:8] / s[0], precision=2))
assert s[3] / s[0] > 0.1 and s[4] / s[0] < 1e-3  # four real directions, then a drop of > 100x
err = np.linalg.norm(model.fc0.delta_weight() - teacher.delta) / np.linalg.norm(teacher.delta)
assert err < 1e-3
print(f"numerical rank 4: σ_5 / σ_1 = {s[4] / s[0]:.1e}; and s·BA equals the planted ΔW* to {err:.1e} (relative)")

# %% [markdown]
# ## 3. With Adam, are α and the learning rate interchangeable?
#
# Adam's first step moves every entry by almost exactly the learning rate, whatever the gradient's size:
# `m / √v = g / |g|` at step 1. Starting from B = 0, the first step is `B₁ = −lr · sign(dB)`, so
# `ΔW₁ = s · B₁ A` depends on `s · lr` only. Check it: α = 16 with lr 0.01 and α = 32 with lr 0.005 give
# the same first update.

# %%
first = {}
for alpha, lr in ((16, 0.01), (32, 0.005), (64, 0.0025)):
    m = E.teacher_lora(teacher, r=8, lora_alpha=alpha)
    opt = Adam(m, lr=lr)
    x, y = teacher.sample(64, seed=0)
    m.zero_grad()
    m.forward(x, y)
    m.backward()
    opt.step()
    first[alpha] = m.fc0.delta_weight()
for alpha in (32, 64):
    rel = np.linalg.norm(first[alpha] - first[16]) / np.linalg.norm(first[16])
    assert rel < 1e-3, rel
    print(f"first Adam step, α = {alpha} vs α = 16: ‖ΔW difference‖ / ‖ΔW‖ = {rel:.1e}")
print("the same first update up to Adam's ε (it matters only for gradients of order ε)")

# %% [markdown]
# After that the rule breaks: A moves too, by about `lr` per entry, and A's change does not scale with s.
# With a smaller learning rate A moves less, so the pair (large α, small lr) keeps A closer to its
# initialization. On the base GPT (the recipe of the notebook, three seeds), measuring also how far A
# moved from its initialization in seed 0:

# %%
import minilora  # noqa: E402
from minilora.peft import inject_lora  # noqa: E402

NAME = "blocks.0.attn.q_proj.lora_A.weight"
settings = [(16, None), (32, 0.005), (64, 0.0025)]  # lr None: the recipe's 0.01
runs = {alpha: E.gpt_runs({alpha: LoraConfig(r=8, lora_alpha=alpha)}, seeds=(0, 1, 2), lr=lr,
                          keep_models=True)[alpha] for alpha, lr in settings}
moved = {}
for alpha, lr in settings:
    a0 = inject_lora(minilora.load_base_model(), LoraConfig(r=8, lora_alpha=alpha), seed=0).params[NAME]
    moved[alpha] = float(np.linalg.norm(runs[alpha]["models"][0].params[NAME] - a0) / np.linalg.norm(a0))
    losses = E.seed_losses(runs[alpha])
    line = f"α = {alpha:2d}, lr {lr or E.recipe()['lr']}: loss {losses.mean():.3f} ± {losses.std(ddof=1):.3f}, " \
           f"A moved {moved[alpha]:.2f} of its norm"
    if alpha != 16:
        c = E.compare_losses(losses, E.seed_losses(runs[16]))
        line += f"; against α = 16: {c['diff']:+.3f} ± {c['se']:.3f} → {c['verdict']}"
    print(line)
assert moved[64] < moved[32] < moved[16]  # the smaller the learning rate, the less A moves
print("A moves less at the smaller learning rates: the product s·BA is not a function of s·lr alone after step 1")
