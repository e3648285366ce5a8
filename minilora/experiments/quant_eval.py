"""QLoRA's Table 2 on any model: held-out perplexity with every linear weight stored in another format.

QLoRA (Dettmers et al. 2023, arXiv 2305.14314, Table 2) ranks 4-bit data types by the perplexity of
quantized LLaMA models (Int4 34.34 > FP4 31.07 > NF4 + DQ 27.41 on Pile-CC); LLM.int8() (Dettmers et al.
2022, arXiv 2208.07339, Table 1) does the same for 8-bit methods. :func:`quant_eval` repeats the
experiment on the model at hand: for each format, every weight of every ``Linear`` layer (except
``lm_head``, which transformers and bitsandbytes keep in 16 bits) is replaced by its round trip through
that format, and the held-out loss is measured; the model itself is restored afterwards, bit for bit.

=================  =====================================================================================
format             round trip (minilora function, quant_type passed explicitly)
=================  =====================================================================================
``fp32``           none (the reference row)
``bf16``/``fp16``  :func:`minilora.formats.round_to`
``int8``           :func:`~minilora.quant.absmax_quantize` with ``bits=8, axis=-1``: one absmax per output row
                   (the weight half of LLM.int8's vector-wise quantization, no outlier decomposition)
``llm.int8``       not a weight round trip: the layer computes :func:`~minilora.quant.int8_matmul` with
                   threshold 6 (activations quantized per row, outlier columns in 16 bits)
``int4``           absmax int4, blocks of ``blocksize`` (QLoRA's "Int4")
``fp4``/``nf4``    :func:`~minilora.quant.quantize_4bit` with ``quant_type="fp4"``/``"nf4"``
``nf4+dq``         the same with ``compress_statistics=True`` (double quantization)
=================  =====================================================================================

Bits per parameter are measured from the stored arrays (codes + statistics) over all replaced weights.
Weight error is not model quality; this table measures the latter, on the user's own model and data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from minilora import backend
from minilora.formats import BF16, FP16, round_to
from minilora.nn.functional import IGNORE_INDEX
from minilora.nn.module import Module
from minilora.nn.modules import Linear
from minilora.quant import absmax_dequantize, absmax_quantize, dequantize_4bit, int8_matmul, quantize_4bit

FORMATS = ("fp32", "bf16", "fp16", "int8", "llm.int8", "int4", "fp4", "nf4", "nf4+dq")
LABELS = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16", "int8": "Int8 absmax (vector-wise)",
          "llm.int8": "LLM.int8() (threshold 6)", "int4": "Int4 absmax", "fp4": "FP4 (E2M1)", "nf4": "NF4",
          "nf4+dq": "NF4 + DQ"}
LLM_INT8_THRESHOLD = 6.0

Batch = tuple[np.ndarray, np.ndarray]


def roundtrip(w: np.ndarray, fmt: str, blocksize: int = 64) -> tuple[np.ndarray, int]:
    """``w`` (out, in) through ``fmt`` and back: ``(float32 array of w's shape, bits stored)``."""
    n = w.size
    if fmt == "fp32":
        return w.astype(np.float32), 32 * n
    if fmt in ("bf16", "fp16"):
        return round_to(w.astype(np.float32), BF16 if fmt == "bf16" else FP16), 16 * n
    if fmt == "int8":
        q, absmax = absmax_quantize(w, bits=8, axis=-1)
        return absmax_dequantize(q, absmax, bits=8, axis=-1), 8 * n + 32 * absmax.size
    if fmt == "int4":
        q, absmax = absmax_quantize(w, bits=4, blocksize=blocksize)
        return absmax_dequantize(q, absmax, bits=4, blocksize=blocksize, shape=w.shape), 4 * n + 32 * absmax.size
    if fmt in ("fp4", "nf4", "nf4+dq"):
        packed, state = quantize_4bit(w, blocksize=blocksize, quant_type=fmt[:3],
                                      compress_statistics=fmt == "nf4+dq")
        return dequantize_4bit(packed, state), 8 * (packed.nbytes + state.stats_nbytes)
    raise ValueError(f"format must be one of {FORMATS} (llm.int8 is not a weight round trip), got {fmt!r}")


class Int8Linear(Module):
    """Inference-only LLM.int8() layer: ``y = int8_matmul(x, W, threshold) + b`` with the Linear's own arrays."""

    def __init__(self, base: Linear, threshold: float = LLM_INT8_THRESHOLD) -> None:
        super().__init__()
        self.base, self.threshold = base, float(threshold)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = int8_matmul(x, self.base.weight, self.threshold)
        return y if self.base.bias is None else y + self.base.bias

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray:
        raise RuntimeError("Int8Linear is for evaluation only (quant_eval): it has no backward")


def quantized_linears(model: Module, skip_modules: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """Names of the Linear layers :func:`quant_eval` replaces (every one whose last name is not skipped)."""
    from minilora.peft.lora import LoRALinear

    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if wrapped:
        raise ValueError(f"model has LoRA layers {wrapped[:3]}: merge_and_unload(model) first (quant_eval "
                         f"quantizes plain Linear weights)")
    names = [name for name, m in model.named_modules()
             if type(m) is Linear and name and name.rsplit(".", 1)[-1] not in skip_modules]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear layers to quantize")
    return names


@contextmanager
def stored_as(model: Module, fmt: str, blocksize: int = 64, names: Sequence[str] | None = None) -> Iterator[int]:
    """Within the block, the model computes with its linear weights stored in ``fmt``; yields the bits stored.

    Each weight array is swapped for its round trip (LLM.int8: each layer for an :class:`Int8Linear`) and the
    original objects are put back on exit, whatever happens: the model is unchanged afterwards.
    """
    names = quantized_linears(model) if names is None else list(names)
    layers = {name: model.get_submodule(name) for name in names}
    originals = {name: layer._params["weight"] for name, layer in layers.items()}  # the very arrays, put back
    bits = 0
    try:
        for name, layer in layers.items():
            if fmt == "llm.int8":
                model.set_submodule(name, Int8Linear(layer))
                bits += 8 * layer.weight.size + 32 * layer.weight.shape[0]  # int8 codes + one scale per row
            else:
                w_hat, b = roundtrip(backend.to_numpy(layer.weight), fmt, blocksize)
                layer._params["weight"] = w_hat.astype(originals[name].dtype)
                bits += b
        yield bits
    finally:
        for name, layer in layers.items():
            layer._params["weight"] = originals[name]
            if fmt == "llm.int8":
                model.set_submodule(name, layer)


def heldout_loss(model, batches: Iterable[Batch]) -> float:
    """Mean cross-entropy over all counted targets of ``batches`` (each batch weighted by its target count)."""
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for idx, targets in batches:
            _, loss = model.forward(idx, targets)
            n = int((np.asarray(targets) != IGNORE_INDEX).sum())
            total, count = total + float(loss) * n, count + n
    finally:
        model.train(was_training)
        if hasattr(model, "loss_cache"):
            model.loss_cache = None
    if count == 0:
        raise ValueError("batches hold no targets to score (all -100, or no batches)")
    return total / count


@dataclass(frozen=True)
class Row:
    """One line of the table: format, its label, bits per parameter, held-out loss and perplexity."""

    format: str
    label: str
    bits_per_param: float
    loss: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


@dataclass(frozen=True)
class QuantEvalTable:
    """The rows of :func:`quant_eval`, printable (``str(table)``) and queryable (``table["nf4"]``)."""

    rows: tuple[Row, ...]
    blocksize: int
    tokens: int

    def __getitem__(self, fmt: str) -> Row:
        for row in self.rows:
            if row.format == fmt:
                return row
        raise KeyError(f"no row {fmt!r}; rows: {[r.format for r in self.rows]}")

    def paper_ordering(self) -> bool | None:
        """Whether perplexity is NF4 < FP4 < Int4 here, as in QLoRA's Table 2 (None unless all three ran)."""
        try:
            nf4, fp4, int4 = (self[f].perplexity for f in ("nf4", "fp4", "int4"))
        except KeyError:
            return None
        return nf4 < fp4 < int4

    def __str__(self) -> str:
        ref = next((r for r in self.rows if r.format == "fp32"), None)
        lines = [f"{'format':<27} {'bits/param':>10} {'loss':>9} {'perplexity':>11}"
                 + ("  Δppl vs FP32" if ref else "")]
        for r in self.rows:
            delta = f"  {r.perplexity - ref.perplexity:+12.5f}" if ref else ""
            lines.append(f"{r.label:<27} {r.bits_per_param:>10.3f} {r.loss:>9.5f} {r.perplexity:>11.5f}{delta}")
        lines.append(f"({self.tokens:,d} held-out tokens, blocksize {self.blocksize})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"QuantEvalTable({len(self.rows)} formats, {self.tokens} tokens, blocksize={self.blocksize})"


def quant_eval(model: Module, batches: Sequence[Batch], formats: Sequence[str] = FORMATS, blocksize: int = 64,
               skip_modules: tuple[str, ...] = ("lm_head",), progress: bool = False) -> QuantEvalTable:
    """Held-out loss and perplexity of ``model`` with its linear weights stored in each of ``formats``.

    Parameters
    ----------
    model : a GPT (or any model with ``forward(idx, targets) -> (logits, loss)``) without LoRA layers.
    batches : ``[(idx (B, T) int, targets (B, T) int or -100), ...]`` — the held-out data.
    formats : a subset of :data:`FORMATS`, in the order to print.
    blocksize : block size of the block-wise formats (int4, fp4, nf4, nf4+dq); QLoRA uses 64.
    skip_modules : last names of Linears left in float32 (transformers keeps ``lm_head`` in 16 bits).

    Returns
    -------
    QuantEvalTable; the model is left exactly as it was.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)!r}")
    batches = list(batches)
    names = quantized_linears(model, skip_modules)
    n = sum(model.get_submodule(name).weight.size for name in names)
    tokens = sum(int((np.asarray(t) != IGNORE_INDEX).sum()) for _, t in batches)
    rows = []
    for fmt in tqdm(formats, desc="quant-eval", disable=not progress, leave=False):
        with stored_as(model, fmt, blocksize, names) as bits:
            rows.append(Row(fmt, LABELS[fmt], bits / n, heldout_loss(model, batches)))
    return QuantEvalTable(tuple(rows), blocksize, tokens)


__all__ = ["FORMATS", "Int8Linear", "QuantEvalTable", "Row", "heldout_loss", "quant_eval", "quantized_linears",
           "roundtrip", "stored_as"]
