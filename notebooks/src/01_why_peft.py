# %% [markdown]
# # 01 · Why parameter-efficient fine-tuning?
#
# The blog's first section: since BERT the recipe has been *pretrain, then fine-tune for each task*. A
# fully fine-tuned model is a complete copy of the base model, one copy per task. That was bearable for
# BERT. It is not for GPT-3 (175B parameters). PEFT methods train, and store, only a small number of extra
# parameters per task.
#
# This notebook does the parameter and storage arithmetic twice: for a tiny GPT (with a real adapter file
# written and measured) and for GPT-3 175B (the numbers of the LoRA paper, Hu et al. 2021, §4.2 and §6;
# collected in `docs/facts.md` §6).

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import minilora
from minilora import data
from minilora.peft import LoraConfig, count_parameters, inject_lora, lora_parameter_count, save_adapter
from minilora.peft.inject import find_targets
from minilora.show import log_ticks, show_source

gpt = minilora.load_base_model()  # the small GPT shipped with minilora (minilora/assets/base_gpt.npz)
config = gpt.config
total = gpt.num_params()
full_bytes = sum(p.nbytes for p in gpt.params.values())
print(config)
print(f"parameters: {total:,d}   float32 checkpoint: {full_bytes:,d} bytes")
print({name: p.shape for name, p in gpt.params.items() if name.startswith("blocks.0.")})
print(f"pretrained on the tasks {data.PRETRAIN_TASKS}; never shown the task {data.HELDOUT_TASK!r}")

# %% [markdown]
# This is the model the LoRA chapters fine-tune. It was pretrained on the four digit tasks printed above
# and has never seen the task it will be taught (sort descending). Each block has four
# attention projections (`q_proj`, `k_proj`, `v_proj`, `o_proj`, each `d × d`) and a feed-forward
# pair (`up_proj`, `d → 4d`, and `down_proj`, `4d → d`), as printed above.
#
# ## Counting LoRA's parameters
#
# Each adapted `d × k` weight gets `A (r × k)` and `B (d × r)`: `r (d + k)` new parameters. That is all
# `lora_parameter_count` does; here is its source, read from the library:

# %%
show_source(lora_parameter_count)

# %% [markdown]
# Build the count yourself: find the layers a configuration targets, add `r (d + k)` for each, and compare
# with the number of trainable parameters of a model that `inject_lora` really wrapped.

# %%
def my_lora_count(model, config):
    """r · (in + out), summed over the Linears that config targets."""
    total = 0
    for name in find_targets(model, config):
        out_f, in_f = model.get_submodule(name).params["weight"].shape
        total += config.r * (in_f + out_f)
    return total


for cfg in (LoraConfig(r=4), LoraConfig(r=8, target_modules="all-linear")):
    wrapped = inject_lora(minilora.load_base_model(), cfg)
    assert my_lora_count(minilora.load_base_model(), cfg) == count_parameters(wrapped)[0]
    print(f"{cfg.target_modules!s:>18}, r = {cfg.r}: {count_parameters(wrapped)[0]:,d} trainable parameters "
          "(my count agrees)")

# %% [markdown]
# ## LoRA on the tiny GPT: parameters and bytes on disk
#
# We put LoRA of rank 1, 4 and 8 on the query and value projections (PEFT's default targets), and on every
# linear layer except the output head (`"all-linear"`). Everything else is frozen.
# The adapter is saved in PEFT's format and the files are measured.

