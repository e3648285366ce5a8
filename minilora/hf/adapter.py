"""LoRA adapters of a minilora GPT, written so that PEFT loads them onto Hugging Face's ``GPT2LMHeadModel``.

On GPT-2, PEFT puts LoRA on ``Conv1D`` layers (``c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) with
``fan_in_fan_out=True`` (docs/facts.md §9). Its LoRA matrices keep the ``nn.Linear`` layout even there:
``lora_A.weight`` (r, in), ``lora_B.weight`` (out, r), and the forward adds ``s · x Aᵀ Bᵀ`` to the layer's
output (``fan_in_fan_out`` only transposes the merged ``ΔW``). So o_proj, up_proj, down_proj and lm_head
adapters are written as they are, under the Hugging Face module names.

The fused ``c_attn`` is the one real conversion: it computes ``[q | k | v]`` at once, while minilora has one
adapter per projection. Adapters on a subset T ⊆ {q, k, v} (each of rank r, scaling s) become one ``c_attn``
adapter of rank ``|T|·r`` with block-structured matrices — for the usual LoRA on q and v::

    A = [ A_q ]   (2r, C)          B = [ B_q   0  ]   (3C, 2r)     rows  0..C   -> q
        [ A_v ]                        [  0    0  ]                rows  C..2C  -> k (no adapter)
                                       [  0   B_v ]                rows 2C..3C  -> v

so ``x Aᵀ Bᵀ = [x A_qᵀ B_qᵀ | 0 | x A_vᵀ B_vᵀ]``: exactly the three separate updates, nothing mixed (the zero
blocks contribute exact zeros). The scaling stays s: the file says ``r = |T|·r`` and ``lora_alpha = s·|T|·r``
(``use_rslora: false``: rsLoRA's scaling is written out as a plain ratio). When modules end up with different
ranks (c_attn of rank 2r beside c_proj of rank r), ``rank_pattern``/``alpha_pattern`` give each its own.
``tests/hf/test_hf_interop.py`` loads the files with ``peft.PeftModel.from_pretrained`` and compares logits.

Departure: only export (minilora → PEFT). Reading a PEFT GPT-2 adapter back into minilora is not implemented.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from minilora.hf.safetensors_io import write_file
from minilora.nn.gpt import GPT
from minilora.peft.adapter_io import CONFIG_NAME, PREFIX, WEIGHTS_NAME, adapter_config_dict
from minilora.peft.config import LoraConfig
from minilora.peft.inject import lora_modules

QKV = ("q_proj", "k_proj", "v_proj")
#: minilora module (inside a block) -> Hugging Face module, for the layers mapped one to one
ONE_TO_ONE = {"attn.o_proj": "attn.c_proj", "mlp.up_proj": "mlp.c_fc", "mlp.down_proj": "mlp.c_proj"}


def hf_adapter_tensors(model: GPT) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, float]], list[str]]:
    """The model's LoRA as Hugging Face GPT-2 adapters: ``{hf_module: (A, B, scaling)}`` and the unmapped names.

    ``hf_module`` is e.g. ``"transformer.h.0.attn.c_attn"``; A is (r, in), B (out, r).
    """
    layers = lora_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers: inject_lora(model, config) first")
    merged = [n for n, layer in layers.items() if layer.merged]
    if merged:
        raise ValueError(f"LoRA layers {merged[:3]} are merged; unmerge them before saving the adapter")
    out: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    done = set()
    C = model.config.n_embd
    for i in range(model.config.n_layer):
        block = f"blocks.{i}."
        qkv = [(j, layers[block + "attn." + p]) for j, p in enumerate(QKV) if block + "attn." + p in layers]
        if qkv:
            scalings = {layer.scaling for _, layer in qkv}
            if len(scalings) > 1:
                raise ValueError(f"block {i}: q/k/v adapters with different scalings {sorted(scalings)} cannot "
                                 f"share one c_attn adapter")
            A = np.concatenate([layer.A for _, layer in qkv], axis=0)  # (|T|·r, C)
            B = np.zeros((3 * C, A.shape[0]), dtype=A.dtype)  # (3C, |T|·r), block structured
            col = 0
            for j, layer in qkv:
                B[j * C:(j + 1) * C, col:col + layer.r] = layer.B
                col += layer.r
            out[f"transformer.h.{i}.attn.c_attn"] = (A, B, scalings.pop())
            done.update(block + "attn." + p for p in QKV)
        for mine, theirs in ONE_TO_ONE.items():
            if block + mine in layers:
                layer = layers[block + mine]
                out[f"transformer.h.{i}.{theirs}"] = (layer.A, layer.B, layer.scaling)
                done.add(block + mine)
    if "lm_head" in layers:
        layer = layers["lm_head"]
        out["lm_head"] = (layer.A, layer.B, layer.scaling)
        done.add("lm_head")
    return out, sorted(set(layers) - done)


def _targets(names: list[str], n_layer: int) -> list[str]:
    """PEFT ``target_modules``: suffixes (``"c_attn"``, ``"attn.c_proj"``) when every block has the module,
    else full names (PEFT matches an entry when a module's name equals it or ends in ``"." + entry``)."""
    suffixes: dict[str, list[str]] = {}
    for name in names:
        suffix = name.split(".", 3)[3] if name.startswith("transformer.h.") else name
        suffixes.setdefault(suffix, []).append(name)
    out = []
    for suffix, full in suffixes.items():
        everywhere = suffix == "lm_head" or len(full) == n_layer
        out += [suffix.removeprefix("attn.") if suffix == "attn.c_attn" else suffix] if everywhere else full
    return out


def save_hf_adapter(model: GPT, path: str | os.PathLike) -> Path:
    """Write the LoRA of ``model`` as a PEFT adapter for ``GPT2LMHeadModel`` (``adapter_model.safetensors`` +
    ``adapter_config.json``) in the directory ``path``; return it.

    ``peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), path)`` then computes the logits
    of the minilora model (LoRA or QLoRA; for QLoRA the Hugging Face base must hold the same weights).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a minilora GPT, got {type(model).__name__}")
    config = getattr(model, "lora_config", None)
    if not isinstance(config, LoraConfig):
        raise ValueError("model has no lora_config: create its LoRA layers with inject_lora() or prepare_qlora()")
    adapters, unmapped = hf_adapter_tensors(model)
    if unmapped:
        raise ValueError(f"LoRA on {unmapped} has no Hugging Face GPT-2 counterpart")
    ranks = {name: A.shape[0] for name, (A, _, _) in adapters.items()}
    alphas = {name: s * ranks[name] for name, (_, _, s) in adapters.items()}
    r0 = max(set(ranks.values()), key=list(ranks.values()).count)  # the most common rank is the default
    first = next(n for n in adapters if ranks[n] == r0)
    cfg = adapter_config_dict(config, [])
    cfg.update(
        task_type="CAUSAL_LM",
        r=int(r0),
        lora_alpha=alphas[first],
        use_rslora=False,
        fan_in_fan_out=True,
        init_lora_weights=True,
        target_modules=_targets(list(adapters), model.config.n_layer),
        rank_pattern={n: int(r) for n, r in ranks.items() if r != r0},
        alpha_pattern={n: a for n, a in alphas.items() if (ranks[n], a) != (r0, alphas[first])},
    )
    tensors = {}
    for name, (A, B, _) in adapters.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(A)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(B)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_file(path / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    (path / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


__all__ = ["hf_adapter_tensors", "save_hf_adapter"]
