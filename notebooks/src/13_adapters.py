# %% [markdown]
# # 13 · Adapters: a small network inside every block
#
# Houlsby et al. (2019, "Parameter-Efficient Transfer Learning for NLP", arXiv 1902.00751) were first to
# fine-tune a frozen transformer through a handful of new parameters. Their **adapter** is a bottleneck network
# with a skip connection: project the d-dimensional hidden state down to m ≪ d, apply a nonlinearity, project
# back up, add the input:
#
# `h ↦ h + g(h)`, `g(h) = W_up f(W_down h + b_down) + b_up`, `W_down ∈ R^{m×d}`, `W_up ∈ R^{d×m}`
#
# Two adapters go into every block, after the attention sublayer and after the feed-forward sublayer, before the
# block adds its residual (Houlsby et al. §2.1, Figure 2). Only the adapters train here (Houlsby et al. also
# train the layer-normalization parameters; minilora, like AdapterHub's `train_adapter`, does not). Pfeiffer
# et al. (2021, arXiv 2005.00247) later kept only the second one. PEFT has no adapters; minilora follows the
# `adapters` library (AdapterHub): `DoubleSeqBnConfig` is Houlsby's, `SeqBnConfig` Pfeiffer's, with its names
# (`reduction_factor`, `non_linearity`, `adapter_down`, `adapter_up`).

# %%
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import minilora
from minilora import data
from minilora.experiments import methods as M
from minilora.experiments import methods_plots as plots
from minilora.experiments.methods_probe import value_reflection_probe
from minilora.nn.gradcheck import gradcheck
from minilora.nn.modules import attention_branch_backward
from minilora.peft import (
    BlockWithAdapters,
    BottleneckAdapter,
    DoubleSeqBnConfig,
    LoraConfig,
    SeqBnConfig,
    adapters,
    load_adapters,
    save_adapters,
)
from minilora.peft.adapters_io import adapters_nbytes
from minilora.show import show_source

fig = plots.adapter_diagram(houlsby=True)
plt.show()

# %% [markdown]
# ## Configurations, shapes and parameter counts
#
# AdapterHub's two configurations, as minilora holds them, and the bottleneck width on the base GPT
# (`m = n_embd // reduction_factor`):

# %%
base = minilora.load_base_model()
d = base.config.n_embd
for config in (DoubleSeqBnConfig(), SeqBnConfig()):
    m = config.bottleneck_size(0, d)
    print(config)
    print(f"  m = {d} // {config.reduction_factor} = {m}; one adapter: 2·m·d + d + m = {2 * m * d + d + m:,d} "
          f"parameters; per block: {config.mh_adapter + config.output_adapter}")

# %% [markdown]
# At scale, with reduction factor 16 (`M.parameter_counts`):

# %%
counts = {name: M.parameter_counts(shape, reduction_factor=16) for name, shape in M.SHAPES.items()}
rows = ["full fine-tuning", "LoRA (r=8, q and v)", "Houlsby adapters (reduction 16)",
        "Pfeiffer adapters (reduction 16)"]
print(f"{'method':34s}" + "".join(f"{name:>18s}" for name in counts))
for row in rows:
    print(f"{row:34s}" + "".join(f"{cnt[row]:18,d}" for cnt in counts.values()))
gpt3 = counts["GPT-3 175B"]
print(f"\non GPT-3, Houlsby adapters at reduction 16 train {gpt3[rows[2]] / gpt3[rows[0]]:.1%} of the model, "
      f"{gpt3[rows[2]] / gpt3[rows[1]]:.0f}x LoRA r = 8")

# %% [markdown]
# ## The code
#
# The bottleneck and the block it goes into. The block keeps its children's names (`ln_1`, `attn`, `ln_2`,
# `mlp`), so the frozen weights keep theirs; the adapters are `attention_adapters` and `output_adapters`. The
# attention branch's backward is the plain block's (`attention_branch_backward`, shown last):

# %%
show_source(BottleneckAdapter.forward, BottleneckAdapter.backward, BlockWithAdapters.forward,
            BlockWithAdapters.backward, BlockWithAdapters._adapt, BlockWithAdapters._adapt_backward,
            attention_branch_backward)

