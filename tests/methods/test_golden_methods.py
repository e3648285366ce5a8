"""The prompt methods against PEFT 0.21.2 on transformers' GPT-2 (golden vectors, tests/golden/methods.npz).

The generator (tools/golden/methods.py) loaded the same weights into ``GPT2LMHeadModel``, wrapped it with
``peft.get_peft_model`` and set the prompt encoder's parameters; here minilora's method gets those parameters
(PEFT's names are minilora's) and must give PEFT's logits, loss, every encoder gradient, the tensor PEFT saves
(``prompt_embeddings``) and the ``adapter_config.json`` PEFT writes. This pins the positions (virtual tokens
0..p-1; after a prefix the real tokens p..p+T-1), the prefix layout and the encoders.
"""

import json

import numpy as np
import pytest
from conftest import load_golden

from minilora.nn import GPT, GPTConfig
from minilora.peft import p_tuning, prefix_tuning, prompt_tuning
from minilora.peft.prompt_io import prompt_config_dict

CONFIG_CLASSES = {"PromptTuningConfig": (prompt_tuning.PromptTuningConfig, prompt_tuning.apply),
                  "PromptEncoderConfig": (p_tuning.PromptEncoderConfig, p_tuning.apply),
                  "PrefixTuningConfig": (prefix_tuning.PrefixTuningConfig, prefix_tuning.apply)}
CASES = [(c, m) for c in ("odd", "deep") for m in ("prompt", "ptuning_mlp", "ptuning_lstm", "prefix", "prefix_proj")]


@pytest.fixture(scope="module")
def golden():
    return load_golden("methods")


def _model(golden, cname, method):
    case = next(c for c in json.loads(str(golden["cases_json"])) if c["name"] == cname)
    base = GPT(GPTConfig(**case["config"], dtype="float64"), seed=0)
    flat, offset, state = golden[f"{cname}.w"], 0, {}
    for name, shape in zip(case["params"], case["shapes"]):
        n = int(np.prod(shape))
        state[name] = flat[offset:offset + n].reshape(shape)
        offset += n
    base.load_state_dict(state)
    spec = dict(case["methods"][method])
    cls, apply = CONFIG_CLASSES[spec.pop("class")]
    model = apply(base, cls(**spec), seed=0)
    prefix = f"{cname}.{method}.param."
    theirs = {k[len(prefix):]: v for k, v in golden.items() if k.startswith(prefix)}
    ours = model.prompt_encoder.params
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))  # PEFT's parameter names
    for k, v in theirs.items():
        ours[k][...] = v
    return model, golden[f"{cname}.idx"], golden[f"{cname}.targets"]


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("cname,method", CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_logits_loss_and_gradients_equal_peft(golden, cname, method):
    model, idx, targets = _model(golden, cname, method)
    key = f"{cname}.{method}."
    model.zero_grad()
    logits, loss = model.forward(idx, targets)
    model.backward()
    assert _rel(logits, golden[key + "logits"]) < 1e-12
    assert abs(loss - float(golden[key + "loss"])) < 1e-12
    for name, g in model.prompt_encoder.grads.items():
        assert _rel(g, golden[f"{key}grad.{name}"]) < 1e-10, name


@pytest.mark.parametrize("cname,method", CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_saved_prompt_and_config_equal_peft(golden, cname, method):
    model, _, _ = _model(golden, cname, method)
    key = f"{cname}.{method}."
    assert _rel(model.get_prompt_embedding_to_save(), golden[key + "prompt_embeddings"]) < 1e-12
    assert prompt_config_dict(model) == json.loads(str(golden[key + "adapter_config"]))
