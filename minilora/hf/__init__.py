"""Hugging Face layouts: GPT-2 checkpoints in and out, and LoRA adapters PEFT loads onto ``GPT2LMHeadModel``.

* :mod:`~minilora.hf.safetensors_io` — the safetensors format, validated before it is trusted;
* :mod:`~minilora.hf.gpt2` — ``config.json`` and the key mapping of a GPT-2 checkpoint
  (:func:`from_pretrained`, :func:`save_pretrained`, behind ``GPT.from_pretrained`` / ``GPT.save_pretrained``);
* :mod:`~minilora.hf.adapter` — LoRA adapters written so PEFT loads them onto ``GPT2LMHeadModel`` (the fused
  ``c_attn``);
* :mod:`~minilora.hf.fourbit` — a QLoRA model on disk: the 4-bit base with bitsandbytes' per-weight keys, and
  its adapter.

Nothing here downloads anything: the user brings the files.
"""

from minilora.hf.adapter import save_hf_adapter
from minilora.hf.fourbit import load_qlora, save_qlora
from minilora.hf.gpt2 import CheckpointError, config_from_hf, config_to_hf, from_pretrained, save_pretrained
from minilora.hf.safetensors_io import SafetensorsError, load_file, read_header, write_file

__all__ = ["CheckpointError", "SafetensorsError", "config_from_hf", "config_to_hf", "from_pretrained",
           "load_file", "load_qlora", "read_header", "save_hf_adapter", "save_pretrained", "save_qlora", "write_file"]
