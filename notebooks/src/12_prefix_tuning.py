# %% [markdown]
# # 12 · Prefix tuning and p-tuning v2: a prompt in every layer
#
# Prompt tuning (chapter 11) trains vectors at the *input*; every frozen layer then computes their keys and
# values itself. **Prefix tuning** (Li & Liang 2021, arXiv 2101.00190) trains the keys and values directly,
# `p` of each in the attention of *every* layer. For a real token's query `q` in layer l:
#
# `attention(q) = softmax(q [K_l^prefix ; K_l]ᵀ / √hs) [V_l^prefix ; V_l]`
#
# That is exactly a key/value cache of length p, the object a GPT keeps while it generates; minilora's GPT
# takes it as `past_key_values`, and its attention backward returns the cache's gradient
# (`GPT.input_grads["past_key_values"]`), both general features of the engine.
#
# **P-tuning v2** (Liu et al. 2022, arXiv 2110.07602) is the same computation under another name: "deep prompt
# tuning", trainable prompts in every layer, and the finding that Li & Liang's reparameterization is mostly
# unnecessary. PEFT has one config for both, `PrefixTuningConfig`; minilora uses its names and semantics, and the
# tests check logits, loss and gradients against PEFT 0.21.2 on transformers' GPT-2.

# %%
import matplotlib.pyplot as plt
import numpy as np

import minilora
from minilora import data
from minilora.experiments import methods as M
from minilora.experiments import methods_plots as plots
from minilora.experiments import methods_probe as probe
from minilora.nn.gradcheck import gradcheck
from minilora.peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, prefix_tuning, prompt_tuning
from minilora.peft.prefix_tuning import PrefixTuningModel, past_key_values_to_prefix, prefix_to_past_key_values
from minilora.show import show_source

base = minilora.load_base_model()
fig = plots.prefix_diagram(num_virtual_tokens=2, seq_len=4, n_layer=base.config.n_layer)
plt.show()

# %% [markdown]
# ## Shapes: one matrix, every layer's keys and values
#
# PEFT stores the whole prefix as one matrix of shape `(p, n_layer · 2 · C)`: row j holds, layer by layer,
# the key and then the value of virtual token j, each `C = n_head · head_size` wide. `prefix_to_past_key_values`
# cuts it into one `(k, v)` pair per layer, each `(B, n_head, p, head_size)` (the batch is a broadcast view:
# every sequence gets the same prefix). On the base model:

# %%
c = base.config
P = 8
model = prefix_tuning.apply(minilora.load_base_model(), PrefixTuningConfig(P), seed=0)
flat = model.get_prompt()
past = prefix_to_past_key_values(flat, 3, c.n_layer, c.n_head)
print(f"flat prefix {flat.shape} = (p, n_layer · 2 · n_embd) = ({P}, {c.n_layer} · 2 · {c.n_embd})")
print(f"past_key_values: {len(past)} layers, each (k {past[0][0].shape}, v {past[0][1].shape})")
print(f"layer 1's values are columns {3 * c.n_embd}..{4 * c.n_embd - 1} of the flat matrix: "
      f"{np.array_equal(past[1][1][0], flat[:, 3 * c.n_embd:].reshape(P, c.n_head, -1).transpose(1, 0, 2))}")
print(f"and the gradient path back sums over the batch of 3: "
      f"{np.allclose(past_key_values_to_prefix(past), 3 * flat, rtol=1e-6)} (equal to float32 rounding)")

# %% [markdown]
# The trained numbers grow with depth: `p · n_layer · 2 · C` against prompt tuning's `p · C`. At scale, with
# p = 20 (`M.parameter_counts`; the projection's hidden width H = n_embd, PEFT's default):

# %%
counts = {name: M.parameter_counts(shape, num_virtual_tokens=20) for name, shape in M.SHAPES.items()}
rows = ["full fine-tuning", "LoRA (r=8, q and v)", "prompt tuning (p=20)", "prefix tuning (p=20)",
        "prefix tuning + projection (p=20, H=d)"]
