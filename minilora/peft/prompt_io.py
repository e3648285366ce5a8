"""Prompt-learning adapter files in PEFT's layout, which ``peft.PeftModel.from_pretrained`` loads.

A directory holds PEFT's two files:

* ``adapter_config.json``: PEFT 0.21.2's keys (``peft_type`` ``"PROMPT_TUNING"`` / ``"P_TUNING"`` /
  ``"PREFIX_TUNING"``, ``task_type: "CAUSAL_LM"``, ``num_virtual_tokens``, ``token_dim``, ``num_layers``,
  ``num_attention_heads``, ``num_transformer_submodules: 1``, ``inference_mode: true`` and the method's
  own: ``prompt_tuning_init`` ..., ``encoder_reparameterization_type`` ..., ``prefix_projection`` ...);
* ``adapter_model.safetensors``: ONE tensor, ``prompt_embeddings``: the encoder's *output* for the virtual
  tokens (PEFT's ``get_prompt_embedding_to_save``), (p, n_embd) for prompt tuning and p-tuning,
  (p, n_layer · 2 · n_embd) for prefix tuning. That is all inference needs: PEFT loads it into a plain table.

For the methods whose encoder is more than that table (p-tuning; prefix tuning with ``prefix_projection``),
minilora also writes ``minilora_prompt_encoder.safetensors`` (the encoder's weights by their names,
``embedding.weight``, ``mlp_head.0.weight``, ...), so that training can resume; PEFT ignores the file.

:func:`load_prompt_adapter` reads either kind of directory. With ``is_trainable=False`` (the default, as
PEFT's ``from_pretrained``) the prompt is a frozen table holding ``prompt_embeddings``; with
``is_trainable=True`` the full encoder is rebuilt from the minilora file (or, for prompt tuning and an
unprojected prefix, from ``prompt_embeddings`` itself, which *is* their parameter) and checked to
reproduce ``prompt_embeddings`` bit for bit. Every check (method, sizes, names, shapes, dtypes) runs before
the model is touched: a mismatched file raises ValueError naming the file and leaves the model as it was.

Departure from PEFT: PEFT refuses ``is_trainable=True`` for prompt learning; minilora resumes from its own
encoder file. A prompt-tuning text given as token ids is written as a list in ``prompt_tuning_init_text``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.nn.gpt import GPT
from minilora.peft.adapter_io import PEFT_VERSION, _safetensors_numpy
from minilora.peft.p_tuning import PromptEncoder, PromptEncoderConfig
from minilora.peft.prefix_tuning import PrefixEncoder, PrefixTuningConfig, PrefixTuningModel
from minilora.peft.prompt_learning import PromptLearningModel, PromptTable
from minilora.peft.prompt_tuning import PromptEmbedding, PromptTuningConfig

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
ENCODER_NAME = "minilora_prompt_encoder.safetensors"
PROMPT_KEY = "prompt_embeddings"
CONFIGS = {cls.peft_type: cls for cls in (PromptTuningConfig, PromptEncoderConfig, PrefixTuningConfig)}


def prompt_config_dict(model: PromptLearningModel) -> dict:
    """``adapter_config.json`` for ``model`` (PEFT 0.21.2's keys and the values PEFT would write)."""
    cfg, c = model.peft_config, model.config
    d = {"auto_mapping": None, "base_model_name_or_path": None, "inference_mode": True, "modules_to_save": None,
         "num_attention_heads": c.n_head, "num_layers": c.n_layer, "num_transformer_submodules": 1,
         "num_virtual_tokens": cfg.num_virtual_tokens, "peft_type": cfg.peft_type, "peft_version": PEFT_VERSION,
         "revision": None, "task_type": "CAUSAL_LM", "token_dim": c.n_embd}
    if isinstance(cfg, PromptTuningConfig):
        text = cfg.prompt_tuning_init_text
        d |= {"prompt_tuning_init": cfg.prompt_tuning_init,
              "prompt_tuning_init_text": list(text) if isinstance(text, tuple) else text,
              "tokenizer_kwargs": None,
              "tokenizer_name_or_path": getattr(model.prompt_encoder, "tokenizer_name", cfg.tokenizer_name_or_path)}
    elif isinstance(cfg, PromptEncoderConfig):
        d |= {"encoder_dropout": cfg.encoder_dropout, "encoder_hidden_size": cfg.hidden_size(c.n_embd),
              "encoder_num_layers": cfg.encoder_num_layers,
              "encoder_reparameterization_type": cfg.encoder_reparameterization_type}
    else:
        d |= {"encoder_hidden_size": cfg.hidden_size(c.n_embd),
              "init_weights": cfg.init_weights, "prefix_projection": cfg.prefix_projection}
    return d


def _has_encoder_file(model: PromptLearningModel) -> bool:
    return isinstance(model.prompt_encoder, PromptEncoder) or (
        isinstance(model.prompt_encoder, PrefixEncoder) and model.prompt_encoder.prefix_projection)


def prompt_adapter_files(model: PromptLearningModel) -> dict[str, bytes]:
    """The files :func:`save_prompt_adapter` writes, by name, as bytes (PEFT's two, and the encoder's if any)."""
    if not isinstance(model, PromptLearningModel):
        raise TypeError(f"model must be a PromptLearningModel (prompt tuning, p-tuning, prefix tuning), "
                        f"got {type(model).__name__}")
    st = _safetensors_numpy()
    prompt = np.ascontiguousarray(backend.to_numpy(model.get_prompt_embedding_to_save()))  # files live on the host
    files = {WEIGHTS_NAME: st.save({PROMPT_KEY: prompt}, metadata={"format": "pt"})}
    if _has_encoder_file(model) and not model.inference_mode:
        state = {k: np.ascontiguousarray(backend.to_numpy(v)) for k, v in model.prompt_encoder.params.items()}
        files[ENCODER_NAME] = st.save(state, metadata={"format": "np"})  # one key: the order of two is not fixed
    text = json.dumps(prompt_config_dict(model), indent=2, sort_keys=True) + "\n"
    files[CONFIG_NAME] = text.encode("utf-8")
    return files


def prompt_adapter_nbytes(model: PromptLearningModel, inference_only: bool = True) -> int:
    """Bytes on disk of the adapter: PEFT's two files (``inference_only``), or all that would be written."""
    files = prompt_adapter_files(model)
    return sum(len(b) for name, b in files.items() if not (inference_only and name == ENCODER_NAME))


def write_files(path: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) into the directory ``path``, created if needed; return it as a Path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).write_bytes(content)
    return path


