"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP", arXiv 1902.00751).

An adapter is a small two-layer network with a skip connection, put into each block of a frozen transformer
(Houlsby et al. §2.1, Figure 2: "after the projection following multi-headed attention and after the two
feed-forward layers", before the block's own residual addition)::

    g(z) = s · W_up f(W_down z + b_down) + b_up·s      W_down (m, d), W_up (d, m), m = d // reduction_factor
    block output = x + h + g(h)                          h = the sublayer's output, x = the block's residual

with ``f`` the nonlinearity and ``s`` the ``scaling`` (1.0). Everything but the adapters is frozen. At
initialization ``W_up`` is small (or zero), so ``g ≈ 0`` and the model starts as the pretrained one: the
"near-identity initialization" of §2.1. An adapter has ``2 m d + d + m`` parameters; Houlsby's configuration
puts two in every block (after attention and after the MLP), Pfeiffer et al. (2021, arXiv 2005.00247) one
(after the MLP only).

Names and semantics are AdapterHub's (the ``adapters`` library): :class:`DoubleSeqBnConfig` (Houlsby:
``mh_adapter=True``, ``output_adapter=True``, ``non_linearity="swish"``, ``reduction_factor=16``) and
:class:`SeqBnConfig` (Pfeiffer: ``mh_adapter=False``, ``original_ln_before=True``, ``"relu"``), both
:class:`BnConfig`; the adapter's layers are ``adapter_down.0`` (a Linear, then the activation) and
``adapter_up``, held by the block as ``attention_adapters`` and ``output_adapters``. For a pre-LayerNorm
block (GPT-2, and this GPT) AdapterHub computes, with ``z`` the adapter's input:

