"""Where the memory of fine-tuning goes: weights, gradients, optimizer state, activations — per method.

Two ways to the same table:

* :func:`measure` counts the bytes of the real arrays (``nbytes``) of a model after one training step:
  parameters and 4-bit storage (weights), ``model.grads`` (gradients), ``optimizer.state`` (optimizer
  state) and every array held in the modules' caches between forward and backward (activations);
* :func:`estimate` computes the same quantities from a :class:`ModelShape` and a :class:`Precision` (bytes per
  element of each kind), so the formulas that reproduce the tiny GPT's measured bytes exactly
  (``tests/peft/test_memory.py``) can be run on LLaMA-7B and 65B shapes.

For a model of ``N`` parameters of which ``N_q`` sit in quantized linear layers, with ``N_L`` LoRA parameters:

=========  ==================================  =====================  ======================
method     weights                             gradients              optimizer state (Adam)
=========  ==================================  =====================  ======================
full       ``N · w (+ N · master)``            ``N · g``              ``N · 2 · o``
lora       ``N · w + N_L · w_L``               ``N_L · g_L``          ``N_L · 2 · o_L``
qlora      ``bytes4(N_q) + (N − N_q) · w       ``N_L · g_L``          ``N_L · 2 · o_L``
           + N_L · w_L``
=========  ==================================  =====================  ======================

with ``bytes4`` the exact storage of NF4 + double quantization (4.127 bits per parameter at blocksize 64,
see :class:`~minilora.quant.QuantState`). Activations are estimated with Korthikanti et al. 2022
(arXiv 2205.05198, Eq. 2): ``s·b·h·(34 + 5·a·s/h)`` bytes per layer at 16 bits (s sequence, b batch,
h width, a heads), or with full activation checkpointing ``2·s·b·h`` per layer plus one layer recomputed;
plus the logits ``s·b·V``. That formula is for GPT-style blocks (a 4h MLP, dropout masks); it is an
estimate for LLaMA's SwiGLU, and it is the same for all three methods (LoRA's extra ``A x`` is r/h as large).

Check against the QLoRA paper (arXiv 2305.14314, §1): LLaMA-65B needs "more than 780 GB" for 16-bit full
fine-tuning and "less than 48 GB" with QLoRA. :func:`paper_comparison` computes both with the paper's
precisions; see its docstring for where and why the numbers differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from minilora import backend
from minilora.nn.module import Module
from minilora.peft.qlora import quantized_modules

METHODS = ("full", "lora", "qlora")


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per category for one method; ``trainable`` / ``total_params`` are parameter counts."""

    method: str
    weights: int
    gradients: int
    optimizer: int
    activations: int
    trainable: int
    total_params: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
                "activations": self.activations, "total": self.total}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v:,}" for k, v in self.as_dict().items())
        return f"MemoryBreakdown({self.method!r}, {parts} bytes, trainable={self.trainable:,})"


