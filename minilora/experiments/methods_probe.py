"""What each method can change in the model, computed: the attention identity of prompts and prefixes, prompt
tuning as a prefix, and a change of the values that an adapter can learn and a prefix cannot.

**The identity.** In any layer, a real token's attention over ``p`` virtual positions and the real ones splits
into ``y = (1 − λ) y_base + λ u`` (:func:`attention_decomposition`, checked in layer 0). **Prompt tuning is prefix
tuning** with the prefix the frozen layers compute from the prompt (:func:`prompt_as_prefix`).

**Reflected values.** The target is layer 0's attention sublayer of the shipped base GPT with every value
reflected, ``v ↦ R v`` with ``R = I − 2 e eᵀ`` for a random unit vector ``e`` (C = n_embd, heads side by side)::

    target(h) = o_proj(Σ_s a_s R v_s) = o_proj(R y),        y = Σ_s a_s v_s the frozen attention's output

and two ways to learn it, everything of the attention frozen:

* :class:`PrefixedAttention`: ``p`` trainable key/value pairs per head, as prefix tuning has. By
  :func:`attention_decomposition`, it can only produce ``(1 − λ) y + λ u`` with ``u`` a mix of its own ``p``
  values, the same few vectors for every input: it cannot reflect every ``y`` exactly (how close it gets is
  what the probe measures);
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
from minilora.peft import prefix_tuning
from minilora.peft.adapters import BottleneckAdapter
from minilora.peft.prefix_tuning import PrefixTuningModel, prefix_to_past_key_values
from minilora.peft.prompt_learning import PromptLearningModel, PromptTable
from minilora.train import History, train


def _layer0_inputs(model: PromptLearningModel, idx: np.ndarray):
    """Layer 0's normalized inputs of the real tokens and the prefix keys/values they attend to."""
    base, p = model.base_model, model.num_virtual_tokens
    block, (B, T) = base.blocks[0], idx.shape
    attn = block.attn
    if isinstance(model, PrefixTuningModel):
        pk, pv = prefix_to_past_key_values(model.get_prompt(), B, base.config.n_layer, attn.n_head)[0]
        h = block.ln_1.forward(base.wte.forward(idx) + base.wpe.forward(np.arange(p, p + T)))
        return h, pk, pv, attn.forward(h, (pk, pv))
    prompt = model.get_prompt()
    x = np.concatenate([np.broadcast_to(prompt, (B, p, prompt.shape[1])), base.wte.forward(idx)], axis=1)
    hj = block.ln_1.forward(x + base.wpe.forward(np.arange(p + T)))
    pk = F.split_heads(attn.k_proj.forward(hj[:, :p]), attn.n_head)  # what the frozen layer makes of the prompt
    pv = F.split_heads(attn.v_proj.forward(hj[:, :p]), attn.n_head)
    return hj[:, p:], pk, pv, attn.forward(hj)[:, p:]


def attention_decomposition(model: PromptLearningModel, idx: np.ndarray) -> dict:
    """Layer 0 of a prompt- or prefix-tuned model, for every real token, head ``h`` and position ``t``::

        y_t = (1 − λ_t) · y_t^base + λ_t · u_t,     λ_t = attention on the p virtual positions,
                                                    u_t = attention over the virtual positions alone

    where ``y^base`` is the frozen layer's attention output at the same positions without the prompt: the prompt
    can only dilute what attention does with the real tokens' values and add a mix of its own values.

    Returns ``lambda`` (B, nh, T), ``decomposition_error`` (max |y − the right side|), ``real_attention_error``
    (max difference between the real tokens' attention weights renormalized and the base model's) and
    ``model_error`` (max |the model's own layer-0 attention output − o_proj(y)|, tying y to the forward).
    """
    model.eval()
    attn, p = model.base_model.blocks[0].attn, model.num_virtual_tokens
    h, pk, pv, model_out = _layer0_inputs(model, idx)
    q, k, v = attn.q_proj.forward(h), attn.k_proj.forward(h), attn.v_proj.forward(h)
    y, cache = F.attention_forward(q, k, v, attn.n_head, pk, pv)  # (B, T, C)
    y_base, cache_base = F.attention_forward(q, k, v, attn.n_head)
    att, att_base = cache[3], cache_base[3]  # (B, nh, T, p + T), (B, nh, T, T)
    lam = att[..., :p].sum(axis=-1)  # (B, nh, T)
    u = (att[..., :p] / lam[..., None]) @ pv  # (B, nh, T, hs)
    mix = (1 - lam)[..., None] * F.split_heads(y_base, attn.n_head) + lam[..., None] * u
    return {"lambda": lam, "decomposition_error": float(np.abs(y - F.merge_heads(mix)).max()),
            "real_attention_error": float(np.abs(att[..., p:] / att[..., p:].sum(-1, keepdims=True) - att_base).max()),
            "model_error": float(np.abs(model_out - attn.o_proj.forward(y)).max())}


def prompt_as_prefix(model: PromptLearningModel) -> PrefixTuningModel:
    """Prompt tuning (or p-tuning) rewritten as prefix tuning: the keys and values that every frozen layer
    computes for the virtual tokens, as a fixed prefix (PEFT's layout, (p, n_layer · 2 · C)).

    The virtual tokens come first and attend only to each other, so their keys and values do not depend on the
    input: the prefix model gives the prompt model's logits. Prefix tuning (p-tuning v2) trains these
    ``n_layer · 2`` matrices freely instead of through one matrix at the input.
    """
    if isinstance(model, PrefixTuningModel) or not isinstance(model, PromptLearningModel):
        raise ValueError(f"prompt_as_prefix needs a prompt-tuning or p-tuning model, got {type(model).__name__}")
    base, p = model.base_model, model.num_virtual_tokens
    was_training = model.training
    model.eval()
    x = model.get_prompt()[None] + base.wpe.forward(np.arange(p))  # (1, p, C): positions 0 .. p-1
    rows = []
    for block in base.blocks:
        h = block.ln_1.forward(x)
        rows += [block.attn.k_proj.forward(h)[0], block.attn.v_proj.forward(h)[0]]  # layer l: key, then value
        x = block.forward(x)
    model.train(was_training)
    flat = np.concatenate(rows, axis=1)  # (p, 2 L C)
    table = PromptTable(p, flat.shape[1], dtype=str(flat.dtype))
    table.embedding.weight[...] = flat
    table.freeze()
    return PrefixTuningModel(base, table, prefix_tuning.PrefixTuningConfig(p))



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


__all__ = ["AdaptedAttention", "PrefixedAttention", "attention_decomposition", "prompt_as_prefix", "reflection_task",
           "value_reflection_probe"]
