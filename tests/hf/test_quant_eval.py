"""quant_eval: QLoRA's Table 2 on the shipped base GPT and on a GPT-2 checkpoint."""

import numpy as np
import pytest
from conftest import GOLDEN

import minilora
from minilora import data
from minilora.experiments.quant_eval import FORMATS, Int8Linear, quant_eval, quantized_linears, stored_as
from minilora.nn.gpt import GPT
from minilora.nn.modules import Linear
from minilora.peft import LoraConfig, inject_lora
from minilora.train import evaluate


@pytest.fixture(scope="module")
def base():
    return minilora.load_base_model()


def snapshot(model):
    return {k: (v, v.copy()) for k, v in model.params.items()}


def assert_unchanged(model, snap):
    params = model.params
    assert sorted(params) == sorted(snap)
    for k, (obj, values) in snap.items():
        assert params[k] is obj  # the very array, not a copy
        np.testing.assert_array_equal(params[k], values)
    assert all(type(m) is not Int8Linear for _, m in model.named_modules())


def test_table_on_the_shipped_base_gpt(base):
    batch = data.heldout_eval_batch()
    snap = snapshot(base)
    table = quant_eval(base, [batch])
    assert_unchanged(base, snap)
    assert [r.format for r in table.rows] == list(FORMATS)
    assert table["fp32"].loss == evaluate(base, batch)  # the reference row is the model itself
    assert table.tokens == int((batch[1] != -100).sum())
    for r in table.rows:
        assert np.isfinite(r.loss) and r.perplexity == pytest.approx(np.exp(r.loss))
    assert isinstance(table.paper_ordering(), bool)
    text = str(table)
    assert "NF4 + DQ" in text and "perplexity" in text


def test_bits_per_parameter(base):
    table = quant_eval(base, [data.heldout_eval_batch(64)])
    bits = {r.format: r.bits_per_param for r in table.rows}
    in_features = {base.get_submodule(n).in_features for n in quantized_linears(base)}
    assert bits["fp32"] == 32 and bits["bf16"] == bits["fp16"] == 16
    assert 8 < bits["int8"] <= 8 + 32 / min(in_features)  # int8 codes + one float32 absmax per row
    assert bits["int4"] == bits["fp4"] == bits["nf4"] == 4.5  # 4-bit codes + a float32 absmax per 64
    assert 4.125 < bits["nf4+dq"] < 4.2  # the absmax in 8 bits (+ second-level scales)


def test_nf4_moves_the_loss_and_bf16_barely(base):
    """A 4-bit round trip changes the model more than a 16-bit one (the weights are not all representable)."""
    batch = data.task_batch(data.PRETRAIN_TASKS, 256, np.random.default_rng(3))
    t = quant_eval(base, [batch], formats=("fp32", "bf16", "nf4"))
    assert abs(t["bf16"].loss - t["fp32"].loss) < abs(t["nf4"].loss - t["fp32"].loss)


def test_model_is_restored_after_an_error(base):
    snap = snapshot(base)
    idx, targets = data.heldout_eval_batch(8)
    bad = (idx + 100, targets)  # token ids out of range: the forward raises inside the swapped state
    for fmt in ("nf4", "llm.int8"):
        with pytest.raises(ValueError, match="idx values must be token ids"):
            quant_eval(base, [(idx, targets), bad], formats=(fmt,))
        assert_unchanged(base, snap)


def test_llm_int8_swaps_layers_inside_the_block_only(base):
    names = quantized_linears(base)
    with stored_as(base, "llm.int8") as bits:
        assert all(type(base.get_submodule(n)) is Int8Linear for n in names)
        assert bits > 0
    assert all(type(base.get_submodule(n)) is Linear for n in names)
    assert "lm_head" not in names  # kept in float, as transformers keeps it in 16 bits


def test_on_a_tied_gpt2_checkpoint():
    model = GPT.from_pretrained(GOLDEN / "gpt2_tiny")
    rng = np.random.default_rng(0)
    idx = rng.integers(0, model.config.vocab_size, (2, 32))
    table = quant_eval(model, [(idx[:, :-1], idx[:, 1:])], formats=("fp32", "fp4", "nf4", "int4"))
    assert table.paper_ordering() in (True, False)
    assert len(quantized_linears(model)) == 6 * model.config.n_layer  # q, k, v, o, up, down per block


def test_bad_arguments(base):
    batch = data.heldout_eval_batch(8)
    with pytest.raises(ValueError, match="formats must be a non-empty subset"):
        quant_eval(base, [batch], formats=("int3",))
    with pytest.raises(ValueError, match="batches hold no targets"):
        quant_eval(base, [(batch[0], np.full_like(batch[1], -100))], formats=("fp32",))
    lora = inject_lora(minilora.load_base_model(), LoraConfig(r=2))
    with pytest.raises(ValueError, match="merge_and_unload"):
        quant_eval(lora, [batch])


@pytest.mark.parametrize("i", range(4))
def test_table_equals_torch_and_bitsandbytes_on_gpt2_checkpoints(i):
    """bf16/fp16 (torch casts) and fp4/nf4/nf4+dq (bitsandbytes 0.50.2) round trips of every Conv1D weight of
    transformers' GPT2LMHeadModel give the same held-out loss (golden: tools/golden/gpt2.py)."""
    from conftest import load_golden

    g = load_golden("gpt2")
    model = GPT.from_pretrained(GOLDEN / "gpt2" / f"case{i}")
    formats = ("bf16", "fp16", "fp4", "nf4", "nf4+dq")
    table = quant_eval(model, [(g[f"c{i}_idx"], g[f"c{i}_targets"])], formats=formats)
    for fmt in formats:
        ref = float(g[f"c{i}_qloss_{fmt}"])
        assert table[fmt].loss == pytest.approx(ref, rel=2e-6), fmt
    # the formats really differ from one another on these weights (the comparison is not vacuous)
    assert len({round(r.loss, 6) for r in table.rows}) >= 3
