# %% [markdown]
# # 14 · Every method on one page: full fine-tuning, LoRA, QLoRA, prompts, prefixes and adapters
#
# Chapters 02–13 each taught one way to adapt a pretrained model. This chapter puts all seven side by side,
# on **one task** (the held-out task `sort_desc`, which the shipped base GPT never saw), from **one base**
# (`minilora.load_base_model()`), with **one training recipe**. Only two things differ between the rows: what
# the method trains, and its learning rate.
#
# | method | what trains | chapter |
# |---|---|---|
# | full fine-tuning | every parameter | 02 |
# | LoRA | `s·BA` beside the frozen q and v projections | 02–03 |
# | QLoRA | the same kind of adapter, on a base stored in 4-bit NF4 | 10 |
# | prompt tuning | `p` virtual-token embeddings before the input | 11 |
# | p-tuning | the same virtual tokens, produced by an MLP prompt encoder | 11 |
# | prefix tuning / p-tuning v2 | `p` key/value prefixes in every layer's attention | 12 |
# | adapters (Houlsby) | two bottleneck MLPs in every block | 13 |
#
# Every run goes through the same function, `minilora.experiments.recipe.finetune`. It applies the method
# with `get_peft_model`, the library's single entry point, and trains with the `Recipe`. Here is how
# `prepare` picks the method from the config:

# %%
import inspect

import numpy as np

import minilora
from minilora import figures
from minilora.experiments import compare as C
from minilora.experiments.recipe import DEFAULT_LR, prepare

print(inspect.getsource(prepare))

# %% [markdown]
# For QLoRA the config is a `LoraConfig` and `quantization=QuantizationConfig()`: the base is first stored in
# 4 bits (`quantize_base`, what transformers' `BitsAndBytesConfig(load_in_4bit=True)` does on loading), then
# `get_peft_model` puts LoRA on the 4-bit layers. These are the same two steps PEFT takes.
#
# ## The recipe and the configurations

# %%
recipe = C.CHAPTER_RECIPE
per_method = recipe.describe("lora").replace(f"learning rate {DEFAULT_LR['lora']:g}", "learning rate (per method)")
print("every run:", per_method)
print(f"seeds {C.SEEDS}; held-out evaluation on {minilora.data.heldout_eval_batch()[0].shape[0]} sequences\n")
defaults, budget = C.default_configs(), C.budget_configs()
for method, (config, quant) in defaults.items():
    print(f"{method:8s} lr {DEFAULT_LR[method]:<6g} {'every parameter' if config is None else config}"
          + (f"  + {quant}" if quant else ""))

# %% [markdown]
# Each method keeps its library defaults, with PEFT's (or AdapterHub's) names. Its learning rate is the best
# of a sweep over `C.LR_GRID` with this recipe (`C.lr_sweep`, exercise 1). The same rule gives full fine-tuning,
# LoRA and QLoRA the rates chapters 02 and 10 use.
#
# Default configurations differ a lot in size. So a second set, the **budget-matched** one, gives every PEFT
# method the configuration (rank, prompt length, encoder width, bottleneck) whose trainable-parameter count
# is nearest a common budget:

# %%
print(f"budget: {C.BUDGET:,d} trainable parameters")
for method, (config, _) in budget.items():
    knob, _ = C.BUDGET_KNOBS[method]
    value = getattr(config, knob)
    print(f"  {method:8s} {knob} = {value:g}")

# %% [markdown]
# ## The run
#
# `C.comparison()` trains every configuration once per seed of `C.SEEDS` (a budget configuration equal to its
# default reuses that row). It measures everything in the table:
#
# * **trainable** is PEFT's count;
# * **bytes** is what `save_adapter` writes (for full fine-tuning, the whole model). **infer. B** is the part
#   inference needs: p-tuning also saves its encoder so training can resume, while PEFT's file holds only
#   the encoder's output;
# * **memory** is `peft.memory.measure` after one training step: the bytes of the real arrays (weights,
#   gradients, AdamW state, activations);
# * **step** is the median time of one training step relative to full fine-tuning. The methods are timed in
#   turn, in one process, so a busy machine slows them all alike;
# * **steps to loss** is the first step at which the running mean of the training loss over 10 steps reaches
#   the threshold (mean ± std over the seeds that got there);
# * **exact match** is the fraction of held-out sequences answered exactly right (mean ± std over seeds).

# %%
res = C.comparison()
rows, brows = res["defaults"], res["budget"]
print("each method's defaults:\n" + C.table(rows))
print(f"\nbudget-matched (≈{C.BUDGET:,d} trainable parameters):\n" + C.table(brows))

