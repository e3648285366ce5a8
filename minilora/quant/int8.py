"""LLM.int8(): vector-wise int8 quantization with a mixed-precision decomposition for outlier features.

Dettmers et al. 2022 (arXiv 2208.07339), §3. For ``Y = X Wᵀ`` with X (tokens × features):

* **Vector-wise quantization** (Eq. 1, 3): one absmax per row of X (``SCA``) and per row of W (``SCB``,
  one per output feature); ``CA = round(X · 127 / SCA)``. The int8 product is accumulated in int32 and
  rescaled by the outer product of the two scale vectors: ``Y ≈ (CA CBᵀ) ⊙ (SCA ⊗ SCB) / 127²``.
* **Mixed-precision decomposition** (§3.2): at ≥ 6.7B parameters a few feature dimensions ("outlier
  features", ~0.1% of them) carry magnitudes around 60 that would stretch every row's scale. Every
  column of X holding an element with ``|x| ≥ threshold`` (α = 6.0) is taken out and multiplied in 16 bits;
  the rest goes through int8::

      Y = Σ_{j ∉ O} X_j W_jᵀ   (int8, int32 accumulation)   +   Σ_{j ∈ O} X_j W_jᵀ   (FP16)

This module follows bitsandbytes' inference path (``Linear8bitLt``) step by step (docs/facts.md §4):

1. ``X16 = round_to(X, FP16)``; ``CA, SCA, cols = int8_vectorwise_quant(X16, threshold)`` — outliers are
   zeroed before the row statistics, then (with more than one row) whole outlier columns of CA are zeroed;
2. ``CB, SCB, _ = int8_vectorwise_quant(round_to(W, FP16))``;
3. ``acc = CA @ CBᵀ`` exactly in integers (int32);
4. ``int_part = float32(acc) · float32(SCA ⊗ SCB) · c`` with bitsandbytes' ``c = 6.200124e-05``;
5. ``outlier_part = X[:, cols] @ dequant(CB)[:, cols]ᵀ`` with the original X.

The constant in step 4 should be 1/127² = 6.2000124e-05; bitsandbytes' literal 6.200124e-05 has lost a digit
and is 1.8e-5 relatively too large (docs/facts.md §4). minilora reproduces it by default, so that the int8 part
equals bitsandbytes' ``int8_mm_dequant`` bit for bit (a reference is only worth its agreement with the library
it mirrors); ``rescale="exact"`` multiplies by float32(1/127²) instead. Either way the difference is far below
the int8 rounding error.

Departures from bitsandbytes: it computes the outlier part and the output in FP16; minilora keeps float32
(the FP16 rounding of X is kept, as it decides which columns are outliers).
The int32 accumulation is computed through float64 BLAS, which is exact: every partial sum is an integer
below 2^53 (and below 2^31 while K ≤ MAX_K = 133 144, which is checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minilora import backend
from minilora.formats import FP16, round_to
from minilora.quant.state import as_float_array, check_choice, check_finite_stats

__all__ = ["int8_vectorwise_quant", "int8_vectorwise_dequant", "int8_matmul", "int8_matmul_parts",
           "Int8MatmulParts", "INV_127", "INV_127_SQ", "BNB_INV_127_SQ", "RESCALE"]

INV_127 = np.float32(1 / 127)              # 7.874015718698502e-3, bitsandbytes' dequantization constant
INV_127_SQ = np.float32(1 / 127**2)        # 6.2000124e-05
BNB_INV_127_SQ = np.float32(6.200124e-05)  # bitsandbytes' constant (a typo), shown in notebook 07
#: the constant of step 4 by ``rescale``
RESCALE = {"bitsandbytes": BNB_INV_127_SQ, "exact": INV_127_SQ}
MAX_K = (2**31 - 1) // 127**2              # longest dot product an int32 accumulator cannot overflow on


def _check_threshold(threshold: Any) -> float:
    t = float(threshold)
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"threshold must be a finite number >= 0 (0 disables the decomposition), "
                         f"got {threshold!r}")
    return t


def int8_vectorwise_quant(x: Any, threshold: float = 0.0) -> tuple[Any, Any, Any]:
    """Row-wise absmax int8 quantization with optional outlier columns (bitsandbytes' rule, docs/facts.md §4).

    Parameters
    ----------
    x : float array, shape (rows, cols) (computed in float32; bitsandbytes feeds FP16 values)
    threshold : float ≥ 0
        Elements with ``|x| ≥ threshold`` are outliers (0 disables): they are zeroed before the row
        statistics, and with more than one row their whole columns are zeroed in the int8 result.

    Returns
    -------
    CA : int8, shape (rows, cols)        ``round_half_even(x · float32(float32(1 / SCA) · 127))``
    SCA : float32, shape (rows,)         row absmax of the non-outlier elements (0 → a row of 0s)
    outlier_cols : int64, shape (m,)     sorted columns holding an outlier (empty when threshold is 0)
    """
    xp = backend.xp()
    t = _check_threshold(threshold)
    a = as_float_array(x, "x")
    if a.ndim != 2:
        raise ValueError(f"x must be 2-D (rows, cols), got shape {tuple(a.shape)}")
    a = a.astype(xp.float32, copy=True)
    if a.size:
        check_finite_stats(xp.abs(a).max(axis=1), "x")              # before outliers hide an inf
    cols = xp.zeros(0, dtype=xp.int64)
    if t > 0:
        outliers = xp.abs(a) >= t                                        # NaN compares False: checked below
        cols = xp.nonzero(outliers.any(axis=0))[0].astype(xp.int64)
        a[outliers] = 0
    sca = xp.abs(a).max(axis=1) if a.size else xp.zeros(a.shape[0], xp.float32)
    check_finite_stats(sca, "x")
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        scale = xp.where(sca > 0, (xp.float32(1) / sca) * xp.float32(127), xp.float32(0)).astype(xp.float32)
        # a row whose absmax is below ~2.9e-39 overflows 1/SCA (as in bitsandbytes): keep the cast defined
        ca = xp.clip(xp.nan_to_num(xp.rint(a * scale[:, None]), nan=0.0), -127, 127).astype(xp.int8)
    if a.shape[0] > 1 and cols.size:
        ca[:, cols] = 0
    return ca, sca.astype(xp.float32), cols


def int8_vectorwise_dequant(ca: Any, sca: Any) -> Any:
    """``float32(CA · SCA[:, None]) · float32(1/127)``: the float32 rows back (bitsandbytes' rule)."""
    xp = backend.xp()
    ca, sca = xp.asarray(ca), xp.asarray(sca, dtype=xp.float32)
    return ((ca.astype(xp.float32) * sca[:, None]) * INV_127).astype(xp.float32)


@dataclass
class Int8MatmulParts:
    """The pieces of one LLM.int8 product ``y = int_part + outlier_part`` (shapes for x (m, k), w (n, k))."""

    y: Any             # (m, n) float32
    int_part: Any      # (m, n) float32: the int8 path, rescaled
    outlier_part: Any  # (m, n) float32: the 16-bit columns
    outlier_cols: Any  # (c,) int64
    acc: Any           # (m, n) int32: CA @ CBᵀ
    CA: Any            # (m, k) int8
    SCA: Any           # (m,) float32
    CB: Any            # (n, k) int8
    SCB: Any           # (n,) float32

    def __repr__(self) -> str:
        return (f"Int8MatmulParts(y={tuple(self.y.shape)}, outlier_cols={len(self.outlier_cols)} of "
                f"{self.CA.shape[1]})")


def int8_matmul_parts(x: Any, w: Any, threshold: float = 6.0, rescale: str = "bitsandbytes") -> Int8MatmulParts:
    """LLM.int8 ``x @ w.T`` with every intermediate returned (the module docstring's steps 1–5).

    Parameters
    ----------
    x : float array, shape (..., k)   activations (leading dims are flattened to rows)
    w : float array, shape (n, k)     weights, PyTorch layout (out_features, in_features)
    threshold : float ≥ 0             outlier threshold α (0: pure vector-wise int8)
    rescale : {"bitsandbytes", "exact"}
        The constant of step 4: bitsandbytes' 6.200124e-05 (default: its ``int8_mm_dequant`` bit for bit)
        or float32(1/127²) = 6.2000124e-05.

    Raises ValueError for non-finite input, values beyond FP16's range (|v| ≥ 65520), mismatched shapes,
    or ``k`` so large an int32 accumulator could overflow.
    """
    xp = backend.xp()
    c = RESCALE[check_choice(rescale, tuple(RESCALE), "rescale")]
    x = as_float_array(x, "x").astype(xp.float32)
    w = as_float_array(w, "w").astype(xp.float32)
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"need x (..., k) and w (n, k), got x {tuple(x.shape)} and w {tuple(w.shape)}")
    k = w.shape[1]
    if k > MAX_K:
        raise ValueError(f"k = {k} exceeds {MAX_K}: an int32 accumulator could overflow")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    for name, v in (("x", x2), ("w", w)):
        if v.size and float(xp.abs(v).max()) >= 65520:
            raise ValueError(f"{name} holds values beyond FP16's range (|v| >= 65520); LLM.int8 runs in FP16")
    ca, sca, cols = int8_vectorwise_quant(round_to(x2, FP16), threshold)
    cb, scb, _ = int8_vectorwise_quant(round_to(w, FP16), 0.0)
    acc = (ca.astype(xp.float64) @ cb.astype(xp.float64).T).astype(xp.int32)       # exact integers
    int_part = (acc.astype(xp.float32) * (sca[:, None] * scb[None, :])) * c
    outlier_part = x2[:, cols] @ int8_vectorwise_dequant(cb[:, cols], scb).T
    y = (int_part + outlier_part).astype(xp.float32)
    n = w.shape[0]
    return Int8MatmulParts(y.reshape(*lead, n), int_part.reshape(*lead, n), outlier_part.reshape(*lead, n),
                           cols, acc, ca, sca, cb, scb)


def int8_matmul(x: Any, w: Any, threshold: float = 6.0, rescale: str = "bitsandbytes") -> Any:
    """``x @ w.T`` by LLM.int8 (int8 part accumulated in int32 + 16-bit outlier part), float32 (..., n).

    ``rescale`` as in :func:`int8_matmul_parts` (default: bitsandbytes' constant).
    """
    return int8_matmul_parts(x, w, threshold, rescale).y
