"""QLoRA in PEFT's two steps: quantize_base (the base loaded in 4 bits), then get_peft_model with a LoraConfig."""

import numpy as np
import pytest

from minilora.nn.gpt import GPT, GPTConfig
from minilora.peft import (
    LoraConfig,
    QuantizationConfig,
    get_peft_model,
    inject_lora,
    load_adapter,
    quantize_base,
    save_adapter,
)
from minilora.peft.lora import LoRALinear
from minilora.peft.qlora import Linear4bit, QLoRALinear, prepare_qlora, quantized_modules
from minilora.quant.bounds import error_bound

CFG = GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=32)
IDX = np.random.default_rng(0).integers(0, 16, (2, 8))


def gpt(seed=0, **kw):
    return GPT(GPTConfig(**{**CFG.__dict__, **kw}), seed=seed)


def test_quantize_base_stores_every_block_linear_in_4_bits_and_freezes_all():
    model = quantize_base(gpt())
    assert sorted(quantized_modules(model)) == sorted(
        f"blocks.{i}.{m}" for i in range(2) for m in
        ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.up_proj", "mlp.down_proj"))
    assert all(type(model.get_submodule(n)) is Linear4bit for n in quantized_modules(model))
    assert "lm_head.weight" in model.params and "wte.weight" in model.params  # lm_head, embeddings stay float
    assert model.trainable_names() == []
    assert model.quantization_config == QuantizationConfig()


@pytest.mark.parametrize("config", [LoraConfig(r=4, target_modules="all-linear"),
                                    LoraConfig(r=2, lora_alpha=8, target_modules=("q_proj", "v_proj"))])
def test_quantize_then_get_peft_model_is_prepare_qlora_bit_for_bit(config):
    two = get_peft_model(quantize_base(gpt()), config, seed=3)
    one = prepare_qlora(gpt(), config, seed=3)
    assert two.trainable_names() == one.trainable_names()
    for k in one.trainable_names():
        np.testing.assert_array_equal(two.params[k], one.params[k])
    q1, q2 = quantized_modules(one), quantized_modules(two)
    assert list(q1) == list(q2)
    for name in q1:
        np.testing.assert_array_equal(q2[name].packed, q1[name].packed)
        np.testing.assert_array_equal(q2[name].dequantize(), q1[name].dequantize())  # the same statistics
        assert type(two.get_submodule(name)) is type(one.get_submodule(name))
    np.testing.assert_array_equal(two.forward(IDX)[0], one.forward(IDX)[0])


def test_the_same_adapter_starts_on_the_float_and_the_4bit_base():
    """LoRA and QLoRA with one config and seed draw the same A and B (the draws depend only on the shapes)."""
    config = LoraConfig(r=4, target_modules="all-linear")
    lora, qlora = inject_lora(gpt(), config, seed=5), get_peft_model(quantize_base(gpt()), config, seed=5)
    assert {n for n, m in qlora.named_modules() if isinstance(m, QLoRALinear)} == set(quantized_modules(qlora))
    for k in lora.trainable_names():
        np.testing.assert_array_equal(qlora.params[k], lora.params[k])


def test_a_targeted_float_lm_head_gets_plain_lora():
    model = get_peft_model(quantize_base(gpt()), LoraConfig(r=2, target_modules=("q_proj", "lm_head")))
    assert type(model.get_submodule("lm_head")) is LoRALinear
    assert isinstance(model.get_submodule("blocks.0.attn.q_proj"), QLoRALinear)


def test_skip_modules_and_modules_to_save_stay_float():
    model = quantize_base(gpt(), QuantizationConfig(skip_modules=("lm_head", "blocks.1.mlp", "q_proj")))
    kept = ["blocks.0.attn.q_proj", "blocks.1.attn.q_proj", "blocks.1.mlp.up_proj", "blocks.1.mlp.down_proj"]
    assert not set(kept) & set(quantized_modules(model))
    assert "blocks.0.mlp.up_proj" in quantized_modules(model)


def test_pissa_on_a_4bit_base_adapts_the_requantized_residual():
    """The float weight is gone: PiSSA decomposes the dequantized weight and quantizes the residual again, so
    residual + s·BA is the dequantized weight up to one more 4-bit rounding of the residual."""
    model = quantize_base(gpt(), QuantizationConfig(compress_statistics=False))
    w_deq = model.get_submodule("blocks.0.attn.q_proj").qweight.dequantize()
    get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=("q_proj",), init_lora_weights="pissa"))
    layer = model.get_submodule("blocks.0.attn.q_proj")
    assert isinstance(layer, QLoRALinear) and layer.residual_init is not None
    sba = layer.scaling * (layer.B @ layer.A)
    err = np.abs(layer.qweight.dequantize() + sba - w_deq)
    assert (err <= error_bound(w_deq - sba, "nf4") + 1e-6).all()
    assert err.max() > 0  # it is a second rounding, not the stored codes


def test_a_qlora_adapter_loads_onto_a_quantized_base_with_the_same_logits(tmp_path):
    pytest.importorskip("safetensors")
    config = LoraConfig(r=2, target_modules="all-linear")
    trained = get_peft_model(quantize_base(gpt()), config, seed=1)
    rng = np.random.default_rng(2)
    for k in trained.trainable_names():  # pretend it was trained: B ≠ 0
        trained.params[k][...] = rng.standard_normal(trained.params[k].shape)
    save_adapter(trained, tmp_path)
    loaded = load_adapter(quantize_base(gpt()), tmp_path)
    assert {n for n, m in loaded.named_modules() if isinstance(m, QLoRALinear)} == set(quantized_modules(trained))
    np.testing.assert_array_equal(loaded.forward(IDX)[0], trained.forward(IDX)[0])


def test_refusals_name_the_argument_and_change_nothing():
    model = inject_lora(gpt(), LoraConfig(r=2))
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match="quantize the base before get_peft_model"):
        quantize_base(model)
    assert all(np.array_equal(model.params[k], v) for k, v in before.items())
    with pytest.raises(TypeError, match="config must be a QuantizationConfig"):
        quantize_base(gpt(), {"quant_type": "nf4"})
    with pytest.raises(ValueError, match="no float Linear to quantize"):
        quantize_base(gpt(), QuantizationConfig(skip_modules=("blocks", "lm_head")))
    with pytest.raises(ValueError, match="quant_type"):
        QuantizationConfig(quant_type="int4")
    with pytest.raises(ValueError, match="compute_format"):
        QuantizationConfig(compute_format="fp8")
    with pytest.raises(ValueError, match="blocksize"):
        QuantizationConfig(blocksize=0)
    with pytest.raises(TypeError, match="skip_modules"):
        QuantizationConfig(skip_modules=("lm_head", 3))
    with pytest.raises(TypeError, match="base must be a Linear4bit"):
        QLoRALinear.from_linear4bit(model.get_submodule("blocks.0.attn.q_proj"))