def save_prompt_adapter(model: PromptLearningModel, path: str | os.PathLike) -> Path:
    """Write ``model``'s prompt adapter to the directory ``path`` (created) in PEFT's layout; return ``path``."""
    files = prompt_adapter_files(model)
    path = write_files(path, files)
    if ENCODER_NAME not in files and (path / ENCODER_NAME).exists():  # a stale one would not match this prompt
        (path / ENCODER_NAME).unlink()
    return path


def config_from_dict(raw: dict, source: str = "adapter_config.json"):
    """The minilora config of a prompt adapter's JSON (PROMPT_TUNING / P_TUNING / PREFIX_TUNING)."""
    kind = raw.get("peft_type")
    if kind not in CONFIGS:
        hint = " (a minilora bottleneck adapter: use minilora.peft.load_adapters)" if raw.get("config", {}).get(
            "architecture") == "bottleneck" else " (LoRA: use minilora.peft.load_adapter)" if kind == "LORA" else ""
        raise ValueError(f"{source}: peft_type must be one of {sorted(CONFIGS)} for a prompt adapter, "
                         f"got {kind!r}{hint}")
    if raw.get("num_transformer_submodules", 1) not in (1, None):
        raise ValueError(f"{source}: num_transformer_submodules={raw['num_transformer_submodules']!r}; a "
                         "decoder-only GPT needs 1")
    p = raw.get("num_virtual_tokens")
    if kind == "PROMPT_TUNING":
        text = raw.get("prompt_tuning_init_text")
        return PromptTuningConfig(p, raw.get("prompt_tuning_init", "RANDOM"),
                                  tuple(text) if isinstance(text, list) else text, raw.get("tokenizer_name_or_path"))
    if kind == "P_TUNING":
        return PromptEncoderConfig(p, raw.get("encoder_reparameterization_type", "MLP"),
                                   raw.get("encoder_hidden_size"), raw.get("encoder_num_layers", 2),
                                   raw.get("encoder_dropout", 0.0))
    return PrefixTuningConfig(p, bool(raw.get("prefix_projection", False)), raw.get("encoder_hidden_size"),
                              raw.get("init_weights"))


