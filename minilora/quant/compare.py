"""Put the 4-bit quantizers side by side on the same data: round trips, errors, code usage.

QLoRA (Table 2, arXiv 2305.14314) compares data types by the perplexity of quantized LLaMA models:
Int4 34.34, FP4 (E2M1) 31.07, NF4 + DQ 27.41 (mean Pile-CC perplexity). This module measures the thing
one step before perplexity — how far the dequantized weights land from the originals — for the same
four choices at the same blocksize, so a notebook can set the two side by side. Weight error is not
model quality: it weighs every weight equally, while perplexity depends on which errors the network
is sensitive to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minilora import backend
from minilora.quant.absmax import absmax_dequantize, absmax_quantize
from minilora.quant.blockwise import unpack_nibbles
from minilora.quant.nf4 import dequantize_4bit, quantize_4bit

__all__ = ["METHODS", "roundtrip", "reconstruction_error", "code_usage"]

#: the four storage choices of QLoRA's Table 2 (int4 = symmetric absmax int4 with the same blocks)
METHODS = ("int4", "fp4", "nf4", "nf4+dq")


def roundtrip(x: Any, method: str, blocksize: int = 64) -> Any:
    """Quantize and dequantize ``x`` with ``method`` (one of :data:`METHODS`); float32, shape of ``x``."""
    if method == "int4":
        q, a = absmax_quantize(x, bits=4, blocksize=blocksize)
        return absmax_dequantize(q, a, bits=4, blocksize=blocksize)
    if method in ("fp4", "nf4", "nf4+dq"):
        packed, st = quantize_4bit(x, blocksize=blocksize, quant_type=method[:3],
                                   compress_statistics=method.endswith("+dq"))
        return dequantize_4bit(packed, st)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def reconstruction_error(x: Any, methods: tuple[str, ...] = METHODS, blocksizes: tuple[int, ...] = (64,),
                         metric: str = "rmse") -> dict[tuple[str, int], float]:
    """Error of each ``(method, blocksize)`` round trip on ``x``, by ``"rmse"``, ``"mae"`` or ``"max"``."""
    xp = backend.xp()
    funcs = {"rmse": lambda d: float(xp.sqrt(xp.mean(d * d))), "mae": lambda d: float(xp.mean(xp.abs(d))),
             "max": lambda d: float(xp.abs(d).max())}
    if metric not in funcs:
        raise ValueError(f"metric must be one of {tuple(funcs)}, got {metric!r}")
    x64 = xp.asarray(x).astype(xp.float64)
    return {(m, bs): funcs[metric](roundtrip(x, m, bs).astype(xp.float64) - x64)
            for m in methods for bs in blocksizes}


def code_usage(x: Any, quant_type: str = "nf4", blocksize: int = 64) -> np.ndarray:
    """How often each of the 16 codes is used for ``x`` (int64, shape (16,), by code index)."""
    packed, _ = quantize_4bit(x, blocksize=blocksize, quant_type=quant_type)
    q = backend.to_numpy(unpack_nibbles(packed, int(np.prod(np.shape(x)))))
    return np.bincount(q, minlength=16)
