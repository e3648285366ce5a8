"""PEFT itself loads minilora's adapter files: same module names and weights in PyTorch → same outputs.

Skipped when torch or peft are not installed (CI); run it with the golden-vector venv::

    TORCHDYNAMO_DISABLE=1 /work/goldenv/bin/python -m pytest tests/lora/test_peft_interop.py
"""

import numpy as np
import pytest

from minilora.nn import MLP
from minilora.peft import LoraConfig, inject_lora, save_adapter

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("safetensors")


def torch_twin_mlp(model: MLP):
    """A torch module with minilora's MLP names (fc0, fc1, ...), weights and GELU (tanh)."""

    class TwinMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.names = model.layer_names
            for name in self.names:
                lin = getattr(model, name)
                setattr(self, name, torch.nn.Linear(lin.in_features, lin.out_features, dtype=torch.float32))

        def forward(self, x):
            for i, name in enumerate(self.names):
                x = getattr(self, name)(x)
                if i < len(self.names) - 1:
                    x = torch.nn.functional.gelu(x, approximate="tanh")
            return x

    twin = TwinMLP()
    twin.load_state_dict(
        {k: torch.from_numpy(v.copy()) for k, v in model.params.items() if ".lora_" not in k}
    )
    return twin


@pytest.mark.parametrize(
    "config",
    [
        LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc2")),
        LoraConfig(r=3, lora_alpha=5, target_modules="all-linear", use_rslora=True),
        LoraConfig(r=4, lora_alpha=16, target_modules=r"fc[12]"),
    ],
    ids=["names", "all-linear-rslora", "regex"],
)
def test_peft_loads_minilora_adapter_mlp(tmp_path, config):
    model = inject_lora(MLP([6, 16, 16, 4], seed=0), config, seed=1)
    rng = np.random.default_rng(0)
    for name in model.trainable_names():  # as if trained: B ≠ 0
        model.params[name][...] = rng.standard_normal(model.params[name].shape) * 0.3
    save_adapter(model, tmp_path)
    twin = torch_twin_mlp(model)
    peft_model = peft.PeftModel.from_pretrained(twin, str(tmp_path))
    x = rng.standard_normal((5, 6)).astype(np.float32)
    with torch.no_grad():
        y_peft = peft_model(torch.from_numpy(x)).numpy()
        y_plain = torch_twin_mlp(MLP([6, 16, 16, 4], seed=0))(torch.from_numpy(x)).numpy()
    y = model.forward(x)
    assert not np.allclose(y, y_plain, atol=1e-3)  # the adapter matters...
    np.testing.assert_allclose(y, y_peft, rtol=1e-5, atol=1e-5 * np.abs(y).max())  # ...and PEFT applies it


def torch_twin_gpt(model):
    """A PyTorch GPT with minilora's module names (blocks.0.attn.q_proj, ...) and ``model``'s base weights."""
    import torch.nn as nn
    import torch.nn.functional as tF

    c = model.config

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(self, name, nn.Linear(c.n_embd, c.n_embd, bias=c.bias))

        def forward(self, x):
            B, T, C = x.shape
            split = lambda t: t.view(B, T, c.n_head, C // c.n_head).transpose(1, 2)  # (B, nh, T, hs)
            y = tF.scaled_dot_product_attention(
                split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), is_causal=True
            )
            return self.o_proj(y.transpose(1, 2).reshape(B, T, C))

    class FF(nn.Module):
        def __init__(self):
            super().__init__()
            self.up_proj = nn.Linear(c.n_embd, c.mlp_ratio * c.n_embd, bias=c.bias)
            self.down_proj = nn.Linear(c.mlp_ratio * c.n_embd, c.n_embd, bias=c.bias)

        def forward(self, x):
            return self.down_proj(tF.gelu(self.up_proj(x), approximate="tanh"))

    class Blk(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(c.n_embd, eps=1e-5), Attn()
            self.ln_2, self.mlp = nn.LayerNorm(c.n_embd, eps=1e-5), FF()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class TwinGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
            self.blocks = nn.ModuleList(Blk() for _ in range(c.n_layer))
            self.ln_f = nn.LayerNorm(c.n_embd, eps=1e-5)
            self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    twin = TwinGPT()
    state = {k: torch.from_numpy(v.copy()) for k, v in model.params.items() if ".lora_" not in k}
    twin.load_state_dict(state, strict=True)
    return twin


@pytest.mark.parametrize(
    "config",
    [
        LoraConfig(r=2, lora_alpha=4),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", use_rslora=True),
    ],
    ids=["q_v", "all-linear-rslora"],
)
def test_peft_loads_minilora_adapter_gpt(tmp_path, config):
    from minilora.nn.gpt import GPT, GPTConfig

    model = inject_lora(
        GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16), seed=0), config, seed=1
    )
    rng = np.random.default_rng(0)
    for name in model.trainable_names():
        model.params[name][...] = rng.standard_normal(model.params[name].shape) * 0.3
    save_adapter(model, tmp_path)
    twin = torch_twin_gpt(model)
    idx = rng.integers(0, 13, (3, 8))
    with torch.no_grad():
        plain = twin(torch.from_numpy(idx)).numpy()
        peft_model = peft.PeftModel.from_pretrained(twin, str(tmp_path))
        logits_peft = peft_model(torch.from_numpy(idx)).numpy()
    logits, _ = model.forward(idx)
    assert not np.allclose(logits, plain, atol=1e-3)
    np.testing.assert_allclose(logits, logits_peft, rtol=1e-5, atol=1e-5 * np.abs(logits).max())
