"""A QLoRA model on disk: its 4-bit base in bitsandbytes' per-weight layout, and its adapter.

``GPT.save_pretrained(path)`` on a model prepared by :func:`~minilora.peft.qlora.prepare_qlora` calls
:func:`save_qlora`, and ``GPT.from_pretrained(path)`` recognises the result and calls :func:`load_qlora`. The
directory holds

* ``model.safetensors``: every float parameter of the base (embeddings, LayerNorms, biases, ``lm_head``) under
  minilora's names, and for each 4-bit layer the keys a transformers checkpoint of a bitsandbytes 4-bit model
  has (docs/facts.md §10): ``<layer>.weight`` (the packed codes, uint8 (n/2, 1) as bitsandbytes' ``Params4bit``
  stores them) followed by ``<layer>.weight.<key>`` for every entry of
  :meth:`QuantState.as_dict(packed=True) <minilora.quant.QuantState.as_dict>` — ``absmax``, ``quant_map``,
  ``nested_absmax``, ``nested_quant_map`` and ``quant_state.bitsandbytes__nf4`` (the JSON of the remaining
  fields);
* ``config.json``: the :class:`~minilora.nn.gpt.GPTConfig`, and a ``quantization_config`` with transformers'
  bitsandbytes keys (``load_in_4bit``, ``bnb_4bit_quant_type``, ``bnb_4bit_use_double_quant``,
  ``bnb_4bit_compute_dtype``, ``llm_int8_skip_modules``) plus the blocksize;
* ``adapter_model.safetensors`` + ``adapter_config.json``: the LoRA weights, as :func:`minilora.peft.save_adapter`
  writes them (PEFT's format, minilora's module names).

Loading rebuilds the same model bit for bit: the stored codes and statistics are put back as they are (never
re-quantized), so its logits equal the saved model's exactly.

Departure: the names are minilora's (``blocks.0.attn.q_proj.weight``), not GPT-2's fused ``c_attn``, so
``architectures`` is ``["MiniloraGPT"]`` and transformers does not load this directory as a
``GPT2LMHeadModel``: quantizing the fused ``(3C, C)`` weight would give other double-quantization statistics
than quantizing q, k and v separately.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from minilora.hf.safetensors_io import read_header, read_tensor, write_file
from minilora.nn.gpt import GPT, GPTConfig
from minilora.peft.adapter_io import load_adapter, read_adapter, save_adapter
from minilora.peft.qlora import QuantizedWeight, prepare_qlora, quantized_modules
from minilora.quant import QuantState

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
ARCHITECTURE = "MiniloraGPT"
COMPUTE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", None: "float64"}


def is_qlora_checkpoint(cfg: dict) -> bool:
    """Whether a ``config.json`` dict describes a directory written by :func:`save_qlora`."""
    return cfg.get("architectures") == [ARCHITECTURE] and isinstance(cfg.get("quantization_config"), dict)


def _quant_settings(model: GPT) -> dict:
    qs = list(quantized_modules(model).values())
    if not qs:
        raise ValueError("model has no 4-bit layers (prepare_qlora(model, config) makes them)")
    settings = {(q.blocksize, q.quant_type, q.compress_statistics,
                 None if q.compute_format is None else q.compute_format.name.lower()) for q in qs}
    if len(settings) != 1:
        raise ValueError(f"the 4-bit layers use different settings {sorted(settings, key=str)}; one checkpoint "
                         f"holds one quantization_config")
    blocksize, quant_type, dq, compute = settings.pop()
    return {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
            "bnb_4bit_quant_type": quant_type, "bnb_4bit_use_double_quant": dq,
            "bnb_4bit_compute_dtype": COMPUTE_DTYPES[compute], "bnb_4bit_blocksize": blocksize,
            "llm_int8_skip_modules": []}


def save_qlora(model: GPT, path: str | os.PathLike) -> Path:
    """Write a QLoRA model (4-bit base + adapter) to the directory ``path``; return it (see the module docstring)."""
    quant = _quant_settings(model)
    if getattr(model, "lora_config", None) is None:
        raise ValueError("model has 4-bit layers but no LoRA adapter (model.lora_config): a QLoRA checkpoint is "
                         "a 4-bit base plus its adapter; prepare it with prepare_qlora(model, config)")
    from minilora.nn.modules import Linear

    quant["llm_int8_skip_modules"] = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                                             if type(m) is Linear and n and ".lora_" not in n})
    tensors: dict[str, np.ndarray] = {}
    for name, p in model.params.items():
        if ".lora_A." not in name and ".lora_B." not in name:
            tensors[name] = p
    for name, q in quantized_modules(model).items():
        tensors[f"{name}.weight"] = q.packed.reshape(-1, 1)
        for key, value in q.quant_state.as_dict(packed=True).items():
            tensors[f"{name}.weight.{key}"] = np.asarray(value)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_file(path / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    save_adapter(model, path)
    cfg = {"architectures": [ARCHITECTURE], "minilora": dataclasses.asdict(model.config),
           "quantization_config": quant}
    (path / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return path


def load_qlora(path: str | os.PathLike) -> GPT:
    """Read a directory written by :func:`save_qlora`: the same QLoRA model, bit for bit."""
    path = Path(path)
    cfg = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    qc = cfg["quantization_config"]
    try:
        config = GPTConfig(**cfg["minilora"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path / CONFIG_NAME}: the 'minilora' GPTConfig is missing or invalid ({err})") from None
    compute = {v: k for k, v in COMPUTE_DTYPES.items()}.get(qc.get("bnb_4bit_compute_dtype"), "bf16")
    quant = dict(blocksize=int(qc["bnb_4bit_blocksize"]), quant_type=qc["bnb_4bit_quant_type"],
                 compress_statistics=bool(qc["bnb_4bit_use_double_quant"]),
                 compute_format="float64" if compute is None else compute)
    lora_config = read_adapter(path)[0]
    tensors_info, _ = read_header(path / WEIGHTS_NAME)
    model = GPT(config, seed=0)
    skip = tuple(qc.get("llm_int8_skip_modules") or ())
    prepare_qlora(model, lora_config, seed=0, skip_modules=skip, **quant)  # the layout: values overwritten below
    layers = quantized_modules(model)
    expected = {n for n in model.params if ".lora_" not in n} | {f"{n}.weight" for n in layers}
    stored = {n for n in tensors_info if not any(n.startswith(f"{m}.weight.") for m in layers)}
    if stored != expected:
        raise ValueError(f"{path / WEIGHTS_NAME}: tensors do not match the model of {CONFIG_NAME}: missing "
                         f"{sorted(expected - stored)[:6]}, unexpected {sorted(stored - expected)[:6]}")
    with open(path / WEIGHTS_NAME, "rb") as f:
        read = {n: read_tensor(f, info) for n, info in tensors_info.items()}
    new_states = {}
    for name, q in layers.items():
        prefix = f"{name}.weight."
        state = QuantState.from_dict({k[len(prefix):]: v for k, v in read.items() if k.startswith(prefix)})
        packed = read[f"{name}.weight"].reshape(-1)
        if tuple(state.shape) != tuple(q.quant_state.shape) or packed.size != q.packed.size:
            raise ValueError(f"{path / WEIGHTS_NAME}: {name}.weight holds a {tuple(state.shape)} 4-bit weight, "
                             f"the model needs {tuple(q.quant_state.shape)}")
        new_states[name] = (packed, state)
    params = model.params
    for name in expected - {f"{n}.weight" for n in layers}:
        if read[name].shape != params[name].shape:
            raise ValueError(f"{path / WEIGHTS_NAME}: {name} has shape {read[name].shape}, the model needs "
                             f"{params[name].shape}")
        params[name][...] = read[name]
    for name, (packed, state) in new_states.items():
        q: QuantizedWeight = layers[name]
        q.packed, q.quant_state = packed, state
    load_adapter(model, path)
    return model.eval()


__all__ = ["is_qlora_checkpoint", "load_qlora", "save_qlora"]
