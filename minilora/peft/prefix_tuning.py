"""Prefix tuning (Li & Liang 2021, arXiv 2101.00190) and p-tuning v2 (Liu et al. 2022, arXiv 2110.07602).

Prompt tuning puts trainable vectors at the *input*; every layer then computes their keys and values with its
frozen projections. Prefix tuning trains the keys and values themselves, ``p`` of each in *every* layer's
attention (Li & Liang §4.1: "prefix activations ... in all layers"). In layer ``l``, for a real token's query
``q``::

    attention(q) = softmax(q [K_l^prefix ; K_l]ᵀ / √hs) [V_l^prefix ; V_l]          K_l^prefix, V_l^prefix (p, C)

which is exactly a key/value cache of length ``p`` (``GPT.forward(past_key_values=...)``), so the real tokens
take positions ``p .. p + T - 1`` (transformers' GPT-2 numbers a cache's successors that way). The gradients
of the prefix are the GPT's ``input_grads["past_key_values"]``, summed over the batch. Trainable parameters:
``p · n_layer · 2 · C``.

PEFT stores the prefix as one matrix, ``(p, n_layer · 2 · C)``: row ``j`` holds, for each layer, the key then
the value of virtual token ``j``, each ``C = n_head · hs`` wide (PEFT's ``view(B, p, 2 L, nh, hs)`` and
``permute(2, 0, 3, 1, 4)``; :func:`prefix_to_past_key_values` / :func:`past_key_values_to_prefix`).

``prefix_projection=True`` reparameterizes it as Li & Liang §4.3 do for stability, PEFT's ``PrefixEncoder``::

    prefix = W2 · tanh(W1 E + b1) + b2          E (p, C), W1 (H, C), W2 (2 L C, H), H = encoder_hidden_size

and after training only the prefix matters: PEFT saves the encoder's output as ``prompt_embeddings``.

**P-tuning v2** is the same computation: "deep prompt tuning" puts trainable prompts in every layer, and
Liu et al. 2022 (§3.2) found the reparameterization unnecessary for most tasks. In PEFT both are
``PrefixTuningConfig`` (``prefix_projection=False`` is p-tuning v2's usual setting).

``init_weights`` (PEFT's): None = random (N(0, 1) table, or PyTorch's Linear init), ``"zero"`` = the table, or
the last Linear, is zero (every prefix key and value starts at 0). ``encoder_hidden_size=None`` means
``n_embd``, as PEFT fills in ``token_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from minilora import backend
from minilora.nn.gpt import GPT
from minilora.nn.module import Module
from minilora.nn.modules import Embedding, Linear
from minilora.peft.layers import Activation, Sequential
from minilora.peft.prompt_learning import PromptLearningConfig, PromptLearningModel, check_positive_int


@dataclass(frozen=True)
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning / p-tuning v2, named as PEFT's ``PrefixTuningConfig``.

    Parameters
    ----------
    num_virtual_tokens : int
        ``p ≥ 1`` prefix positions per layer.
    prefix_projection : bool
        Produce the prefix with Embedding → Linear → Tanh → Linear (default False: train it directly).
    encoder_hidden_size : int, optional
        ``H`` of the projection; None means ``n_embd``.
    init_weights : None | ``"zero"``
        PEFT's: random, or a prefix that starts at zero.
    """

    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    init_weights: str | None = None
    peft_type: ClassVar[str] = "PREFIX_TUNING"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.prefix_projection, (bool, np.bool_)):
            raise TypeError(f"prefix_projection must be True or False, got {self.prefix_projection!r}")
        if self.encoder_hidden_size is not None:
            object.__setattr__(self, "encoder_hidden_size",
                               check_positive_int("encoder_hidden_size", self.encoder_hidden_size))
        if self.init_weights not in (None, "zero"):
            raise ValueError(f"init_weights must be None or 'zero', got {self.init_weights!r}")

    def hidden_size(self, n_embd: int) -> int:
        """``H``: ``encoder_hidden_size``, or ``n_embd`` when it is None."""
        return n_embd if self.encoder_hidden_size is None else self.encoder_hidden_size


class PrefixEncoder(Module):
    """PEFT's ``PrefixEncoder``: ``forward(arange(p)) -> (p, n_layer · 2 · C)``.

    Without projection the prefix is the table ``embedding.weight`` (p, 2 L C) itself; with it,
    ``transform.2(tanh(transform.0(embedding(ids))))``.
    """

    def __init__(self, config: PrefixTuningConfig, token_dim: int, num_layers: int,
                 seed: int | np.random.Generator | None = 0, dtype: str = "float32") -> None:
        super().__init__()
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        p, C, L = config.num_virtual_tokens, int(token_dim), int(num_layers)
        self.prefix_projection, self.num_virtual_tokens, self.out_dim = bool(config.prefix_projection), p, 2 * L * C
        if self.prefix_projection:
            H = config.hidden_size(C)
            self.embedding = Embedding(p, C, seed=rng, dtype=dtype)
            self.transform = Sequential([Linear(C, H, seed=rng, dtype=dtype), Activation("tanh"),
                                         Linear(H, self.out_dim, seed=rng, dtype=dtype)])
            if config.init_weights == "zero":
                self.transform[2].weight[...] = 0
                self.transform[2].bias[...] = 0
        else:
            self.embedding = Embedding(p, self.out_dim, seed=rng, dtype=dtype)
            if config.init_weights == "zero":
                self.embedding.weight[...] = 0

    def forward(self, indices: np.ndarray) -> np.ndarray:
        """indices (p,) -> the flat prefix (p, 2 L C)."""
        e = self.embedding.forward(indices)
        return self.transform.forward(e) if self.prefix_projection else e

    def backward(self, dout: np.ndarray) -> None:
        """dout (p, 2 L C): gradients of the table (and the projection)."""
        if self.prefix_projection:
            dout = self.transform.backward(dout)
        self.embedding.backward(dout)

    def extra_repr(self) -> str:
        return f"num_virtual_tokens={self.num_virtual_tokens}, prefix_projection={self.prefix_projection}"