print(f"{'method':40s}" + "".join(f"{name:>18s}" for name in counts))
for row in rows:
    print(f"{row:40s}" + "".join(f"{cnt[row]:18,d}" for cnt in counts.values()))
for name, shape in M.SHAPES.items():
    print(f"{name}: prefix / prompt tuning = {counts[name][rows[3]] // counts[name][rows[2]]} = 2 · n_layer "
          f"(n_layer = {shape.n_layer})")

# %% [markdown]
# With the projection (Li & Liang §4.3: `prefix = W2 tanh(W1 E + b1) + b2`, trained for stability and thrown
# away afterwards) the trained count is dominated by `W2`, `(2 · n_layer · C) × H`; PEFT saves only its output,
# `(p, 2 · n_layer · C)`, so the file is the same size as without it.
#
# ## The code
#
# `PrefixTuningModel` is the prompt wrapper of chapter 11 with a different forward: the prefix goes in as
# `past_key_values`, and the backward reads its gradient from the GPT:

# %%
show_source(PrefixTuningModel.forward, PrefixTuningModel.backward, prefix_to_past_key_values)

# %% [markdown]
# Gradient checks in float64 through a tiny GPT (weights far from their initialization), with and without the
# projection:

# %%
rng = np.random.default_rng(0)
idx, targets = rng.integers(0, 7, (2, 4)), rng.integers(0, 7, (2, 4))
for projection in (False, True):
    errors = gradcheck(prefix_tuning.apply(M.gradcheck_gpt(), PrefixTuningConfig(3, projection, 5)), idx, targets)
    print(f"prefix_projection={projection!s:5s}: {len(errors)} trainable arrays, largest relative error "
          f"{max(errors.values()):.1e}")

# %% [markdown]
# ## Prompt tuning is a special case of prefix tuning
#
# In a prompt-tuned model the virtual tokens come first and attend only to each other, so the keys and values
# every layer computes for them do not depend on the input. Computing them once and handing them to the GPT as
# a prefix must give the same model (`probe.prompt_as_prefix`). Checked in float64 on a prompt-tuned base GPT:

# %%
prompt_model = prompt_tuning.apply(minilora.load_base_model().to("float64"), PromptTuningConfig(P), seed=0)
as_prefix = probe.prompt_as_prefix(prompt_model)
eval_idx, eval_targets = data.heldout_eval_batch(128)
diff = np.abs(as_prefix.forward(eval_idx)[0] - prompt_model.forward(eval_idx)[0]).max()
print(f"max |logits(prompt) − logits(the same prompt as a prefix)| = {diff:.1e} in float64")
print(f"the prompt: {prompt_model.num_params(trainable_only=True):,d} numbers; the prefix they induce: "
      f"{as_prefix.get_prompt().size:,d} numbers, fixed by the frozen layers")

# %% [markdown]
# So prompt tuning chooses its `n_layer · 2` key and value matrices only through one `(p, C)` matrix at the
# input, which the frozen network maps to the rest; prefix tuning (p-tuning v2) sets all of them freely. The
# positions work out the same way: after a prefix of length p, the real tokens take positions p .. p+T−1 (as
# after a key/value cache in transformers' GPT-2). Chapter 11 measured that this costs the shipped base
# nothing (it was pretrained at random position offsets); the same measurement at the shift p = 8 used here
# (`M.shifted_exact_match`):

# %%
shifted = M.shifted_exact_match(base, [0, P])
print(", ".join(f"{task} {row[0]:.3f} → {row[1]:.3f}" for task, row in shifted.items()))
assert all(abs(row[0] - row[1]) < 0.02 for row in shifted.values()), "the shift by p costs the base model"

# %% [markdown]
# ## Training: deep prompts against a shallow one
#
# Same recipe as chapter 11 (`M.seed_runs`: `recipe.finetune` with `M.RECIPE`, each method at the recipe's
# `DEFAULT_LR`, three seeds; printed below the table). p = 8 prefix positions train 8 · 2 · 2 · 64 = 2,048 numbers, as
# many as LoRA with r = 4 on q and v in both layers, the budget-matched comparison.

