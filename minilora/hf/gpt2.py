"""Hugging Face GPT-2 checkpoints in and out: ``GPT.from_pretrained(path)`` and ``GPT.save_pretrained(path)``.

A ``GPT2LMHeadModel`` directory holds ``config.json`` and ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``). minilora's GPT has GPT-2's architecture (pre-LayerNorm blocks, eps 1e-5,
GELU tanh, learned positions); only the names and two layouts differ (docs/facts.md §9):

=====================================  ===========================================  =========================
Hugging Face                           minilora                                     how
=====================================  ===========================================  =========================
transformer.wte.weight (V, C)          wte.weight (V, C)                            as is
transformer.wpe.weight (P, C)          wpe.weight (P, C)                            as is
transformer.h.{i}.ln_1 / ln_2          blocks.{i}.ln_1 / ln_2                       as is
transformer.h.{i}.attn.c_attn (C, 3C)  blocks.{i}.attn.q_proj / k_proj / v_proj    3 column blocks, each ᵀ
transformer.h.{i}.attn.c_proj (C, C)   blocks.{i}.attn.o_proj (C, C)                ᵀ
transformer.h.{i}.mlp.c_fc (C, 4C)     blocks.{i}.mlp.up_proj (4C, C)               ᵀ
transformer.h.{i}.mlp.c_proj (4C, C)   blocks.{i}.mlp.down_proj (C, 4C)             ᵀ
transformer.ln_f                       ln_f                                         as is
lm_head.weight (V, C)                  lm_head.weight, or none when tied to wte     as is
=====================================  ===========================================  =========================

GPT-2's ``Conv1D`` computes ``y = x W + b`` with W stored (in, out), the transpose of ``nn.Linear``'s (out,
in); its fused ``c_attn`` is ``[W_q | W_k | W_v]`` side by side, so ``q_proj.weight = c_attn.weight[:, :C]ᵀ``
and so on. Files written by ``GPT2Model`` (keys without ``transformer.``, e.g. the original ``gpt2`` upload)
are read too, and the causal-mask buffers old checkpoints carry (``attn.bias``, ``attn.masked_bias``) are
skipped.

Refused, with an error naming the field (never a silently different model): ``activation_function`` other
than the tanh GELU (``gelu_new``, ``gelu_pytorch_tanh``), ``layer_norm_epsilon`` other than 1e-5,
``n_inner`` that is not a multiple of ``n_embd``, ``scale_attn_weights`` false,
``scale_attn_by_inverse_layer_idx``, ``reorder_and_upcast_attn``, ``add_cross_attention``, a
``quantization_config``, a ``model_type`` other than ``gpt2``. ``pytorch_model.bin`` is a pickle: it is
refused with the command that converts it; nothing is ever unpickled.

Departure: the dropout fields (``resid_pdrop``, ``embd_pdrop``, ``attn_pdrop``, 0.1 in GPT-2) are not used:
a loaded model has dropout 0 (the eval-mode math, which is what a pretrained model's logits are;
minilora has no attention-probability dropout). ``save_pretrained`` writes ``resid_pdrop = embd_pdrop =
config.dropout`` and ``attn_pdrop = 0``.

Loading checks everything it can before it builds the model (config, file headers, names, shapes, dtypes),
then reads one tensor at a time into the new model's parameters (a tensor is also checked finite), so at
most one tensor exists besides the model: for GPT-2 small the largest is ``wte``, 31% of the weights.
Saving streams the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from minilora.hf.safetensors_io import LazyTensor, TensorInfo, read_header, read_tensor, write_file
from minilora.nn.gpt import GPT, GPTConfig
from minilora.nn.modules import Linear

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
#: files that hold pickles (or other formats minilora does not read), with what to do about them
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
OTHER_NAMES = ("tf_model.h5", "flax_model.msgpack")
CONVERT_HINT = (
    "convert it to safetensors once with the library that wrote it, in a trusted environment: "
    "python -c \"from transformers import GPT2LMHeadModel; "
    "GPT2LMHeadModel.from_pretrained('DIR').save_pretrained('DIR')\" (transformers 5 writes model.safetensors)"
)
#: config fields whose only supported value is this one (anything else changes the math)
REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "add_cross_attention": False}
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are GELU's tanh approximation
LAYER_NORM_EPS = 1e-5
#: config fields carried over unchanged from a loaded checkpoint when it is saved again
PASSTHROUGH = ("bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "summary_type",
               "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
               "task_specific_params", "use_cache")
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
#: Conv1D layers other than c_attn: HF suffix -> minilora module (weight transposed)
CONV1D = {"attn.c_proj": "attn.o_proj", "mlp.c_fc": "mlp.up_proj", "mlp.c_proj": "mlp.down_proj"}
SAME = ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias")  # per-block tensors kept as they are
BUFFERS = (".attn.bias", ".attn.masked_bias")  # the causal mask, stored by old checkpoints


def linear_names(config: GPTConfig) -> list[str]:
    """The names of the GPT's Linear layers (what LoRA can wrap)."""
    per_block = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.up_proj", "mlp.down_proj")
    return [f"blocks.{i}.{m}" for i in range(config.n_layer) for m in per_block] + ["lm_head"]


