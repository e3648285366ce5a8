"""GPT.backward skips the input gradient of a block when nothing below it needs one, and changes no gradient.

The reference is the same backward with the skip switched off (``minilora.nn.gpt.SKIP_UNUSED_INPUT_GRADS``):
every module then computes its input gradient, as before the skip existed (and as the gradchecks of tests/nn,
tests/lora, tests/qlora and tests/methods check). Each method's gradients must be equal to it bit for bit, and the
skip must happen exactly where nothing below a block is trained: block 0 of LoRA, QLoRA, prefix tuning (whose
prefix gradients come out of block 0's attention backward itself) and adapters; never with ``inputs_embeds``
(prompt tuning, p-tuning) or trainable embeddings (full fine-tuning).
"""

import inspect

import numpy as np
import pytest

from minilora.experiments.quant_eval import Int8Linear
from minilora.nn import GPT, GPTConfig
from minilora.nn import functional as F
from minilora.nn import gpt as gpt_module
from minilora.nn.modules import Block, CausalSelfAttention, LayerNorm, Linear
from minilora.peft import (
    DoubleSeqBnConfig,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    SeqBnConfig,
    get_peft_model,
    prepare_qlora,
)
from minilora.peft.adapters import BlockWithAdapters
from minilora.peft.inject import LORA_LAYERS
from minilora.peft.lora import LoRALinear
from minilora.peft.qlora import Linear4bit, QLoRALinear

CFG = dict(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=16, mlp_ratio=2)
QV = ("q_proj", "v_proj")


def _full(model):
    return model


def _full_frozen_embeddings(model):
    return model.freeze(["wte.weight", "wpe.weight"])


#: name -> how to turn a fresh GPT into the model trained with the method
METHODS = {
    "full": _full,
    "full, frozen embeddings": _full_frozen_embeddings,
    "lora": lambda m: get_peft_model(m, LoraConfig(r=2, target_modules=QV), seed=1),
    "lora, ln_1 of block 0 in modules_to_save": lambda m: get_peft_model(
        m, LoraConfig(r=2, target_modules=QV, modules_to_save=("blocks.0.ln_1",)), seed=1),
    "lora on block 1 only": lambda m: get_peft_model(m, LoraConfig(r=2, target_modules=("blocks.1.attn.q_proj",)),
                                                     seed=1),
    "qlora": lambda m: prepare_qlora(m, LoraConfig(r=2, target_modules=QV), blocksize=32, seed=1),
    "qlora all-linear": lambda m: prepare_qlora(m, LoraConfig(r=2, target_modules="all-linear"), blocksize=32, seed=1),
    "prefix": lambda m: get_peft_model(m, PrefixTuningConfig(3), seed=1),
    "prefix with projection": lambda m: get_peft_model(
        m, PrefixTuningConfig(3, prefix_projection=True, encoder_hidden_size=5), seed=1),
    "prompt": lambda m: get_peft_model(m, PromptTuningConfig(3), seed=1),
    "p-tuning": lambda m: get_peft_model(m, PromptEncoderConfig(3, encoder_hidden_size=5), seed=1),
    "houlsby adapters": lambda m: get_peft_model(m, DoubleSeqBnConfig(reduction_factor=4), seed=1),
    "pfeiffer adapters": lambda m: get_peft_model(m, SeqBnConfig(reduction_factor=4), seed=1),
    "adapters, block 0 left out": lambda m: get_peft_model(m, DoubleSeqBnConfig(reduction_factor=4, leave_out=[0]),
                                                           seed=1),
}

#: the input-gradient matmuls (``linear_backward`` with ``need_dx``) the skip saves in a 2-layer model
SAVED_DX_MATMULS = {
    "full": 0,
    "full, frozen embeddings": 0,  # block 0's trainable ln_1 needs its output gradient: only ln_1's dx is saved
    "lora": 5,  # block 0's q, k, v base weights and the lora_A of q and v
    "lora, ln_1 of block 0 in modules_to_save": 0,  # as with full fine-tuning: only ln_1's dx is saved
    "lora on block 1 only": 4 + 6,  # block 1's q (base, lora_A), k, v; block 0 (o, q, k, v, up, down) is not run
    "qlora": 4,  # block 0's q, v (base, lora_A); its 4-bit k_proj is a Linear4bit (no linear_backward)
    "qlora all-linear": 6,  # block 0's q, k, v (base, lora_A)
    "prefix": 3,  # block 0's q, k, v: the prefix gradients come out of its attention backward
    "prefix with projection": 3,
    "prompt": 0,  # inputs_embeds: the prompt's gradient is block 0's input gradient
    "p-tuning": 0,
    "houlsby adapters": 3,  # block 0's q, k, v
    "pfeiffer adapters": 3,
    "adapters, block 0 left out": 3 + 6,  # block 1's q, k, v; block 0 is not run
}


