"""Every method on the strict device-emulating backend: training steps, logits and a file round trip equal the
NumPy run bit for bit, and no host array leaks into device code (the strict backend raises if one does)."""

import numpy as np
import pytest

from minilora import backend, data
from minilora.nn import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.peft import load_adapters, load_prompt_adapter, save_adapters, save_prompt_adapter

from .cases import ADAPTER_METHODS, METHODS

CFG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=24, n_layer=2, n_head=2, n_embd=16)


def _run(name, tmp_path):
    config, apply, _ = METHODS[name]
    model = apply(GPT(CFG, seed=0), config, seed=0)
    idx, targets = data.task_batch("sort", 4, 0)
    optimizer = AdamW(model, lr=1e-2)
    for _ in range(2):
        model.zero_grad()
        logits, _ = model.forward(idx, targets)
        model.backward()
        optimizer.step()
    if name in ADAPTER_METHODS:
        loaded = load_adapters(GPT(CFG, seed=0), save_adapters(model, tmp_path))
    else:
        loaded = load_prompt_adapter(GPT(CFG, seed=0), save_prompt_adapter(model, tmp_path), is_trainable=True)
    params = {k: backend.to_numpy(v) for k, v in model.params.items()}
    return params, backend.to_numpy(logits), backend.to_numpy(loaded.forward(idx)[0]), backend.to_numpy(
        model.forward(idx)[0])


@pytest.mark.parametrize("name", [m for m in METHODS if m not in ("houlsby_tanh_leave_out",)])
def test_method_on_the_strict_backend_equals_numpy(name, tmp_path):
    host = _run(name, tmp_path / "numpy")
    backend.use("strict")
    try:
        device = _run(name, tmp_path / "strict")
    finally:
        backend.use("numpy")
    assert set(host[0]) == set(device[0]) and all(np.array_equal(host[0][k], device[0][k]) for k in host[0])
    for a, b in zip(host[1:], device[1:]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(device[2], device[3])  # the saved adapter reloads to the same logits
