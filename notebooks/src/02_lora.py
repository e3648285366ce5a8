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
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from minilora.experiments import lora as E
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
# ## LoRA on a real network: the shipped base GPT
#
# The teacher is one linear layer. minilora also ships a small pretrained GPT (`minilora.load_base_model()`).
# It was pretrained on four digit tasks: copy, reverse, sort and add one, each selected by a task token.
# The fifth task, *sort descending*, was never shown to it. That is the fine-tuning task: a new skill, as
# in the blog's "pretrain, then fine-tune per task". Here is what the base model answers on a few
# held-out examples (its greedy answer after `=`):

# %%
import minilora  # noqa: E402
from minilora import data  # noqa: E402
from minilora.peft import LoraConfig, merge_and_unload, save_adapter  # noqa: E402
from minilora.train import evaluate  # noqa: E402

base = minilora.load_base_model()
idx, targets = data.heldout_eval_batch()
answers = base.forward(idx[:3])[0].argmax(axis=-1)[:, data.N_DIGITS + 1:]  # the 8 positions after "="
for row, ans in zip(idx[:3], answers):
    print(data.decode(row[: data.N_DIGITS + 2]), "| model:", data.decode(ans), "| wanted:",
          data.decode(np.sort(row[1: data.N_DIGITS + 1])[::-1]))
print(f"{base.config.n_layer} blocks, width {base.config.n_embd}, {base.num_params():,d} parameters")
print("on 512 held-out examples: exact match "
      f"{data.accuracy(base, idx, targets)['exact_match']:.3f}, cross-entropy {evaluate(base, (idx, targets)):.2f} "
      f"(a uniform guess over the {data.VOCAB_SIZE} tokens would have {np.log(data.VOCAB_SIZE):.2f})")

# %% [markdown]
# Every experiment below uses the same recipe (`minilora.lora_experiments.finetune_gpt`, which
# `python -m minilora finetune` also runs): AdamW with a constant learning rate (0.01 for LoRA, 0.001 for
# full fine-tuning), batches of 16, 150 steps, and the held-out loss and exact match measured on 512 fixed
# sequences. Each configuration is trained with two seeds (different adapter initializations and data
# order) and we report the mean. These are short, small runs: treat differences of a few percent as noise.
#
# ## How large should α be? The blog's "r = α/2"
#
# The blog says that setting r = α/2 (that is, α = 2r) "often works well". We fix r = 8 on `q_proj` and
# `v_proj` and sweep α. The scaling s = α/r multiplies the side path, so α = 2r means s = 2.

# %%
alphas = [4, 8, 16, 32, 64]
alpha_runs = E.gpt_runs({a: LoraConfig(r=8, lora_alpha=a) for a in alphas}, seeds=(0, 1))
print(f"{'alpha':>5s} {'s':>5s} {'loss (mean)':>11s} {'per seed':>15s} {'exact match':>11s}")
for a, run in alpha_runs.items():
    per_seed = " ".join(f"{rep['loss_after']:.3f}" for rep in run["reports"])
    print(f"{a:5d} {a / 8:5.2f} {run['loss']:11.3f} {per_seed:>15s} {run['exact_match']:11.3f}")
verdict = E.alpha_verdict(alphas, [alpha_runs[a]["loss"] for a in alphas], r=8)
verdict

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.8))
for seed in (0, 1):
    ax.semilogx(alphas, [alpha_runs[a]["reports"][seed]["loss_after"] for a in alphas], "o", color="0.6", ms=4,
                label="one seed" if seed == 0 else None)
ax.semilogx(alphas, [alpha_runs[a]["loss"] for a in alphas], "-o", label="mean of 2 seeds")
ax.axvline(16, color="C3", ls=":", label="α = 2r (the blog's rule)")
ax.set(xlabel="lora_alpha (r = 8)", ylabel="held-out loss after 150 steps", title="α sweep on the base GPT")
ax.set_xticks(alphas, [str(a) for a in alphas], minor=False)
ax.minorticks_off()
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The verdict above is computed from the mean losses. In this run α = r comes out best, and the blog's
# α = 2r is a few percent behind (`heuristic_excess`), inside the 10 % band of `near_best`. The two seeds
# do not even agree on which of the two is better. So the data support "α = 2r is a good choice" but not
# "α = 2r is the best choice": α = r is as good. What the sweep does show clearly is the shape: half of
# α = r is worse, and going above α = 2r is worse and worse, as a too-large learning rate would be.
#
# Why a region and not a rule? With Adam, each step moves B and A by about the learning rate, whatever
# the gradient's size. The change of the side path `s·BA` is then about s times the learning rate. So α
# and the learning rate play almost the same role. "α = 2r" is only good *together with* a learning rate
# that suits s = 2. By this argument, doubling α and halving the learning rate should give nearly the
# same training; exercise 3 asks you to check where that holds.
#
# ## Which weights should get an adapter?
#
# PEFT's default targets are `q_proj` and `v_proj`, as in the LoRA paper. QLoRA puts adapters on every
# linear layer (`"all-linear"`: here also `k_proj`, `o_proj`, `up_proj`, `down_proj`). We compare
# q, v at r = 8 with all-linear at r = 8 and at r = 2. All-linear at r = 2 has about as many trainable
# parameters as q, v at r = 8. Every run uses s = 2 (α = 2r).

