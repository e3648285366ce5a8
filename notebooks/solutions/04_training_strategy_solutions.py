# %% [markdown]
# # 04 · Training strategy: worked solutions
#
# The three exercises of `04_training_strategy`, computed and checked with `assert`s (CI runs this notebook).
# Every run is LoRA fine-tuning of the shipped base GPT on the held-out task, as in the chapter.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import matplotlib.pyplot as plt

from minilora.experiments import memory as M
from minilora.experiments import training as T
from minilora.show import log_ticks

# %% [markdown]
# ## 1. When does the schedule pay?
#
# **(a) AdamW at three times its best constant rate.** First the constant-rate sweep of the chapter (seed 0),
# then both schedules at three times the best rate, three seeds each. The verdict asks whether cosine is
# noticeably better (`T.helps` on loss(constant) − loss(cosine)).

# %%
adamw = T.blog_optimizer(T.BASE, "adamw")
tuned = T.tune_lr(adamw.replace(schedule="constant"), T.LR_GRID["adamw"])
high = adamw.replace(lr=3 * tuned.best_lr)
const, cos = T.losses(high.replace(schedule="constant")), T.losses(high.replace(schedule="cosine"))
gain_high = T.paired_effect(const, cos)
print(f"AdamW best constant lr {tuned.best_lr:g}; at lr {high.lr:g}: constant {const}, cosine {cos}")
print(f"gain from cosine {gain_high} -> cosine helps: {T.helps(gain_high)}")
at_best = T.paired_effect(T.losses(adamw.replace(lr=tuned.best_lr, schedule="constant")),
                          T.losses(adamw.replace(lr=tuned.best_lr, schedule="cosine")))
print(f"at the best constant lr {tuned.best_lr:g} itself: gain from cosine {at_best}")
assert gain_high.mean > at_best.mean  # the higher the rate, the more the decay is worth
assert const.mean > T.losses(adamw.replace(lr=tuned.best_lr, schedule="constant")).mean  # 3x is past the best

# %% [markdown]
# **(b) SGD with twice the budget.** At SGD's best constant rate from the 150-step sweep, 300 steps with each
# schedule.

# %%
sgd = T.blog_optimizer(T.BASE, "sgd")  # momentum 0.9, no weight decay
sgd_tuned = T.tune_lr(sgd.replace(schedule="constant"), T.LR_GRID["sgd"])
long = sgd.replace(lr=sgd_tuned.best_lr, steps=300)
sgd_const, sgd_cos = T.losses(long.replace(schedule="constant")), T.losses(long.replace(schedule="cosine"))
gain_long = T.paired_effect(sgd_const, sgd_cos)
gain_short = T.paired_effect(T.losses(long.replace(steps=150, schedule="constant")),
                             T.losses(long.replace(steps=150, schedule="cosine")))
print(f"SGD lr {long.lr:g}, 150 steps: gain from cosine {gain_short} -> {T.helps(gain_short)}")
print(f"SGD lr {long.lr:g}, 300 steps: constant {sgd_const}, cosine {sgd_cos}; gain {gain_long} -> "
      f"{T.helps(gain_long)}")

fig, ax = plt.subplots(figsize=(6.5, 3.2))
labels = [f"AdamW lr {tuned.best_lr:g}", f"AdamW lr {high.lr:g}", "SGD, 150 steps", "SGD, 300 steps"]
effects = [at_best, gain_high, gain_short, gain_long]
ax.errorbar(range(4), [e.mean for e in effects], yerr=[e.half_width for e in effects], fmt="o", capsize=5)
ax.axhline(0, color="0.5", lw=0.8)
ax.set_xticks(range(4), labels, fontsize=8)
ax.set(ylabel="loss(constant) − loss(cosine)", title="Gain from the cosine schedule (95 % CI over 3 seeds)")
fig.tight_layout()
verdicts = {f"AdamW at lr {high.lr:g}": T.helps(gain_high), "SGD with 300 steps": T.helps(gain_long)}
pays = [change for change, v in verdicts.items() if v == T.SUPPORTED]
print(f"cosine helps noticeably after: {', '.join(pays) if pays else 'neither change'} ({verdicts})")

# %% [markdown]
# The mean gain from the decay is larger at three times the rate than at the best constant rate (asserted above),
# where a constant rate is past its best (asserted too): the decay is worth more where the constant rate has
# stopped paying, though both intervals are wide. Twice the budget moves SGD's gain by the amount printed.
# Whether either change makes cosine *noticeably* better — the blog's "helps SGD noticeably" — is the last line
# printed, computed from the verdicts, not assumed.
#
# ## 2. Repetition with less data
#
# Thirty-two examples, 1 to 64 epochs (two steps per epoch), three seeds, and the same steps on fresh examples.

