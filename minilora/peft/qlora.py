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
from typing import Any

import numpy as np

from minilora import backend
from minilora.formats import BF16, FloatFormat, get_format, round_to
from minilora.nn import functional as F
from minilora.nn.module import Module
from minilora.nn.modules import Linear
from minilora.peft.config import LoraConfig
from minilora.peft.inject import finish_injection, plan_injection
from minilora.peft.lora import LoRALinear
from minilora.quant import dequantize_4bit, quantize_4bit
from minilora.quant.state import check_blocksize, check_choice

#: compute formats a quantized layer accepts: a float format, or "float64" (no rounding, for gradchecks)
COMPUTE_FORMATS = ("bf16", "fp16", "fp32", "float64")
#: PEFT's warning when a LoRA is merged into a 4-bit layer (peft/tuners/lora/bnb.py)
MERGE_WARNING = "Merge lora module to 4-bit linear may get different generations due to rounding errors."


def check_compute_format(compute_format: FloatFormat | str) -> FloatFormat | None:
    """The compute format as a :class:`~minilora.formats.FloatFormat`, or None for ``"float64"``."""
    if isinstance(compute_format, str) and compute_format == "float64":
        return None
    name = compute_format.name if isinstance(compute_format, FloatFormat) else compute_format
    check_choice(name, COMPUTE_FORMATS, "compute_format")
    return get_format(name)


def to_compute(x: np.ndarray, fmt: FloatFormat | None, arg: str = "x") -> np.ndarray:
    """Round ``x`` to the compute format (float32 storage), or return it as float64 when ``fmt`` is None.

    A float64 ``x`` is cast to float32 first (so it is rounded twice; training runs in float32 anyway). A list is
    converted; a NumPy (host) array on a device backend is refused (:func:`minilora.backend.input_array`).
    """
    x = backend.input_array(x, arg)
    if x.dtype.kind != "f":
        raise TypeError(f"{arg} must be a floating-point array, got dtype {x.dtype}")
    if fmt is None:
        return x.astype(np.float64, copy=False)
    return round_to(x.astype(np.float32, copy=False), fmt)


class QuantizedWeight:
    """A frozen weight held only as packed 4-bit codes and their :class:`~minilora.quant.QuantState`.

    Parameters
    ----------
    weight : float array (out, in)
        Quantized at construction by :func:`~minilora.quant.quantize_4bit`; not kept.
    blocksize, quant_type, compress_statistics
        As in :func:`~minilora.quant.quantize_4bit` (QLoRA: 64, ``"nf4"``, True).
    compute_format : FloatFormat or str
        ``BF16`` (QLoRA), ``FP16``, ``FP32`` or ``"float64"``.
    """

    def __init__(self, weight: np.ndarray, blocksize: int = 64, quant_type: str = "nf4",
                 compress_statistics: bool = True, compute_format: FloatFormat | str = BF16) -> None:
        self.blocksize = check_blocksize(blocksize)
        self.quant_type = check_choice(quant_type, ("nf4", "fp4"), "quant_type")
        self.compress_statistics = bool(compress_statistics)
        self.compute_format = check_compute_format(compute_format)
        weight = backend.input_array(weight, "weight")
        if weight.ndim != 2:
            raise ValueError(f"weight must be a 2-D (out, in) array, got shape {weight.shape}")
        self.packed, self.quant_state = quantize_4bit(weight, self.blocksize, self.quant_type,
                                                      self.compress_statistics)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.quant_state.shape)

    def dequantize(self) -> np.ndarray:
        """The stored weight, exactly dequantized: float32 (out, in)."""
        return dequantize_4bit(self.packed, self.quant_state)

    def compute_weight(self) -> np.ndarray:
        """The weight in the compute format: ``round_to(dequantize(), BF16)`` (float64 when ``"float64"``)."""
        w = self.dequantize()
        return w.astype(np.float64) if self.compute_format is None else round_to(w, self.compute_format)

    @property
    def nbytes(self) -> int:
        """Bytes stored: packed codes + statistics + codebooks/offset (``packed.nbytes + state`` extras)."""
        return int(self.packed.nbytes) + self.quant_state.stats_nbytes + self.quant_state.const_nbytes

    @property
    def bits_per_param(self) -> float:
        """``8 · (packed + statistics bytes) / n``, measured from the stored arrays (4.127 for NF4 bs 64 + DQ)."""
        return 8.0 * (self.packed.nbytes + self.quant_state.stats_nbytes) / self.quant_state.numel

    def __repr__(self) -> str:
        fmt = "float64" if self.compute_format is None else self.compute_format.name
        return (f"QuantizedWeight(shape={self.shape}, quant_type={self.quant_type!r}, blocksize={self.blocksize}, "
                f"compress_statistics={self.compress_statistics}, compute_format={fmt!r}, "
                f"bits_per_param={self.bits_per_param:.4f})")


def _check_input(x: Any, in_features: int) -> None:
    x = backend.input_array(x, "x")
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have last dimension in_features={in_features}, got shape {x.shape}")


