"""A change that an adapter can learn and a prefix cannot: the frozen attention doing something else with the values.

The target is layer 0's attention sublayer of the shipped base GPT with every value reflected, ``v ↦ R v`` with
``R = I − 2 e eᵀ`` for a random unit vector ``e`` (C = n_embd, heads side by side)::

    target(h) = o_proj(Σ_s a_s R v_s) = o_proj(R y),        y = Σ_s a_s v_s the frozen attention's output

and two ways to learn it, everything of the attention frozen:

* :class:`PrefixedAttention`: ``p`` trainable key/value pairs per head, as prefix tuning has. By
  :func:`minilora.experiments.methods.attention_decomposition`, it can only produce ``(1 − λ) y + λ u`` with ``u``
  a mix of its own ``p`` values: it cannot reflect ``y``, whatever it learns;
* :class:`AdaptedAttention`: a Houlsby adapter after the sublayer, ``a + g(a)``. ``a ↦ W_o R W_o⁻¹ (a − b) + b``
  differs from the identity by a rank-1 linear map, which two relu units represent exactly.

:func:`value_reflection_probe` trains one of them on 64 sequences of the held-out task and reports the part of
the required change still missing on 64 others, ``‖out − target‖ / ‖a − target‖`` (1: nothing learned, 0: all).
"""

from __future__ import annotations

import numpy as np

from minilora import data
from minilora.base_model import load_base_model
from minilora.nn import functional as F
from minilora.nn.module import Module
from minilora.nn.modules import CausalSelfAttention
from minilora.optim import Adam
from minilora.peft.adapters import BottleneckAdapter
from minilora.train import History, train


class PrefixedAttention(Module):
    """A frozen attention sublayer with ``p`` trainable keys and values per head (``prefix_k``, ``prefix_v``)."""

    def __init__(self, attn: CausalSelfAttention, num_virtual_tokens: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.attn = attn
        attn.freeze()
        rng = np.random.default_rng(seed)
        shape = (attn.n_head, num_virtual_tokens, attn.n_embd // attn.n_head)
        dtype = attn.q_proj.weight.dtype
        self.add_param("prefix_k", rng.standard_normal(shape).astype(dtype))  # N(0, 1), PEFT's table init
        self.add_param("prefix_v", rng.standard_normal(shape).astype(dtype))

    def forward(self, h: np.ndarray, target: np.ndarray):
        B = h.shape[0]
        past = tuple(np.broadcast_to(self._params[n], (B, *self._params[n].shape)) for n in ("prefix_k", "prefix_v"))
        out = self.attn.forward(h, past)
        loss, self.cache = F.mse_forward(out, target)
        return out, loss

    def backward(self, dloss: float = 1.0) -> None:
        self.attn.backward(F.mse_backward(dloss, self.cache))
        dk, dv = self.attn.past_kv_grad
        self.accumulate_grad("prefix_k", dk.sum(axis=0))
        self.accumulate_grad("prefix_v", dv.sum(axis=0))
        self.attn.past_kv_grad = self.cache = None


class AdaptedAttention(Module):
    """A frozen attention sublayer followed by a bottleneck adapter: ``a + g(a)`` (relu, ``mam_adapter`` init)."""

    def __init__(self, attn: CausalSelfAttention, bottleneck_size: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.attn = attn
        attn.freeze()
        self.adapter = BottleneckAdapter(attn.n_embd, bottleneck_size, "relu", "mam_adapter", seed=seed,
                                         dtype=str(attn.q_proj.weight.dtype))

    def forward(self, h: np.ndarray, target: np.ndarray):
        a = self.attn.forward(h)
        out = a + self.adapter.forward(a)
        loss, self.cache = F.mse_forward(out, target)
        return out, loss

    def backward(self, dloss: float = 1.0) -> None:
        self.adapter.backward(F.mse_backward(dloss, self.cache))  # the frozen attention needs no backward
        self.cache = self.attn.cache = None


def reflection_task(attn: CausalSelfAttention, h: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, target)``: the frozen sublayer's output ``o_proj(y)`` and ``o_proj(R y)``, R = I − 2 e eᵀ."""
    q, k, v = attn.q_proj.forward(h), attn.k_proj.forward(h), attn.v_proj.forward(h)
    y, _ = F.attention_forward(q, k, v, attn.n_head)  # (B, T, C)
    reflected = y - 2.0 * (y @ e)[..., None] * e
    return attn.o_proj.forward(y), attn.o_proj.forward(reflected)


def value_reflection_probe(kind: str, seed: int = 0, steps: int = 300, lr: float = 1e-2, size: int = 4) -> dict:
    """Train a prefix (``kind="prefix"``, ``size`` = p) or an adapter (``"adapter"``, ``size`` = m) to reflect
    layer 0's values; returns ``remaining`` (held-out ``‖out − target‖ / ‖a − target‖``), ``trainable`` and
    the training ``history``."""
    base = load_base_model()
    block = base.blocks[0]
    rng = np.random.default_rng([seed, 7])
    e = rng.standard_normal(base.config.n_embd).astype(base.dtype)
    e /= np.linalg.norm(e)

    def inputs(s: int) -> np.ndarray:
        idx, _ = data.task_batch(data.HELDOUT_TASK, 64, np.random.default_rng([seed, s]))
        return block.ln_1.forward(base.wte.forward(idx) + base.wpe.forward(np.arange(idx.shape[1])))

    h_train, h_test = inputs(1), inputs(2)
    (_, t_train), (a_test, t_test) = reflection_task(block.attn, h_train, e), reflection_task(block.attn, h_test, e)
    if kind == "prefix":
        model = PrefixedAttention(block.attn, size, seed=seed)
    elif kind == "adapter":
        model = AdaptedAttention(block.attn, size, seed=seed)
    else:
        raise ValueError(f"kind must be 'prefix' or 'adapter', got {kind!r}")
    hist: History = train(model, (h_train, t_train), Adam(model, lr=lr), steps=steps, progress=False)
    model.eval()
    out, _ = model.forward(h_test, t_test)
    model.cache = None
    remaining = float(np.linalg.norm(out - t_test) / np.linalg.norm(a_test - t_test))
    return {"remaining": remaining, "trainable": model.num_params(trainable_only=True), "history": hist}


__all__ = ["AdaptedAttention", "PrefixedAttention", "reflection_task", "value_reflection_probe"]