class CheckpointError(ValueError):
    """A checkpoint minilora cannot load as it is (the message names the file and what is wrong)."""


# ----------------------------------------------------------------------------- config.json
def config_from_hf(cfg: dict[str, Any], path: str | os.PathLike = CONFIG_NAME) -> GPTConfig:
    """The :class:`GPTConfig` of a Hugging Face GPT-2 ``config.json`` dict (``path`` names it in errors).

    Missing fields take transformers' ``GPT2Config`` defaults (``tie_word_embeddings`` true). Raises
    :class:`CheckpointError` naming the field for a configuration minilora would compute differently.
    """
    def bad(field: str, allowed: str) -> CheckpointError:
        return CheckpointError(f"{path}: {field}={cfg.get(field)!r} is not supported: minilora's GPT needs "
                               f"{allowed}; loading it would give a different model")

    if cfg.get("model_type", "gpt2") != "gpt2":
        raise bad("model_type", "'gpt2' (a GPT2LMHeadModel checkpoint)")
    if cfg.get("quantization_config") is not None:
        raise bad("quantization_config", "a float checkpoint (no quantization_config)")
    for field, value in REQUIRED.items():
        if cfg.get(field, value) != value:
            raise bad(field, f"{field}={value!r}")
    if cfg.get("activation_function", "gelu_new") not in ACTIVATIONS:
        raise bad("activation_function", f"one of {ACTIVATIONS} (GELU, tanh approximation)")
    if cfg.get("layer_norm_epsilon", LAYER_NORM_EPS) != LAYER_NORM_EPS:
        raise bad("layer_norm_epsilon", f"{LAYER_NORM_EPS}")
    sizes = {k: cfg.get(k, d) for k, d in (("vocab_size", 50257), ("n_positions", 1024), ("n_embd", 768),
                                            ("n_layer", 12), ("n_head", 12))}
    for k, v in sizes.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise bad(k, "a positive integer")
    n_inner = cfg.get("n_inner")
    C = sizes["n_embd"]
    if n_inner is None:
        mlp_ratio = 4
    elif isinstance(n_inner, int) and not isinstance(n_inner, bool) and n_inner > 0 and n_inner % C == 0:
        mlp_ratio = n_inner // C
    else:
        raise bad("n_inner", f"null or a multiple of n_embd={C} (the GPT's mlp_ratio)")
    if C % sizes["n_head"]:
        raise bad("n_head", f"a divisor of n_embd={C}")
    tied = cfg.get("tie_word_embeddings", True)
    if not isinstance(tied, bool):
        raise bad("tie_word_embeddings", "true or false")
    return GPTConfig(vocab_size=sizes["vocab_size"], block_size=sizes["n_positions"], n_layer=sizes["n_layer"],
                     n_head=sizes["n_head"], n_embd=C, mlp_ratio=mlp_ratio, tie_word_embeddings=tied)


