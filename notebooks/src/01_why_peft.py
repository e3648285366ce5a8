# %% [markdown]
# # 01 · Why parameter-efficient fine-tuning?
#
# The blog's first section: since BERT the recipe has been *pretrain, then fine-tune for each task*. A
# fully fine-tuned model is a complete copy of the base model, one copy per task. That was bearable for
# BERT. It is not for GPT-3 (175B parameters). PEFT methods train, and store, only a small number of extra
# parameters per task.
#
# This notebook does the parameter and storage arithmetic twice: for a tiny GPT (with a real adapter file
# written and measured) and for GPT-3 175B (the numbers of the LoRA paper, Hu et al. 2021, §4.2 and §6).

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from minilora.data import N_DIGITS, VOCAB_SIZE
from minilora.nn.gpt import GPT, GPTConfig
from minilora.peft import LoraConfig, count_parameters, inject_lora, lora_parameter_count, save_adapter

config = GPTConfig(vocab_size=VOCAB_SIZE, block_size=2 * N_DIGITS + 1, n_layer=2, n_head=4, n_embd=64)
gpt = GPT(config, seed=0)
total = gpt.num_params()
full_bytes = sum(p.nbytes for p in gpt.params.values())
print(config)
print(f"parameters: {total:,d}   float32 checkpoint: {full_bytes:,d} bytes")

# %% [markdown]
# ## LoRA on the tiny GPT
#
# We put rank-8 LoRA on the query and value projections (PEFT's default targets). Each adapted
# `d × k` weight gets `A (r × k)` and `B (d × r)`: `r (d + k)` new parameters. Everything else is frozen.
# The adapter is saved in PEFT's format and the files are measured.

# %%
rows = []
for targets in [("q_proj", "v_proj"), "all-linear"]:
    for r in (1, 4, 8):
        model = inject_lora(GPT(config, seed=0), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
        trainable, _ = count_parameters(model)
        path = save_adapter(model, Path(tempfile.mkdtemp()) / "adapter")
        weights = (path / "adapter_model.safetensors").stat().st_size
        config_json = (path / "adapter_config.json").stat().st_size
        rows.append((str(targets), r, trainable, weights, config_json))
print(f"{'targets':22s} {'r':>2s} {'trainable':>9s} {'% of model':>10s} {'tensors (B)':>11s} {'config (B)':>10s}")
for t, r, n, w, c in rows:
    print(f"{t:22s} {r:2d} {n:9,d} {100 * n / total:9.2f}% {w:11,d} {c:10,d}")
print(f"full fine-tuned copy: {full_bytes:,d} bytes")

# %% [markdown]
# The safetensors file holds exactly the float32 LoRA tensors (4 bytes each) plus a small header. The JSON
# config is under a kilobyte. A fine-tuned copy of even this tiny model is many times bigger.
#
# ## GPT-3 175B
#
# GPT-3 has 96 layers and `d_model = 12288`. The LoRA paper adapts `W_q` and `W_v` with r = 4.

# %%
d_model, n_layer, r = 12288, 96, 4
adapted = 2 * n_layer  # W_q and W_v in every layer
lora_params = adapted * lora_parameter_count(d_model, d_model, r)
gpt3_params = 175e9
print(f"LoRA parameters: {lora_params:,d}  (= 2 · {adapted} adapted matrices · {d_model} · r={r})")
print(f"fraction of GPT-3: {lora_params / gpt3_params:.2e}")
print(f"adapter in fp16: {2 * lora_params / 1e6:.1f} MB  ({2 * lora_params / 2**20:.1f} MiB)")
print(f"full copy in fp16: {2 * gpt3_params / 1e9:.0f} GB")
print(f"ratio: {gpt3_params / lora_params:,.0f}x fewer parameters to store per task")

# %% [markdown]
# This matches the paper: 18,874,368 trainable parameters, and a checkpoint of "35MB" instead of 350 GB.
# The paper's 35 MB is 36 MiB; in decimal megabytes it is 37.7 MB.

# %%
tasks = range(1, 101)
fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.semilogy(tasks, [2 * gpt3_params * n for n in tasks], label="a full fine-tuned copy per task")
ax.semilogy(tasks, [2 * gpt3_params + 2 * lora_params * n for n in tasks], label="one base + a LoRA adapter per task")
ax.set(xlabel="number of tasks", ylabel="bytes stored (fp16)", title="GPT-3 175B: storage for many tasks")
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
# 3. Change the tiny GPT's width to 256 and redo the table. How does the trainable fraction scale with
#    `d` for a fixed r?
