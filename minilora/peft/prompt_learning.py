"""Prompt learning: a frozen GPT that reads ``p`` trainable *virtual tokens* before every input.

Prompt tuning (Lester et al. 2021, arXiv 2104.08691) and p-tuning (Liu et al. 2021, arXiv 2103.10385) both
put ``p`` vectors ``P ∈ R^{p×C}`` in front of the token embeddings of every sequence and train only what
makes ``P``; the model itself is frozen. This module holds what the two share, as PEFT's
``PeftModelForCausalLM`` does for them:

* :class:`PromptLearningConfig`: ``num_virtual_tokens`` and the checks every prompt method needs;
* :class:`PromptTable`: the simplest prompt encoder, a table ``embedding.weight`` (p, D) read at the ids
  ``0 .. p-1`` (prompt tuning's encoder, and every method's encoder once loaded for inference);
* :class:`PromptLearningModel`: the wrapper. Its forward is PEFT's::

      X   = [P ; wte(idx)]                      (B, p + T, C)   the prompt is shared by the batch
      pos = 0 .. p + T - 1                       virtual tokens 0 .. p-1, real tokens p .. p+T-1
      targets' = [-100 × p ; targets]            the virtual positions are never scored

  and its backward takes ``dX`` from ``GPT.input_grads["inputs_embeds"]`` and sends ``Σ_batch dX[:, :p]``
  into the encoder (``dP``). :mod:`minilora.peft.prefix_tuning` subclasses it for key/value prefixes.

The positions are exactly those of Hugging Face's GPT-2 under PEFT (the joint sequence is numbered from 0),
so a prompt trained here gives PEFT's logits (``tests/methods/test_golden_methods.py``). They also mean the
real tokens sit ``p`` positions later than the base model saw them in pretraining.

Departures from PEFT: ``forward`` returns the logits of the real tokens only, (B, T, V) (PEFT returns
(B, p + T, V)), so the wrapper is a drop-in for the GPT in :func:`minilora.train.train` and
:func:`minilora.data.accuracy`; the loss is the same (the virtual positions carry -100 in both). minilora's
targets are already shifted (``targets[:, t]`` is the token after ``idx[:, t]``), PyTorch's labels are not:
the loss is the mean over the real tokens' targets in both. No ``attention_mask`` (no padding); no
multi-adapter names (PEFT's ``default``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from minilora import backend
from minilora.nn import functional as F
from minilora.nn.gpt import GPT
from minilora.nn.module import Module
from minilora.nn.modules import Embedding


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int if it is an integer ≥ 1 (not a bool), else a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r} of type {type(value).__name__}")
    if operator.index(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return operator.index(value)


@dataclass(frozen=True)
class PromptLearningConfig:
    """What every prompt method has: ``num_virtual_tokens`` (p ≥ 1), PEFT's name.

    The sizes PEFT also stores (``token_dim``, ``num_layers``, ``num_attention_heads``) come from the model
    when the method is applied; :mod:`minilora.peft.prompt_io` writes them into ``adapter_config.json``.
    """

    num_virtual_tokens: int
    peft_type: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_virtual_tokens", check_positive_int("num_virtual_tokens",
                                                                         self.num_virtual_tokens))

    def check_model(self, model: Module) -> GPT:
        """Raise unless ``model`` is a plain GPT with room for the virtual tokens and one real token."""
        if not isinstance(model, GPT):
            raise TypeError(f"prompt learning needs a minilora GPT, got {type(model).__name__}")
        block = model.config.block_size
        if self.num_virtual_tokens >= block:
            raise ValueError(f"num_virtual_tokens={self.num_virtual_tokens} leaves no room for tokens: it must be "
                             f"< block_size={block} (p + T <= block_size)")
        return model


class PromptTable(Module):
    """``p`` rows of width ``D`` read at ids ``0 .. p-1``: ``forward(arange(p)) -> embedding.weight``.

    Parameters
    ----------
    num_virtual_tokens, dim : the table is (num_virtual_tokens, dim), ``embedding.weight``.
    seed : its N(0, 1) initialization (``torch.nn.Embedding``'s).  dtype : parameter dtype.
    """

    def __init__(self, num_virtual_tokens: int, dim: int, seed: int | np.random.Generator | None = 0,
                 dtype: str = "float32") -> None:
        super().__init__()
        self.num_virtual_tokens, self.dim = int(num_virtual_tokens), int(dim)
        self.embedding = Embedding(self.num_virtual_tokens, self.dim, seed=seed, dtype=dtype)

    def forward(self, indices: np.ndarray) -> np.ndarray:
        """indices (p,) ints -> (p, dim)."""
        return self.embedding.forward(indices)

    def backward(self, dout: np.ndarray) -> None:
        """dout (p, dim): accumulates into ``embedding.weight``'s gradient."""
        self.embedding.backward(dout)

    def extra_repr(self) -> str:
        return f"num_virtual_tokens={self.num_virtual_tokens}, dim={self.dim}"


class PromptLearningModel(Module):
    """A frozen GPT (``base_model``) fed ``[prompt ; tokens]``, the prompt made by ``prompt_encoder``.

    Behaves like the GPT for training and evaluation: ``forward(idx, targets=None) -> (logits (B, T, V),
    loss)``, ``backward(dloss=1.0)``, ``zero_grad``, ``params`` / ``grads`` / ``trainable_names`` (the
    encoder's), ``train`` / ``eval``, ``num_params``. Names: ``base_model.wte.weight``, ...,
    ``prompt_encoder.embedding.weight``, ... (PEFT's, without its adapter name ``default``).

    Parameters
    ----------
    base_model : GPT, frozen by the caller.  prompt_encoder : ``forward(arange(p)) -> (p, D)`` and
    ``backward(dP)``.  peft_config : the method's config (a :class:`PromptLearningConfig`).
    """

    def __init__(self, base_model: GPT, prompt_encoder: Module, peft_config: PromptLearningConfig) -> None:
        super().__init__()
        self.base_model = base_model
        self.prompt_encoder = prompt_encoder
        self.peft_config = peft_config
        self.num_virtual_tokens = peft_config.num_virtual_tokens
        self.inference_mode = False  # True once loaded from a file for inference (PEFT's flag)

    @property
    def config(self):
        """The base model's :class:`~minilora.nn.gpt.GPTConfig` (as ``PeftModel.config``)."""
        return self.base_model.config

    def get_base_model(self) -> GPT:
        """The wrapped GPT (PEFT's ``get_base_model``)."""
        return self.base_model

    def get_prompt(self) -> np.ndarray:
        """The encoder's output for the virtual tokens, (p, D): the prompt every sequence gets."""
        return self.prompt_encoder.forward(backend.xp().arange(self.num_virtual_tokens))

    def get_prompt_embedding_to_save(self) -> np.ndarray:
        """What PEFT saves as ``prompt_embeddings``: the encoder's output (p, D), computed in eval mode.

        It runs the encoder's forward, so call it outside a forward/backward pair.
        """
        was_training = self.training
        self.eval()
        try:
            return self.get_prompt().copy()
        finally:
            self.train(was_training)

    def _check_batch(self, idx: np.ndarray, targets: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        idx = idx if hasattr(idx, "ndim") else np.asarray(idx)  # a list; arrays stay on their device
        if idx.ndim != 2:
            raise ValueError(f"idx must be a (B, T) integer array, got shape {idx.shape}")
        p, block = self.num_virtual_tokens, self.config.block_size
        if p + idx.shape[1] > block:
            raise ValueError(f"num_virtual_tokens={p} + sequence length T={idx.shape[1]} is {p + idx.shape[1]}; "
                             f"p + T must be at most block_size={block}")
        if targets is not None:
            targets = targets if hasattr(targets, "ndim") else np.asarray(targets)
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {idx.shape}, got {targets.shape}")
        return idx, targets

    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        """Logits of the real tokens (B, T, V) and the loss over their targets (or None)."""
        xp = backend.xp()
        idx, targets = self._check_batch(idx, targets)
        B, p = idx.shape[0], self.num_virtual_tokens
        prompt = self.get_prompt()  # (p, C)
        tokens = self.base_model.wte.forward(idx)  # (B, T, C)
        x = xp.concatenate([xp.broadcast_to(prompt, (B, p, prompt.shape[1])), tokens], axis=1)  # (B, p + T, C)
        if targets is not None:
            targets = xp.concatenate([xp.full((B, p), F.IGNORE_INDEX, dtype=targets.dtype), targets], axis=1)
        logits, loss = self.base_model.forward(inputs_embeds=x, targets=targets)  # positions 0 .. p + T - 1 (PEFT)
        return logits[:, p:], loss

    def backward(self, dloss: float = 1.0) -> None:
        """Backpropagate into the encoder: ``dP = Σ_batch dX[:, :p]``."""
        p = self.num_virtual_tokens
        self.base_model.backward(dloss)
        dx = self.base_model.input_grads.pop("inputs_embeds")  # (B, p + T, C)
        self.base_model.wte.backward(dx[:, p:])  # a no-op while wte is frozen (the method's setting)
        self.prompt_encoder.backward(dx[:, :p].sum(axis=0))  # (p, C)

    def extra_repr(self) -> str:
        return f"{type(self.peft_config).__name__}, num_virtual_tokens={self.num_virtual_tokens}"


__all__ = ["PromptLearningConfig", "PromptLearningModel", "PromptTable", "check_positive_int"]