def _model(method: str, dtype: str):
    gpt = GPT(GPTConfig(**CFG, dtype=dtype), seed=0)
    model = METHODS[method](gpt)
    rng = np.random.default_rng(3)
    for name in model.trainable_names():  # off the initialization: LoRA's B = 0 would leave dA = 0
        p = model.params[name]
        p[...] += rng.normal(0, 0.3, p.shape).astype(p.dtype)
    return model, gpt


def _batch():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, CFG["vocab_size"], (3, 7))
    targets = rng.integers(0, CFG["vocab_size"], (3, 7))
    targets[0, :2] = F.IGNORE_INDEX
    return idx, targets


def _step(model):
    """Loss and copies of every gradient after one forward/backward from zeroed gradients."""
    model.zero_grad()
    _, loss = model.forward(*_batch())
    model.backward()
    return loss, {k: g.copy() for k, g in model.grads.items()}


def _count_dx_matmuls(monkeypatch):
    """Patch linear_backward to count the calls that compute an input gradient; returns the counter."""
    calls = {"dx": 0}
    real = F.linear_backward

    def counting(dout, cache, need_dw=True, need_db=None, need_dx=True):
        calls["dx"] += bool(need_dx)
        return real(dout, cache, need_dw, need_db, need_dx)

    monkeypatch.setattr(F, "linear_backward", counting)
    return calls


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_gradient_is_bit_identical_to_the_backward_without_the_skip(method, dtype, monkeypatch):
    model, _ = _model(method, dtype)
    monkeypatch.setattr(gpt_module, "SKIP_UNUSED_INPUT_GRADS", False)
    ref_loss, ref = _step(model)
    monkeypatch.setattr(gpt_module, "SKIP_UNUSED_INPUT_GRADS", True)
    loss, got = _step(model)
    assert loss == ref_loss
    assert set(got) == set(ref) == set(model.trainable_names())
    for k in ref:
        assert np.array_equal(got[k], ref[k]), k
        assert np.abs(ref[k]).max() > 0, k  # every trained path carries gradient


@pytest.mark.parametrize("method", list(METHODS))
def test_the_skip_saves_exactly_the_unused_input_gradient_matmuls(method, monkeypatch):
    model, _ = _model(method, "float32")
    calls = _count_dx_matmuls(monkeypatch)
    monkeypatch.setattr(gpt_module, "SKIP_UNUSED_INPUT_GRADS", False)
    _step(model)
    without_skip, calls["dx"] = calls["dx"], 0
    monkeypatch.setattr(gpt_module, "SKIP_UNUSED_INPUT_GRADS", True)
    _step(model)
    assert without_skip - calls["dx"] == SAVED_DX_MATMULS[method]


def _spy_backward(module, log, name):
    """Record the need_dx of each call of ``module.backward`` under ``name`` (an instance attribute)."""
    real = module.backward

    def spy(dout, need_dx=True):
        log.append((name, need_dx))
        return real(dout, need_dx=need_dx)

    module.backward = spy


#: the methods where block 0 skips its input gradient (nothing below it is trained, and the input is token ids)
BLOCK_0_SKIPS = {"full, frozen embeddings", "lora", "lora, ln_1 of block 0 in modules_to_save", "qlora",
                 "qlora all-linear", "prefix", "prefix with projection", "houlsby adapters", "pfeiffer adapters"}
#: of those, the ones whose block-0 ln_1 is trainable: its weight gradient needs its output gradient, so the
#: q/k/v projections still compute theirs, and only ln_1's own input gradient is skipped
LN_1_TRAINED = {"full, frozen embeddings", "lora, ln_1 of block 0 in modules_to_save"}