# %%
rep = T.repetition_study(n_examples=32, epochs=(1, 2, 4, 8, 16, 32, 64))
assert rep["steps_per_epoch"] == 2
for row in T.repetition_verdicts(rep, 32):
    print(f"{row.claim}: {row.verdict}\n    {row.result}")
epochs = sorted(rep["repeated"])
best_epochs = min(epochs, key=lambda e: rep["repeated"][e].mean)
gap = rep["repeated"][epochs[-1]].mean - rep["fresh"][epochs[-1]].mean
print(f"lowest mean held-out loss after {best_epochs} epochs; after {epochs[-1]} epochs repetition is "
      f"{gap:+.3f} behind fresh data ({rep['repeated'][epochs[-1]]} vs {rep['fresh'][epochs[-1]]})")
assert gap > 0  # 32 examples seen 64 times are worth less than 2048 different ones
probe = T.lora_model(seed=0)
n_layer = probe.config.n_layer
print(f"the adapter: {probe.num_params(trainable_only=True):,} trainable parameters (LoRA r = {T.LORA.r} on "
      f"{' and '.join(T.LORA.target_modules)} in each of {n_layer} blocks)")

fig, ax = plt.subplots(figsize=(6.5, 3.4))
for kind, style in (("repeated", "o-"), ("fresh", "s--")):
    ax.errorbar(epochs, [rep[kind][e].mean for e in epochs], yerr=[rep[kind][e].std for e in epochs], fmt=style,
                capsize=3, label="the same 32 examples" if kind == "repeated" else "fresh examples, same steps")
ax.set(xscale="log", yscale="log", xlabel="epochs over 32 examples (× 2 steps)", ylabel="held-out loss",
       title="Repetition with 32 examples (3 seeds)")
ax.set_xticks(epochs, [str(e) for e in epochs])
log_ticks(ax.yaxis)
ax.legend()
fig.tight_layout()

# %% [markdown]
# Whether more passes ever make the loss *worse* is the second verdict printed above. What the fresh-data
# control shows (asserted) is the real cost of repetition: the same number of steps on new examples ends lower.
# The adapter's size (printed above) is the capacity the repeated examples can be memorised into; how a larger
# one changes the picture is a further experiment: `recipe.finetune` with another `LoraConfig` and
# `train_data=T.epoch_stream(32, 16, seed)[0]`, `eval_at=` the epochs.
#
# ## 3. When is SGD's saving worth it?
#
# `M.llama_memory` applies the measured state arrays per trainable parameter (SGD with momentum: 1, AdamW: 2) to
# LLaMA-7B. The saving of SGD with momentum is one array per trainable parameter, so it reaches 1 % of the
# 16-bit weights when the adapter holds `0.01 × weights / 4 bytes` parameters.

# %%
buffers = M.optimizer_memory()["buffers"]
assert (buffers["SGD, momentum 0.9"], buffers["AdamW"]) == (1, 2)  # as the paragraph above says
ranks = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
rows = {r: M.llama_memory(buffers, "7B", r=r) for r in ranks}
frac = {r: (t["lora"]["AdamW"] - t["lora"]["SGD, momentum 0.9"]) / t["lora"]["weights"] for r, t in rows.items()}
r_one_percent = next(r for r in ranks if frac[r] >= 0.01)
sgd_full = rows[8]["full"]["SGD, momentum 0.9"]
r_equal = next((r for r in ranks if rows[r]["lora"]["AdamW"] >= sgd_full), None)
for r in ranks:
    print(f"r = {r:>4}: LoRA AdamW state {M.format_bytes(rows[r]['lora']['AdamW']):>9}, "
          f"SGD saves {100 * frac[r]:6.3f} % of the weights")
print(f"the saving first reaches 1 % at r = {r_one_percent} (on q and v, d = 4096)")
print(f"full fine-tuning with SGD + momentum keeps {M.format_bytes(sgd_full)} of state; LoRA's AdamW state "
      + (f"reaches it at r = {r_equal}" if r_equal else f"stays below it up to r = {ranks[-1]}"))
# one array of 4-byte floats per adapter parameter: 2 r (d + d) per layer and projection pair, 32 layers
d, L = 4096, 32
assert rows[64]["lora"]["AdamW"] - rows[64]["lora"]["SGD, momentum 0.9"] == 4 * 2 * L * 64 * 2 * d

# %% [markdown]
# Compare the rank at which SGD's saving reaches 1 % with the ranks LoRA is used at (the paper and QLoRA use 8 to
# 64). And the adapter stops being small as r grows: on one d × d projection it has `r (d + d)` parameters, as
# many as the projection itself at r = d/2:

# %%
for r in (r_one_percent, d // 2):
    print(f"r = {r:>4}: adapter on one projection {r * 2 * d:>10,} parameters vs the projection {d * d:,} "
          f"({100 * r * 2 * d / (d * d):.0f} %)")
