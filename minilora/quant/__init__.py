"""Quantization, from the blog's toy example to QLoRA's NF4 with double quantization.

A progression on shared pieces (each step reuses the one before it):

* :mod:`~minilora.quant.absmax` — nearest level, the blog's toy walkthrough, absmax int-b per tensor,
  row/column or block;
* :mod:`~minilora.quant.int8` — LLM.int8: vector-wise int8 and the outlier decomposition;
* :mod:`~minilora.quant.blockwise` — the block-wise machinery (absmax per block, nearest code by midpoints,
  nibble packing) shared by
* :mod:`~minilora.quant.nf4` — NF4 / FP4 4-bit quantization, and
* :mod:`~minilora.quant.double_quant` — the 8-bit dynamic map and double quantization of absmax;
* :mod:`~minilora.quant.state` — :class:`QuantState` and its byte accounting;
* :mod:`~minilora.quant.serialize` — ``QuantState.as_dict`` / ``from_dict`` in bitsandbytes' file format;
* :mod:`~minilora.quant.bounds` — the worst-case error each quantizer guarantees.

Everything bitsandbytes defines is reproduced bit for bit (``docs/facts.md`` §2–§4), checked by
golden vectors made with bitsandbytes' pure-PyTorch kernels.
"""

from minilora.quant.absmax import absmax_dequantize, absmax_quantize, quantize_to_levels, toy_walkthrough
from minilora.quant.double_quant import create_dynamic_map, dequantize_blockwise, quantize_blockwise
from minilora.quant.int8 import int8_matmul, int8_matmul_parts, int8_vectorwise_dequant, int8_vectorwise_quant
from minilora.quant.nf4 import (
    create_normal_map,
    dequantize_4bit,
    dequantize_fp4,
    dequantize_nf4,
    fp4_code,
    nf4_code,
    quantize_4bit,
    quantize_fp4,
    quantize_nf4,
)
from minilora.quant.state import QuantState

__all__ = [
    "quantize_to_levels", "toy_walkthrough", "absmax_quantize", "absmax_dequantize",
    "int8_vectorwise_quant", "int8_vectorwise_dequant", "int8_matmul", "int8_matmul_parts",
    "nf4_code", "fp4_code", "create_normal_map", "quantize_4bit", "dequantize_4bit",
    "quantize_nf4", "quantize_fp4", "dequantize_nf4", "dequantize_fp4",
    "create_dynamic_map", "quantize_blockwise", "dequantize_blockwise", "QuantState",
]