# %% [markdown]
# On GPT-2-style pre-LayerNorm blocks AdapterHub feeds Houlsby's adapter the sublayer output `h` and
# Pfeiffer's the sum `h + x` with the block's residual (`original_ln_before=True`); `_adapt` is both. Gradient
# checks in float64 through a tiny GPT, with the adapters moved off their initialization so that every path
# carries gradient:

# %%
rng = np.random.default_rng(0)
idx, targets = rng.integers(0, 7, (2, 4)), rng.integers(0, 7, (2, 4))
for config in (DoubleSeqBnConfig(reduction_factor=2), SeqBnConfig(reduction_factor=2)):
    model = adapters.apply(M.gradcheck_gpt(), config, seed=1)
    for name in model.trainable_names():
        model.params[name][...] += rng.normal(0, 0.3, model.params[name].shape)
    errors = gradcheck(model, idx, targets)
    print(f"{type(config).__name__:17s} {len(errors):2d} trainable arrays, largest relative error "
          f"{max(errors.values()):.1e}")

# %% [markdown]
# ## Near-identity initialization
#
# Houlsby et al. initialize the adapters near zero, so that the adapted model starts as the pretrained one.
# AdapterHub offers three initializations (`init_weights`): `"bert"` (its default, both weights N(0, 0.02)),
# `"mam_adapter"` (`W_up = 0`: exactly the identity) and `"houlsby"` (N(0, 0.01) truncated at two standard
# deviations). How far each moves the base model's logits before any training:

# %%
eval_idx, eval_targets = data.heldout_eval_batch(128)
base_logits, _ = base.forward(eval_idx)
for init in adapters.INIT_WEIGHTS:
    adapted = adapters.apply(minilora.load_base_model(), DoubleSeqBnConfig(init_weights=init), seed=0)
    change = np.abs(adapted.forward(eval_idx)[0] - base_logits).max() / np.abs(base_logits).max()
    print(f"init_weights={init!r:14s}: max |Δ logits| / max |logits| = {change:.1e}")

# %% [markdown]
# ## Training on the held-out task
#
# The recipe of chapters 11 and 12 (`M.seed_runs`: `recipe.finetune` with `M.RECIPE`, the method's
# `DEFAULT_LR`, three seeds). Houlsby's two adapters per block at reduction 16 train 2,320 numbers; the nearest
# LoRA is r = 4 on q and v (2,048).

# %%
runs = {
    "Houlsby (DoubleSeqBn)": M.seed_runs(DoubleSeqBnConfig(), keep_models=True, eval_every=30),
    "Pfeiffer (SeqBn)": M.seed_runs(SeqBnConfig(), eval_every=30),
    "LoRA r=4 on q, v": M.seed_runs(LoraConfig(r=4, lora_alpha=4), eval_every=30),
}
print(M.runs_table(runs))
print(f"\n{M.recipe_line()}: " + ", ".join(f"{label} {r.reports[0]['lr']:g}" for label, r in runs.items()))
houlsby, pfeiffer, lora = runs.values()
print(f"\nHoulsby's exact match is {M.compared(houlsby, pfeiffer)} Pfeiffer's, with "
      f"{houlsby.trainable / pfeiffer.trainable:.0f}x the parameters, and {M.compared(houlsby, lora)} LoRA r = 4's "
      f"({houlsby.mean():.3f} vs {lora.mean():.3f})")
improved = all((r.values("exact_match_after") > r.values("exact_match_before")).all() for r in (houlsby, pfeiffer))
print(f"every adapter run raises the exact match above the base model's: {improved}")
assert improved

# %%
fig = plots.runs_plot(runs, "token_acc", "held-out task: token accuracy (mean over 3 seeds, min–max band)")
plt.show()

# %% [markdown]
# The adapters change no positions (the real tokens stay at 0 .. T−1), unlike PEFT's prompt methods; on this
# base that makes no difference (chapter 11 measured the shift's cost: nothing measurable). What adapters cost
# instead is inference: LoRA's `B A` merges into `W0`, an adapter cannot be merged (its nonlinearity sits
# between the two projections), so every token pays its two matrix products in every block. Per token,
# counted from the shapes:

