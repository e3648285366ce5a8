"""transformers and PEFT read what minilora writes: GPT-2 checkpoints and LoRA adapters on the fused c_attn.

Skipped without torch, transformers and peft (CI); run with the golden-vector venv::

    TORCHDYNAMO_DISABLE=1 /work/goldenv/bin/python -m pytest -q tests/hf/test_hf_interop.py
"""

import numpy as np
import pytest
from conftest import GOLDEN

from minilora.hf.adapter import save_hf_adapter
from minilora.nn.gpt import GPT
from minilora.peft import LoraConfig, inject_lora

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

CASES = [GOLDEN / "gpt2" / f"case{i}" for i in range(4)]


def hf_logits(model, idx):
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(idx))).logits.numpy()


def assert_close(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


def test_transformers_loads_the_shipped_base_gpt(tmp_path):
    import minilora

    base = minilora.load_base_model()
    base.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = np.random.default_rng(0).integers(0, base.config.vocab_size, (3, base.config.block_size))
    assert_close(base.forward(idx)[0], hf_logits(hf, idx))


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_transformers_loads_save_pretrained(case, tmp_path):
    model = GPT.from_pretrained(case)
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = np.random.default_rng(1).integers(0, model.config.vocab_size, (2, model.config.block_size))
    assert_close(model.forward(idx)[0], hf_logits(hf, idx))
    np.testing.assert_array_equal(hf_logits(hf, idx),
                                  hf_logits(transformers.GPT2LMHeadModel.from_pretrained(case).eval(), idx))


ADAPTERS = {
    "q,v": LoraConfig(r=2, lora_alpha=4, target_modules=("q_proj", "v_proj")),
    "q,k,v": LoraConfig(r=3, lora_alpha=5, target_modules=("q_proj", "k_proj", "v_proj")),
    "all-linear": LoraConfig(r=2, lora_alpha=8, target_modules="all-linear"),
    "rslora k,o,down": LoraConfig(r=4, lora_alpha=3, use_rslora=True, target_modules=("k_proj", "o_proj",
                                                                                       "down_proj")),
    "first block only": LoraConfig(r=2, lora_alpha=2, target_modules=r"blocks\.0\.attn\.(q|v)_proj"),
    "lm_head": LoraConfig(r=2, lora_alpha=2, target_modules=("v_proj", "lm_head")),
}


@pytest.mark.parametrize("name", ADAPTERS)
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=lambda p: p.name)
def test_peft_loads_the_adapter_onto_gpt2lmheadmodel(case, name, tmp_path):
    config = ADAPTERS[name]
    model = GPT.from_pretrained(case)
    if name == "lm_head" and model.config.tie_word_embeddings:
        pytest.skip("a tied model has no lm_head Linear")
    inject_lora(model, config, seed=3)
    rng = np.random.default_rng(4)
    for p_name, p in model.params.items():  # B = 0 at init: give every adapter a visible effect
        if ".lora_" in p_name:
            p[...] = rng.standard_normal(p.shape) * 0.3
    save_hf_adapter(model, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(case).eval()
    idx = np.random.default_rng(5).integers(0, model.config.vocab_size, (2, model.config.block_size))
    base_logits = hf_logits(hf, idx)
    with _no_missing_key_warnings():
        peft_model = peft.PeftModel.from_pretrained(hf, tmp_path).eval()
    ours = model.eval().forward(idx)[0]
    theirs = hf_logits(peft_model, idx)
    assert np.abs(theirs - base_logits).max() > 1e-3  # the adapter changes the output
    assert_close(ours, theirs)
    merged = peft_model.merge_and_unload()  # fan_in_fan_out=True: PEFT merges ΔWᵀ into the Conv1D weight
    assert_close(ours, hf_logits(merged, idx))


class _no_missing_key_warnings:
    """Fail when PEFT warns that adapter weights were missing or unexpected (a silent partial load)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._log = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        bad = [str(w.message) for w in self._log if "missing" in str(w.message).lower()
               or "unexpected" in str(w.message).lower()]
        assert not bad, bad
        return False


def test_peft_loads_the_adapter_the_cli_trains(tmp_path):
    """``finetune --base --text --save``'s adapter, on the committed tied checkpoint, through PEFT."""
    from minilora.__main__ import main

    tiny = GOLDEN / "gpt2_tiny"
    text = tmp_path / "t.txt"
    text.write_text((GOLDEN / "tokenizer" / "corpus.txt").read_text(encoding="utf-8") * 3, encoding="utf-8")
    assert main(["finetune", "--base", str(tiny), "--text", str(text), "--steps", "5", "--block-size", "32",
                 "--batch-size", "4", "--lr", "0.01", "--save", str(tmp_path / "ad")]) == 0

    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny).eval()
    idx = np.random.default_rng(6).integers(0, 400, (2, 32))
    base_logits = hf_logits(hf, idx)
    with _no_missing_key_warnings():
        pm = peft.PeftModel.from_pretrained(hf, tmp_path / "ad").eval()  # wraps hf in place
    theirs = hf_logits(pm, idx)
    assert np.abs(theirs - base_logits).max() > 1e-4  # training moved B away from zero
    # minilora's model after the same 5 steps (the run is deterministic)
    from minilora.experiments.gpt2 import finetune_text, load_text
    from minilora.tokenizer import GPT2Tokenizer

    data = load_text(text, GPT2Tokenizer.from_pretrained(tiny), 32)
    model, _ = finetune_text(GPT.from_pretrained(tiny), data, "lora",
                             LoraConfig(r=8, lora_alpha=16, target_modules=("q_proj", "v_proj")), steps=5,
                             lr=0.01, batch_size=4)
    assert_close(model.eval().forward(idx)[0], theirs)


def test_bitsandbytes_reads_the_4bit_weights_minilora_saves(tmp_path):
    """bitsandbytes' QuantState.from_dict on a saved layer's ``….weight.*`` tensors, and its dequantize_4bit,
    give minilora's dequantized weight bit for bit."""
    bnb_functional = pytest.importorskip("bitsandbytes.functional")
    from minilora.hf.safetensors_io import load_file
    from minilora.peft.qlora import prepare_qlora, quantized_modules

    model = prepare_qlora(GPT.from_pretrained(GOLDEN / "gpt2_tiny"), LoraConfig(r=2, target_modules="all-linear"))
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    keyset = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)  # bnb's pure-PyTorch kernels
    for name, q in quantized_modules(model).items():
        prefix = f"{name}.weight."
        qs = bnb_functional.QuantState.from_dict(
            {k[len(prefix):]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)},
            device=torch.device("cpu"))
        absmax = bnb_functional.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset if qs.nested else qs.absmax
        w = torch.ops.bitsandbytes.dequantize_4bit.default.redispatch(
            keyset, torch.from_numpy(tensors[f"{name}.weight"]), absmax, qs.blocksize, qs.quant_type,
            list(qs.shape), torch.float32)
        np.testing.assert_array_equal(w.numpy(), q.dequantize())
