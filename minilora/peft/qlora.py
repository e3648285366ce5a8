"""QLoRA: LoRA on top of a frozen base stored in 4-bit NormalFloat (Dettmers et al. 2023, arXiv 2305.14314).

The paper's Eq. (5) for one linear layer, in PyTorch's (out, in) layout::

    Y_BF16 = X_BF16 · doubleDequant(c1_FP32, c2_k-bit, W_NF4)ᵀ + s · X_BF16 · L1 L2

with ``doubleDequant`` = :func:`minilora.quant.dequantize_4bit` of codes quantized by
:func:`minilora.quant.quantize_4bit` (``compress_statistics=True``: the absmax are themselves stored as 8-bit
codes, blocks of 256). The blog's compute flow, step by step:

1. **storage type NF4** — the base weight exists only as packed 4-bit codes + :class:`~minilora.quant.QuantState`
   (4.127 bits per parameter at blocksize 64 with double quantization); the float weight is dropped;
2. **compute type BF16** — forward dequantizes the weight and rounds it to BF16
   (:func:`minilora.formats.round_to`), rounds the input to BF16 and multiplies with float32 accumulation:
   a product of two BF16 numbers (8-bit significands) is exact in float32, so ``x_bf16 @ W_bf16ᵀ`` in float32
   is "BF16 operands, FP32 accumulate" up to the order of the sum;
3. **dequantize for forward *and* backward** — the dequantized weight is not kept: backward dequantizes again
   (as bitsandbytes' ``MatMul4Bit`` does) to return ``dx = G W_bf16`` for the layers below;
4. **gradients only for LoRA** — ``dA``, ``dB`` as in :class:`~minilora.peft.lora.LoRALinear` (whose LoRA path
   this class reuses, unchanged, on the BF16-rounded input); no weight gradient exists.

Progression: ``Linear → LoRALinear → QLoRALinear``. :class:`Linear4bit` is the same frozen 4-bit base without
an adapter (bitsandbytes' ``Linear4bit``): what :func:`prepare_qlora` puts on the Linears it quantizes but does
not target, and what merging a QLoRA layer leaves behind.

Departures: gradients flow in float32 (PyTorch would hold them, like the activations, in BF16); the bias and
the LoRA weights stay float32 (PEFT's ``prepare_model_for_kbit_training`` casts non-quantized parameters to
float32, and PEFT keeps adapter weights in float32 by default); the output is float32, not BF16.
``compute_format="float64"`` skips every rounding and computes in float64 on the exactly dequantized weight —
only for finite-difference gradient checks. Merging (``merge()``) dequantizes, adds ``s·BA`` and quantizes
again, as PEFT does for 4-bit layers, so it is *not* exact: it warns like PEFT ("may get different
generations due to rounding errors") and :func:`merge_rounding_error` measures by how much.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np

from minilora import backend
from minilora.formats import BF16, FloatFormat
from minilora.nn.module import Module
from minilora.nn.modules import Linear
from minilora.peft.config import RESIDUAL_INITS, LoraConfig, _check_init
from minilora.peft.inject import plan_injection, register_lora_layer
from minilora.peft.linear4bit import (
    COMPUTE_FORMATS,
    Linear4bit,
    QuantizationConfig,
    QuantizedWeight,
    _check_input,
    check_compute_format,
    quantize_base,
    to_compute,
)
from minilora.peft.lora import LoRALinear
from minilora.peft.mapping import get_peft_model
from minilora.quant.state import check_blocksize, check_choice

#: PEFT's warning when a LoRA is merged into a 4-bit layer (peft/tuners/lora/bnb.py)
MERGE_WARNING = "Merge lora module to 4-bit linear may get different generations due to rounding errors."


class QLoRALinear(LoRALinear):
    """LoRA on a 4-bit frozen base: the base as :class:`QuantizedWeight`, the adapter as in LoRALinear.

    Parameters
    ----------
    base : Linear
        The layer to adapt; its weight is quantized and dropped (``base`` itself is left without a weight).
    r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, seed
        As in :class:`~minilora.peft.lora.LoRALinear` (the LoRA matrices are drawn from the float weight's
        shape before quantization, so the same seed gives the same A, B as LoRALinear).
    blocksize, quant_type, compress_statistics, compute_format
        As in :class:`QuantizedWeight`; QLoRA's defaults (64, "nf4", True, BF16).

    Attributes
    ----------
    params / grads : dict
        ``bias`` (frozen), ``lora_A.weight`` (r, in), ``lora_B.weight`` (out, r); no ``weight`` (counted by
        :meth:`num_extra_params`).
    qweight : QuantizedWeight
        The stored base; :attr:`base_layer` is a :class:`Linear4bit` holding it.
    """

    def __init__(self, base: Linear, r: int = 8, lora_alpha: float = 8, lora_dropout: float = 0.0,
                 init_lora_weights: bool | str = True, use_rslora: bool = False,
                 seed: int | np.random.Generator | None = 0, blocksize: int = 64, quant_type: str = "nf4",
                 compress_statistics: bool = True, compute_format: FloatFormat | str = BF16) -> None:
        check_blocksize(blocksize)  # validate before LoRALinear freezes (or PiSSA edits) the base
        check_choice(quant_type, ("nf4", "fp4"), "quant_type")
        check_compute_format(compute_format)
        super().__init__(base, r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, seed)
        weight = self._drop_float_weight(base)  # the float weight: quantized, then dropped
        self.qweight = QuantizedWeight(weight, blocksize, quant_type, compress_statistics, compute_format)

    def _drop_float_weight(self, base: Linear) -> np.ndarray:
        """Take the float weight out of this layer and its base (it lives on only as 4-bit codes)."""
        weight = self._params.pop("weight")
        self._trainable.pop("weight")
        base._params.pop("weight")
        base._trainable.pop("weight")
        return weight

    @classmethod
    def from_linear4bit(cls, base: Linear4bit, r: int = 8, lora_alpha: float = 8, lora_dropout: float = 0.0,
                        init_lora_weights: bool | str = True, use_rslora: bool = False,
                        seed: int | np.random.Generator | None = 0) -> QLoRALinear:
        """LoRA on a layer that is already 4-bit: what ``get_peft_model`` does on a
        :func:`~minilora.peft.linear4bit.quantize_base` model (PEFT's ``dispatch_bnb_4bit``).

        The adapter is drawn as for the float layer (the draws depend only on the shape, so the same seed gives
        the same A, B as :class:`QLoRALinear` on the float Linear) and ``base.qweight`` is kept as it is. PiSSA
        and OLoRA need W0: they decompose the *dequantized* weight and quantize the residual again, as PEFT does
        on a bitsandbytes 4-bit layer (the float weight is gone once a model is loaded in 4 bits).
        """
        if not isinstance(base, Linear4bit):
            raise TypeError(f"base must be a Linear4bit, got {type(base).__name__}")
        q = base.qweight
        residual = _check_init(init_lora_weights) in RESIDUAL_INITS
        dtype = np.dtype(q.quant_state.dtype)  # the adapter takes the dtype the float weight had
        float_base = Linear(base.in_features, base.out_features, bias=False, seed=0, dtype=dtype.name)
        float_base.params["weight"][...] = q.dequantize() if residual else 0.0  # the others read only its shape
        if "bias" in base.params:
            float_base.add_param("bias", base.params["bias"], trainable=False)
        layer = cls.__new__(cls)
        LoRALinear.__init__(layer, float_base, r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, seed)
        weight = layer._drop_float_weight(float_base)
        fmt = "float64" if q.compute_format is None else q.compute_format
        if residual:
            q = QuantizedWeight(weight, q.blocksize, q.quant_type, q.compress_statistics, fmt)
        layer.qweight = q
        return layer

    @property
    def weight(self) -> np.ndarray:
        """The dequantized base weight (float32, a new array); holds W0 + s·BA (requantized) while merged."""
        return self.qweight.dequantize()

    def num_extra_params(self) -> int:
        """Elements of the 4-bit base weight (see :meth:`Linear4bit.num_extra_params`)."""
        return int(self.qweight.quant_state.numel)

    @property
    def base_layer(self) -> Linear4bit:
        """The frozen 4-bit base as a :class:`Linear4bit` sharing this layer's ``qweight`` and ``bias``."""
        cached = self.__dict__.get("_base4")
        if cached is None or cached.qweight is not self.qweight:
            cached = Linear4bit(self.qweight, self._params.get("bias"))
            object.__setattr__(self, "_base4", cached)  # not a child: its bias is ours
        return cached

    @contextmanager
    def _lent_weight(self):
        """Put the compute-format weight where LoRALinear reads it, for one forward or backward only."""
        self._params["weight"] = self.qweight.compute_weight()
        self._trainable["weight"] = False
        try:
            yield
        finally:
            self._params.pop("weight")
            self._trainable.pop("weight")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = x_c W_cᵀ + b + s · (dropout(x_c) Aᵀ) Bᵀ`` with ``x_c``, ``W_c`` in the compute format."""
        _check_input(x, self.in_features)
        xc = to_compute(x, self.qweight.compute_format)  # (..., in), BF16 values in float32
        with self._lent_weight():
            y = super().forward(xc)  # (..., out)
        (x_saved, _, has_bias), drop_cache, merged = self.cache
        self.cache = ((x_saved, None, has_bias), drop_cache, merged)  # drop W_c: backward dequantizes again
        return y

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Accumulate ``dA``, ``dB`` and return ``dx`` (..., in) through the re-dequantized base weight; with
        ``need_dx=False`` return None without dequantizing (only dx reads the base weight)."""
        if self.cache is None:
            raise RuntimeError("QLoRALinear.backward called before forward")
        (x_saved, _, has_bias), drop_cache, merged = self.cache
        if need_dx:
            with self._lent_weight():
                self.cache = ((x_saved, self._params["weight"], has_bias), drop_cache, merged)
                dx = super().backward(dout)
        else:  # only dx reads the base weight: no dequantization
            dx = super().backward(dout, need_dx=False)
        self.cache = None  # activations are freed once used (LoRALinear keeps its cache)
        return dx

    def _requantize(self, weight: np.ndarray) -> None:
        q = self.qweight
        self.qweight = QuantizedWeight(weight, q.blocksize, q.quant_type, q.compress_statistics,
                                       "float64" if q.compute_format is None else q.compute_format)

    def merge(self) -> None:
        """Dequantize, add ``s·BA``, quantize again (PEFT's 4-bit merge); warns about the rounding error."""
        if self.merged:
            warnings.warn("QLoRALinear is already merged; merge() did nothing", stacklevel=2)
            return
        if self.disable_adapters:
            raise ValueError("QLoRALinear's adapter is disabled; enable_adapters(True) before merge()")
        warnings.warn(MERGE_WARNING, UserWarning, stacklevel=2)
        self._requantize(self.qweight.dequantize() + self.delta_weight().astype(np.float32))
        self.merged = True

    def unmerge(self) -> None:
        """Dequantize, subtract ``s·BA``, quantize again: a second rounding, not the original codes."""
        if not self.merged:
            warnings.warn("QLoRALinear is not merged; unmerge() did nothing", stacklevel=2)
            return
        self._requantize(self.qweight.dequantize() - self.delta_weight().astype(np.float32))
        self.merged = False

    def unwrap(self, merge: bool = True) -> Linear4bit:
        """A :class:`Linear4bit` holding the merged 4-bit weight (PEFT keeps a 4-bit layer), or with
        ``merge=False`` the base as it was before LoRA: unmerged (requantized) and, for PiSSA/OLoRA, with
        ``s·B0A0`` added back and quantized again (warns: quant(W_res + s·B0A0) is not quant(W0))."""
        if merge and not self.merged:
            self.merge()
        if not merge:
            if self.merged:
                self.unmerge()
            if self.residual_init is not None:
                warnings.warn("unload of a 4-bit PiSSA/OLoRA layer: the residual plus s*B0A0 is quantized again, "
                              "which is not the 4-bit weight of the original layer", UserWarning, stacklevel=2)
                A0, B0 = self.residual_init
                self._requantize(self.qweight.dequantize() + (B0 @ A0).astype(np.float32) * self.scaling)
        return Linear4bit(self.qweight, self._params.get("bias"))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", qweight={self.qweight!r}"


def merge_rounding_error(layer: QLoRALinear, x: np.ndarray) -> dict[str, float]:
    """How far merging into 4 bits moves the weight and the output (``layer`` is left unchanged).

    Returns
    -------
    dict with ``delta_max`` = max |s·BA|; ``weight_max_err`` = max |requant(W + s·BA) − (W + s·BA)| over the
    merged weight; ``delta_lost`` = fraction of ‖s·BA‖ that the merged 4-bit weight does not carry
    (‖requant(W + ΔW) − W‖ vs ‖ΔW‖, 0 = kept exactly); ``output_max_err`` = max |y_merged − y_unmerged| on ``x``
    and ``output_scale`` = max |y_unmerged|.
    """
    if not isinstance(layer, QLoRALinear):
        raise TypeError(f"layer must be a QLoRALinear, got {type(layer).__name__}")
    if layer.merged:
        raise ValueError("layer is already merged; pass an unmerged QLoRALinear")
    xp = backend.xp()
    w0 = layer.qweight.dequantize()
    delta = layer.delta_weight().astype(np.float32)
    target = w0 + delta
    q = layer.qweight
    merged = QuantizedWeight(target, q.blocksize, q.quant_type, q.compress_statistics,
                             "float64" if q.compute_format is None else q.compute_format)
    w_merged = merged.dequantize()
    was_training = layer.training
    layer.eval()
    y = layer.forward(x)
    y_merged = Linear4bit(merged, layer.bias).forward(x)
    layer.train(was_training)
    layer.cache = None
    return {
        "delta_max": float(xp.abs(delta).max()),
        "weight_max_err": float(xp.abs(w_merged - target).max()),
        "delta_lost": float(xp.linalg.norm(w_merged - target)) / max(float(xp.linalg.norm(delta)), 1e-30),
        "output_max_err": float(xp.abs(y_merged - y).max()),
        "output_scale": float(xp.abs(y).max()),
    }


def prepare_qlora(model: Module, config: LoraConfig | None = None, blocksize: int = 64, quant_type: str = "nf4",
                  compress_statistics: bool = True, compute_format: FloatFormat | str = BF16, seed: int = 0,
                  skip_modules: tuple[str, ...] = ("lm_head",)) -> Module:
    """QLoRA in one call, in place: :func:`~minilora.peft.linear4bit.quantize_base`, then ``get_peft_model``.

    The two steps PEFT takes (the base loaded in 4 bits, then ``get_peft_model(model, LoraConfig(...))``)::

        quantize_base(model, QuantizationConfig(blocksize, quant_type, compress_statistics, compute_format,
                                                skip_modules + modules_to_save))
        get_peft_model(model, config, seed=seed)

    Every Linear except ``skip_modules`` (transformers keeps ``lm_head`` in 16 bits) and
    ``config.modules_to_save`` (trained in full, so kept in float) becomes a frozen :class:`Linear4bit`; the
    targeted ones then become :class:`QLoRALinear` (a targeted float one, such as ``lm_head``, a plain
    :class:`~minilora.peft.lora.LoRALinear`). The LoRA matrices are drawn exactly as
    :func:`~minilora.peft.inject.inject_lora` draws them for the same ``config`` and ``seed``, so a LoRA and a
    QLoRA model start from the same adapter. Every check runs before the model changes.

    Parameters
    ----------
    config : LoraConfig
        Default ``LoraConfig(target_modules="all-linear")`` (QLoRA puts LoRA on every linear layer).
    blocksize, quant_type, compress_statistics, compute_format
        See :class:`QuantizedWeight`.
    """
    config = LoraConfig(target_modules="all-linear") if config is None else config
    _, saved = plan_injection(model, config)  # targets, ranks, modules_to_save: all checked on the float model
    quant = QuantizationConfig(blocksize, quant_type, compress_statistics, compute_format,
                               tuple(skip_modules) + tuple(saved))
    return get_peft_model(quantize_base(model, quant), config, seed=seed)


def quantized_modules(model: Module) -> dict[str, QuantizedWeight]:
    """The 4-bit weights of ``model`` (QLoRALinear and Linear4bit layers) by dotted module name."""
    return {name: m.qweight for name, m in model.named_modules() if isinstance(m, (QLoRALinear, Linear4bit))}


register_lora_layer(Linear4bit, QLoRALinear.from_linear4bit)

__all__ = ["COMPUTE_FORMATS", "MERGE_WARNING", "Linear4bit", "QLoRALinear", "QuantizedWeight",
           "check_compute_format", "merge_rounding_error", "prepare_qlora", "quantized_modules", "to_compute"]
