"""A tiny decoder-only transformer (GPT-2 shape) with hand-written backward passes.

Architecture (Radford et al. 2019, as in nanoGPT): token + learned position embeddings, ``n_layer``
pre-LayerNorm blocks (causal multi-head attention, then a GELU feed-forward of width
``mlp_ratio * n_embd``), a final LayerNorm and an untied ``lm_head`` without bias. The loss is the mean
cross-entropy over all target tokens that are not ``ignore_index`` (-100, PyTorch's default).

Parameter names are those of the state_dict (``wte.weight``, ``blocks.0.attn.q_proj.weight``, ...),
so PEFT-style wrappers can address any projection by name (:meth:`Module.named_modules`,
:meth:`Module.set_submodule`).

Departures: separate q/k/v projections instead of GPT-2's fused ``c_attn`` (so LoRA can target
``q_proj`` and ``v_proj`` as PEFT does for LLaMA-style models); no dropout on attention probabilities;
the lm_head is not tied to ``wte``. Initialisation is GPT-2's: N(0, 0.02) weights, zero biases, the
residual projections (``o_proj``, ``down_proj``) scaled by 1/sqrt(2 n_layer).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

import numpy as np

from minilora.nn import functional as F
from minilora.nn.module import Module, ModuleList
from minilora.nn.modules import Block, Dropout, Embedding, LayerNorm, Linear

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of the model.

    vocab_size : number of token ids.  block_size : longest sequence (positions).
    n_layer, n_head, n_embd : depth, heads, width (``n_embd % n_head == 0``).
    mlp_ratio : feed-forward width / n_embd.  dropout : on embeddings and residual branches.
    bias : biases in Linear layers (LayerNorms always have them).  dtype : "float32" or "float64".
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    bias: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd must be divisible by n_head, got n_embd={self.n_embd}, "
                             f"n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")


class GPT(Module):
    """The model. ``forward(idx, targets=None) -> (logits, loss)``; ``backward(dloss=1.0)``."""

    def __init__(self, config: GPTConfig, seed: int | np.random.Generator | None = 0) -> None:
        super().__init__()
        self.config = c = config
        rng = np.random.default_rng(seed)
        self.wte = Embedding(c.vocab_size, c.n_embd, seed=rng, dtype=c.dtype)
        self.wpe = Embedding(c.block_size, c.n_embd, seed=rng, dtype=c.dtype)
        self.drop = Dropout(c.dropout, seed=rng)
        self.blocks = ModuleList(
            Block(c.n_embd, c.n_head, c.mlp_ratio, c.bias, c.dropout, seed=rng, dtype=c.dtype)
            for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.n_embd, dtype=c.dtype)
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False, seed=rng, dtype=c.dtype)
        # GPT-2 initialisation, drawn in parameter order from the same generator
        resid_std = 0.02 / math.sqrt(2 * c.n_layer)
        for name, p in self.params.items():
            if name.endswith("bias") and "ln" not in name:
                p[...] = 0
            elif name.endswith("weight") and "ln" not in name:
                std = resid_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                p[...] = rng.normal(0.0, std, p.shape)
        self.loss_cache = None

    # ------------------------------------------------------------------ forward / backward
    def _check_inputs(self, idx: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.ndim != 2:
            raise ValueError(f"idx must be a (B, T) integer array, got shape {idx.shape}")
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"idx must be an integer array, got dtype {idx.dtype}")
        T = idx.shape[1]
        if not 1 <= T <= self.config.block_size:
            raise ValueError(f"idx has sequence length {T}; it must be in "
                             f"[1, block_size={self.config.block_size}]")
        if idx.min() < 0 or idx.max() >= self.config.vocab_size:
            raise ValueError(f"idx values must be token ids in [0, vocab_size={self.config.vocab_size}), "
                             f"got min {idx.min()} max {idx.max()}")
        if targets is not None:
            targets = np.asarray(targets)
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {idx.shape}, got {targets.shape}")
            bad = (targets != F.IGNORE_INDEX) & ((targets < 0) | (targets >= self.config.vocab_size))
            if bad.any():
                raise ValueError(f"targets must be in [0, vocab_size={self.config.vocab_size}) or "
                                 f"{F.IGNORE_INDEX} (ignored), got {targets[bad][0]}")
        return idx

    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        """idx: (B, T) int token ids, T <= block_size; targets: (B, T) ids or -100.

        Returns ``(logits (B, T, vocab_size), loss)``, loss a float or None without targets.
        """
        idx = self._check_inputs(idx, targets)
        B, T = idx.shape
        x = self.wte.forward(idx)  # (B, T, C), a fresh array (fancy indexing): add positions in place
        x += self.wpe.forward(np.arange(T))  # (T, C) broadcast over the batch
        x = self.drop.forward(x)
        for block in self.blocks:
            x = block.forward(x)
        logits = self.lm_head.forward(self.ln_f.forward(x))  # (B, T, V)
        loss = None
        if targets is not None:
            # the softmax (cached) and dlogits live in work buffers: both stay inside the model
            loss, self.loss_cache = F.cross_entropy_forward(logits, targets, alloc=self._buf)
        return logits, loss

    def backward(self, dloss: float = 1.0) -> None:
        """Backpropagate ``dloss`` times the last loss into the grads of all trainable parameters."""
        if self.loss_cache is None:
            raise ValueError("backward() needs a forward(idx, targets) with targets first")
        dx = self.lm_head.backward(F.cross_entropy_backward(dloss, self.loss_cache, self._buf))  # (B, T, C)
        self.loss_cache = None
        dx = self.ln_f.backward(dx)
        for block in reversed(list(self.blocks)):
            dx = block.backward(dx)
        dx = self.drop.backward(dx)
        self.wte.backward(dx)
        self.wpe.backward(dx.sum(axis=0))  # positions are shared across the batch

    # ------------------------------------------------------------------ sampling
    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T); returns (B, T + max_new_tokens).

        ``temperature == 0`` is greedy decoding; ``top_k`` keeps the k most likely tokens. The context
        is cropped to the last ``block_size`` tokens. Runs in eval mode (dropout off).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if top_k is not None and not 1 <= top_k <= self.config.vocab_size:
            raise ValueError(f"top_k must be in [1, {self.config.vocab_size}] or None, got {top_k!r}")
        rng = np.random.default_rng(seed)
        was_training = self.training
        self.eval()
        idx = np.asarray(idx)
        try:
            for _ in range(max_new_tokens):
                logits, _ = self.forward(idx[:, -self.config.block_size:])
                logits = logits[:, -1, :].astype(np.float64)  # (B, V)
                if temperature == 0:
                    nxt = logits.argmax(axis=-1)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
                        logits = np.where(logits < kth, -np.inf, logits)
                    p, _ = F.softmax_forward(logits)
                    nxt = (p.cumsum(axis=-1) < rng.random((p.shape[0], 1))).sum(axis=-1)
                    nxt = np.minimum(nxt, self.config.vocab_size - 1)
                idx = np.concatenate([idx, nxt[:, None].astype(idx.dtype)], axis=1)
        finally:
            self.train(was_training)
            self.loss_cache = None
        return idx

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the config and state_dict to an ``.npz`` (no pickle)."""
        arrays = {f"config.{k}": np.asarray(v) for k, v in asdict(self.config).items()}
        np.savez_compressed(path, **arrays, **self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> GPT:
        """Read a model written by :meth:`save` (``np.load(..., allow_pickle=False)``)."""
        with np.load(path, allow_pickle=False) as f:
            kinds = {fl.name: fl.type for fl in fields(GPTConfig)}
            cfg = {}
            for k in kinds:
                v = f[f"config.{k}"].item()
                cfg[k] = bool(v) if k == "bias" else (str(v) if k == "dtype" else v)
            model = cls(GPTConfig(**cfg), seed=0)
            model.load_state_dict({k: f[k] for k in f.files if not k.startswith("config.")})
        return model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str = "float32") -> GPT:
        """Load a Hugging Face GPT-2 checkpoint directory (config.json + safetensors); see :mod:`minilora.hf`."""
        from minilora.hf.gpt2 import from_pretrained  # lazy: the engine does not depend on file formats

        return from_pretrained(path, dtype=dtype)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a Hugging Face GPT-2 checkpoint directory that ``GPT2LMHeadModel`` loads; see :mod:`minilora.hf`."""
        from minilora.hf.gpt2 import save_pretrained

        save_pretrained(self, path)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, vocab_size={c.vocab_size}, "
                f"block_size={c.block_size}, params={self.num_params()}")
