"""QLoRALinear: equal to LoRALinear on the BF16-rounded dequantized weight, gradients, storage, merge, errors."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.formats import BF16, FP16, round_to
from minilora.nn import Linear
from minilora.nn.gpt import GPT, GPTConfig
from minilora.nn.gradcheck import gradcheck
from minilora.peft import LoraConfig, LoRALinear, inject_lora, merge_and_unload
from minilora.peft.qlora import (
    MERGE_WARNING,
    Linear4bit,
    QLoRALinear,
    QuantizedWeight,
    merge_rounding_error,
    prepare_qlora,
    quantized_modules,
)
from minilora.quant import dequantize_4bit, quantize_4bit


def _pair(in_f=96, out_f=40, r=4, seed=0, compute_format=BF16, **kw):
    """A QLoRALinear and the reference LoRALinear whose base weight is its compute-format weight."""
    base = Linear(in_f, out_f, seed=seed)
    bias = base.bias.copy()
    q = QLoRALinear(base, r=r, lora_alpha=8, init_lora_weights="random", seed=seed, compute_format=compute_format,
                    **kw)
    ref = LoRALinear(Linear(in_f, out_f, seed=seed + 1), r=r, lora_alpha=8, init_lora_weights="random",
                     seed=seed, lora_dropout=kw.get("lora_dropout", 0.0))
    ref.weight[...] = q.qweight.compute_weight()
    ref.bias[...] = bias
    ref.A[...], ref.B[...] = q.A, q.B
    return q, ref


@pytest.mark.parametrize("shape", [(7, 96), (2, 3, 96)])
@pytest.mark.parametrize("fmt", [BF16, FP16])
def test_forward_backward_bit_equal_to_lora_on_dequantized_weight(shape, fmt):
    q, ref = _pair(compute_format=fmt)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    y = q.forward(x)
    y_ref = ref.forward(round_to(x, fmt))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, y_ref)
    g = rng.standard_normal(y.shape).astype(np.float32)
    q.zero_grad()
    ref.zero_grad()
    np.testing.assert_array_equal(q.backward(g), ref.backward(g))
    assert sorted(q.grads) == ["lora_A.weight", "lora_B.weight"]  # no weight or bias gradient
    for k in q.grads:
        np.testing.assert_array_equal(q.grads[k], ref.grads[k])


def test_dropout_path_is_lora_path():
    q, ref = _pair(lora_dropout=0.3)
    x = np.random.default_rng(2).standard_normal((5, 96)).astype(np.float32)
    np.testing.assert_array_equal(q.forward(x), ref.forward(round_to(x, BF16)))  # same seed → same mask


def test_compute_weight_is_bf16_of_dequantized_and_base_is_dropped():
    base = Linear(128, 64, seed=3)
    w = base.weight.copy()
    q = QLoRALinear(base, r=2)
    packed, state = quantize_4bit(w, 64, "nf4", compress_statistics=True)
    np.testing.assert_array_equal(q.qweight.packed, packed)
    np.testing.assert_array_equal(q.weight, dequantize_4bit(packed, state))
    wc = q.qweight.compute_weight()
    np.testing.assert_array_equal(wc, round_to(dequantize_4bit(packed, state), BF16))
    assert "weight" not in q.params and "weight" not in base.params  # the float weight is gone
    assert q.cache is None
    q.forward(np.ones((2, 128), np.float32))
    assert q.cache[0][1] is None  # the dequantized weight is not kept between forward and backward


def test_bf16_operands_multiply_exactly_in_float32():
    q, _ = _pair()
    x = np.random.default_rng(4).standard_normal((3, 96)).astype(np.float32)
    xc, wc = round_to(x, BF16), q.qweight.compute_weight()
    exact = xc.astype(np.float64)[:, :, None] * wc.astype(np.float64).T[None]  # every product, float64
    assert np.array_equal(exact.astype(np.float32).astype(np.float64), exact)  # each product fits float32


def test_stored_base_is_4_127_bits_per_param():
    q = QLoRALinear(Linear(256, 256, seed=0), r=4)  # 65536 = 4 · 64 · 256 parameters
    assert q.qweight.bits_per_param == 4 + 8 / 64 + 32 / (64 * 256) == 4.126953125
    assert f"{q.qweight.bits_per_param:.3f}" == "4.127"
    plain = QuantizedWeight(np.ones((256, 256), np.float32), compress_statistics=False)
    assert plain.bits_per_param == 4.5
    assert q.qweight.nbytes == q.qweight.packed.nbytes + 1024 + 4 * 4 + 64 + 4 + 1024  # codes, stats, consts


def test_gradcheck_lora_params_through_frozen_quantized_base():
    base = Linear(24, 12, seed=5)
    q = QLoRALinear(base, r=3, lora_alpha=6, init_lora_weights="random", seed=5, compute_format="float64",
                    blocksize=32)
    q.to("float64").eval()
    x = np.random.default_rng(6).standard_normal((4, 24))
    report = gradcheck(q, x)
    assert set(report) == {"lora_A.weight", "lora_B.weight", "input"}
    assert max(report.values()) < 1e-7, report


def test_gradcheck_of_a_qlora_gpt():
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8, dtype="float64")
    model = prepare_qlora(GPT(cfg, seed=0), LoraConfig(r=2, target_modules="all-linear",
                                                       init_lora_weights="random"),
                          blocksize=32, compute_format="float64")
    model.eval()
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))
    report = gradcheck(model, idx, targets=tgt)
    assert report and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in report)
    assert max(report.values()) < 1e-6, report


def test_prepare_qlora_quantizes_every_block_linear_and_matches_inject_lora_init():
    cfg = GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=32)
    lora = inject_lora(GPT(cfg, seed=0), LoraConfig(r=4, target_modules="all-linear"), seed=7)
    qlora = prepare_qlora(GPT(cfg, seed=0), LoraConfig(r=4, target_modules="all-linear"), seed=7)
    assert qlora.trainable_names() == lora.trainable_names()
    for k in qlora.trainable_names():
        np.testing.assert_array_equal(qlora.params[k], lora.params[k])
    assert len(quantized_modules(qlora)) == 2 * 6  # q, k, v, o, up, down per block; lm_head stays float
    assert "lm_head.weight" in qlora.params and not any(k.endswith("q_proj.weight") for k in qlora.params)


def test_prepare_qlora_non_targets_become_frozen_linear4bit():
    cfg = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=32)
    model = prepare_qlora(GPT(cfg, seed=0), LoraConfig(r=4, target_modules=("q_proj", "v_proj")))
    assert isinstance(model.get_submodule("blocks.0.attn.q_proj"), QLoRALinear)
    assert isinstance(model.get_submodule("blocks.0.mlp.up_proj"), Linear4bit)
    idx = np.random.default_rng(0).integers(0, 16, (2, 8))
    _, loss = model.forward(idx, idx)
    model.zero_grad()
    model.backward()
    assert sorted(model.grads) == sorted(model.trainable_names())
    assert all("lora_" in k for k in model.grads)


def test_linear4bit_backward_is_dx_through_compute_weight():
    lin = Linear(64, 32, seed=2)
    l4 = Linear4bit(lin)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    y = l4.forward(x)
    wc = l4.qweight.compute_weight()
    np.testing.assert_array_equal(y, round_to(x, BF16) @ wc.T + l4.params["bias"])
    g = np.ones_like(y)
    np.testing.assert_array_equal(l4.backward(g), g @ wc)
    assert l4.trainable_names() == []


def test_merge_requantizes_warns_and_loses_part_of_the_update():
    q, _ = _pair(in_f=128, out_f=64)
    x = np.random.default_rng(3).standard_normal((8, 128)).astype(np.float32)
    w0, delta = q.weight, q.delta_weight()
    err = merge_rounding_error(q, x)
    assert not q.merged  # left unchanged
    assert 0 < err["weight_max_err"] and 0 < err["delta_lost"] < 1 and err["output_max_err"] > 0
    y = q.forward(x)
    w_expected = dequantize_4bit(*quantize_4bit(w0 + delta, 64, "nf4", True))
    with pytest.warns(UserWarning, match="rounding errors"):
        q.merge()
    assert str(MERGE_WARNING).startswith("Merge lora module to 4-bit linear")
    np.testing.assert_array_equal(q.weight, w_expected)  # merged weight is itself a 4-bit weight
    # the merged layer is the plain 4-bit layer on w_expected (BF16 operands, float32 accumulation), and
    # merge_rounding_error reported exactly that layer's distance from the unmerged output
    y_merged = round_to(x, BF16) @ round_to(w_expected, BF16).T + q.bias
    np.testing.assert_array_equal(q.forward(x), y_merged)
    assert err["output_max_err"] == float(np.abs(y_merged - y).max())
    assert err["weight_max_err"] == float(np.abs(w_expected - (w0 + delta)).max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.unmerge()
    assert not q.merged


def test_merge_and_unload_leaves_linear4bit():
    cfg = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=32)
    model = prepare_qlora(GPT(cfg, seed=0), LoraConfig(r=4, target_modules="all-linear"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merge_and_unload(model)
    layers = [model.get_submodule(name) for name in quantized_modules(model)]
    assert len(layers) == 6 and all(isinstance(m, Linear4bit) for m in layers)
    assert not any("lora_" in k for k in model.params)


@given(st.integers(1, 5), st.sampled_from([32, 64, 128]), st.integers(0, 2**16))
def test_property_equal_to_reference_any_shape(rows, blocksize, seed):
    base = Linear(64, 24, seed=seed)
    q = QLoRALinear(base, r=2, init_lora_weights="random", seed=seed, blocksize=blocksize)
    ref = LoRALinear(Linear(64, 24, seed=seed), r=2, init_lora_weights="random", seed=seed)
    ref.weight[...], ref.A[...], ref.B[...] = q.qweight.compute_weight(), q.A, q.B
    x = np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32) * 3
    np.testing.assert_array_equal(q.forward(x), ref.forward(round_to(x, BF16)))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"blocksize": 48}, ValueError, "blocksize"),
    ({"quant_type": "int4"}, ValueError, "quant_type"),
    ({"compute_format": "fp8_e4m3"}, ValueError, "compute_format"),
    ({"compute_format": "float16"}, ValueError, "compute_format"),
    ({"r": 0}, ValueError, "r must be"),
])
def test_bad_arguments(kwargs, exc, match):
    base = Linear(64, 32, seed=0)
    args = {"r": 4, **kwargs}
    with pytest.raises(exc, match=match):
        QLoRALinear(base, **args)
    assert "weight" in base.params  # a failed wrap leaves the base intact


def test_bad_inputs():
    q = QLoRALinear(Linear(64, 32, seed=0), r=4)
    with pytest.raises(ValueError, match="in_features=64"):
        q.forward(np.ones((2, 63), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        q.forward(np.ones((2, 64), np.int32))
    with pytest.raises(TypeError, match="Linear"):
        QLoRALinear(q, r=2)
    with pytest.raises(RuntimeError, match="before forward"):
        QLoRALinear(Linear(64, 32, seed=0), r=4).backward(np.ones((1, 32), np.float32))
    with pytest.raises(TypeError, match="QLoRALinear"):
        merge_rounding_error(LoRALinear(Linear(8, 8, seed=0), r=2), np.ones((1, 8), np.float32))
    with pytest.raises(ValueError, match="matches no Linear"):
        prepare_qlora(GPT(GPTConfig(16, 8, 1, 2, 32), seed=0), LoraConfig(target_modules=("nope",)))
    with pytest.raises(ValueError, match="exceeds"):
        prepare_qlora(GPT(GPTConfig(16, 8, 1, 2, 32), seed=0), LoraConfig(r=64, target_modules="all-linear"))


def test_repr():
    q = QLoRALinear(Linear(64, 32, seed=0), r=4)
    assert "QuantizedWeight" in repr(q) and "bf16" in repr(q) and "r=4" in repr(q)


def test_qlora_counts_parameters_as_lora_does(capsys):
    """A 4-bit weight counts by its elements (PEFT's count): QLoRA printed trainable% 75.79 where LoRA printed
    15.03 for the same adapter on the shipped GPT's shape."""
    import minilora
    from minilora.peft import count_parameters, print_trainable_parameters

    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    lora = inject_lora(minilora.load_base_model(), config)
    qlora = prepare_qlora(minilora.load_base_model(), config)
    assert count_parameters(qlora) == count_parameters(lora)
    assert count_parameters(qlora)[1] == minilora.load_base_model().num_params() + count_parameters(lora)[0]
    assert print_trainable_parameters(qlora) == print_trainable_parameters(lora)
    assert print_trainable_parameters(qlora).endswith("trainable%: 15.0313")


def test_num_extra_params_is_the_4bit_elements():
    q = QLoRALinear(Linear(64, 32, seed=0), r=4)
    assert q.num_extra_params() == 64 * 32 and "weight" not in q.params
    assert Linear4bit(Linear(64, 32, seed=0)).num_extra_params() == 64 * 32


def test_base_layer_and_unload_of_qlora():
    q = QLoRALinear(Linear(64, 32, seed=0), r=4, init_lora_weights="random")
    base = q.base_layer
    assert isinstance(base, Linear4bit) and base.qweight is q.qweight and q.get_base_layer() is base
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_array_equal(q.unwrap(merge=False).forward(x), base.forward(x))  # no merge: same 4 bits
    cfg = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=32)
    model = prepare_qlora(GPT(cfg, seed=0), LoraConfig(r=4, target_modules="all-linear", init_lora_weights="random"))
    codes = {name: w.packed.copy() for name, w in quantized_modules(model).items()}
    model.unload()
    assert all(np.array_equal(quantized_modules(model)[n].packed, c) for n, c in codes.items())
    assert not any("lora_" in k for k in model.params)


def test_qlora_modules_to_save_stay_float_and_train():
    cfg = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=32)
    model = prepare_qlora(GPT(cfg, seed=0), LoraConfig(r=4, target_modules=("q_proj",),
                                                       modules_to_save=("mlp.up_proj",)))
    up = model.get_submodule("blocks.0.mlp.up_proj")
    assert isinstance(up, Linear) and not isinstance(up, Linear4bit)
    assert "blocks.0.mlp.up_proj.weight" in model.trainable_names()
    assert isinstance(model.get_submodule("blocks.0.mlp.down_proj"), Linear4bit)
