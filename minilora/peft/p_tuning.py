"""P-tuning (Liu et al. 2021, "GPT Understands, Too", arXiv 2103.10385): the virtual tokens come out of an encoder.

Prompt tuning trains the prompt ``P`` directly. P-tuning trains a small network that *produces* it, from its own
embedding table ``E ∈ R^{p×C}`` (§3.2 of the paper: the prompt embeddings are "dependent on each other", so
they are modelled by a bidirectional LSTM and an MLP). PEFT's ``PromptEncoder`` offers two encoders
(``encoder_reparameterization_type``)::

    "MLP":   P = W3 · relu(W2 · relu(W1 E + b1) + b2) + b3            C → H → H → C
    "LSTM":  P = W5 · relu(W4 · BiLSTM(E) + b4) + b5                  C → (2 · H, both directions) → 2H → C

with ``H = encoder_hidden_size``; the LSTM has ``encoder_num_layers`` layers and ``encoder_dropout`` between
them. Only the encoder trains; ``P`` is then prepended exactly as in prompt tuning
(:class:`~minilora.peft.prompt_learning.PromptLearningModel`), and ``dP`` flows back through the MLP (and the
LSTM, :mod:`minilora.peft.lstm`) into ``E``. After training only ``P`` matters: PEFT saves ``P`` (the
encoder's output) as ``prompt_embeddings``, and a loaded adapter is a plain table, as in prompt tuning.

Names follow PEFT: ``embedding.weight``, ``mlp_head.0.weight`` / ``.2`` / ``.4`` (MLP), ``lstm_head.weight_ih_l0``
... and ``mlp_head.0`` / ``.2`` (LSTM). Initialization is PyTorch's (``nn.Embedding`` N(0, 1), ``nn.Linear`` and
``nn.LSTM`` uniform). ``encoder_hidden_size=None`` means ``n_embd``, as PEFT fills in ``token_dim``;
``encoder_num_layers`` is ignored by the MLP, as in PEFT (which warns), and minilora warns too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from minilora.nn.gpt import GPT
from minilora.nn.module import Module
from minilora.nn.modules import Embedding, Linear
from minilora.peft.layers import Activation, Sequential
from minilora.peft.lstm import LSTM
from minilora.peft.prompt_learning import PromptLearningConfig, PromptLearningModel, check_positive_int

ENCODER_TYPES = ("MLP", "LSTM")


@dataclass(frozen=True)
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning, named as PEFT's ``PromptEncoderConfig``.

    Parameters
    ----------
    num_virtual_tokens : int
        ``p ≥ 1``.
    encoder_reparameterization_type : ``"MLP"`` (PEFT's default) | ``"LSTM"``
    encoder_hidden_size : int, optional
        ``H``; None means the model's ``n_embd``.
    encoder_num_layers : int
        LSTM layers (default 2, PEFT's); the MLP always has three Linear layers.
    encoder_dropout : float
        Dropout between LSTM layers, in [0, 1).
    """

    encoder_reparameterization_type: str = "MLP"
    encoder_hidden_size: int | None = None
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0
    peft_type: ClassVar[str] = "P_TUNING"

    def __post_init__(self) -> None:
        super().__post_init__()
        kind = str(getattr(self.encoder_reparameterization_type, "value", self.encoder_reparameterization_type))
        if kind not in ENCODER_TYPES:
            raise ValueError(f"encoder_reparameterization_type must be one of {ENCODER_TYPES}, "
                             f"got {self.encoder_reparameterization_type!r}")
        object.__setattr__(self, "encoder_reparameterization_type", kind)
        if self.encoder_hidden_size is not None:
            object.__setattr__(self, "encoder_hidden_size",
                               check_positive_int("encoder_hidden_size", self.encoder_hidden_size))
        object.__setattr__(self, "encoder_num_layers", check_positive_int("encoder_num_layers",
                                                                         self.encoder_num_layers))
        if isinstance(self.encoder_dropout, bool) or not isinstance(self.encoder_dropout, (int, float)) \
                or not 0.0 <= self.encoder_dropout < 1.0:
            raise ValueError(f"encoder_dropout must be a number in [0, 1), got {self.encoder_dropout!r}")

    def hidden_size(self, n_embd: int) -> int:
        """``H``: ``encoder_hidden_size``, or ``n_embd`` when it is None."""
        return n_embd if self.encoder_hidden_size is None else self.encoder_hidden_size