# %%
fig = figures.draw("peft_methods")

# %% [markdown]
# ## What the table says

# %%
em = {k: C.spread(r["exact_match"]) for k, r in rows.items()}
ranked = sorted(em, key=lambda k: -em[k][0])
reached = [k for k, r in rows.items() if all(s is not None for s in r["steps_to_threshold"])]
never = [k for k, r in rows.items() if all(s is None for s in r["steps_to_threshold"])]
print(f"Ranked by mean exact match: {', '.join(f'{k} {em[k][0]:.3f}' for k in ranked)}.")
print(f"Every seed reached the loss threshold {C.LOSS_THRESHOLD:g} with: {', '.join(reached) or 'none'}; "
      f"no seed did with: {', '.join(never) or 'none'}.")
full_p, lora_p = rows["full"]["trainable"], rows["lora"]["trainable"]
print(f"LoRA trains {lora_p:,d} parameters, {100 * lora_p / full_p:.1f}% of full fine-tuning's {full_p:,d}. "
      f"It reaches {em['lora'][0] / em['full'][0]:.0%} of full fine-tuning's exact match and ships "
      f"{rows['full']['bytes'] / rows['lora']['bytes']:.0f}× fewer bytes.")

# %% [markdown]
# **LoRA and QLoRA.** The two differ by the 4-bit base (and, at their defaults, by QLoRA's larger all-linear
# adapter). The budget-matched rows give both the same adapter, r = 4 on q and v, so what is left is the
# base alone:

# %%
def verdict(a, b, z=2.0):
    """Is mean(a) above or below mean(b) by more than z standard errors over the seeds?"""
    a, b = np.asarray(a, float), np.asarray(b, float)
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    diff = a.mean() - b.mean()
    return "within the seed spread of" if abs(diff) <= z * se else ("above" if diff > 0 else "below")


lq, qq = brows["lora"], brows["qlora"]
print(f"Same adapter (r = 4, q and v): LoRA exact match {C.spread(lq['exact_match'])[0]:.3f}, QLoRA "
      f"{C.spread(qq['exact_match'])[0]:.3f}. QLoRA is {verdict(qq['exact_match'], lq['exact_match'])} LoRA.")
print(f"QLoRA's training memory: {qq['memory'].total:,d} bytes against LoRA's {lq['memory'].total:,d} "
      f"({qq['memory'].weights:,d} vs {lq['memory'].weights:,d} bytes of weights).")
tq, tl = rows["qlora"]["step_ratio"], rows["lora"]["step_ratio"]
print(f"One QLoRA step takes {tq:.2f}× a full fine-tuning step, LoRA's {tl:.2f}×"
      + (": QLoRA pays for dequantizing every 4-bit weight in the forward and again in the backward."
         if tq > tl else ": here the dequantization does not show in the step time."))

# %% [markdown]
# **Memory.** Each row of the memory panel splits into weights, gradients, optimizer state and activations:

# %%
for k, r in rows.items():
    m = r["memory"]
    print(f"{k:8s} weights {m.weights:>9,d}  gradients {m.gradients:>8,d}  optimizer {m.optimizer:>8,d}  "
          f"activations {m.activations:>9,d}  total {m.total:>9,d}")
state = {k: r["memory"].gradients + r["memory"].optimizer for k, r in rows.items()}
longer = [k for k in ("prompt", "ptuning") if rows[k]["memory"].activations > rows["full"]["memory"].activations]
small = all(r["memory"].weights < r["memory"].activations for r in rows.values())
print(f"\nFor every method the weights take {'less' if small else 'not always less'} memory than the activations "
      f"of one batch of {recipe.batch_size}: on a model this small, memory is not where the methods differ most "
      "(chapter 10 computes LLaMA-65B, where it is).")
print(f"The activations of {' and '.join(longer) or 'no prompt method'} exceed full fine-tuning's: "
      f"their sequences are {defaults['prompt'][0].num_virtual_tokens} virtual tokens longer in every layer. "
      f"Full fine-tuning's gradients and AdamW state cost {state['full']:,d} bytes, LoRA's {state['lora']:,d}.")

# %% [markdown]
# ## The prompt methods on a small model
#
# Prompt tuning, p-tuning and prefix tuning all move the real tokens `p` positions later. The virtual tokens
# take positions 0..p−1, or sit in a key/value cache of length p, as in Hugging Face GPT-2 with PEFT
# (chapters 11–12). The shipped base was pretrained with its tasks starting at random offsets, so the shift
# alone should not hurt it. Here is the check, on the tasks it *was* pretrained on, before any prompt:

# %%
from minilora.experiments.methods import shifted_exact_match  # chapter 11's measurement

