# %% [markdown]
# # 03 · Initializing A and B: the blog's claim, checked with gradients
#
# The blog says **"A矩阵不能全0初始化，B矩阵可全0初始化"**, "A cannot be initialized to all zeros, B can".
# Stated like that it is wrong (`docs/errata.md`, erratum 4). Both choices make the side path `s·BA` start at zero,
# and both can train. Only *A = B = 0* is stuck. What the usual choice (A random, B = 0) really buys is a
# larger stable learning rate, as Hayou et al. (2024, arXiv 2406.08447) predict for wide layers.
# This notebook computes each statement instead of repeating it.
#
# A LoRA layer computes `y = x W0ᵀ + s · (x Aᵀ) Bᵀ`. With the upstream gradient `G = dL/dy` and the rows of
# `x` stacked in `X`, the gradients are (`minilora/peft/lora.py`, `docs/facts.md` §5):
#
# * `dA = s · (G B)ᵀ X`, which is **zero whenever B = 0**;
# * `dB = s · Gᵀ (X Aᵀ)`, which is **zero whenever A = 0**.
#
# So at step 0, (A random, B = 0) moves only B, and (A = 0, B random) moves only A. After one step the
# zero matrix is no longer zero, and both gradients flow. With A = B = 0 both gradients are zero, so nothing
# ever changes: the origin is a saddle point of the loss.
#
# The four initializations are drawn by the library's `init_lora_matrices`. PEFT has two of them: its default
# `init_lora_weights=True` (A random, B = 0) and `init_lora_weights=False` (both random); A = 0 and A = B = 0
# are minilora's teaching variants (`"zero_A"`, `"zeros"`):

# %%
import matplotlib.pyplot as plt
import numpy as np

from minilora.data import low_rank_teacher
from minilora.experiments import lora as E
from minilora.nn.gradcheck import gradcheck
from minilora.peft import LoRALinear
from minilora.peft.lora import init_lora_matrices
from minilora.show import log_ticks, show_source

show_source(init_lora_matrices, span=("uniform = lambda", "uniform((out_f, r), r)"))

# %%
teacher = low_rank_teacher(d_in=32, d_out=32, rank=4, seed=0)
teacher

# %% [markdown]
# The task is a **low-rank teacher**. A "pretrained" linear layer `W0` (32 × 32) must learn the target
# `W* = W0 + ΔW*`, where `rank(ΔW*) = 4`. A rank-4 adapter can fit it exactly. We put LoRA (r = 4,
# α = 4, so s = 1) on that layer with each of the four initializations.
#
# ## Step 0: the product BA, the gradients, and the output

# %%
rows = {E.INIT_LABELS[init]: E.step0_gradients(teacher, init) for init in E.INIT_LABELS}
print(f"{'initialization':34s} {'‖BA‖':>8s} {'‖dA‖':>8s} {'‖dB‖':>8s} {'output change':>14s}")
for label, g in rows.items():
    print(f"{label:34s} {g['BA']:8.4f} {g['dA']:8.4f} {g['dB']:8.4f} {g['output_change']:14.4f}")

# %% [markdown]
# This is what the formulas predict, and what the code guarantees: whenever A = 0 or B = 0, the product
# BA is exactly zero, so three of the four initializations start exactly at the pretrained model (‖BA‖ = 0,
# output change 0). Both-random starts somewhere else: it changes the model's output *before any training*,
# which is why nobody uses it. (A = 0, B random) has a non-zero `dA`, so it trains.
#
# Let's check the formula `dA = s (G B)ᵀ X` on the layer's own backward, for A = 0:

# %%
from minilora.nn import Linear

layer = LoRALinear(Linear(32, 32, seed=0), r=4, lora_alpha=4, init_lora_weights="zero_A", seed=0)
X = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)
G = np.random.default_rng(2).standard_normal((8, 32)).astype(np.float32)
layer.zero_grad()
layer.forward(X)
layer.backward(G)
dA_formula = layer.scaling * (G @ layer.B).T @ X
print("A is all zero:", not layer.A.any())
print("max |dA(backward) - s (G B)^T X| =", float(np.abs(layer.grads["lora_A.weight"] - dA_formula).max()))
print("‖dA‖ =", float(np.linalg.norm(dA_formula)), " ‖dB‖ =", float(np.linalg.norm(layer.grads["lora_B.weight"])))

# %% [markdown]
# The same backward, checked against finite differences in float64 (`minilora.nn.gradcheck`) at each of
# the four initializations: the zero gradients are right too, not an accident of the code.

# %%
for init in E.INIT_LABELS:
    layer64 = LoRALinear(Linear(32, 32, seed=0), r=4, lora_alpha=4, init_lora_weights=init, seed=0).to("float64")
    layer64.eval()
    errors = gradcheck(layer64, np.random.default_rng(1).standard_normal((8, 32)))
    assert max(errors.values()) < 1e-7, errors
    print(f"{E.INIT_LABELS[init]:34s} largest relative error {max(errors.values()):.1e}")

