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
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.params.items() if ".lora_" not in k})
    return twin


@pytest.mark.parametrize("config", [
    LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc2")),
    LoraConfig(r=3, lora_alpha=5, target_modules="all-linear", use_rslora=True),
    LoraConfig(r=4, lora_alpha=16, target_modules=r"fc[12]"),
], ids=["names", "all-linear-rslora", "regex"])
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