@pytest.mark.parametrize("method", list(METHODS))
def test_block_0_projections_skip_their_input_gradient_exactly_when_nothing_below_is_trained(method):
    model, gpt = _model(method, "float32")
    log = []
    for i, block in enumerate(gpt.blocks):
        for p in ("ln_1", "attn.q_proj", "attn.k_proj", "attn.v_proj"):
            _spy_backward(block.get_submodule(p), log, f"blocks.{i}.{p}")
    _step(model)
    called = dict(log)
    assert len(called) == len(log)  # each module's backward ran at most once
    qkv = lambda i: {called.get(f"blocks.{i}.attn.{p}") for p in ("q_proj", "k_proj", "v_proj")}  # noqa: E731
    if method in ("lora on block 1 only", "adapters, block 0 left out"):  # block 1 skips: block 0 is not run
        assert qkv(0) == {None} and "blocks.0.ln_1" not in called
        assert qkv(1) == {False} and "blocks.1.ln_1" not in called  # frozen: its backward is not run
    elif method in LN_1_TRAINED:
        assert qkv(0) == {True} and called["blocks.0.ln_1"] is False
    elif method in BLOCK_0_SKIPS:
        assert qkv(0) == {False} and "blocks.0.ln_1" not in called  # frozen: its backward is not run
    else:
        assert qkv(0) == {True} and called["blocks.0.ln_1"] is True
    if method not in ("lora on block 1 only", "adapters, block 0 left out"):
        assert qkv(1) == {True} and called["blocks.1.ln_1"] is True


def test_the_4bit_bases_of_block_0_are_not_dequantized_for_an_unused_input_gradient(monkeypatch):
    model, gpt = _model("qlora", "float32")
    dequantized = []
    for name, mod in gpt.named_modules():
        if isinstance(mod, (Linear4bit, QLoRALinear)):
            real = mod.qweight.compute_weight
            mod.qweight.compute_weight = lambda real=real, name=name: dequantized.append(name) or real()
    model.zero_grad()
    model.forward(*_batch())
    dequantized.clear()
    model.backward()
    assert not any(n.startswith("blocks.0.attn.") and n.split(".")[-1] in ("q_proj", "k_proj", "v_proj")
                   for n in dequantized)
    assert {"blocks.1.attn.q_proj", "blocks.1.attn.k_proj", "blocks.1.attn.v_proj"} <= set(dequantized)


@pytest.mark.parametrize("method", ["lora on block 1 only", "adapters, block 0 left out", "lora"])
def test_modules_whose_backward_is_skipped_release_their_caches_as_the_backward_would(method, monkeypatch):
    def held(model):
        model.zero_grad()
        model.forward(*_batch())
        model.backward()
        return {name for name, mod in model.named_modules() if mod.cache is not None}

    model, _ = _model(method, "float32")
    monkeypatch.setattr(gpt_module, "SKIP_UNUSED_INPUT_GRADS", False)
    ref = held(model)
    monkeypatch.setattr(gpt_module, "SKIP_UNUSED_INPUT_GRADS", True)
    assert held(model) == ref


def test_prefix_gradients_and_inputs_embeds_gradients_are_unchanged(monkeypatch):
    for method, key in (("prefix", "past_key_values"), ("prompt", "inputs_embeds")):
        model, gpt = _model(method, "float32")
        results = []
        for skip in (False, True):
            monkeypatch.setattr(gpt_module, "SKIP_UNUSED_INPUT_GRADS", skip)
            model.zero_grad()
            model.forward(*_batch())
            model.base_model.backward()  # the GPT's backward alone, so input_grads is still there to read
            grad = gpt.input_grads[key]
            results.append([a for pair in grad for a in pair] if key == "past_key_values" else [grad])
        assert len(results[0]) == len(results[1])
        assert all(np.array_equal(a, b) for a, b in zip(*results))


def test_every_module_that_can_fill_a_block_slot_takes_need_dx():
    """The types a block's q/k/v_proj, ln_1, attn, or the block itself can be under every method here, the
    layers LoRA wraps (``LORA_LAYERS``) and the wrappers it builds: GPT.backward passes them ``need_dx``."""
    types = {Linear, LayerNorm, CausalSelfAttention, Block, BlockWithAdapters, LoRALinear, QLoRALinear, Linear4bit,
             Int8Linear, *LORA_LAYERS}
    for method in METHODS:
        _, gpt = _model(method, "float32")
        for block in gpt.blocks:
            types |= {type(block), type(block.ln_1), type(block.attn)}
            types |= {type(block.attn.get_submodule(p)) for p in ("q_proj", "k_proj", "v_proj")}
    for wrap in LORA_LAYERS.values():
        types.add(wrap if isinstance(wrap, type) else wrap.__self__)  # a class, or a classmethod of one
    for cls in types:
        params = inspect.signature(cls.backward).parameters
        assert "need_dx" in params and params["need_dx"].default is True, cls.__name__
