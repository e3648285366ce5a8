"""PEFT itself loads minilora's adapter files: same module names and weights in PyTorch → same outputs.

Skipped when torch or peft are not installed (CI); run it with the golden-vector venv::

    TORCHDYNAMO_DISABLE=1 /work/goldenv/bin/python -m pytest tests/lora/test_peft_interop.py
"""

import warnings

import numpy as np
import pytest

from minilora.nn import MLP
from minilora.peft import LoraConfig, inject_lora, load_adapter, save_adapter

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


# ------------------------------------------------------------------ issue 9, items 1, 6, 7, 8, 14
def _as_if_trained(model, seed=0):
    rng = np.random.default_rng(seed)
    for name in model.trainable_names():  # A, B move away from their initial values
        p = model.params[name]
        p[...] += (rng.standard_normal(p.shape) * 0.3).astype(p.dtype)
    return model


def _peft_output(adapter_dir, x, base=None, dtype=torch.float32):
    twin = torch_twin_mlp(base or MLP([6, 16, 16, 4], seed=0)).to(dtype)
    with torch.no_grad():
        return peft.PeftModel.from_pretrained(twin, str(adapter_dir))(torch.from_numpy(x).to(dtype)).float().numpy()


@pytest.mark.parametrize("use_rslora", [False, True])
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_peft_loads_minilora_converted_residual_adapter(tmp_path, init, use_rslora):
    """Item 1: the converted file (rank 2r, relative to the original W) gives PEFT the trained model."""
    config = LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc1"), init_lora_weights=init,
                        use_rslora=use_rslora)
    model = _as_if_trained(inject_lora(MLP([6, 16, 16, 4], seed=0), config))
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    y = model.forward(x)
    save_adapter(model, tmp_path)
    np.testing.assert_allclose(_peft_output(tmp_path, x), y, rtol=0, atol=1e-5 * np.abs(y).max())


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_peft_loads_minilora_unconverted_residual_adapter(tmp_path, init):
    """PEFT's own layout: PEFT rebuilds the residual (float32 SVD / QR in torch) before loading A, B."""
    config = LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc1"), init_lora_weights=init)
    model = _as_if_trained(inject_lora(MLP([6, 16, 16, 4], seed=0), config))
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    y = model.forward(x)
    save_adapter(model, tmp_path, convert_pissa_to_lora=False)
    np.testing.assert_allclose(_peft_output(tmp_path, x), y, rtol=0, atol=1e-5 * np.abs(y).max())


def test_peft_loads_minilora_pissa_gpt(tmp_path):
    from minilora.nn.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = _as_if_trained(inject_lora(GPT(cfg, seed=0), LoraConfig(r=2, lora_alpha=4, init_lora_weights="pissa")))
    save_adapter(model, tmp_path)
    idx = np.random.default_rng(0).integers(0, 13, (3, 8))
    twin = torch_twin_gpt(GPT(cfg, seed=0))  # the original weights
    with torch.no_grad():
        logits_peft = peft.PeftModel.from_pretrained(twin, str(tmp_path))(torch.from_numpy(idx)).numpy()
    logits, _ = model.forward(idx)
    np.testing.assert_allclose(logits, logits_peft, rtol=0, atol=1e-5 * np.abs(logits).max())


@pytest.mark.parametrize("init", ["random", "zero_A", "zeros", False])
def test_peft_opens_adapters_trained_from_teaching_inits(tmp_path, init):
    """Item 6: PEFT refused these files ("Unknown initialization init_lora_weights='random'")."""
    config = LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc2"), init_lora_weights=init)
    model = _as_if_trained(inject_lora(MLP([6, 16, 16, 4], seed=0), config))
    save_adapter(model, tmp_path)
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    y = model.forward(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even PEFT's "unexpected keyword arguments" warning
        y_peft = _peft_output(tmp_path, x)
    np.testing.assert_allclose(y_peft, y, rtol=0, atol=1e-5 * np.abs(y).max())


def _peft_saved(tmp_path, init, dtype=torch.float32, **kw):
    """A PEFT adapter made with ``init`` on the twin of MLP([6, 16, 16, 4], seed=0), trained a little."""
    twin = torch_twin_mlp(MLP([6, 16, 16, 4], seed=0)).to(dtype)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(twin, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["fc0", "fc1"],
                                                       init_lora_weights=init, **kw))
    with torch.no_grad():
        for _, p in pm.named_parameters():
            if p.requires_grad:
                p += 0.3 * torch.randn_like(p)
    pm.save_pretrained(str(tmp_path))
    return pm


@pytest.mark.parametrize("init", [False, "eva", "orthogonal", "olora", "pissa", True, "gaussian"])
def test_minilora_loads_peft_adapters_of_every_init(tmp_path, init):
    """Item 7: an adapter PEFT saved with init_lora_weights=False (or olora, eva, ...) was refused."""
    pm = _peft_saved(tmp_path, init)
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    with torch.no_grad():
        y_peft = pm(torch.from_numpy(x)).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    y = model.forward(x)
    np.testing.assert_allclose(y, y_peft, rtol=0, atol=1e-5 * np.abs(y_peft).max())


def test_minilora_loads_peft_float32_adapter_on_float16_base(tmp_path):
    """Item 8: PEFT keeps the adapter in float32 on a float16 base; minilora casts it, with a warning."""
    pm = _peft_saved(tmp_path, True, dtype=torch.float16)
    assert pm.base_model.model.fc0.lora_A["default"].weight.dtype == torch.float32
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    with torch.no_grad():
        y_peft = pm(torch.from_numpy(x).half()).float().numpy()
    with pytest.warns(UserWarning, match="cast to the model's dtype"):
        model = load_adapter(MLP([6, 16, 16, 4], seed=0).to("float16"), tmp_path)
    y = model.forward(x.astype(np.float16)).astype(np.float32)
    # float16: u = 2^-11; three layers of <= 20 rounded products in each library
    np.testing.assert_allclose(y, y_peft, rtol=0, atol=3 * 2 * 20 * 2.0**-11 * np.abs(y_peft).max())


def test_modules_to_save_both_ways(tmp_path):
    """Item 14: minilora's modules_to_save file opens in PEFT, and PEFT's in minilora (same outputs, counts)."""
    config = LoraConfig(r=2, lora_alpha=4, target_modules=("fc0",), modules_to_save=("fc2",))
    model = _as_if_trained(inject_lora(MLP([6, 16, 16, 4], seed=0), config))
    save_adapter(model, tmp_path / "ours")
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    y = model.forward(x)
    np.testing.assert_allclose(_peft_output(tmp_path / "ours", x), y, rtol=0, atol=1e-5 * np.abs(y).max())
    pm = _peft_saved(tmp_path / "theirs", True, modules_to_save=["fc2"])
    with torch.no_grad():
        y_peft = pm(torch.from_numpy(x)).numpy()
    loaded = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path / "theirs")
    np.testing.assert_allclose(loaded.forward(x), y_peft, rtol=0, atol=1e-5 * np.abs(y_peft).max())
    from minilora.peft import count_parameters

    assert count_parameters(loaded) == pm.get_nb_trainable_parameters()
    with loaded.disable_adapter(), pm.disable_adapter(), torch.no_grad():
        base = pm(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(loaded.forward(x), base, rtol=0, atol=1e-5 * np.abs(base).max())