class Linear4bit(Module):
    """A frozen Linear whose weight is stored in 4 bits (bitsandbytes' ``Linear4bit``): no trainable params.

    ``forward``: ``y = to_compute(x) @ W_cᵀ + b`` with ``W_c = qweight.compute_weight()``; ``backward``:
    dequantizes again and returns ``dx = dout @ W_c``. ``params`` holds only the (frozen) ``bias``; the 4-bit
    weight is counted by :meth:`num_extra_params` (its elements, as PEFT counts a bitsandbytes ``Params4bit``).
    """

    def __init__(self, base: Linear | QuantizedWeight, bias: np.ndarray | None = None, **quant: Any) -> None:
        super().__init__()
        if isinstance(base, Linear):
            self.qweight = QuantizedWeight(base.params["weight"], **quant)
            bias = base.params.get("bias")
        elif isinstance(base, QuantizedWeight):
            self.qweight = base
        else:
            raise TypeError(f"base must be a Linear or a QuantizedWeight, got {type(base).__name__}")
        self.out_features, self.in_features = self.qweight.shape
        if bias is not None:
            self.add_param("bias", bias, trainable=False)

    @property
    def weight(self) -> np.ndarray:
        """The dequantized weight (float32, a new array each call)."""
        return self.qweight.dequantize()

    def num_extra_params(self) -> int:
        """Elements of the 4-bit weight, which is stored outside ``params`` (the parameter-count hook of
        :func:`minilora.peft.mapping.count_parameters`)."""
        return int(self.qweight.quant_state.numel)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (..., in) → y (..., out), computed in the compute format with float32 accumulation."""
        _check_input(x, self.in_features)
        xc = to_compute(x, self.qweight.compute_format)
        y, _ = F.linear_forward(xc, self.qweight.compute_weight(), self._params.get("bias"))  # (..., out)
        self.cache = xc.shape  # a frozen layer keeps no activation, only the shape
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (..., out) → dx (..., in) through the weight dequantized again."""
        if self.cache is None:
            raise RuntimeError("Linear4bit.backward called before forward")
        shape, self.cache = self.cache, None
        return (dout.reshape(-1, self.out_features) @ self.qweight.compute_weight()).reshape(shape)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.qweight!r}"


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
        weight = self._params.pop("weight")  # the float weight: quantized, then dropped
        self._trainable.pop("weight")
        base._params.pop("weight")
        base._trainable.pop("weight")
        self.qweight = QuantizedWeight(weight, blocksize, quant_type, compress_statistics, compute_format)

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

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Accumulate ``dA``, ``dB`` and return ``dx`` (..., in) through the re-dequantized base weight."""
        if self.cache is None:
            raise RuntimeError("QLoRALinear.backward called before forward")
        (x_saved, _, has_bias), drop_cache, merged = self.cache
        with self._lent_weight():
            self.cache = ((x_saved, self._params["weight"], has_bias), drop_cache, merged)
            dx = super().backward(dout)
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
    """Quantize the model's Linears to 4 bits and put LoRA on the targets (QLoRA), in place; return ``model``.

    Every Linear whose name matches ``config.target_modules`` becomes a :class:`QLoRALinear`; every other
    Linear except ``skip_modules`` (transformers keeps ``lm_head`` in 16 bits) and ``config.modules_to_save``
    (trained in full, so kept in float) becomes a frozen :class:`Linear4bit`; all remaining parameters are
    frozen. The LoRA matrices are drawn exactly as
    :func:`~minilora.peft.inject.inject_lora` draws them for the same ``config`` and ``seed``, so a LoRA and a
    QLoRA model start from the same adapter.

    Parameters
    ----------
    config : LoraConfig
        Default ``LoraConfig(target_modules="all-linear")`` (QLoRA puts LoRA on every linear layer).
    blocksize, quant_type, compress_statistics, compute_format
        See :class:`QuantizedWeight`.
    """
    config = LoraConfig(target_modules="all-linear") if config is None else config
    check_compute_format(compute_format)
    check_blocksize(blocksize)
    check_choice(quant_type, ("nf4", "fp4"), "quant_type")
    targets, saved = plan_injection(model, config)
    quant = dict(blocksize=blocksize, quant_type=quant_type, compress_statistics=compress_statistics,
                 compute_format=compute_format)
    kept = tuple(name + "." for name in saved)  # modules_to_save train in full: they stay float
    others = [name for name, m in model.named_modules() if isinstance(m, Linear) and name
              and name not in targets and name not in saved and not name.startswith(kept)
              and name.split(".")[-1] not in skip_modules]
    model.freeze()
    streams = np.random.SeedSequence(seed).spawn(len(targets))  # as inject_lora: same seed, same adapters
    for name, ss in zip(targets, streams):
        layer = QLoRALinear(model.get_submodule(name), r=config.r, lora_alpha=config.lora_alpha,
                            lora_dropout=config.lora_dropout, init_lora_weights=config.init_lora_weights,
                            use_rslora=config.use_rslora, seed=np.random.default_rng(ss), **quant)
        model.set_submodule(name, layer)
    for name in others:
        model.set_submodule(name, Linear4bit(model.get_submodule(name), **quant))
    finish_injection(model, config, saved)
    return model


def quantized_modules(model: Module) -> dict[str, QuantizedWeight]:
    """The 4-bit weights of ``model`` (QLoRALinear and Linear4bit layers) by dotted module name."""
    return {name: m.qweight for name, m in model.named_modules() if isinstance(m, (QLoRALinear, Linear4bit))}


__all__ = ["COMPUTE_FORMATS", "MERGE_WARNING", "Linear4bit", "QLoRALinear", "QuantizedWeight",
           "check_compute_format", "merge_rounding_error", "prepare_qlora", "quantized_modules", "to_compute"]
