"""Golden vectors for PEFT's prompt-learning methods on transformers' GPT-2: tests/golden/methods.npz.

For two small GPT configurations (untied ``odd``; tied, three layers ``deep``), the weights of a minilora GPT
(its own initialization, perturbed by N(0, 0.2) so attention is far from uniform) are loaded into
``transformers.GPT2LMHeadModel`` (float64, eager attention; ``golden.engine._hf_gpt2``), wrapped with
``peft.get_peft_model`` for each method:

* ``prompt``: ``PromptTuningConfig(num_virtual_tokens=3)``;
* ``ptuning_mlp``: ``PromptEncoderConfig(3, encoder_hidden_size=5)``;
* ``ptuning_lstm``: ``PromptEncoderConfig(3, "LSTM", encoder_hidden_size=4, encoder_num_layers=2)``;
* ``prefix``: ``PrefixTuningConfig(3)``;
* ``prefix_proj``: ``PrefixTuningConfig(3, prefix_projection=True, encoder_hidden_size=5)``,

whose prompt-encoder parameters are then set to N(0, 0.5) values (float64). The forward is PEFT's
(``PeftModelForCausalLM(input_ids=...)``: prompts prepended / a key-value prefix, positions as transformers
numbers them); the loss is ``cross_entropy(logits of the real tokens, targets, ignore_index=-100)`` with
minilora's already-shifted targets. Stored per case ``{cfg}.{method}.``: ``param.{name}`` and ``grad.{name}``
for every encoder parameter (PEFT's names without ``prompt_encoder.default.``), ``logits`` (real tokens),
``loss``, ``prompt_embeddings`` (``get_prompt_embedding_to_save``) and ``adapter_config`` (the JSON
``save_pretrained`` writes, as a string); per configuration ``{cfg}.w`` (weights flattened in state_dict
order), ``{cfg}.idx``, ``{cfg}.targets``; ``cases_json`` describes it all.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from golden._meta import meta
from golden.engine import _hf_gpt2

CONFIGS = [  # (name, GPTConfig fields, tied, batch, sequence length)
    ("odd", dict(vocab_size=11, block_size=10, n_layer=2, n_head=2, n_embd=8, mlp_ratio=4, bias=True), False, 2, 5),
    ("deep", dict(vocab_size=13, block_size=12, n_layer=3, n_head=3, n_embd=6, mlp_ratio=4, bias=True), True, 3, 6),
]
P = 3
METHODS = {
    "prompt": ("PromptTuningConfig", dict(num_virtual_tokens=P)),
    "ptuning_mlp": ("PromptEncoderConfig", dict(num_virtual_tokens=P, encoder_hidden_size=5)),
    "ptuning_lstm": ("PromptEncoderConfig", dict(num_virtual_tokens=P, encoder_reparameterization_type="LSTM",
                                                 encoder_hidden_size=4, encoder_num_layers=2)),
    "prefix": ("PrefixTuningConfig", dict(num_virtual_tokens=P)),
    "prefix_proj": ("PrefixTuningConfig", dict(num_virtual_tokens=P, prefix_projection=True, encoder_hidden_size=5)),
}
SEED = 20261202


def _peft_case(hf_model, method: str, rng, idx: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    import peft
    import torch

    cls_name, kwargs = METHODS[method]
    config = getattr(peft, cls_name)(task_type="CAUSAL_LM", **kwargs)
    model = peft.get_peft_model(hf_model, config)
    encoder = model.prompt_encoder["default"].double()
    params = dict(encoder.named_parameters())
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.from_numpy(rng.normal(0.0, 0.5, tuple(p.shape))))
    model.train()  # dropout is 0 everywhere; training mode runs the encoder (PEFT's inference mode does not)
    logits = model(input_ids=torch.from_numpy(idx)).logits
    real = logits[:, -idx.shape[1]:]  # (B, T, V): PEFT returns the virtual positions too for prompt methods
    loss = torch.nn.functional.cross_entropy(real.reshape(-1, real.shape[-1]), torch.from_numpy(targets).reshape(-1),
                                             ignore_index=-100)
    loss.backward()
    out = {"logits": real.detach().numpy(), "loss": np.array(loss.item()),
           "prompt_embeddings": model.get_prompt_embedding_to_save("default").double().numpy()}
    for name, p in params.items():
        out[f"param.{name}"] = p.detach().numpy().copy()
        out[f"grad.{name}"] = p.grad.numpy().copy()
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        out["adapter_config"] = np.array((Path(d) / "adapter_config.json").read_text(encoding="utf-8"))
    return out


def make(out_dir: Path) -> list[Path]:
    import torch

    from minilora.nn import GPT, GPTConfig

    torch.manual_seed(0)
    rng = np.random.default_rng(SEED)
    data: dict[str, np.ndarray] = {}
    cases = []
    for k, (cname, config, tied, B, T) in enumerate(CONFIGS):
        init = GPT(GPTConfig(**config, dtype="float64", tie_word_embeddings=tied), seed=k).state_dict()
        weights = {n: w + rng.normal(0.0, 0.2, w.shape) for n, w in init.items()}
        idx = rng.integers(0, config["vocab_size"], (B, T))
        targets = rng.integers(0, config["vocab_size"], (B, T))
        targets[0, :2] = -100
        data |= {f"{cname}.w": np.concatenate([w.reshape(-1) for w in weights.values()]), f"{cname}.idx": idx,
                 f"{cname}.targets": targets}
        cases.append({"name": cname, "config": {**config, "tie_word_embeddings": tied}, "batch": B, "seq_len": T,
                      "params": list(weights), "shapes": [list(w.shape) for w in weights.values()],
                      "methods": {m: {"class": c, **kw} for m, (c, kw) in METHODS.items()}})
        for method in METHODS:
            got = _peft_case(_hf_gpt2(config, tied, weights), method, rng, idx, targets)
            data |= {f"{cname}.{method}.{key}": a for key, a in got.items()}
    path = out_dir / "methods.npz"
    np.savez_compressed(path, cases_json=np.array(json.dumps(cases)), **data, **meta("tools/golden/methods.py"))
    return [path]
