"""LoRA inside the GPT: names, gradients (finite differences), frozen base, merge, adapter round trip."""

import numpy as np
import pytest

from minilora.nn.gpt import GPT, GPTConfig
from minilora.nn.gradcheck import gradcheck
from minilora.peft import LoraConfig, inject_lora, load_adapter, lora_modules, merge_and_unload, save_adapter

CFG = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)


def batch(seed=0, B=2, T=5):
    rng = np.random.default_rng(seed)
    return rng.integers(0, CFG.vocab_size, (B, T)), rng.integers(0, CFG.vocab_size, (B, T))


def lora_gpt(config=None, dtype="float32", seed=0):
    gpt = GPT(CFG if dtype == "float32" else GPTConfig(**{**CFG.__dict__, "dtype": dtype}), seed=seed)
    model = inject_lora(gpt, config or LoraConfig(r=2, lora_alpha=4))
    rng = np.random.default_rng(seed + 1)
    for name in model.trainable_names():  # as if trained: B ≠ 0, so every path carries gradient
        model.params[name][...] = rng.standard_normal(model.params[name].shape) * 0.3
    return model


def test_names_follow_peft():
    model = lora_gpt()
    assert list(lora_modules(model)) == [
        "blocks.0.attn.q_proj",
        "blocks.0.attn.v_proj",
        "blocks.1.attn.q_proj",
        "blocks.1.attn.v_proj",
    ]
    assert model.trainable_names() == [
        f"blocks.{i}.attn.{p}.lora_{ab}.weight" for i in range(2) for p in ("q_proj", "v_proj") for ab in "AB"
    ]
    assert model.params["blocks.0.attn.q_proj.lora_A.weight"].shape == (2, 8)
    assert model.params["blocks.1.attn.v_proj.lora_B.weight"].shape == (8, 2)
    assert "blocks.0.attn.q_proj.weight" in model.params  # base names unchanged


def test_all_linear_skips_lm_head():
    model = inject_lora(GPT(CFG), LoraConfig(r=2, target_modules="all-linear"))
    assert len(lora_modules(model)) == 2 * 6 and "lm_head" not in lora_modules(model)


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), "all-linear"])
def test_gradcheck_gpt_with_lora(targets):
    model = lora_gpt(LoraConfig(r=2, lora_alpha=4, target_modules=targets), dtype="float64")
    idx, tgt = batch()
    report = gradcheck(model, idx, targets=tgt)
    assert set(report) == set(model.trainable_names()) and all(".lora_" in k for k in report)
    assert max(report.values()) < 1e-6, report
    model.zero_grad()
    model.forward(idx, tgt)
    model.backward()
    assert sorted(model.grads) == sorted(model.trainable_names())  # nothing else gets a gradient


def test_base_never_changes_while_training():
    from minilora.optim import AdamW
    from minilora.train import train

    model = lora_gpt()
    frozen = {k: v.copy() for k, v in model.params.items() if ".lora_" not in k}
    hist = train(model, batch(0), AdamW(model, lr=1e-2, weight_decay=0.1), steps=15, progress=False)
    assert hist.loss[-1] < hist.loss[0]
    for k, v in frozen.items():
        assert np.array_equal(model.params[k], v), k


def test_merge_and_unload_same_logits():
    model = lora_gpt(LoraConfig(r=2, target_modules="all-linear"))
    idx, _ = batch()
    logits, _ = model.forward(idx)
    plain = merge_and_unload(model)
    assert sorted(plain.params) == sorted(GPT(CFG).params)
    np.testing.assert_allclose(plain.forward(idx)[0], logits, rtol=1e-5, atol=1e-5)


def test_adapter_round_trip_gpt(tmp_path):
    pytest.importorskip("safetensors")
    model = lora_gpt()
    save_adapter(model, tmp_path)
    fresh = load_adapter(GPT(CFG), tmp_path)
    for k, v in model.params.items():
        assert np.array_equal(fresh.params[k], v), k
    idx, _ = batch()
    assert np.array_equal(fresh.forward(idx)[0], model.forward(idx)[0])


def test_adapter_for_another_gpt_refused(tmp_path):
    pytest.importorskip("safetensors")
    save_adapter(lora_gpt(), tmp_path)
    other = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=3, n_head=2, n_embd=8))
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"missing \['blocks.2.attn.q_proj.lora_A.weight'"):
        load_adapter(other, tmp_path)
    assert not lora_modules(other) and all(np.array_equal(other.params[k], v) for k, v in before.items())
    wider = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=12))
    with pytest.raises(ValueError, match="has shape"):
        load_adapter(wider, tmp_path)
    assert not lora_modules(wider)
