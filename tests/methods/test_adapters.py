"""Bottleneck adapters in the GPT: AdapterHub's names and placement, near-identity start, bad input."""

import numpy as np
import pytest

from minilora.nn.modules import Block
from minilora.peft import adapters

from .cases import ADAPTER_METHODS, TINY, apply_method, batch, tiny_gpt


def test_names_follow_adapterhub_and_the_base_keeps_its_names():
    base = tiny_gpt()
    names = list(base.params)
    model = adapters.apply(base, adapters.DoubleSeqBnConfig(reduction_factor=2))
    assert [n for n in model.params if n not in names] == [
        f"blocks.{i}.{where}.{layer}.{kind}" for i in range(2) for where in ("attention_adapters", "output_adapters")
        for layer, kinds in (("adapter_down.0", ("weight", "bias")), ("adapter_up", ("weight", "bias")))
        for kind in kinds]
    assert set(names) <= set(model.params)
    assert model.trainable_names() == [n for n in model.params if "_adapters." in n]


@pytest.mark.parametrize("config,shapes", [
    (adapters.DoubleSeqBnConfig(reduction_factor=2), {"attention_adapters": 4, "output_adapters": 4}),
    (adapters.SeqBnConfig(reduction_factor=4), {"output_adapters": 2}),
    (adapters.DoubleSeqBnConfig(reduction_factor=3), {"attention_adapters": 2, "output_adapters": 2}),  # 8 // 3
], ids=["houlsby", "pfeiffer", "floor"])
def test_bottleneck_sizes_are_n_embd_floor_divided_by_the_reduction_factor(config, shapes):
    model = adapters.apply(tiny_gpt(), config)
    for i in range(TINY["n_layer"]):
        block = model.blocks[i]
        for where in ("attention_adapters", "output_adapters"):
            m = shapes.get(where)
            adapter = getattr(block, where)
            assert (adapter is None) if m is None else adapter.params["adapter_down.0.weight"].shape == (m, 8)


def test_reduction_factor_mapping_per_layer():
    config = adapters.DoubleSeqBnConfig(reduction_factor={"1": 4, "default": 2})
    model = adapters.apply(tiny_gpt(), config)
    assert model.blocks[0].output_adapters.bottleneck_size == 4 and model.blocks[1].output_adapters.bottleneck_size == 2


def test_mam_init_is_exactly_the_pretrained_model_and_bert_init_is_near_it():
    idx, _ = batch()
    base_logits, _ = tiny_gpt().forward(idx)
    exact = adapters.apply(tiny_gpt(), adapters.DoubleSeqBnConfig(reduction_factor=2, init_weights="mam_adapter"))
    np.testing.assert_array_equal(exact.forward(idx)[0], base_logits)
    near = adapters.apply(tiny_gpt(), adapters.DoubleSeqBnConfig(reduction_factor=2))  # "bert": N(0, 0.02)
    change = np.abs(near.forward(idx)[0] - base_logits).max() / np.abs(base_logits).max()
    assert 0 < change < 1e-2


@pytest.mark.parametrize("original_ln_before", [False, True], ids=["houlsby-reads-h", "pfeiffer-reads-h+x"])
def test_output_adapter_reads_the_mlp_output_or_the_residual_stream(original_ln_before):
    """AdapterHub on a pre-LN block: z = m (Houlsby) or z = m + h (Pfeiffer, ``original_ln_before``)."""
    config = adapters.BnConfig(mh_adapter=False, output_adapter=True, reduction_factor=2, non_linearity="relu",
                               original_ln_before=original_ln_before, init_weights="mam_adapter")
    model = adapters.apply(tiny_gpt(), config)
    block = model.blocks[0]
    seen = []
    forward = block.output_adapters.forward
    block.output_adapters.forward = lambda z: seen.append(z.copy()) or forward(z)
    x = np.random.default_rng(0).standard_normal((2, 3, 8))
    out = block.forward(x)
    plain: Block = block.unwrap()
    h = x + plain.attn.forward(plain.ln_1.forward(x))
    m = plain.mlp.forward(plain.ln_2.forward(h))
    np.testing.assert_allclose(seen[0], m + h if original_ln_before else m, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, h + m, rtol=1e-12, atol=1e-12)  # g = 0 at mam init