* ``original_ln_before=False`` (Houlsby): ``z = h``, output ``x + h + g(h)``;
* ``original_ln_before=True`` (Pfeiffer): ``z = h + x`` (after the block's residual addition), output
  ``x + h + g(h + x)``.

``init_weights`` (AdapterHub's): ``"bert"`` (default: both weights N(0, 0.02), biases 0), ``"mam_adapter"``
(``W_down`` uniform ±1/√d as ``nn.Linear``, ``W_up`` and biases 0: exactly the identity at the start) and
``"houlsby"`` (weights N(0, 0.01) truncated to ±0.02, biases 0).

Houlsby et al. also train the layer-normalization parameters of each task; minilora trains only the adapters
(AdapterHub's ``train_adapter`` does the same; ``model.unfreeze([...ln names...])`` adds them).

Departures from AdapterHub: a ``reduction_factor`` that leaves no hidden unit (``d // reduction_factor < 1``)
is an error (AdapterHub silently uses m = 1); only the sequential adapter with the block's residual
(``original_ln_after=True``, ``residual_before_ln=True``, no extra LayerNorms, no gating, phm or invertible
adapters, no ``is_parallel``); one adapter per block position (no names, no fusion); the exact-erf ``"gelu"``
is not offered (``"gelu_new"`` is).
"""

from __future__ import annotations

import numpy as np

from minilora import backend
from minilora.nn.gpt import GPT
from minilora.nn.module import Module
from minilora.nn.modules import Block, Linear, attention_branch_backward
from minilora.peft.adapters_config import INIT_WEIGHTS, BnConfig, DoubleSeqBnConfig, SeqBnConfig
from minilora.peft.layers import Activation, Sequential


def _truncated_normal(rng: np.random.Generator, std: float, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, std²) restricted to ±2 std (redraw outside), as ``torch.nn.init.trunc_normal_(a=-2std, b=2std)``."""
    out = rng.normal(0.0, std, shape)
    bad = np.abs(out) > 2 * std
    while bad.any():
        out[bad] = rng.normal(0.0, std, int(bad.sum()))
        bad = np.abs(out) > 2 * std
    return out


class BottleneckAdapter(Module):
    """``g(z) = s · adapter_up(f(adapter_down.0(z)))``: z (..., d) -> (..., d); the skip is the block's.

    Parameters
    ----------
    hidden_size : d.  bottleneck_size : m.  non_linearity, init_weights, scaling : as in :class:`BnConfig`.
    seed : int or Generator.  dtype : parameter dtype.
    """

    def __init__(self, hidden_size: int, bottleneck_size: int, non_linearity: str = "swish",
                 init_weights: str = "bert", scaling: float = 1.0, seed: int | np.random.Generator | None = 0,
                 dtype: str = "float32") -> None:
        super().__init__()
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        d, m = int(hidden_size), int(bottleneck_size)
        self.hidden_size, self.bottleneck_size, self.scaling = d, m, float(scaling)
        self.adapter_down = Sequential([Linear(d, m, seed=rng, dtype=dtype), Activation(non_linearity)])
        self.adapter_up = Linear(m, d, seed=rng, dtype=dtype)
        down, up = self.adapter_down[0], self.adapter_up
        xp = backend.xp()  # drawn on the host (the same numbers on every backend), then moved
        if init_weights == "bert":
            down.weight[...] = xp.asarray(rng.normal(0, 0.02, (m, d)), dtype=down.weight.dtype)
            up.weight[...] = xp.asarray(rng.normal(0, 0.02, (d, m)), dtype=up.weight.dtype)
        elif init_weights == "mam_adapter":  # down keeps nn.Linear's Kaiming-uniform; up starts at zero
            up.weight[...] = 0
        elif init_weights == "houlsby":
            down.weight[...] = xp.asarray(_truncated_normal(rng, 0.01, (m, d)), dtype=down.weight.dtype)
            up.weight[...] = xp.asarray(_truncated_normal(rng, 0.01, (d, m)), dtype=up.weight.dtype)
        else:
            raise ValueError(f"init_weights must be one of {INIT_WEIGHTS}, got {init_weights!r}")
        down.bias[...], up.bias[...] = 0, 0

    def forward(self, z: np.ndarray) -> np.ndarray:
        """z (..., d) -> g(z) (..., d)."""
        return self.adapter_up.forward(self.adapter_down.forward(z)) * self.scaling

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout = dL/dg (..., d) -> dz (..., d)."""
        return self.adapter_down.backward(self.adapter_up.backward(dout * self.scaling))

    def extra_repr(self) -> str:
        return f"{self.hidden_size} -> {self.bottleneck_size} -> {self.hidden_size}, scaling={self.scaling:g}"


class BlockWithAdapters(Module):
    """A :class:`~minilora.nn.modules.Block` with adapters after its sublayers (module docstring)::

        a = attn(ln_1(x))          h = x + a + g_attn(a)              (no attention adapter: h = x + a)
        m = mlp(ln_2(h))           out = h + m + g_out(m, or m + h with original_ln_before)

    The block's children keep their names (``ln_1``, ``attn``, ``ln_2``, ``mlp``, ``mlp_drop``), so the frozen
    parameters keep theirs; the adapters are ``attention_adapters`` and ``output_adapters``.
    """

    def __init__(self, block: Block, config: BnConfig, layer: int, seed: int | np.random.Generator | None = 0
                 ) -> None:
        super().__init__()
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        object.__setattr__(self, "_block", block)  # handed back by unwrap(); its children are ours
        for name, child in block.children():
            setattr(self, name, child)
        d = block.ln_1.n
        m = config.bottleneck_size(layer, d)
        make = lambda: BottleneckAdapter(d, m, config.non_linearity, config.init_weights, config.scaling, seed=rng,
                                         dtype=str(block.ln_1.params["weight"].dtype))
        self.attention_adapters = make() if config.mh_adapter else None
        self.output_adapters = make() if config.output_adapter else None
        self.original_ln_before = bool(config.original_ln_before)

    def _adapt(self, adapter: BottleneckAdapter | None, sub: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """``residual + sub + g(z)``, z = sub (+ residual with ``original_ln_before``)."""
        if adapter is None:
            return residual + sub
        z = sub + residual if self.original_ln_before else sub
        return residual + sub + adapter.forward(z)

    def _adapt_backward(self, adapter: BottleneckAdapter | None, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(d sub, d residual)`` of :meth:`_adapt`."""
        if adapter is None:
            return dout, dout
        dz = adapter.backward(dout)
        return dout + dz, (dout + dz if self.original_ln_before else dout)

    def forward(self, x: np.ndarray, past_kv: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """x (B, T, C) -> (B, T, C); ``past_kv`` goes to the attention, as in the plain block."""
        h = self._adapt(self.attention_adapters, self.attn.forward(self.ln_1.forward(x), past_kv), x)
        return self._adapt(self.output_adapters, self.mlp_drop.forward(self.mlp.forward(self.ln_2.forward(h))), h)

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """dx (B, T, C), or None with ``need_dx=False``, as :meth:`Block.backward <minilora.nn.modules.Block.backward>`
        (the adapters' gradients are computed either way)."""
        dm, dh = self._adapt_backward(self.output_adapters, dout)
        dh = dh + self.ln_2.backward(self.mlp.backward(self.mlp_drop.backward(dm)))
        da, dx = self._adapt_backward(self.attention_adapters, dh)
        dx_attn = attention_branch_backward(self.ln_1, self.attn, da, need_dx)  # (B, T, C) or None
        return dx + dx_attn if need_dx else None

    def unwrap(self) -> Block:
        """The original block (without the adapters)."""
        return self._block


def adapter_blocks(model: Module) -> dict[str, BlockWithAdapters]:
    """The model's adapter blocks by dotted name (``blocks.0``, ...)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BlockWithAdapters)}


def apply(model: GPT, config: BnConfig | None = None, seed: int = 0) -> GPT:
    """Add bottleneck adapters to every block of ``model`` (in place), freeze the rest, return ``model``.

    Parameters
    ----------
    model : GPT without adapters.  config : a BnConfig (default ``DoubleSeqBnConfig()``, Houlsby's).
    seed : each adapted block gets its own generator spawned from it.

    Returns
    -------
    The same GPT, its blocks (except ``leave_out``) replaced by :class:`BlockWithAdapters`; trainable:
    ``blocks.{i}.attention_adapters.*`` / ``blocks.{i}.output_adapters.*`` (``adapter_down.0`` (m, d),
    ``adapter_up`` (d, m) and their biases). Every size is checked before anything changes: a bad
    ``reduction_factor`` or ``leave_out`` raises and leaves the model as it was. The config is kept as
    ``model.adapter_config``.
    """
    config = DoubleSeqBnConfig() if config is None else config
    if not isinstance(config, BnConfig):
        raise TypeError(f"config must be a BnConfig (DoubleSeqBnConfig, SeqBnConfig), got {type(config).__name__}")
    if not isinstance(model, GPT):
        raise TypeError(f"adapters need a minilora GPT, got {type(model).__name__}")
    if adapter_blocks(model):
        raise ValueError(f"model already has adapters in {list(adapter_blocks(model))}; unload_adapters(model) first")
    n_layer = model.config.n_layer
    bad = [i for i in config.leave_out if not 0 <= i < n_layer]
    if bad:
        raise ValueError(f"leave_out={list(config.leave_out)} has layers {bad} outside [0, n_layer={n_layer})")
    layers = [i for i in range(n_layer) if i not in config.leave_out]
    if not layers:
        raise ValueError(f"leave_out={list(config.leave_out)} leaves out every layer: no adapter would be added")
    for i in layers:  # raises before any change
        config.bottleneck_size(i, model.config.n_embd)
    model.freeze()
    streams = np.random.SeedSequence(seed).spawn(n_layer)
    for i in layers:
        model.set_submodule(f"blocks.{i}", BlockWithAdapters(model.blocks[i], config, i,
                                                             seed=np.random.default_rng(streams[i])))
    model.adapter_config = config
    return model


def unload_adapters(model: GPT) -> GPT:
    """Take the adapters out again: the plain blocks back (frozen), ``model.adapter_config`` removed."""
    blocks = adapter_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no adapters to unload")
    for name, block in blocks.items():
        model.set_submodule(name, block.unwrap())
    model.__dict__.pop("adapter_config", None)
    return model


def adapter_parameter_count(hidden_size: int, n_layer: int, reduction_factor: float = 16,
                            adapters_per_block: int = 2) -> int:
    """Trainable parameters: ``adapters_per_block · n_layer · (2 m d + d + m)``, ``m = d // reduction_factor``.

    >>> adapter_parameter_count(12288, 96, reduction_factor=16)   # GPT-3 175B, Houlsby's two per block
    3626385408
    """
    d = hidden_size
    m = int(d // reduction_factor)
    return adapters_per_block * n_layer * (2 * m * d + d + m)


__all__ = ["BlockWithAdapters", "BnConfig", "BottleneckAdapter", "DoubleSeqBnConfig", "INIT_WEIGHTS", "SeqBnConfig",
           "adapter_blocks", "adapter_parameter_count", "apply", "unload_adapters"]
