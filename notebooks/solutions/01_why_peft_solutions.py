# %% [markdown]
# # 01 · Why PEFT: worked solutions
#
# The three exercises of `01_why_peft`, each computed and checked with `assert`s (CI runs this notebook).

# %%
import dataclasses

import minilora
from minilora import data
from minilora.nn.gpt import GPT
from minilora.optim import AdamW
from minilora.peft import LoraConfig, count_parameters, inject_lora, lora_parameter_count

# %% [markdown]
# ## 1. A GPT-3 adapter on every linear layer, r = 8
#
# Per layer there are four `d × d` attention projections and the feed-forward pair `d → 4d → d`.
# LoRA adds `r (in + out)` per matrix: `4 · 2rd` for attention and `2 · 5rd` for the feed-forward layers,
# `18 r d` per layer.

# %%
d_model, n_layer, r = 12288, 96, 8
per_layer = 4 * lora_parameter_count(d_model, d_model, r) + lora_parameter_count(d_model, 4 * d_model, r) \
    + lora_parameter_count(4 * d_model, d_model, r)
all_linear = n_layer * per_layer
qv_r4 = 2 * n_layer * lora_parameter_count(d_model, d_model, 4)
assert per_layer == 18 * r * d_model
print(f"all-linear, r = 8: {all_linear:,d} parameters = {all_linear / qv_r4:.0f}x the paper's W_q, W_v at r = 4;"
      f" {2 * all_linear / 1e6:.0f} MB in fp16, {all_linear / 175e9:.2%} of GPT-3")

# %% [markdown]
# ## 2. Gradients and Adam moments of the tiny GPT: full fine-tuning vs LoRA
#
# One AdamW step on a batch of the held-out task; then count the bytes of the arrays the model and the
# optimizer really hold. Each trainable parameter has one gradient and two Adam moments (4 bytes each in
# float32); a frozen one has neither.

# %%
batch = data.heldout_train_data(32, seed=0)(0)
rows = {}
for method in ("full", "lora"):
    model = minilora.load_base_model()
    model = model.unfreeze() if method == "full" else inject_lora(model, LoraConfig(r=8, lora_alpha=16))
    opt = AdamW(model, lr=1e-3)
    model.zero_grad()
    model.forward(*batch)
    model.backward()
    opt.step()
    trainable, _ = count_parameters(model)
    grad_bytes = sum(g.nbytes for g in model.grads.values())
    assert grad_bytes == 4 * trainable and opt.state_bytes() == 2 * 4 * trainable
    rows[method] = (trainable, grad_bytes, opt.state_bytes())
    print(f"{method:>4}: {trainable:7,d} trainable, gradients {grad_bytes:9,d} B, "
          f"Adam moments {opt.state_bytes():9,d} B")
ratio = (rows["full"][1] + rows["full"][2]) / (rows["lora"][1] + rows["lora"][2])
print(f"LoRA needs {ratio:.1f}x less memory for gradients and optimizer state")

# %% [markdown]
# ## 3. A wider model: how the trainable fraction scales with d
#
# LoRA on `q_proj`, `v_proj` adds `2 · r (d + d) = 4 r d` per layer, while the model has about `12 d²` block
# weights per layer: the fraction falls like `1/d` for a fixed r.

# %%
base_config = minilora.load_base_model().config
fractions = {}
for width in (64, 128, 256):
    model = inject_lora(GPT(dataclasses.replace(base_config, n_embd=width), seed=0), LoraConfig(r=8))
    trainable, total = count_parameters(model)
    assert trainable == base_config.n_layer * 4 * 8 * width
    fractions[width] = trainable / total
    print(f"d = {width:3d}: {trainable:6,d} of {total:9,d} parameters trainable ({fractions[width]:.3%})")
slope = fractions[64] / fractions[256]
assert 3 < slope < 4.5, slope  # 1/d would be exactly 4; embeddings and biases (which grow like d) bend it
print(f"fraction at d = 64 / at d = 256 = {slope:.2f} (1/d would give 4)")