shifts = (0, 1, 2, 4, 8)
per_task = shifted_exact_match(minilora.load_base_model(), shifts)
shifted = {s: float(np.mean([row[i] for row in per_task.values()])) for i, s in enumerate(shifts)}
for s, v in shifted.items():
    print(f"positions shifted by {s}: mean exact match {v:.3f} over the pretraining tasks {list(per_task)}")
cost = shifted[0] - min(shifted.values())
print(f"The shift costs the base model at most {cost:.3f} of its mean exact match: the positions are not what "
      "holds the prompt methods back.")
assert cost < 0.02, "the base model is no longer position-robust: the prompt rows include a position cost"

# %% [markdown]
# **A prompt can only steer computation the frozen model already does.** It cannot retrain a projection or
# an MLP. Lester et al. (2021) found prompt tuning weakest on small models, with the gap to full fine-tuning
# closing only at billions of parameters; Liu et al. (2022) found deep prompts (p-tuning v2, a prefix in every
# layer) narrowing it at smaller scale. LoRA and adapters instead change the computation inside every block.
# On this model of about 100,000 parameters:

# %%
final = {k: float(np.mean(r["loss"])) for k, r in rows.items()}
for k in sorted(("lora", "adapter", "prefix", "prompt", "ptuning"), key=final.get):
    print(f"{k:8s} held-out loss {final[k]:.3f}  exact match {em[k][0]:.3f}  "
          f"steps to loss {C.LOSS_THRESHOLD:g}: {C.threshold_summary(rows[k]['steps_to_threshold'])}")
deep = verdict(rows["prefix"]["loss"], rows["prompt"]["loss"])
print(f"\nDeep prompts against one prompt at the input: prefix tuning's held-out loss is {deep} prompt tuning's "
      f"({final['prefix']:.3f} vs {final['prompt']:.3f}).")
block = [k for k in ("lora", "adapter") if final[k] < min(final[m] for m in ("prompt", "ptuning"))]
ends = "ends" if len(block) == 1 else "end"
print(f"Of the methods that change the blocks, {' and '.join(block) or 'neither'} {ends} below both input-prompt "
      f"methods; in {recipe.steps} steps LoRA reaches exact match {em['lora'][0]:.3f}, the adapters "
      f"{em['adapter'][0]:.3f} (an exact answer needs all {minilora.data.N_DIGITS} digits right).")

# %% [markdown]
# ## Budget-matched: the same number of trainable parameters
#
# Every PEFT method at the configuration nearest the common budget (printed above; full fine-tuning has no
# such knob):

# %%
bem = {k: C.spread(r["exact_match"]) for k, r in brows.items()}
for k, r in brows.items():
    print(f"{k:8s} {r['trainable']:>6,d} trainable  exact match {bem[k][0]:.3f} ± {bem[k][1]:.3f}  "
          f"steps to loss {C.LOSS_THRESHOLD:g}: {C.threshold_summary(r['steps_to_threshold'])}")
best = max(bem, key=lambda k: bem[k][0])
second = sorted(bem, key=lambda k: -bem[k][0])[1]
print(f"\nWith about {C.BUDGET:,d} trainable parameters each, {best} does best ({bem[best][0]:.3f}); the next, "
      f"{second} ({bem[second][0]:.3f}), is {verdict(brows[second]['exact_match'], brows[best]['exact_match'])} it. "
      f"Prompt tuning cannot spend the budget: p + 17 tokens must fit the block of "
      f"{minilora.load_base_model().config.block_size}, so it stops at p = {budget['prompt'][0].num_virtual_tokens} "
      f"({brows['prompt']['trainable']:,d} parameters).")

# %% [markdown]
# ## Exercises
#
# 1. **Learning rates.** Re-run `C.lr_sweep("adapter")` and check that its lowest loss is at `DEFAULT_LR["adapter"]`.
#    Does the adapter's exact match in the table change much between the two best rates of the grid?
# 2. **A larger bottleneck.** Train adapters with `reduction_factor=4` (m = 16 hidden units) for one seed with
#    `C.compare`. How do the trainable parameters, the bytes and the held-out loss change against the default
#    (m = 4)? Compare with LoRA's default.
# 3. **Where LoRA saves time.** A frozen weight gets no weight gradient, so LoRA skips one matmul per frozen
#    layer in the backward, and its side path adds two thin ones. Time LoRA on q and v against LoRA on every
#    linear layer (`target_modules="all-linear"`) with `C.step_time_ratios`. Which is faster, and why?
#
# Worked solutions: `notebooks/solutions/14_peft_methods_solutions.ipynb`.
