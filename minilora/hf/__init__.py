"""Hugging Face layouts: GPT-2 checkpoints in and out, and LoRA adapters PEFT loads onto ``GPT2LMHeadModel``.

* :mod:`~minilora.hf.safetensors_io` — the safetensors format, validated before it is trusted;
* :mod:`~minilora.hf.gpt2` — ``config.json`` and the key mapping of a GPT-2 checkpoint
  (:func:`from_pretrained`, :func:`save_pretrained`, behind ``GPT.from_pretrained`` / ``GPT.save_pretrained``).

Nothing here downloads anything: the user brings the files.
"""

from minilora.hf.gpt2 import CheckpointError, config_from_hf, config_to_hf, from_pretrained, save_pretrained
from minilora.hf.safetensors_io import SafetensorsError, load_file, read_header, write_file

__all__ = ["CheckpointError", "SafetensorsError", "config_from_hf", "config_to_hf", "from_pretrained",
           "load_file", "read_header", "save_pretrained", "write_file"]