# ----------------------------------------------------------------------------- measured from arrays
def _arrays(obj: Any) -> Iterator[np.ndarray]:
    if backend.is_array(obj):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _arrays(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _arrays(o)


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns the memory a view looks into (counted once, however many views there are)."""
    while backend.is_array(getattr(a, "base", None)):
        a = a.base
    return a


def weight_bytes(model: Module) -> int:
    """Bytes of every parameter array plus the 4-bit storage (codes, statistics, codebooks) of quantized layers."""
    return int(sum(p.nbytes for p in model.params.values())
               + sum(q.nbytes for q in quantized_modules(model).values()))


def activation_bytes(model: Module) -> int:
    """Bytes held for backward right now: every distinct array in the modules' caches (and a ``loss_cache``).

    Arrays are counted once by their underlying buffer, and parameters referenced from a cache are not
    activations (a Linear's cache holds its own weight) so they are skipped.
    """
    params = {id(_root(p)) for p in model.params.values()}
    seen: dict[int, int] = {}
    for _, mod in model.named_modules():
        for obj in (mod.cache, vars(mod).get("loss_cache")):
            for a in _arrays(obj):
                r = _root(a)
                if id(r) not in params:
                    seen[id(r)] = r.nbytes
    return int(sum(seen.values()))


def measure(model: Module, optimizer: Any, batch: tuple[np.ndarray, np.ndarray], method: str) -> MemoryBreakdown:
    """Run one training step on ``batch`` and count the bytes of the real arrays (the model is updated).

    Activations are counted after the forward (their peak), gradients after the backward, optimizer state
    after the step (Adam creates it lazily on the first step).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x, y = batch
    model.train()
    model.zero_grad()
    model.forward(x, y)
    acts = activation_bytes(model)
    model.backward()
    grads = int(sum(g.nbytes for g in model.grads.values()))
    optimizer.step()
    return MemoryBreakdown(method, weight_bytes(model), grads, int(optimizer.state_bytes()), acts,
                           model.num_params(trainable_only=True), _logical_params(model))


def _logical_params(model: Module) -> int:
    """Parameters of the model counting each 4-bit weight as its ``numel`` (what "7B parameters" means)."""
    return model.num_params() + sum(q.quant_state.numel for q in quantized_modules(model).values())


# ----------------------------------------------------------------------------- formulas
@dataclass(frozen=True)
class ModelShape:
    """The sizes that determine a decoder-only transformer's parameter count.

    ``mlp_mats`` is 2 for GPT (up, down) and 3 for LLaMA (gate, up, down); ``norm_params`` counts the
    per-layer normalization parameters (GPT: two LayerNorms with bias = 4h; LLaMA: two RMSNorms = 2h) and
    ``final_norm`` the last one; ``positions`` the learned position table (0 for rotary embeddings).
    """

    name: str
    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    d_ff: int
    mlp_mats: int = 2
    bias: bool = True
    norm_params: int = 0
    final_norm: int = 0
    positions: int = 0

    @classmethod
    def from_gpt(cls, config: Any, name: str = "tiny GPT") -> ModelShape:
        """The shape of a :class:`~minilora.nn.gpt.GPT` built from ``config`` (a ``GPTConfig``)."""
        h = config.n_embd
        return cls(name, config.vocab_size, h, config.n_layer, config.n_head, config.mlp_ratio * h, 2,
                   bool(config.bias), 4 * h, 2 * h, config.block_size * h)

    @classmethod
    def llama(cls, size: str) -> ModelShape:
        """LLaMA-1 7B or 65B (Touvron et al. 2023, Table 2; vocabulary 32000, SwiGLU width from params.json)."""
        sizes = {"7B": (4096, 32, 32, 11008), "13B": (5120, 40, 40, 13824), "33B": (6656, 60, 52, 17920),
                 "65B": (8192, 80, 64, 22016)}
        if size not in sizes:
            raise ValueError(f"size must be one of {tuple(sizes)}, got {size!r}")
        h, L, a, ff = sizes[size]
        return cls(f"LLaMA-{size}", 32000, h, L, a, ff, 3, False, 2 * h, h, 0)

    def block_linears(self) -> list[tuple[str, int, int]]:
        """``(name, out, in)`` of the linear layers of one block."""
        h, ff = self.d_model, self.d_ff
        attn = [(n, h, h) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        mlp = ([("up_proj", ff, h), ("down_proj", h, ff)] if self.mlp_mats == 2
               else [("gate_proj", ff, h), ("up_proj", ff, h), ("down_proj", h, ff)])
        return attn + mlp

    @property
    def linear_params(self) -> int:
        """Weights of all block linears (the ones QLoRA quantizes; ``lm_head`` stays 16-bit)."""
        return self.n_layer * sum(o * i for _, o, i in self.block_linears())

    @property
    def n_params(self) -> int:
        biases = self.n_layer * sum(o for _, o, _ in self.block_linears()) if self.bias else 0
        return (self.linear_params + biases + self.n_layer * self.norm_params + self.final_norm
                + 2 * self.vocab_size * self.d_model + self.positions)

    def lora_params(self, r: int, target_modules: tuple[str, ...] | str = "all-linear") -> int:
        """``r · (in + out)`` summed over the targeted block linears (``"all-linear"``: all of them)."""
        return self.n_layer * sum(r * (o + i) for n, o, i in self.block_linears()
                                  if target_modules == "all-linear" or n in target_modules)


@dataclass(frozen=True)
class Precision:
    """Bytes per element of each kind of array (a 32-bit Adam keeps two states: ``2 · optim``)."""

    name: str
    weight: float = 4
    grad: float = 4
    optim: float = 4
    master: float = 0
    lora_weight: float = 4
    lora_grad: float = 4
    lora_optim: float = 4
    activation: float = 4


#: what minilora does: everything float32 (NumPy has no BF16 storage; BF16 values live in float32 arrays)
FP32 = Precision("float32 (minilora)")
#: the QLoRA paper's setting: 16-bit weights and gradients, 32-bit Adam states; BF16 LoRA weights
#: (qlora.py casts LoraLayers to bfloat16), 16-bit activations
PAPER_16BIT = Precision("16-bit + 32-bit Adam", weight=2, grad=2, optim=4, lora_weight=2, lora_grad=2,
                        lora_optim=4, activation=2)
#: mixed-precision training as usually run: also an FP32 master copy of every trained weight
MIXED_PRECISION = replace(PAPER_16BIT, name="16-bit + FP32 master + Adam", master=4)


def quantized_nbytes(n: int, blocksize: int = 64, compress_statistics: bool = True) -> int:
    """Bytes of one n-element weight in NF4: packed codes, statistics, codebooks (as ``QuantizedWeight.nbytes``).

    >>> quantized_nbytes(4096 * 4096)   # 4.127 bits per parameter + 1092 bytes of constants
    8655940
    """
    nblocks = -(-n // blocksize)
    data = -(-n // 2)
    if compress_statistics:  # uint8 codes + float32 absmax per 256 blocks; 16 + 256 float32 codes + offset
        return data + nblocks + 4 * (-(-nblocks // 256)) + 4 * 16 + 4 * 256 + 4
    return data + 4 * nblocks + 4 * 16


def activation_estimate(shape: ModelShape, batch_size: int, seq_len: int, checkpointing: bool = False,
                        bytes_per: float = 2) -> int:
    """Korthikanti et al. (2022) per-layer activations ``s·b·h·(34 + 5·a·s/h)`` at 16 bits, scaled to ``bytes_per``.

    With ``checkpointing`` only each layer's input (``s·b·h`` elements) is kept, and one layer's activations
    exist at a time while it is recomputed. The logits (``s·b·V``) are added in both cases.
    """
    s, b, h, a = seq_len, batch_size, shape.d_model, shape.n_head
    layer16 = s * b * h * (34 + 5 * a * s / h)  # bytes at 16 bits
    scale = bytes_per / 2
    if checkpointing:
        body = shape.n_layer * s * b * h * bytes_per + layer16 * scale
    else:
        body = shape.n_layer * layer16 * scale
    return int(round(body + s * b * shape.vocab_size * bytes_per))


def estimate(shape: ModelShape, method: str, precision: Precision = FP32, r: int = 8,
             target_modules: tuple[str, ...] | str = "all-linear", batch_size: int = 1, seq_len: int = 512,
             checkpointing: bool = False, blocksize: int = 64, compress_statistics: bool = True) -> MemoryBreakdown:
    """Bytes of weights, gradients, Adam state and activations by the formulas of the module docstring.

    ``qlora`` quantizes every block linear (as :func:`~minilora.peft.qlora.prepare_qlora` does: embeddings,
    norms, biases and ``lm_head`` stay in ``precision.weight``) and puts LoRA on ``target_modules``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    p, n = precision, shape.n_params
    n_lora = 0 if method == "full" else shape.lora_params(r, target_modules)
    acts = activation_estimate(shape, batch_size, seq_len, checkpointing, p.activation)
    if method == "full":
        return MemoryBreakdown(method, int(n * (p.weight + p.master)), int(n * p.grad), int(n * 2 * p.optim), acts,
                               n, n)
    if method == "lora":
        base = n * p.weight
    else:
        per_layer = sum(quantized_nbytes(o * i, blocksize, compress_statistics) for _, o, i in shape.block_linears())
        base = shape.n_layer * per_layer + (n - shape.linear_params) * p.weight
    return MemoryBreakdown(method, int(base + n_lora * (p.lora_weight + p.master)), int(n_lora * p.lora_grad),
                           int(n_lora * 2 * p.lora_optim), acts, n_lora, n + n_lora)


def paper_comparison(size: str = "65B") -> dict[str, MemoryBreakdown]:
    """LLaMA full 16-bit fine-tuning vs QLoRA with the paper's recipe, for comparison with its §1 figures.

    * ``full_16bit``: 2-byte weights and gradients + two 4-byte Adam states = 12 bytes per parameter, no
      activations: 65.3 B × 12 = 783 GB, the paper's "more than 780 GB". It leaves out the FP32 master
      weights of mixed-precision training (``full_mixed``: 16 bytes per parameter, 1.04 TB) and activations.
    * ``qlora``: NF4 + double quantization (blocksize 64) on all block linears, 16-bit embeddings and
      ``lm_head``, LoRA r = 64 on all linear layers in BF16 with 32-bit Adam (the paper's hyper-parameters),
      activations for batch 1 × 512 tokens with gradient checkpointing: the total lands under the paper's
      48 GB. Without checkpointing (``qlora_no_ckpt``) the activations of that one sequence push it over,
      which is why the paper relies on checkpointing (and on paged optimizers for the spikes that remain).
    """
    shape = ModelShape.llama(size)
    return {
        "full_16bit": replace(estimate(shape, "full", PAPER_16BIT), activations=0),
        "full_mixed": replace(estimate(shape, "full", MIXED_PRECISION), activations=0),
        "qlora": estimate(shape, "qlora", PAPER_16BIT, r=64, batch_size=1, seq_len=512, checkpointing=True),
        "qlora_no_ckpt": estimate(shape, "qlora", PAPER_16BIT, r=64, batch_size=1, seq_len=512),
    }


def _fmt_bytes(b: float) -> str:
    if b == 0:
        return "0"
    k = min(int(math.log(abs(b), 1000)), 4)
    return f"{b / 1000 ** k:.3g} {['B', 'kB', 'MB', 'GB', 'TB'][k]}"


def format_table(rows: list[MemoryBreakdown] | dict[str, MemoryBreakdown]) -> str:
    """A fixed-width text table: one row per method, bytes in decimal units (1 GB = 10⁹ B, as the paper)."""
    items = rows.items() if isinstance(rows, dict) else ((r.method, r) for r in rows)
    cols = ("weights", "gradients", "optimizer", "activations", "total")
    lines = [f"{'method':<14}" + "".join(f"{c:>13}" for c in cols) + f"{'trainable':>15}"]
    for label, r in items:
        d = r.as_dict()
        lines.append(f"{label:<14}" + "".join(f"{_fmt_bytes(d[c]):>13}" for c in cols) + f"{r.trainable:>15,}")
    return "\n".join(lines)


__all__ = ["FP32", "METHODS", "MIXED_PRECISION", "PAPER_16BIT", "MemoryBreakdown", "ModelShape", "Precision",
           "activation_bytes", "activation_estimate", "estimate", "format_table", "measure", "paper_comparison",
           "quantized_nbytes", "weight_bytes"]