# %% [markdown]
# ## Training curves on the teacher
#
# Plain SGD, learning rate 2, 150 steps, the same data for every run.

# %%
histories = {init: E.finetune_teacher(E.teacher_lora(teacher, init_lora_weights=init), teacher, lr=2.0, steps=150)
             for init in E.INIT_LABELS}
for init, h in histories.items():
    print(f"{E.INIT_LABELS[init]:34s} eval MSE {h.eval_loss[0]:.3e} -> {h.eval_loss[-1]:.3e}")

stuck = E.teacher_lora(teacher, init_lora_weights="zeros")
E.finetune_teacher(stuck, teacher, lr=2.0, steps=150)
print("A = B = 0 after 150 steps: non-zero entries in A and B:",
      np.count_nonzero(stuck.fc0.A), np.count_nonzero(stuck.fc0.B))
reach = {init: E.steps_to_fraction(h, 0.01) for init, h in histories.items()}
for init, step in reach.items():
    print(f"{E.INIT_LABELS[init]:34s} reaches 1 % of its starting loss "
          + ("never (in 150 steps)" if step is None else f"at step {step}"))

fig, ax = plt.subplots(figsize=(6.4, 4))
for init, h in histories.items():
    ax.semilogy(h.eval_step, h.eval_loss, label=E.INIT_LABELS[init])
ax.set(xlabel="step", ylabel="eval MSE", title="LoRA r = 4 on a rank-4 teacher, SGD lr 2")
log_ticks(ax.yaxis, subs=(1.0,))
ax.legend(fontsize=8)
plt.show()
h_a0, h_def, h_rand = histories["zero_A"], histories[True], histories["random"]
print(f"A = 0, B random: eval MSE {h_a0.eval_loss[0]:.2e} -> {h_a0.eval_loss[-1]:.2e} "
      f"({h_a0.eval_loss[0] / h_a0.eval_loss[-1]:.0f}x lower): it trains")
print(f"A = B = 0 stuck at its starting loss at every evaluation: {E.is_stuck(histories['zeros'])}")
print(f"both random starts at {h_rand.eval_loss[0]:.3f}, the pretrained model at {h_def.eval_loss[0]:.3f}")

# %% [markdown]
# * (A = 0, B random) **does train** (its loss ratio is printed above). This contradicts the blog. How fast
#   it gets there, compared with the default, is the "reaches 1 %" table.
# * (A = B = 0) never moves. Both gradients are exactly zero at every step, so A and B stay zero.
# * (A random, B random) starts from a *different model* (its step-0 loss, printed above), then trains.
#
# ## Training curves on the base GPT
#
# The teacher is a single linear layer. Does the same happen in a real network? We fine-tune the shipped
# base GPT (`minilora.load_base_model()`, pretrained on copy, reverse, sort and add-one) on the task it has
# never seen, *sort descending*. LoRA r = 8, α = 16 on `q_proj` and `v_proj` of both blocks, AdamW, one
# seed; the held-out loss and exact match (all answer digits right) are measured every 25 steps. These are
# the settings of the figure `lora_init.png` (printed below): batches of 16, half of the recipe of
# notebook 02, so the four runs are quick; the learning rate and step count are the recipe's.

# %%
from minilora.data import VOCAB_SIZE
from minilora.peft import LoraConfig

STEPS, BATCH, EVAL_EVERY = 150, 16, 25
print(f"{STEPS} steps, batches of {BATCH} (notebook 02's recipe: {E.recipe()['batch_size']}), learning rate "
      f"{E.recipe()['lr']}, evaluation every {EVAL_EVERY} steps on {E.recipe()['eval_sequences']} sequences")
gpt_runs = E.gpt_runs({init: LoraConfig(r=8, lora_alpha=16, init_lora_weights=init) for init in E.INIT_LABELS},
                      steps=STEPS, batch_size=BATCH, eval_every=EVAL_EVERY, include_step0=True)
print(f"{'initialization':34s} {'loss at step 0':>14s} {'loss at 150':>11s} {'exact match at 150':>18s}")
for init, run in gpt_runs.items():
    h = run["histories"][0]
    print(f"{E.INIT_LABELS[init]:34s} {h.eval_loss[0]:14.3f} {h.eval_loss[-1]:11.3f} {run['exact_match']:18.3f}")
print(f"for comparison, a uniform guess over the {VOCAB_SIZE} tokens has cross-entropy {np.log(VOCAB_SIZE):.2f}")
hist = {init: run["histories"][0] for init, run in gpt_runs.items()}
print(f"A = B = 0 stuck at the base model's loss at every evaluation: {E.is_stuck(hist['zeros'])}")
print(f"A = 0, B random: loss {hist['zero_A'].eval_loss[0]:.3f} -> {hist['zero_A'].eval_loss[-1]:.3f}; the default "
      f"ends at {hist[True].eval_loss[-1]:.3f} ("
      + ("A = 0 behind" if hist["zero_A"].eval_loss[-1] > hist[True].eval_loss[-1] else "A = 0 ahead") + ")")