def test_unload_gives_back_the_plain_blocks():
    base = tiny_gpt()
    idx, _ = batch()
    before, _ = base.forward(idx)
    model = adapters.apply(base, adapters.DoubleSeqBnConfig(reduction_factor=2))
    adapters.unload_adapters(model)
    assert all(type(b) is Block for b in model.blocks) and not hasattr(model, "adapter_config")
    np.testing.assert_array_equal(model.forward(idx)[0], before)


@pytest.mark.parametrize("make,match", [
    (lambda: adapters.DoubleSeqBnConfig(reduction_factor=0), "reduction_factor"),
    (lambda: adapters.DoubleSeqBnConfig(reduction_factor=-4), "reduction_factor"),
    (lambda: adapters.DoubleSeqBnConfig(reduction_factor="16"), "reduction_factor"),
    (lambda: adapters.DoubleSeqBnConfig(reduction_factor={"default": 0}), "reduction_factor"),
    (lambda: adapters.DoubleSeqBnConfig(non_linearity="softsign"), "non_linearity"),
    (lambda: adapters.DoubleSeqBnConfig(init_weights="xavier"), "init_weights"),
    (lambda: adapters.DoubleSeqBnConfig(mh_adapter=False, output_adapter=False), "mh_adapter and output_adapter"),
    (lambda: adapters.DoubleSeqBnConfig(scaling=float("nan")), "scaling"),
    (lambda: adapters.DoubleSeqBnConfig(leave_out="x"), "leave_out"),
], ids=["zero", "negative", "string", "mapping", "activation", "init", "no-adapter", "scaling", "leave-out"])
def test_bad_configs_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("config,match", [
    (adapters.DoubleSeqBnConfig(reduction_factor=9), r"reduction_factor=9 leaves no hidden unit .* 8 // 9 = 0"),
    (adapters.DoubleSeqBnConfig(reduction_factor={"1": 16, "default": 2}), "reduction_factor=16 leaves no hidden"),
    (adapters.DoubleSeqBnConfig(reduction_factor={"0": 2}), "no entry for layer 1"),
    (adapters.DoubleSeqBnConfig(leave_out=[2]), r"leave_out=\[2\] has layers \[2\] outside"),
    (adapters.DoubleSeqBnConfig(leave_out=[0, 1]), "leaves out every layer"),
], ids=["too-large", "too-large-in-layer-1", "mapping-without-default", "leave-out-range", "leave-out-all"])
def test_bad_sizes_are_refused_before_the_model_changes(config, match):
    base = tiny_gpt()
    with pytest.raises(ValueError, match=match):
        adapters.apply(base, config)
    assert all(type(b) is Block for b in base.blocks) and base.trainable_names() == list(base.params)


def test_adapters_twice_and_on_other_models_are_refused():
    model = adapters.apply(tiny_gpt(), adapters.SeqBnConfig(reduction_factor=2))
    with pytest.raises(ValueError, match="already has adapters"):
        adapters.apply(model, adapters.SeqBnConfig(reduction_factor=2))
    with pytest.raises(TypeError, match="GPT"):
        adapters.apply(object(), adapters.SeqBnConfig())
    with pytest.raises(TypeError, match="BnConfig"):
        adapters.apply(tiny_gpt(), {"reduction_factor": 2})


@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_adapter_model_keeps_the_gpt_interface(name):
    model, _ = apply_method(name)
    logits, loss = model.forward(*batch())
    model.zero_grad()
    model.backward()
    assert logits.shape == (2, 4, TINY["vocab_size"]) and set(model.grads) == set(model.trainable_names())