# %%
target_runs = E.gpt_runs({"q, v  r = 8": LoraConfig(r=8, lora_alpha=16),
                          "all-linear  r = 8": LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"),
                          "all-linear  r = 2": LoraConfig(r=2, lora_alpha=4, target_modules="all-linear")},
                         seeds=(0, 1))
print(f"{'targets':18s} {'trainable':>9s} {'loss (mean)':>11s} {'per seed':>15s} {'exact match':>11s}")
for label, run in target_runs.items():
    per_seed = " ".join(f"{rep['loss_after']:.3f}" for rep in run["reports"])
    print(f"{label:18s} {run['trainable']:9,d} {run['loss']:11.3f} {per_seed:>15s} {run['exact_match']:11.3f}")

# %% [markdown]
# All-linear at r = 8, with 4.5 times the parameters, ends slightly below q, v at r = 8, by less than
# the spread between the two seeds of one configuration. At (about) the same parameter budget,
# all-linear at r = 2 is worse than q, v at r = 8 for both seeds. This **disagrees with the LoRA paper**
# (Table 5, GPT-3 with a fixed budget), which found that spreading the budget over more weight types at
# a lower rank helps or ties. Our evidence is weak: a two-block model, 150 steps, one learning rate for
# every configuration, and our all-linear also adapts the feed-forward layers, which Table 5 did not.
# The honest conclusion for this model: r = 2 is too small, and q, v at r = 8 is enough.
#
# ## Adapter vs full fine-tuning
#
# Finally LoRA (q, v, r = 8, α = 16) against updating all parameters (learning rate 0.001), one seed. We
# also measure the mean exact match on the four *pretraining* tasks, before and after.

# %%
lora_model, _, lora_rep = E.finetune_gpt(minilora.load_base_model(), "lora", LoraConfig(r=8, lora_alpha=16),
                                         batch_size=16, pretrained=True)
full_model, _, full_rep = E.finetune_gpt(minilora.load_base_model(), "full", batch_size=16, pretrained=True)
adapter_dir = save_adapter(lora_model, tempfile.mkdtemp())
adapter_bytes = sum(f.stat().st_size for f in adapter_dir.iterdir())
full_bytes = sum(p.nbytes for p in full_model.params.values())
print(f"{'':22s} {'trainable':>9s} {'stored (B)':>10s} {'held-out EM':>15s} {'loss':>15s} {'pretrained EM':>15s}")
for name, rep, stored in (("LoRA q, v r = 8", lora_rep, adapter_bytes), ("full fine-tuning", full_rep, full_bytes)):
    print(f"{name:22s} {rep['trainable']:9,d} {stored:10,d} "
          f"{rep['exact_match_before']:.3f} -> {rep['exact_match_after']:.3f} "
          f"{rep['loss_before']:6.3f} -> {rep['loss_after']:.3f} "
          f"{rep['pretrained_before']:.3f} -> {rep['pretrained_after']:.3f}")

shipped = minilora.load_base_model().params
frozen_same = all(np.array_equal(lora_model.params[name], w) for name, w in shipped.items())
full_same = all(np.array_equal(full_model.params[name], w) for name, w in shipped.items())
print("LoRA: every base weight still bit-identical to the shipped file:", frozen_same)
print("full fine-tuning: base weights unchanged:", full_same)
print(f"full fine-tuning trains {full_rep['trainable'] / lora_rep['trainable']:.1f}x more parameters and stores "
      f"{full_bytes / adapter_bytes:.1f}x more bytes")

# %% [markdown]
# Full fine-tuning reaches a lower loss here, with many times more trainable parameters (printed above)
# and a stored result that is the whole model. LoRA closes most of the gap from the base model's loss
# with a small file. Both runs give up the pretraining tasks (the last column): with the adapter
# attached, or with the updated weights, the old skills are gone, because nothing in the fine-tuning data
# asked the model to keep them. The difference is what you can undo. LoRA's base weights never changed
# (bit for bit), so removing the adapter gives back the base model and its pretrained accuracy exactly.
# Full fine-tuning overwrote them.
#
# For deployment the adapter can also be folded into the weights, after which the model is a plain GPT
# with no extra cost per token:

# %%
logits_adapter = lora_model.forward(idx)[0]
merged = merge_and_unload(lora_model)
print("LoRA layers left after merge_and_unload:", [n for n, _ in merged.named_modules() if "lora" in n])
print("max |logits(merged) - logits(with adapter)|:", float(np.abs(merged.forward(idx)[0] - logits_adapter).max()))

# %% [markdown]
# The difference is float32 rounding: merging changes the order of the additions, not the function.
#
# ## Exercises
#
# 1. Add noise to the teacher (`low_rank_teacher(..., noise=0.1)`) and repeat the rank sweep. Does a larger
#    r still help, or does it only fit the noise?
# 2. Use `delta_weight()` and `np.linalg.svd` to check that the learned `s·BA` of the r = 8 run has
#    (numerically) rank 4.
# 3. Test the claim that, with Adam, α and the learning rate are nearly interchangeable: compare
#    `E.gpt_runs({32: LoraConfig(r=8, lora_alpha=32)}, seeds=(0, 1), lr=0.005)` with the α = 16 row above
#    (learning rate 0.01). Then try α = 64 with learning rate 0.0025. Where does the rule break, and why?