def read_prompt_adapter(path: str | os.PathLike):
    """``(config, prompt_embeddings, encoder_state or None, raw_json)`` of an adapter directory."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise ValueError(f"adapter directory {str(path)!r} has no {CONFIG_NAME}")
    raw = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    config = config_from_dict(raw, str(path / CONFIG_NAME))  # another kind of adapter is named first
    if not (path / WEIGHTS_NAME).is_file():
        raise ValueError(f"adapter directory {str(path)!r} has no {WEIGHTS_NAME}")
    st = _safetensors_numpy()
    tensors = st.load_file(str(path / WEIGHTS_NAME))
    if set(tensors) != {PROMPT_KEY}:
        raise ValueError(f"{path / WEIGHTS_NAME}: a prompt adapter holds exactly one tensor {PROMPT_KEY!r}, "
                         f"got {sorted(tensors)}")
    encoder = st.load_file(str(path / ENCODER_NAME)) if (path / ENCODER_NAME).is_file() else None
    return config, tensors[PROMPT_KEY], encoder, raw


def _check_sizes(raw: dict, model: GPT, source: Path) -> None:
    c = model.config
    for key, ours in (("token_dim", c.n_embd), ("num_layers", c.n_layer), ("num_attention_heads", c.n_head)):
        if raw.get(key) not in (None, ours):
            raise ValueError(f"{source}: {key}={raw[key]!r} does not match the model ({ours})")


def load_prompt_adapter(model: GPT, path: str | os.PathLike, is_trainable: bool = False) -> PromptLearningModel:
    """Wrap the GPT ``model`` with the prompt adapter saved at ``path``; freezes ``model`` (in place).

    ``is_trainable=False``: the prompt is a frozen table of ``prompt_embeddings`` (``inference_mode``).
    ``is_trainable=True``: the method's full encoder, trainable, from the saved weights.
    """
    path = Path(path)
    config, prompt, encoder_state, raw = read_prompt_adapter(path)
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a minilora GPT, got {type(model).__name__}")
    _check_sizes(raw, model, path / CONFIG_NAME)
    config.check_model(model)
    c, p = model.config, config.num_virtual_tokens
    width = 2 * c.n_layer * c.n_embd if isinstance(config, PrefixTuningConfig) else c.n_embd
    if prompt.shape != (p, width):
        raise ValueError(f"{path / WEIGHTS_NAME}: {PROMPT_KEY} has shape {prompt.shape}, the model needs "
                         f"(num_virtual_tokens, {width}) = {(p, width)}")
    if prompt.dtype != model.dtype:
        raise ValueError(f"{path / WEIGHTS_NAME}: {PROMPT_KEY} has dtype {prompt.dtype}, the model uses {model.dtype}")
    wrapper = PrefixTuningModel if isinstance(config, PrefixTuningConfig) else PromptLearningModel
    dtype = str(model.dtype)
    xp = backend.xp()
    if not is_trainable:
        encoder = PromptTable(p, width, seed=0, dtype=dtype)
        encoder.embedding.weight[...] = xp.asarray(prompt)
        encoder.freeze()
    elif isinstance(config, PromptTuningConfig) or (isinstance(config, PrefixTuningConfig)
                                                    and not config.prefix_projection):
        if isinstance(config, PromptTuningConfig):
            encoder = PromptEmbedding(PromptTuningConfig(p), model.params["wte.weight"])
            encoder.tokenizer_name = config.tokenizer_name_or_path  # the record, kept for the next save
        else:
            encoder = PrefixEncoder(config, c.n_embd, c.n_layer, dtype=dtype)
        encoder.embedding.weight[...] = xp.asarray(prompt)
    else:
        if encoder_state is None:
            raise ValueError(f"adapter directory {str(path)!r} has no {ENCODER_NAME}: its encoder cannot resume "
                             "training (load it with is_trainable=False for inference)")
        encoder = (PromptEncoder(config, c.n_embd, dtype=dtype) if isinstance(config, PromptEncoderConfig)
                   else PrefixEncoder(config, c.n_embd, c.n_layer, dtype=dtype))
        params = encoder.params
        missing, unexpected = sorted(set(params) - set(encoder_state)), sorted(set(encoder_state) - set(params))
        if missing or unexpected:
            raise ValueError(f"{path / ENCODER_NAME} does not match the encoder: missing {missing}, "
                             f"unexpected {unexpected}")
        for k, v in encoder_state.items():
            if v.shape != params[k].shape or v.dtype != params[k].dtype:
                raise ValueError(f"{path / ENCODER_NAME}: {k} is {v.dtype}{list(v.shape)}, the encoder needs "
                                 f"{params[k].dtype}{list(params[k].shape)}")
            params[k][...] = xp.asarray(v)
    model_out = wrapper(model, encoder, config)
    if is_trainable and not np.array_equal(backend.to_numpy(model_out.get_prompt_embedding_to_save()), prompt):
        raise ValueError(f"{path / ENCODER_NAME} does not reproduce {PROMPT_KEY} of {path / WEIGHTS_NAME}: the two "
                         "files come from different adapters")
    model.freeze()
    model_out.inference_mode = not is_trainable
    return model_out


__all__ = ["CONFIG_NAME", "ENCODER_NAME", "PROMPT_KEY", "WEIGHTS_NAME", "config_from_dict", "load_prompt_adapter",
           "prompt_adapter_files", "prompt_adapter_nbytes", "prompt_config_dict", "read_prompt_adapter",
           "save_prompt_adapter"]