print(f"both random: step-0 loss {hist['random'].eval_loss[0]:.3f} vs the base model's {hist[True].eval_loss[0]:.3f}; "
      f"the base model is {hist[True].eval_loss[0] / np.log(VOCAB_SIZE):.1f}x above a uniform guess")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for init, run in gpt_runs.items():
    h = run["histories"][0]
    axes[0].semilogy(h.eval_step, h.eval_loss, marker="o", ms=3, label=E.INIT_LABELS[init])
    axes[1].plot(h.eval_step, h.metric("exact_match"), marker="o", ms=3, label=E.INIT_LABELS[init])
axes[0].set(xlabel="step", ylabel="held-out cross-entropy", title="base GPT → sort descending (LoRA r = 8, q, v)")
axes[1].set(xlabel="step", ylabel="held-out exact match", title="the same runs: whole answers right")
axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# The GPT tells the teacher's story (the lines above are computed from these runs):
#
# * A = B = 0 stays at the base model's loss at every evaluation: its gradients are zero, so it is stuck.
# * A = 0 (B random) trains: its loss falls from the base model's by the amount printed; whether it ends
#   behind or ahead of the PEFT default is printed too.
# * Both random changes the model before training: its step-0 loss differs from the base model's.
#
# The base model's loss at step 0 is above that of a uniform guess by the factor printed: it answers the
# unknown task confidently and wrongly (`02_lora` prints some of its answers). This is one seed, so small
# differences are noise. Pass `seeds=(0, 1, 2)` to `E.gpt_runs` to see how large the spread between seeds
# is (`02_lora` does, for the default initialization).
#
# ## Which zero is better? A learning-rate sweep
#
# Hayou et al. (2024) analyse LoRA in the limit of wide layers. They find that B = 0 (with A random)
# admits **larger stable learning rates** than A = 0 (with B random), and that the gap grows with the width.
# We test this on two widths, d = 32 and d = 128 (rank-4 teachers). Each run is 100 SGD steps per learning
# rate. "Stable" means the run ends finite and below its starting loss.

# %%
lrs = np.geomspace(1, 64, 7)
sweeps = {d: E.lr_sweep(low_rank_teacher(d, d, rank=4, seed=0), lrs, optimizer="sgd", steps=100) for d in (32, 128)}
print("learning rates:", np.round(lrs, 2))
hayou = E.stable_lr_verdict(lrs, sweeps)
for d, v in hayou["per_width"].items():
    print(f"d = {d:3d}: largest stable lr {v['max_stable_b0']:5.1f} (B = 0) vs {v['max_stable_a0']:5.1f} (A = 0), "
          f"ratio {v['ratio']:.0f}; B = 0 ends lower at {v['b0_lower_where_both_stable']:.0%} of the rates "
          "both survive")
print("verdict (E.stable_lr_verdict): " + ("agrees with Hayou et al.: B = 0 tolerates larger learning rates, "
      "the more so at the larger width" if hayou["agrees"] else "does not show Hayou et al.'s prediction here"))

fig, ax = plt.subplots(figsize=(6.4, 4))
for d, style in ((32, "-"), (128, "--")):
    for init, color in ((True, "C0"), ("zero_A", "C1")):
        rel = np.where(np.isfinite(sweeps[d][init]), sweeps[d][init] / sweeps[d]["initial"], np.nan)
        ax.loglog(lrs, rel, style, color=color, marker="o", ms=3, label=f"{E.INIT_LABELS[init]}, d = {d}")
ax.axhline(1, color="0.5", lw=0.8)
ax.set(xlabel="learning rate", ylabel="final / initial eval MSE", title="100 SGD steps (gaps = diverged)")
ax.set_xticks(lrs, [f"{v:g}" for v in lrs])
ax.minorticks_off()
log_ticks(ax.yaxis, subs=(1.0,))
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# The verdict line is computed from the sweep: the largest stable learning rate of each initialization at
# each width, and at how many of the rates both survive B = 0 ends lower. Two caveats: the grid is coarse
# (factors of 2), and "B random" is drawn as `nn.Linear` would draw it (U(±1/√r)), which is one choice
# among many. Exercise 2 asks you to vary it.
#
# The figure `lora_init.png` (`python -m minilora figures lora_init`) shows these views together (step 0,
# the teacher, the GPT and the sweep).
#
# ## Exercises
#
# 1. Use the formulas for `dA` and `dB` to show that with A = B = 0 *every* later step also has zero
#    gradients. Then check it: train the `"zeros"` adapter with Adam instead of SGD. Does Adam's
#    normalisation rescue it? Why not?
# 2. Make the B of `"zero_A"` smaller (multiply `layer.B` by 0.1 after injection) and repeat the
#    learning-rate sweep. Does the gap between the two initializations depend on the scale of the random
#    factor?
# 3. Repeat the sweep at d = 256 with Adam (`optimizer="adam"`, learning rates 0.01–3). Hayou et al.
#    analyse Adam-like updates. Does the gap grow with the width?