def prefix_to_past_key_values(prefix: np.ndarray, batch_size: int, n_layer: int, n_head: int
                              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The flat prefix (p, 2 L C) as ``past_key_values``: one ``(k, v)`` per layer, each (B, nh, p, hs).

    The batch dimension is a broadcast view (every sequence gets the same prefix).

    >>> kv = prefix_to_past_key_values(np.arange(2 * 8.0).reshape(1, 16), batch_size=3, n_layer=2, n_head=2)
    >>> kv[1][0].shape, kv[1][0][0, :, 0].tolist()   # layer 1's keys: columns 8..11, two heads of 2
    ((3, 2, 1, 2), [[8.0, 9.0], [10.0, 11.0]])
    """
    xp = backend.xp()
    p, width = prefix.shape
    C = width // (2 * n_layer)
    per_layer = prefix.reshape(p, 2 * n_layer, n_head, C // n_head).transpose(1, 2, 0, 3)  # (2L, nh, p, hs)
    shape = (batch_size, n_head, p, C // n_head)
    return [(xp.broadcast_to(per_layer[2 * i], shape), xp.broadcast_to(per_layer[2 * i + 1], shape))
            for i in range(n_layer)]


def past_key_values_to_prefix(past_key_values: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The inverse of :func:`prefix_to_past_key_values` for gradients: sum over the batch, (p, 2 L C)."""
    xp = backend.xp()
    per_layer = xp.stack([a.sum(axis=0) for pair in past_key_values for a in pair])  # (2L, nh, p, hs)
    L2, nh, p, hs = per_layer.shape
    return per_layer.transpose(2, 0, 1, 3).reshape(p, L2 * nh * hs)


class PrefixTuningModel(PromptLearningModel):
    """A frozen GPT with a trained key/value prefix in every layer (``GPT.forward(past_key_values=...)``).

    Same interface as :class:`~minilora.peft.prompt_learning.PromptLearningModel`; the logits are those of
    the real tokens (B, T, V), which is also what PEFT returns for prefix tuning.
    """

    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        """Logits (B, T, V) and loss; the real tokens take positions p .. p + T - 1."""
        idx, targets = self._check_batch(idx, targets)
        c = self.config
        past = prefix_to_past_key_values(self.get_prompt(), idx.shape[0], c.n_layer, c.n_head)
        return self.base_model.forward(idx, targets, past_key_values=past)  # the GPT's default after a prefix

    def backward(self, dloss: float = 1.0) -> None:
        """Backpropagate into the prefix encoder: ``d prefix = Σ_batch dK, dV`` of every layer."""
        self.base_model.backward(dloss)
        dpast = self.base_model.input_grads.pop("past_key_values")
        self.prompt_encoder.backward(past_key_values_to_prefix(dpast))


def apply(model: GPT, config: PrefixTuningConfig, seed: int = 0) -> PrefixTuningModel:
    """Prefix-tune ``model``: freeze it (in place) and return the wrapper that trains only the prefix.

    Parameters
    ----------
    model : GPT.  config : PrefixTuningConfig.  seed : the prefix encoder's initialization.

    Returns
    -------
    PrefixTuningModel whose trainable parameters are ``prompt_encoder.embedding.weight`` ((p, n_layer · 2 ·
    n_embd), or (p, n_embd) with the projection) and, with ``prefix_projection``, ``prompt_encoder.transform.*``.
    """
    if not isinstance(config, PrefixTuningConfig):
        raise TypeError(f"config must be a PrefixTuningConfig, got {type(config).__name__}")
    config.check_model(model)
    c = model.config
    encoder = PrefixEncoder(config, c.n_embd, c.n_layer, seed=seed, dtype=str(model.dtype))
    model.freeze()
    return PrefixTuningModel(model, encoder, config)


def prefix_tuning_parameter_count(num_virtual_tokens: int, n_layer: int, n_embd: int,
                                  encoder_hidden_size: int | None = None) -> int:
    """Trainable parameters: ``p · L · 2 · C`` (or, with a projection of width H, ``p C + (C H + H) +
    (H · 2 L C + 2 L C)``).

    >>> prefix_tuning_parameter_count(10, 96, 12288)   # GPT-3 175B, 10 prefix positions
    23592960
    """
    p, L, C = num_virtual_tokens, n_layer, n_embd
    if encoder_hidden_size is None:
        return p * L * 2 * C
    H = encoder_hidden_size
    return p * C + (C * H + H) + (H * 2 * L * C + 2 * L * C)


__all__ = ["PrefixEncoder", "PrefixTuningConfig", "PrefixTuningModel", "apply", "past_key_values_to_prefix",
           "prefix_to_past_key_values", "prefix_tuning_parameter_count"]
