"""A QLoRA model (4-bit base + adapter) saves and loads in minilora, with bitsandbytes' per-weight keys."""

import json

import numpy as np
import pytest
from conftest import GOLDEN

from minilora.hf.safetensors_io import load_file, read_header, write_file
from minilora.nn.gpt import GPT
from minilora.peft import LoraConfig
from minilora.peft.qlora import prepare_qlora, quantized_modules


def qlora_model(ckpt, config, seed=1, **quant):
    model = prepare_qlora(GPT.from_pretrained(ckpt), config, seed=seed, **quant)
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():  # B = 0 at init: a visible adapter
        if ".lora_" in name:
            p[...] = rng.standard_normal(p.shape) * 0.1
    return model


SETUPS = {
    "tied, all-linear, nf4+dq": (GOLDEN / "gpt2_tiny", LoraConfig(r=4, target_modules="all-linear"), {}),
    "untied, q v, fp4": (GOLDEN / "gpt2" / "case0", LoraConfig(r=2, target_modules=("q_proj", "v_proj")),
                         dict(quant_type="fp4", compress_statistics=False)),
}


@pytest.mark.parametrize("setup", SETUPS)
def test_round_trip_is_bit_exact(setup, tmp_path):
    ckpt, config, quant = SETUPS[setup]
    model = qlora_model(ckpt, config, **quant)
    model.save_pretrained(tmp_path)
    again = GPT.from_pretrained(tmp_path)
    idx = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 8))
    np.testing.assert_array_equal(again.forward(idx)[0], model.eval().forward(idx)[0])
    ours, theirs = quantized_modules(model), quantized_modules(again)
    assert sorted(ours) == sorted(theirs)
    for name, q in ours.items():
        np.testing.assert_array_equal(theirs[name].packed, q.packed)  # stored codes, never re-quantized
        np.testing.assert_array_equal(theirs[name].dequantize(), q.dequantize())
    a, b = again.lora_config, model.lora_config
    assert (a.r, a.lora_alpha, a.use_rslora) == (b.r, b.lora_alpha, b.use_rslora)  # "all-linear" is written as names
    assert sorted(again.trainable_names()) == sorted(model.trainable_names())


def test_per_weight_keys_are_bitsandbytes(tmp_path):
    ckpt, config, quant = SETUPS["tied, all-linear, nf4+dq"]
    qlora_model(ckpt, config, **quant).save_pretrained(tmp_path)
    names = set(read_header(tmp_path / "model.safetensors")[0])
    layer = "blocks.0.attn.q_proj"
    suffixes = {n[len(layer):] for n in names if n.startswith(layer + ".")}
    assert suffixes == {".bias", ".weight", ".weight.absmax", ".weight.quant_map", ".weight.nested_absmax",
                        ".weight.nested_quant_map", ".weight.quant_state.bitsandbytes__nf4"}
    t = load_file(tmp_path / "model.safetensors")
    assert t[f"{layer}.weight"].dtype == np.uint8 and t[f"{layer}.weight"].shape[1] == 1  # Params4bit's (n/2, 1)
    meta = json.loads(bytes(t[f"{layer}.weight.quant_state.bitsandbytes__nf4"]).decode("utf-8"))
    assert meta["quant_type"] == "nf4" and meta["blocksize"] == 64 and meta["shape"] == [32, 32]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["quantization_config"]["bnb_4bit_use_double_quant"] is True
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "adapter_config.json").exists()


def test_without_double_quantization_no_nested_keys(tmp_path):
    ckpt, config, quant = SETUPS["untied, q v, fp4"]
    qlora_model(ckpt, config, **quant).save_pretrained(tmp_path)
    names = set(read_header(tmp_path / "model.safetensors")[0])
    assert "blocks.0.attn.k_proj.weight.quant_state.bitsandbytes__fp4" in names
    assert not any("nested" in n for n in names)
    assert "lm_head.weight" in names and "lm_head.weight.absmax" not in names  # lm_head stays float


def test_bad_qlora_checkpoints(tmp_path):
    ckpt, config, quant = SETUPS["tied, all-linear, nf4+dq"]
    model = qlora_model(ckpt, config, **quant)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="loads in float32 only"):
        GPT.from_pretrained(tmp_path, dtype="float64")
    t = load_file(tmp_path / "model.safetensors")
    del t["blocks.1.mlp.up_proj.weight"]
    write_file(tmp_path / "model.safetensors", t)
    with pytest.raises(ValueError, match=r"missing \['blocks.1.mlp.up_proj.weight'\]"):
        GPT.from_pretrained(tmp_path)


def test_a_4bit_model_without_adapter_is_refused(tmp_path):
    ckpt, config, quant = SETUPS["tied, all-linear, nf4+dq"]
    model = qlora_model(ckpt, config, **quant)
    del model.lora_config
    with pytest.raises(ValueError, match="no LoRA adapter"):
        model.save_pretrained(tmp_path)
