"""A frozen Linear stored in 4 bits, and a whole model loaded that way (bitsandbytes' ``Linear4bit``).

* :class:`QuantizedWeight` — a weight held only as packed 4-bit codes + :class:`~minilora.quant.QuantState`
  (:func:`minilora.quant.quantize_4bit`: NF4 or FP4, block-wise absmax, optionally double-quantized);
* :class:`Linear4bit` — the frozen layer computing with it: ``y = x_c W_cᵀ + b`` in the compute format;
* :func:`quantize_base` with a :class:`QuantizationConfig` — every Linear of a model but ``lm_head`` becomes a
  :class:`Linear4bit` and everything is frozen: what transformers' ``from_pretrained(...,
  quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...))`` followed by PEFT's
  ``prepare_model_for_kbit_training`` gives. :func:`~minilora.peft.mapping.get_peft_model` with a
  :class:`~minilora.peft.config.LoraConfig` then puts a :class:`~minilora.peft.qlora.QLoRALinear` on every
  targeted 4-bit layer: QLoRA in the two steps PEFT takes.

Progression: ``Linear → Linear4bit → QLoRALinear`` (:mod:`minilora.peft.qlora`). Departure from transformers:
a float model is quantized in place (transformers quantizes while it loads); no 8-bit ``Linear8bitLt`` here
(LLM.int8 is :mod:`minilora.quant.int8`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minilora import backend
from minilora.formats import BF16, FloatFormat, get_format, round_to
from minilora.nn import functional as F
from minilora.nn.module import Module
from minilora.nn.modules import Linear
from minilora.quant import dequantize_4bit, quantize_4bit
from minilora.quant.state import check_blocksize, check_choice

#: compute formats a quantized layer accepts: a float format, or "float64" (no rounding, for gradchecks)
COMPUTE_FORMATS = ("bf16", "fp16", "fp32", "float64")


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

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """dout (..., out) → dx (..., in) through the weight dequantized again; None with ``need_dx=False``
        (nothing to compute: the layer has no trainable parameter)."""
        if self.cache is None:
            raise RuntimeError("Linear4bit.backward called before forward")
        shape, self.cache = self.cache, None
        if not need_dx:
            return None
        return (dout.reshape(-1, self.out_features) @ self.qweight.compute_weight()).reshape(shape)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.qweight!r}"


@dataclass(frozen=True)
class QuantizationConfig:
    """How :func:`quantize_base` stores a model's Linears; transformers' ``BitsAndBytesConfig`` in minilora's words.

    ======================  ==================================================  ===========
    field                   ``BitsAndBytesConfig(load_in_4bit=True, ...)``      default
    ======================  ==================================================  ===========
    ``blocksize``           (bitsandbytes' ``Params4bit`` default, 64)          64
    ``quant_type``          ``bnb_4bit_quant_type``                             ``"nf4"``
    ``compress_statistics`` ``bnb_4bit_use_double_quant``                       True
    ``compute_format``      ``bnb_4bit_compute_dtype``                          ``"bf16"``
    ``skip_modules``        ``llm_int8_skip_modules`` (transformers keeps       ``("lm_head",)``
                            ``lm_head`` in 16 bits)
    ======================  ==================================================  ===========

    The defaults are the QLoRA paper's recipe (NF4, double quantization, BF16 compute), not
    ``BitsAndBytesConfig``'s own defaults (FP4, no double quantization, float32 compute). A name in
    ``skip_modules`` keeps a Linear in float when it equals the Linear's dotted name, its last part, or a
    module above it (``"blocks.0.mlp"`` keeps both of that MLP's Linears).

    >>> QuantizationConfig(quant_type="fp4")
    QuantizationConfig(blocksize=64, quant_type='fp4', compress_statistics=True, compute_format='bf16', \
skip_modules=('lm_head',))
    """

    blocksize: int = 64
    quant_type: str = "nf4"
    compress_statistics: bool = True
    compute_format: str = "bf16"
    skip_modules: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        check_blocksize(self.blocksize)
        check_choice(self.quant_type, ("nf4", "fp4"), "quant_type")
        fmt = self.compute_format
        name = fmt.name if isinstance(fmt, FloatFormat) else fmt
        check_choice(name, COMPUTE_FORMATS, "compute_format")
        object.__setattr__(self, "compute_format", name)
        skip = (self.skip_modules,) if isinstance(self.skip_modules, str) else tuple(self.skip_modules)
        if not all(isinstance(s, str) and s for s in skip):
            raise TypeError(f"skip_modules must be module names (non-empty strings), got {self.skip_modules!r}")
        object.__setattr__(self, "skip_modules", skip)
        object.__setattr__(self, "compress_statistics", bool(self.compress_statistics))

    @property
    def quant_kwargs(self) -> dict[str, Any]:
        """``blocksize``, ``quant_type``, ``compress_statistics``, ``compute_format`` as :class:`QuantizedWeight`
        takes them."""
        return {"blocksize": self.blocksize, "quant_type": self.quant_type,
                "compress_statistics": self.compress_statistics, "compute_format": self.compute_format}

    def skips(self, name: str) -> bool:
        """Whether the Linear called ``name`` (dotted) stays in float."""
        return any(name == s or name.startswith(s + ".") or name.split(".")[-1] == s for s in self.skip_modules)


def quantize_base(model: Module, config: QuantizationConfig | None = None) -> Module:
    """Store every Linear of ``model`` in 4 bits (a frozen :class:`Linear4bit`) and freeze it all; in place.

    What transformers' ``from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True))`` and
    PEFT's ``prepare_model_for_kbit_training`` leave: the Linears outside ``config.skip_modules`` quantized,
    embeddings, LayerNorms and ``lm_head`` in float, no parameter trainable. Then
    ``get_peft_model(model, LoraConfig(...))`` adds the adapters (QLoRA). The config is kept as
    ``model.quantization_config`` (transformers' attribute).

    Parameters
    ----------
    model : Module
        A float model without PEFT layers (quantize the base before adding adapters, as transformers loads
        it in 4 bits before PEFT sees it).
    config : QuantizationConfig
        Default ``QuantizationConfig()``: NF4, blocksize 64, double quantization, BF16 compute.
    """
    config = QuantizationConfig() if config is None else config
    if not isinstance(config, QuantizationConfig):
        raise TypeError(f"config must be a QuantizationConfig, got {type(config).__name__}")
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minilora Module, got {type(model).__name__}")
    carried = [a for a in ("lora_config", "peft_config", "adapter_config") if a in vars(model)]
    if carried:
        raise ValueError(f"model already carries {carried[0]}: quantize the base before get_peft_model, as "
                         "transformers loads a model in 4 bits before PEFT adds adapters")
    names = [name for name, m in model.named_modules() if isinstance(m, Linear) and name and not config.skips(name)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no float Linear to quantize outside "
                         f"skip_modules={config.skip_modules!r}")
    model.freeze()
    for name in names:
        model.set_submodule(name, Linear4bit(model.get_submodule(name), **config.quant_kwargs))
    model.quantization_config = config
    return model