def config_to_hf(model: GPT) -> dict[str, Any]:
    """The ``config.json`` dict transformers' ``GPT2LMHeadModel`` reads for ``model``."""
    c = model.config
    if not c.bias:
        raise CheckpointError("config.bias=False cannot be saved as GPT-2: GPT2LMHeadModel has biases in every "
                              "Conv1D layer (only bias=True models are GPT-2 checkpoints)")
    cfg: dict[str, Any] = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None if c.mlp_ratio == 4 else c.mlp_ratio * c.n_embd,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": None,
        "eos_token_id": None,
        "dtype": str(model.dtype),
        **REQUIRED,
    }
    loaded = getattr(model, "hf_config", None) or {}
    cfg.update({k: loaded[k] for k in PASSTHROUGH if k in loaded})
    return cfg


# ----------------------------------------------------------------------------- the key mapping
def hf_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the Hugging Face checkpoint of ``config``, in the order transformers lists them."""
    C, V, H = config.n_embd, config.vocab_size, config.mlp_ratio * config.n_embd
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (config.block_size, C)}
    for i in range(config.n_layer):
        h = f"transformer.h.{i}."
        for name, shape in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.c_attn.weight", (C, 3 * C)),
                            ("attn.c_attn.bias", (3 * C,)), ("attn.c_proj.weight", (C, C)),
                            ("attn.c_proj.bias", (C,)), ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (C, H)), ("mlp.c_fc.bias", (H,)), ("mlp.c_proj.weight", (H, C)),
                            ("mlp.c_proj.bias", (C,))):
            shapes[h + name] = shape
    shapes["transformer.ln_f.weight"] = shapes["transformer.ln_f.bias"] = (C,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def _split(hf_name: str) -> tuple[str, str]:
    """``"transformer.h.3.attn.c_attn.weight"`` -> ``("blocks.3.", "attn.c_attn.weight")``; top level: ``("", ...)``."""
    if hf_name.startswith("transformer.h."):
        i, rest = hf_name[len("transformer.h."):].split(".", 1)
        return f"blocks.{i}.", rest
    return "", hf_name.removeprefix("transformer.")


def load_tensor(params: dict[str, np.ndarray], hf_name: str, value: np.ndarray) -> None:
    """Copy one Hugging Face tensor into minilora's parameters (in place), splitting and transposing as needed."""
    block, rest = _split(hf_name)
    if rest.startswith("attn.c_attn."):
        C = value.shape[-1] // 3
        kind = rest.rsplit(".", 1)[1]
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            part = value[..., j * C:(j + 1) * C]  # weight (C, C) column block, or bias (C,)
            params[f"{block}attn.{proj}.{kind}"][...] = part.T if kind == "weight" else part
        return
    module, _, kind = rest.rpartition(".")
    if module in CONV1D:
        params[f"{block}{CONV1D[module]}.{kind}"][...] = value.T if kind == "weight" else value
    else:  # wte, wpe, ln_1, ln_2, ln_f, lm_head: the same layout
        params[block + rest][...] = value


def hf_tensor(params: dict[str, np.ndarray], hf_name: str) -> np.ndarray:
    """One Hugging Face tensor made from minilora's parameters (the inverse of :func:`load_tensor`)."""
    block, rest = _split(hf_name)
    if rest.startswith("attn.c_attn."):
        kind = rest.rsplit(".", 1)[1]
        parts = [params[f"{block}attn.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")]
        return np.concatenate([p.T for p in parts], axis=1) if kind == "weight" else np.concatenate(parts)
    module, _, kind = rest.rpartition(".")
    if module in CONV1D:
        p = params[f"{block}{CONV1D[module]}.{kind}"]
        return np.ascontiguousarray(p.T) if kind == "weight" else p
    return params[block + rest]


