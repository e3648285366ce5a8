"""A tiny decoder-only transformer (GPT-2 shape) with hand-written backward passes.

Architecture (Radford et al. 2019, as in nanoGPT): token + learned position embeddings, ``n_layer``
pre-LayerNorm blocks (causal multi-head attention, then a GELU feed-forward of width
``mlp_ratio * n_embd``), a final LayerNorm and an ``lm_head`` without bias, untied by default
(``tie_word_embeddings=True``: the logits are ``ln_f(x) @ wte.weight.T``, as GPT-2's). The loss is the mean
cross-entropy over all target tokens that are not ``ignore_index`` (-100, PyTorch's default).

Inputs as in Hugging Face's GPT-2: token ids ``idx`` or ready-made embeddings ``inputs_embeds``;
``past_key_values``, one ``(k, v)`` pair per layer, put ``P`` positions of keys and values before the
sequence (a key/value cache, or the trained prefix of prefix tuning), which then takes positions
``P .. P + T - 1``; ``position_ids`` overrides the positions. After ``backward()`` the gradients of the
float inputs are in :attr:`GPT.input_grads`.

Parameter names are those of the state_dict (``wte.weight``, ``blocks.0.attn.q_proj.weight``, ...),
so PEFT-style wrappers can address any projection by name (:meth:`Module.named_modules`,
:meth:`Module.set_submodule`).

Departures: separate q/k/v projections instead of GPT-2's fused ``c_attn`` (so LoRA can target
``q_proj`` and ``v_proj`` as PEFT does for LLaMA-style models); no dropout on attention probabilities;
the lm_head is untied unless ``tie_word_embeddings``; no attention mask (padding) argument.
Initialisation is GPT-2's: N(0, 0.02) weights, zero biases, the residual projections (``o_proj``,
``down_proj``) scaled by 1/sqrt(2 n_layer).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

import numpy as np

from minilora import backend
from minilora.nn import functional as F
from minilora.nn.module import Module, ModuleList
from minilora.nn.modules import Block, Dropout, Embedding, LayerNorm, Linear, fill_random

DTYPES = ("float32", "float64")

#: GPT.backward skips the input gradient of a block when nothing below it needs one
#: (:meth:`GPT._needs_input_grad`); False computes every one (the reference the tests compare with, bit for bit)
SKIP_UNUSED_INPUT_GRADS = True


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of the model.

    vocab_size : number of token ids.  block_size : longest sequence (positions).
    n_layer, n_head, n_embd : depth, heads, width (``n_embd % n_head == 0``).
    mlp_ratio : feed-forward width / n_embd.  dropout : on embeddings and residual branches.
    bias : biases in Linear layers (LayerNorms always have them).  dtype : "float32" or "float64".
    tie_word_embeddings : the output layer is ``wte.weight`` itself (no ``lm_head.weight``), as in GPT-2.
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
    tie_word_embeddings: bool = False

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
        for name in ("bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")


class GPT(Module):
    """The model. ``forward(idx, targets=None, ...) -> (logits, loss)``; ``backward(dloss=1.0)``.

    After ``backward()``, :attr:`input_grads` holds the gradients of the float inputs of the last forward:
    ``{"inputs_embeds": (B, T, C)}`` and/or ``{"past_key_values": [(dk, dv) per layer]}`` (``{}`` for
    token ids alone). The arrays belong to the caller; the next forward forgets them.
    """

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
        if not c.tie_word_embeddings:
            self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False, seed=rng, dtype=c.dtype)
        # GPT-2 initialisation, drawn in parameter order from the same generator
        resid_std = 0.02 / math.sqrt(2 * c.n_layer)
        for name, p in self.params.items():
            if name.endswith("bias") and "ln" not in name:
                p[...] = 0
            elif name.endswith("weight") and "ln" not in name:
                std = resid_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                fill_random(p, lambda n, std=std: rng.normal(0.0, std, n))  # drawn on the host
        self.loss_cache = None
        self.input_grads: dict = {}

    # ------------------------------------------------------------------ input checks
    def _check_embeddings(self, idx, inputs_embeds) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Exactly one of token ids (B, T) and embeddings (B, T, C), checked."""
        c = self.config
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of idx (B, T) token ids and inputs_embeds (B, T, n_embd), "
                             f"got {'both' if idx is not None else 'neither'}")
        if idx is not None:
            idx = backend.input_array(idx, "idx")
            if idx.ndim != 2:
                raise ValueError(f"idx must be a (B, T) integer array, got shape {idx.shape}")
            if not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(f"idx must be an integer array, got dtype {idx.dtype}")
            if idx.shape[1] < 1:
                raise ValueError(f"idx has sequence length 0; it must be in [1, block_size={c.block_size}]")
            if idx.min() < 0 or idx.max() >= c.vocab_size:
                raise ValueError(f"idx values must be token ids in [0, vocab_size={c.vocab_size}), "
                                 f"got min {idx.min()} max {idx.max()}")
            return idx, None
        inputs_embeds = backend.input_array(inputs_embeds, "inputs_embeds")
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[2] != c.n_embd or inputs_embeds.shape[1] < 1:
            raise ValueError(f"inputs_embeds must be a (B, T, n_embd={c.n_embd}) array with T >= 1, "
                             f"got shape {inputs_embeds.shape}")
        if inputs_embeds.dtype != self.dtype:
            raise TypeError(f"inputs_embeds must have the model's dtype {self.dtype}, got {inputs_embeds.dtype}")
        return None, inputs_embeds

    def _check_past(self, past_key_values, B: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """One (k, v) pair per layer, each (B, n_head, P, head_size) with one P, in the model's dtype."""
        if past_key_values is None:
            return None
        c = self.config
        if backend.is_array(past_key_values) or not hasattr(past_key_values, "__len__"):
            raise TypeError(f"past_key_values must be a sequence of n_layer={c.n_layer} (k, v) pairs, "
                            f"got {type(past_key_values).__name__}")
        if len(past_key_values) != c.n_layer:
            raise ValueError(f"past_key_values must hold one (k, v) pair per layer (n_layer={c.n_layer}), "
                             f"got {len(past_key_values)}")
        past, P, hs = [], None, c.n_embd // c.n_head
        for i, pair in enumerate(past_key_values):
            if backend.is_array(pair) or not hasattr(pair, "__len__") or len(pair) != 2:
                raise ValueError(f"past_key_values[{i}] must be a (k, v) pair, got {type(pair).__name__}")
            kv = []
            for j, a in enumerate(pair):
                a = backend.input_array(a, f"past_key_values[{i}][{j}]")
                if P is None and a.ndim == 4:
                    P = a.shape[2]  # the prefix length, the same for every layer
                if a.shape != (B, c.n_head, P, hs):
                    raise ValueError(f"past_key_values[{i}][{j}] must have shape (B, n_head, P, head_size) = "
                                     f"({B}, {c.n_head}, {'P' if P is None else P}, {hs}) with one P for every "
                                     f"layer, got {a.shape}")
                if a.dtype != self.dtype:
                    raise TypeError(f"past_key_values[{i}][{j}] must have the model's dtype {self.dtype}, "
                                    f"got {a.dtype}")
                kv.append(a)
            past.append((kv[0], kv[1]))
        return past

    def _check_positions(self, position_ids, B: int, T: int, P: int, name: str) -> np.ndarray:
        """``arange(P, P + T)`` by default; an override must be (T,) or (B, T) ints in [0, block_size)."""
        c, xp = self.config, backend.xp()
        if P + T > c.block_size:
            if P:
                raise ValueError(f"past_key_values length P={P} + {name} sequence length T={T} is {P + T}; "
                                 f"P + T must be at most block_size={c.block_size}")
            raise ValueError(f"{name} has sequence length {T}; it must be at most block_size={c.block_size}")
        if position_ids is None:
            return xp.arange(P, P + T)
        pos = backend.input_array(position_ids, "position_ids")
        if pos.shape not in ((T,), (B, T)):
            raise ValueError(f"position_ids must have shape (T,) = ({T},) or (B, T) = ({B}, {T}), got {pos.shape}")
        if not np.issubdtype(pos.dtype, np.integer):
            raise TypeError(f"position_ids must be an integer array, got dtype {pos.dtype}")
        if pos.min() < 0 or pos.max() >= c.block_size:
            raise ValueError(f"position_ids must be in [0, block_size={c.block_size}), got min {pos.min()} "
                             f"max {pos.max()}")
        return pos

    def _check_targets(self, targets, B: int, T: int) -> np.ndarray | None:
        if targets is None:
            return None
        c = self.config
        targets = backend.input_array(targets, "targets")
        if targets.shape != (B, T):
            raise ValueError(f"targets must have the shape (B, T) = {(B, T)} of the input, got {targets.shape}")
        if not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"targets must be an integer array, got dtype {targets.dtype}")
        bad = (targets != F.IGNORE_INDEX) & ((targets < 0) | (targets >= c.vocab_size))
        if bad.any():
            raise ValueError(f"targets must be in [0, vocab_size={c.vocab_size}) or {F.IGNORE_INDEX} (ignored), "
                             f"got {targets[bad][0]}")
        return targets

    # ------------------------------------------------------------------ forward / backward
    def forward(self, idx: np.ndarray | None = None, targets: np.ndarray | None = None, *,
                inputs_embeds: np.ndarray | None = None,
                past_key_values: list[tuple[np.ndarray, np.ndarray]] | None = None,
                position_ids: np.ndarray | None = None):
        """Logits and loss of a batch.

        Parameters
        ----------
        idx : (B, T) int token ids; or None with ``inputs_embeds`` (B, T, n_embd) in the model's dtype.
        targets : (B, T) ids or -100 (ignored), or None for no loss.
        past_key_values : None, or one ``(k, v)`` pair per layer, each (B, n_head, P, head_size) in the
            model's dtype (Hugging Face's legacy tuple layout): put before each layer's keys and values, seen
            by every token; the tokens stay causal among themselves.
        position_ids : (T,) or (B, T) ints; default ``arange(P, P + T)`` (GPT-2 with a cache of length P).
            ``P + T <= block_size`` is required.

        Returns
        -------
        ``(logits (B, T, vocab_size), loss)``, loss a float or None without targets.
        """
        idx, inputs_embeds = self._check_embeddings(idx, inputs_embeds)
        B, T = (idx if idx is not None else inputs_embeds).shape[:2]
        past = self._check_past(past_key_values, B)
        P = 0 if past is None else past[0][0].shape[2]
        pos = self._check_positions(position_ids, B, T, P, "idx" if idx is not None else "inputs_embeds")
        targets = self._check_targets(targets, B, T)
        self.input_grads = {}
        tok = self.wte.forward(idx) if idx is not None else inputs_embeds  # (B, T, C)
        x = tok + self.wpe.forward(pos)  # (B, T, C); positions (T, C) broadcast over the batch, or (B, T, C)
        x = self.drop.forward(x)
        for i, block in enumerate(self.blocks):
            x = block.forward(x, None if past is None else past[i])
        h = self.ln_f.forward(x)  # (B, T, C)
        if self.config.tie_word_embeddings:
            logits, head_cache = F.linear_forward(h, self.wte.weight)  # (B, T, V): h @ wte.weight.T
        else:
            logits, head_cache = self.lm_head.forward(h), None  # (B, T, V)
        self.cache = (idx is not None, pos.ndim, past is not None, head_cache)
        loss = None
        if targets is not None:
            loss, self.loss_cache = F.cross_entropy_forward(logits, targets)
        return logits, loss

    def backward(self, dloss: float = 1.0) -> None:
        """Backpropagate ``dloss`` times the last loss into the grads of all trainable parameters.

        The gradients of the float inputs (``inputs_embeds``, ``past_key_values``) go to :attr:`input_grads`.
        A gradient nothing uses is not computed: a block whose input gradient nothing below it needs
        (:meth:`_needs_input_grad`) returns none, and the modules below it run no backward. In a LoRA model that
        is block 0: its frozen q/k/v projections and ln_1 skip their input-gradient matmuls.
        """
        if self.loss_cache is None:
            raise ValueError("backward() needs a forward(idx, targets) with targets first")
        from_ids, pos_ndim, has_past, head_cache = self.cache
        dlogits = F.cross_entropy_backward(dloss, self.loss_cache)  # (B, T, V)
        self.loss_cache = self.cache = None
        if self.config.tie_word_embeddings:  # the head's weight gradient adds into wte's one gradient
            dh, dw, _ = F.linear_backward(dlogits, head_cache, need_dw=self.wte.needs_grad("weight"))
            self.wte.accumulate_grad("weight", dw)
        else:
            dh = self.lm_head.backward(dlogits)  # (B, T, C)
        dx = self.ln_f.backward(dh)
        blocks = list(self.blocks)
        for i in reversed(range(len(blocks))):
            need_dx = self._needs_input_grad(i, from_ids, has_past)
            dx = blocks[i].backward(dx, need_dx=need_dx)
            if not need_dx:  # nothing below block i needs a gradient: their backward is not run
                self._release_caches([*blocks[:i], self.drop, self.wte, self.wpe])
                break
        grads = {}
        if need_dx:
            dx = self.drop.backward(dx)  # (B, T, C): the gradient of tok and of the position embeddings
            if from_ids:
                self.wte.backward(dx)
            else:
                grads["inputs_embeds"] = dx
            self.wpe.backward(dx.sum(axis=0) if pos_ndim == 1 else dx)  # (T,) positions are shared by the batch
        if has_past:
            grads["past_key_values"] = [block.attn.past_kv_grad for block in self.blocks]
            for block in self.blocks:
                block.attn.past_kv_grad = None
        self.input_grads = grads

    def _needs_input_grad(self, i: int, from_ids: bool, has_past: bool) -> bool:
        """Whether anything below block ``i`` needs the gradient of block ``i``'s input.

        Below it are blocks ``0 .. i-1``, the dropout and the embeddings. They need it when one of their
        parameters is trainable (``needs_grad``), when the forward took ``inputs_embeds`` (prompt tuning and
        p-tuning take their gradient), or with ``past_key_values`` when ``i > 0``: a lower block's prefix gradient
        comes from its attention backward, which needs that block's output gradient. Block 0's prefix gradient
        comes from its own attention backward, so prefix tuning still skips block 0's input gradient.
        """
        if not SKIP_UNUSED_INPUT_GRADS or not from_ids or (has_past and i > 0):
            return True
        below = [self.wte, self.wpe, *list(self.blocks)[:i]]  # the dropout has no parameters
        return any(module.trainable_names() for module in below)

    @staticmethod
    def _release_caches(modules: list[Module]) -> None:
        """Drop the forward caches of modules whose backward is skipped (as their backward would)."""
        for module in modules:
            for _, mod in module.named_modules():
                mod.cache = None

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
        xp, rng = backend.xp(), np.random.default_rng(seed)
        was_training = self.training
        self.eval()
        idx = backend.input_array(idx, "idx")
        try:
            for _ in range(max_new_tokens):
                logits, _ = self.forward(idx[:, -self.config.block_size:])
                logits = logits[:, -1, :].astype(xp.float64)  # (B, V)
                if temperature == 0:
                    nxt = logits.argmax(axis=-1)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = xp.sort(logits, axis=-1)[:, -top_k][:, None]
                        logits = xp.where(logits < kth, -xp.inf, logits)
                    p = F.softmax(logits)  # (B, V)
                    u = xp.asarray(rng.random((p.shape[0], 1)))  # drawn on the host: the same on every backend
                    nxt = xp.minimum((p.cumsum(axis=-1) < u).sum(axis=-1), self.config.vocab_size - 1)
                idx = xp.concatenate([idx, nxt[:, None].astype(idx.dtype)], axis=1)
        finally:
            self.train(was_training)
            self.loss_cache = None
        return idx

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the config and state_dict to an ``.npz`` (no pickle; arrays copied to the host)."""
        arrays = {f"config.{k}": np.asarray(v) for k, v in asdict(self.config).items()}
        np.savez_compressed(path, **arrays, **{k: backend.to_numpy(v) for k, v in self.state_dict().items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> GPT:
        """Read a model written by :meth:`save` (``np.load(..., allow_pickle=False)``)."""
        with np.load(path, allow_pickle=False) as f:
            kinds = {fl.name: fl.type for fl in fields(GPTConfig)}
            cfg = {}
            for k in kinds:
                if f"config.{k}" not in f.files:  # a field newer than the file: keep its default
                    continue
                v = f[f"config.{k}"].item()
                cfg[k] = bool(v) if k in ("bias", "tie_word_embeddings") else (str(v) if k == "dtype" else v)
            model = cls(GPTConfig(**cfg), seed=0)
            model.load_state_dict({k: f[k] for k in f.files if not k.startswith("config.")})
        return model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str = "float32") -> GPT:
        """Load a Hugging Face GPT-2 checkpoint directory (config.json + safetensors); see :mod:`minilora.hf`."""
        from minilora.hf.gpt2 import from_pretrained  # lazy: the engine does not depend on file formats

        return from_pretrained(path, dtype=dtype)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a Hugging Face GPT-2 checkpoint directory that ``GPT2LMHeadModel`` loads (a QLoRA model: its
        4-bit base + adapter, read back by :meth:`from_pretrained`); see :mod:`minilora.hf`."""
        from minilora.hf.gpt2 import save_pretrained

        save_pretrained(self, path)

    def extra_repr(self) -> str:
        c = self.config
        tied = ", tie_word_embeddings=True" if c.tie_word_embeddings else ""
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, vocab_size={c.vocab_size}, "
                f"block_size={c.block_size}{tied}, params={self.num_params()}")
