"""PEFT itself loads minilora's prompt adapters on the exported Hugging Face GPT-2 and gives the same logits.

``GPT.save_pretrained`` writes the base as a ``GPT2LMHeadModel`` checkpoint, :func:`save_prompt_adapter` the
adapter; ``peft.PeftModel.from_pretrained`` reads both. Skipped without torch, transformers and peft (CI), and
while ``GPT.save_pretrained`` (the Hugging Face export) is not in this checkout. Run it with::

    TORCHDYNAMO_DISABLE=1 PYTHONPATH=$PWD /work/goldenv/bin/python -m pytest tests/methods/test_peft_interop.py
"""

import numpy as np
import pytest

import minilora
from minilora import data
from minilora.nn import GPT
from minilora.peft import p_tuning, prefix_tuning, prompt_tuning, save_prompt_adapter

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("safetensors")
if not hasattr(GPT, "save_pretrained"):
    pytest.skip("GPT.save_pretrained (the Hugging Face GPT-2 export) is not in this checkout yet",
                allow_module_level=True)

METHODS = {
    "prompt": (prompt_tuning.apply, prompt_tuning.PromptTuningConfig(4)),
    "prompt_text": (prompt_tuning.apply, prompt_tuning.PromptTuningConfig(4, "TEXT", [15, 10])),
    "ptuning_mlp": (p_tuning.apply, p_tuning.PromptEncoderConfig(4, encoder_hidden_size=32)),
    "ptuning_lstm": (p_tuning.apply, p_tuning.PromptEncoderConfig(4, "LSTM", encoder_hidden_size=16)),
    "prefix": (prefix_tuning.apply, prefix_tuning.PrefixTuningConfig(4)),
    "prefix_proj": (prefix_tuning.apply, prefix_tuning.PrefixTuningConfig(4, True, 32)),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_peft_loads_the_prompt_adapter_and_gives_the_same_logits(tmp_path, name):
    apply, config = METHODS[name]
    model = apply(minilora.load_base_model(), config, seed=1)
    rng = np.random.default_rng(2)
    for n in model.trainable_names():  # as if trained
        model.params[n][...] += rng.normal(0, 0.1, model.params[n].shape).astype(np.float32)
    model.base_model.save_pretrained(tmp_path / "base")
    save_prompt_adapter(model, tmp_path / "adapter")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "base"), attn_implementation="eager").eval()
    peft_model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    idx, _ = data.heldout_eval_batch(16)
    with torch.no_grad():
        theirs = peft_model(input_ids=torch.from_numpy(idx)).logits[:, -idx.shape[1]:].numpy()
    ours, _ = model.forward(idx)
    assert not np.allclose(ours, minilora.load_base_model().forward(idx)[0], atol=1e-2)  # the adapter matters
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * np.abs(theirs).max())