# ----------------------------------------------------------------------------- the directory
def _listing(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    return ", ".join(names) if names else "nothing"


def weight_files(path: str | os.PathLike) -> dict[str, Path]:
    """``{tensor name: file}`` for a checkpoint directory (one ``model.safetensors``, or the index's shards)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (a Hugging Face checkpoint is a directory holding "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME})")
    if (path / WEIGHTS_NAME).is_file():
        return {name: path / WEIGHTS_NAME for name in read_header(path / WEIGHTS_NAME)[0]}
    if (path / INDEX_NAME).is_file():
        return _index(path / INDEX_NAME)
    for name in PICKLE_NAMES:
        if (path / name).exists():
            raise CheckpointError(f"{path / name}: a PyTorch pickle; minilora never unpickles (a pickle can "
                                  f"run arbitrary code). {CONVERT_HINT.replace('DIR', str(path))}")
    for name in OTHER_NAMES:
        if (path / name).exists():
            raise CheckpointError(f"{path / name}: TensorFlow/Flax weights are not read; {CONVERT_HINT}")
    raise CheckpointError(f"{path}: no {WEIGHTS_NAME} or {INDEX_NAME} (the directory holds: {_listing(path)})")


def _index(index: Path) -> dict[str, Path]:
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{index}: not valid JSON ({err})") from None
    wmap = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wmap.items()):
        raise CheckpointError(f"{index}: needs a \"weight_map\" object mapping tensor names to file names")
    files: dict[str, Path] = {}
    for shard in sorted(set(wmap.values())):
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index}: shard {shard!r} must be a file name in the same directory")
        if not (index.parent / shard).is_file():
            raise CheckpointError(f"{index}: lists shard {shard!r}, which is not in {index.parent}")
        for name in read_header(index.parent / shard)[0]:
            if name in files:
                raise CheckpointError(f"{index}: tensor {name!r} is in both {files[name].name} and {shard}")
            files[name] = index.parent / shard
    for name, shard in wmap.items():
        if files.get(name, Path()).name != shard:
            raise CheckpointError(f"{index}: weight_map puts {name!r} in {shard}, but {shard} does not hold it")
    return files


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint directory as a dict (errors name the file)."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise CheckpointError(f"{path}: no {CONFIG_NAME} (the directory holds: {_listing(Path(path))})")
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{file}: must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def _plan(path: Path, config: GPTConfig) -> tuple[dict[str, tuple[Path, TensorInfo]], list[tuple[Path, TensorInfo]]]:
    """Check every name, shape and dtype of the checkpoint against ``config``; what to read, before reading it."""
    files = weight_files(path)
    headers = {f: read_header(f)[0] for f in set(files.values())}
    expected = hf_shapes(config)
    present: dict[str, tuple[Path, TensorInfo]] = {}
    for name, f in files.items():
        if name.endswith(BUFFERS):
            continue
        full = "transformer." + name  # GPT2Model's files have no prefix
        present[full if full in expected and name not in expected else name] = (f, headers[f][name])
    tied_head = []
    if config.tie_word_embeddings and "lm_head.weight" in present:
        tied_head = [present.pop("lm_head.weight")]  # a copy of wte some writers keep: checked equal below
    missing = [n for n in expected if n not in present]
    unexpected = sorted(set(present) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: the tensors do not match a GPT2LMHeadModel of its {CONFIG_NAME}: "
                              f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, unexpected "
                              f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for name, shape in expected.items():
        f, info = present[name]
        if info.shape != shape:
            raise CheckpointError(f"{f}: tensor {name!r} has shape {info.shape}, but {CONFIG_NAME} "
                                  f"(n_embd={config.n_embd}, vocab_size={config.vocab_size}, "
                                  f"n_positions={config.block_size}) needs {shape}")
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{f}: tensor {name!r} has dtype {info.dtype}; weights must be one of "
                                  f"{FLOAT_DTYPES}")
    return {n: present[n] for n in expected}, tied_head


def from_pretrained(path: str | os.PathLike, dtype: str = "float32") -> GPT:
    """Load a Hugging Face GPT-2 checkpoint directory into a new :class:`~minilora.nn.gpt.GPT`.

    Parameters
    ----------
    path : directory with ``config.json`` and ``model.safetensors`` (or ``model.safetensors.index.json``
        and its shards).
    dtype : ``"float32"`` or ``"float64"``: the parameters' dtype (F16/BF16/F32 weights are widened exactly).

    Returns
    -------
    GPT in eval mode (as transformers returns it), with ``hf_config`` holding the ``config.json`` dict; for a
    directory written from a QLoRA model, that QLoRA model (:func:`minilora.hf.fourbit.load_qlora`).
    Raises :class:`CheckpointError` (a ValueError) naming the file and the problem; no model is returned
    half-loaded.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    path = Path(path)
    raw = read_config(path)
    from minilora.hf.fourbit import is_qlora_checkpoint, load_qlora

    if is_qlora_checkpoint(raw):  # written by save_pretrained from a QLoRA model
        if dtype != "float32":
            raise ValueError(f"{path}: a 4-bit QLoRA checkpoint loads in float32 only, got dtype={dtype!r}")
        return load_qlora(path)
    config = config_from_hf(raw, path / CONFIG_NAME)
    plan, tied_head = _plan(path, config)
    model = GPT(dataclasses.replace(config, dtype=dtype), seed=0)
    params = model.params
    with ExitStack() as stack:
        files = {f for f, _ in (*plan.values(), *tied_head)}
        handles = {f: stack.enter_context(open(f, "rb")) for f in files}  # one handle per file
        for name, (f, info) in plan.items():
            value = read_tensor(handles[f], info)
            if not np.isfinite(value).all():
                raise CheckpointError(f"{f}: tensor {name!r} holds NaN or Inf ({int((~np.isfinite(value)).sum())} "
                                      f"values): the file is corrupted or the model diverged")
            load_tensor(params, name, value)
            del value
        for f, info in tied_head:
            if not np.array_equal(read_tensor(handles[f], info), params["wte.weight"].astype(np.float32)):
                raise CheckpointError(f"{f}: tie_word_embeddings is true but lm_head.weight differs from "
                                      f"transformer.wte.weight; set tie_word_embeddings false in {CONFIG_NAME}")
    model.hf_config = raw
    return model.eval()


def save_pretrained(model: GPT, path: str | os.PathLike) -> Path:
    """Write ``model`` as a Hugging Face GPT-2 checkpoint directory (``config.json`` + ``model.safetensors``).

    ``transformers.GPT2LMHeadModel.from_pretrained(path)`` loads it (an untied model, like the shipped base
    GPT, is written with ``tie_word_embeddings: false`` and its ``lm_head.weight``). A QLoRA model (from
    :func:`~minilora.peft.qlora.prepare_qlora`) is written as its 4-bit base + adapter instead
    (:func:`minilora.hf.fourbit.save_qlora`), which :func:`from_pretrained` reads back. A LoRA model must be
    merged first (``merge_and_unload``), or its adapter saved alone (:func:`minilora.hf.adapter.save_hf_adapter`).
    Returns ``path``.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a minilora GPT, got {type(model).__name__}")
    from minilora.peft.qlora import quantized_modules

    if quantized_modules(model):  # a QLoRA model: the 4-bit base + adapter (minilora/hf/fourbit.py)
        from minilora.hf.fourbit import save_qlora

        return save_qlora(model, path)
    linears = set(linear_names(model.config))
    wrapped = [name for name, m in model.named_modules() if name in linears and type(m) is not Linear]
    if wrapped:
        raise CheckpointError(f"model has wrapped layers {wrapped[:4]} (LoRA/QLoRA): merge_and_unload(model) "
                              f"first, or save the adapter with minilora.hf.save_hf_adapter")
    cfg = config_to_hf(model)
    params = model.params
    shapes = hf_shapes(model.config)
    tensors = {name: LazyTensor(shape, model.dtype, lambda n=name: hf_tensor(params, n))
               for name, shape in shapes.items()}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_file(path / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    (path / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return path


def num_bytes(shapes: dict[str, tuple[int, ...]], itemsize: int = 4) -> int:
    """Bytes of a set of tensors (for the memory statements of the tests and benchmarks)."""
    return sum(math.prod(s) for s in shapes.values()) * itemsize


__all__ = ["CheckpointError", "config_from_hf", "config_to_hf", "from_pretrained", "hf_shapes", "hf_tensor",
           "load_tensor", "read_config", "save_pretrained", "weight_files"]