# %%
rows = []
for targets in [("q_proj", "v_proj"), "all-linear"]:
    for r in (1, 4, 8):
        model = inject_lora(minilora.load_base_model(), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
        trainable, _ = count_parameters(model)
        with tempfile.TemporaryDirectory() as tmp:  # written, measured, removed
            path = save_adapter(model, Path(tmp) / "adapter")
            weights = (path / "adapter_model.safetensors").stat().st_size
            config_json = (path / "adapter_config.json").stat().st_size
        rows.append((str(targets), r, trainable, weights, config_json))
print(f"{'targets':22s} {'r':>2s} {'trainable':>9s} {'% of model':>10s} {'tensors (B)':>11s} {'4 B x params':>12s}"
      f" {'config (B)':>10s} {'copy / adapter':>14s}")
for t, r, n, w, c in rows:
    print(f"{t:22s} {r:2d} {n:9,d} {100 * n / total:9.2f}% {w:11,d} {4 * n:12,d} {c:10,d} "
          f"{full_bytes / (w + c):13.1f}x")
print(f"full fine-tuned copy: {full_bytes:,d} bytes")
overhead = [(w + c) / (4 * n) - 1 for _, _, n, w, c in rows]
print(f"header and config add {100 * min(overhead):.0f}-{100 * max(overhead):.0f} % to the bytes of the tensors")

# %% [markdown]
# The safetensors file holds the float32 LoRA tensors (4 bytes each, the column `4 B x params`) plus a
# small header that names them; the JSON config is the last file. The last column compares a fine-tuned
# copy of this small model with the two adapter files. For a model this small the fixed costs (header,
# config: the overhead printed above) are a visible part of the adapter; they do not grow with the model,
# as the GPT-3 numbers below show.
#
# ## GPT-3 175B
#
# GPT-3 has 96 layers and `d_model = 12288`. The LoRA paper adapts `W_q` and `W_v` with r = 4.

# %%
d_model, n_layer, r = 12288, 96, 4
adapted = 2 * n_layer  # W_q and W_v in every layer
lora_params = adapted * lora_parameter_count(d_model, d_model, r)
gpt3_params = 175e9
print(f"LoRA parameters: {lora_params:,d}  (= {adapted} adapted matrices · r (d + d) = "
      f"{adapted} · {r} · {2 * d_model})")
print(f"fraction of GPT-3: {lora_params / gpt3_params:.2e}")
print(f"adapter in fp16: {2 * lora_params / 1e6:.1f} MB  ({2 * lora_params / 2**20:.1f} MiB)")
print(f"full copy in fp16: {2 * gpt3_params / 1e9:.0f} GB")
print(f"ratio: {gpt3_params / lora_params:,.0f}x fewer parameters to store per task")
PAPER_COUNT = 18_874_368  # LoRA paper, GPT-3 175B with r = 4 on W_q, W_v (docs/facts.md §6)
assert lora_params == PAPER_COUNT
print(f"the paper's count, {PAPER_COUNT:,d}, is reproduced exactly")

# %% [markdown]
# The parameter count is the paper's (the assert above checks it). The paper quotes the checkpoint as
# "35MB" instead of 350 GB; our count of fp16 bytes is printed above, so the paper's figure is rounded (or
# counts slightly differently): the four orders of magnitude are what matters.

# %%
tasks = range(1, 101)
fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.semilogy(tasks, [2 * gpt3_params * n for n in tasks], label="a full fine-tuned copy per task")
ax.semilogy(tasks, [2 * gpt3_params + 2 * lora_params * n for n in tasks], label="one base + a LoRA adapter per task")
ax.set(xlabel="number of tasks", ylabel="bytes stored (fp16)", title="GPT-3 175B: storage for many tasks")
log_ticks(ax.yaxis)
ax.legend()
plt.show()

# %% [markdown]
# ## Exercises
#
# 1. With `all-linear` targets and r = 8, how many parameters would a GPT-3 adapter have? Also count the
#    feed-forward layers (`4 · d_model` wide). Compute it with `lora_parameter_count`.
# 2. The training memory saving is larger than the storage saving suggests, because frozen weights need no
#    gradient and no Adam state. For the tiny GPT, count the bytes of gradients and Adam moments for full
#    fine-tuning and for LoRA (hint: two Adam moments per trainable parameter).
# 3. Build a wider model, `GPT(dataclasses.replace(config, n_embd=256))` from `minilora.nn.gpt`, and redo
#    the table. How does the trainable fraction scale with `d` for a fixed r?