# %%
runs = {
    "prefix tuning": M.seed_runs(PrefixTuningConfig(P), keep_models=True, eval_every=30),
    "prompt tuning": M.seed_runs(PromptTuningConfig(P), eval_every=30),
    "LoRA r=4 on q, v": M.seed_runs(LoraConfig(r=4, lora_alpha=4), eval_every=30),
}
print(M.runs_table(runs))
print(f"\n{M.recipe_line()}: " + ", ".join(f"{label} {r.reports[0]['lr']:g}" for label, r in runs.items()))

# %%
fig = plots.runs_plot(runs, "exact_match", "held-out task: exact match (mean over 3 seeds, min–max band)")
plt.show()

# %% [markdown]
# Computed from the runs:

# %%
deep, shallow, lora = runs.values()
print(f"1. the deep prompt's (prefix) exact match is {M.compared(deep, shallow)} the shallow one's (prompt) "
      f"({deep.mean():.3f} vs {shallow.mean():.3f}), and its token accuracy "
      f"{M.compared(deep, shallow, 'token_acc_after')} the shallow one's ({deep.mean('token_acc_after'):.3f} vs "
      f"{shallow.mean('token_acc_after'):.3f})")
print(f"2. with the same {deep.trainable:,d} trained numbers, prefix tuning's exact match is {M.compared(deep, lora)} "
      f"LoRA's ({deep.mean():.3f} vs {lora.mean():.3f})")
assert M.verdict(deep, shallow) == "higher"

# %% [markdown]
# Liu et al. (2022) report that deep prompts close most of the gap between prompt tuning and fine-tuning at
# scales where prompt tuning alone falls short. The assertion holds the part this model can test: every prefix
# seed answers more held-out sequences exactly than every prompt seed. How much of the gap to a weight update
# remains is line 2, against LoRA with the same number of trained numbers.
#
# ## What a prefix can and cannot change
#
# The identity of chapter 11 holds in every layer, now with the trained keys and values: a real token's
# attention output is `(1 − λ) · y_base + λ · u`, with `y_base` what the frozen layer does with the real tokens'
# values, λ the weight on the prefix and `u` a mix of the prefix values. Checked in layer 0 of the trained
# prefix (`probe.attention_decomposition`, float32):

# %%
dec = probe.attention_decomposition(deep.models[0], eval_idx)  # seed 0, trained above
print(f"max |y − ((1 − λ) y_base + λ u)| = {dec['decomposition_error']:.1e}; real tokens' renormalized attention "
      f"vs the base model's: {dec['real_attention_error']:.1e}; vs the model's own forward: {dec['model_error']:.1e}")
print("all at float32 rounding level (< 1e-4)" if max(dec["decomposition_error"], dec["real_attention_error"],
                                                      dec["model_error"]) < 1e-4 else "not all at rounding level")
lam = dec["lambda"]
print(f"λ: median {np.median(lam):.2f}, 5th–95th percentile {np.percentile(lam, 5):.2f}–{np.percentile(lam, 95):.2f}")
fig = plots.lambda_histogram(lam, "prefix tuning: how much attention the prefix takes (layer 0)")
plt.show()

# %% [markdown]
# In every layer a prefix can re-weight how much of the frozen attention a token keeps and what it adds from
# its own values; how the real tokens' values are weighted against each other stays the frozen model's.
# Chapter 13 trains a change of the values themselves that an adapter can learn and a prefix cannot.
#
# ## Exercises
#
# 1. Li & Liang train through the projection (`prefix_projection=True`) for stability; Liu et al. (2022) find
#    it mostly unnecessary. Compare the two (projection width H = 64), three seeds each. The recipe's default
#    learning rate for `"prefix"` was chosen without the projection: pick the projection's from a short sweep.
# 2. Vary the prefix length p ∈ {1, 4, 15}, three seeds each. Where does exact match stop improving?
# 3. Save a projected prefix with `save_prompt_adapter`. Check that `adapter_model.safetensors` holds only the
#    `(p, n_layer · 2 · C)` output, that loading it for inference gives the same logits, and that resuming
#    training needs minilora's encoder file.
#
# Worked solutions: `notebooks/solutions/12_prefix_tuning_solutions.ipynb`.