# %%
for name, shape in M.SHAPES.items():
    dd, L = shape.d_model, shape.n_layer
    mm = int(dd // 16)
    extra = 2 * L * 2 * mm * dd  # two adapters per block, two (m × d) products each, in multiply-adds
    block = L * sum(o * i for _, o, i in shape.block_linears())  # the weight multiply-adds of the blocks
    print(f"{name:11s}: Houlsby adapters add {extra:,d} multiply-adds per token, "
          f"{extra / block:.2%} of the blocks' weight multiply-adds; a merged LoRA adds 0")

# %% [markdown]
# These are counts, not timings (minilora's speed claims live in `benchmarks/`).
#
# ## What an adapter can change that a prompt cannot
#
# Chapters 11 and 12 showed that a prompt or a prefix can only produce `(1 − λ) · y_base + λ · u` in each layer:
# dilute what the frozen attention does with the real tokens' values and add a mix of its own. An adapter
# after the attention applies a function of its own to the result. A test of that difference
# (`minilora.experiments.methods_probe`): make layer 0's frozen attention act as if every value were
# reflected, `v ↦ R v` with `R = I − 2 e eᵀ` for a random unit vector e, and train either a 4-position prefix
# or a 4-unit adapter (relu) to do it. For the adapter the required change of the output is a rank-1 linear
# map, which two relu units represent exactly. The measure is the part of the required change still missing on
# held-out inputs (1: nothing learned, 0: all of it), three seeds each:

# %%
probe = {kind: [value_reflection_probe(kind, seed=s, steps=300, lr=0.1 if kind == "prefix" else 0.03)
                for s in M.SEEDS] for kind in ("prefix", "adapter")}
for kind, results in probe.items():
    missing = np.array([r["remaining"] for r in results])
    print(f"{kind:8s} ({results[0]['trainable']} trained): still missing {missing.mean():.3f} "
          f"(range {missing.min():.3f}–{missing.max():.3f})")
worst_adapter = max(r["remaining"] for r in probe["adapter"])
best_prefix = min(r["remaining"] for r in probe["prefix"])
print(("every adapter run ends closer to the target than every prefix run"
       if worst_adapter < best_prefix else "the two overlap in some seeds")
      + f" (worst adapter {worst_adapter:.3f}, best prefix {best_prefix:.3f})")
assert worst_adapter < best_prefix, "the probe no longer separates the adapter from the prefix"

fig, ax = plt.subplots(figsize=(6.4, 3.4))
for kind, results in probe.items():
    for i, r in enumerate(results):
        ax.semilogy(r["history"].loss, color="C0" if kind == "prefix" else "C1", lw=1,
                    label=kind if i == 0 else None)
ax.set(xlabel="step", ylabel="training MSE", title="layer 0 with reflected values: prefix vs adapter")
ax.legend()
plt.show()

# %% [markdown]
# ## Saving
#
# PEFT has no bottleneck adapters, so minilora writes its own documented layout: `adapter_config.json` shaped
# like AdapterHub's (its configuration keys, with the values minilora supports) and `adapter.safetensors` with
# the adapter weights under the model's parameter names (`minilora/peft/adapters_io.py`). A round trip is exact:

# %%
trained = houlsby.models[0]
with tempfile.TemporaryDirectory() as directory:
    save_adapters(trained, directory)
    loaded = load_adapters(minilora.load_base_model(), directory)
same = np.array_equal(loaded.forward(eval_idx)[0], trained.forward(eval_idx)[0])
print(f"reloaded logits equal bit for bit: {same}; {adapters_nbytes(trained):,d} bytes on disk for "
      f"{trained.num_params(trainable_only=True):,d} trained numbers")

# %% [markdown]
# ## Exercises
#
# 1. Sweep the reduction factor (4, 16, 64: m = 16, 4, 1) for Houlsby adapters, three seeds each. How do exact
#    match and the parameter count trade off?
# 2. Compare Houlsby and Pfeiffer at a matched budget: Pfeiffer with reduction factor 8 trains 2,192 numbers,
#    Houlsby with 16 trains 2,320. Which placement does more with the same budget here?
# 3. `adapters.unload_adapters(model)` takes the adapters out again. Check that the result computes the base
#    model's logits bit for bit, and that the base weights did not change during training.
#
# Worked solutions: `notebooks/solutions/13_adapters_solutions.ipynb`.