class PromptEncoder(Module):
    """PEFT's ``PromptEncoder``: ``forward(arange(p)) -> P (p, C)`` from ``embedding`` through the head.

    Parameters
    ----------
    config : PromptEncoderConfig.  token_dim : C (the GPT's ``n_embd``).  seed : int or Generator.
    dtype : parameter dtype.
    """

    def __init__(self, config: PromptEncoderConfig, token_dim: int, seed: int | np.random.Generator | None = 0,
                 dtype: str = "float32") -> None:
        super().__init__()
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        p, C, H = config.num_virtual_tokens, int(token_dim), config.hidden_size(token_dim)
        self.encoder_type, self.num_virtual_tokens, self.token_dim, self.hidden_size = (
            config.encoder_reparameterization_type, p, C, H)
        self.embedding = Embedding(p, C, seed=rng, dtype=dtype)
        lin = lambda n_in, n_out: Linear(n_in, n_out, seed=rng, dtype=dtype)
        if self.encoder_type == "LSTM":
            self.lstm_head = LSTM(C, H, config.encoder_num_layers, config.encoder_dropout, seed=rng, dtype=dtype)
            self.mlp_head = Sequential([lin(2 * H, 2 * H), Activation("relu"), lin(2 * H, C)])
        else:
            if config.encoder_num_layers != 2:
                warnings.warn(f"for MLP, the argument encoder_num_layers={config.encoder_num_layers} is ignored; "
                              "exactly 3 Linear layers are used (as in PEFT)", stacklevel=3)
            self.mlp_head = Sequential([lin(C, H), Activation("relu"), lin(H, H), Activation("relu"), lin(H, C)])

    def forward(self, indices: np.ndarray) -> np.ndarray:
        """indices (p,) -> P (p, C)."""
        e = self.embedding.forward(indices)  # (p, C)
        if self.encoder_type == "LSTM":
            return self.mlp_head.forward(self.lstm_head.forward(e[None])[0])  # a batch of one sequence
        return self.mlp_head.forward(e)

    def backward(self, dout: np.ndarray) -> None:
        """dout = dP (p, C): gradients of the head, the LSTM and ``embedding.weight``."""
        de = self.mlp_head.backward(dout)
        if self.encoder_type == "LSTM":
            de = self.lstm_head.backward(de[None])[0]
        self.embedding.backward(de)

    def extra_repr(self) -> str:
        return f"{self.encoder_type!r}, num_virtual_tokens={self.num_virtual_tokens}, hidden_size={self.hidden_size}"


def apply(model: GPT, config: PromptEncoderConfig, seed: int = 0) -> PromptLearningModel:
    """P-tune ``model``: freeze it (in place) and return the wrapper that trains only the prompt encoder.

    Parameters
    ----------
    model : GPT.  config : PromptEncoderConfig.  seed : the encoder's initialization (and LSTM dropout).

    Returns
    -------
    PromptLearningModel whose trainable parameters are ``prompt_encoder.embedding.weight`` (p, n_embd) and the
    head's (``prompt_encoder.mlp_head.*``, ``prompt_encoder.lstm_head.*``).
    """
    if not isinstance(config, PromptEncoderConfig):
        raise TypeError(f"config must be a PromptEncoderConfig, got {type(config).__name__}")
    config.check_model(model)
    encoder = PromptEncoder(config, model.config.n_embd, seed=seed, dtype=str(model.dtype))
    model.freeze()
    return PromptLearningModel(model, encoder, config)


def p_tuning_parameter_count(num_virtual_tokens: int, n_embd: int, encoder_hidden_size: int,
                             encoder_reparameterization_type: str = "MLP", encoder_num_layers: int = 2) -> int:
    """Trainable parameters of p-tuning's encoder (the saved file has only ``p · C`` numbers).

    MLP: ``p C + (C H + H) + (H H + H) + (H C + C)``. LSTM: ``p C`` + per layer and direction
    ``4H (in + H + 2)`` (in = C, then 2H) + ``(2H · 2H + 2H) + (2H · C + C)``.

    >>> p_tuning_parameter_count(20, 768, 768)   # PEFT's example on a 768-wide model
    1787136
    """
    p, C, H = num_virtual_tokens, n_embd, encoder_hidden_size
    if encoder_reparameterization_type == "MLP":
        return p * C + (C * H + H) + (H * H + H) + (H * C + C)
    if encoder_reparameterization_type != "LSTM":
        raise ValueError(f"encoder_reparameterization_type must be one of {ENCODER_TYPES}, "
                         f"got {encoder_reparameterization_type!r}")
    lstm = sum(2 * 4 * H * ((C if layer == 0 else 2 * H) + H + 2) for layer in range(encoder_num_layers))
    return p * C + lstm + (2 * H * 2 * H + 2 * H) + (2 * H * C + C)


__all__ = ["ENCODER_TYPES", "PromptEncoder", "PromptEncoderConfig", "apply", "p_tuning_parameter_count"]
