"""Host copies of whatever a kernel returns (NumPy, CuPy, torch on any device), and report formatting."""

from __future__ import annotations

from typing import Any

import numpy as np

from minilora import backend


def host(a: Any, name: str) -> np.ndarray:
    """``a`` as a NumPy array: NumPy and CuPy arrays, torch tensors (bfloat16 widened to float32), scalars."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):             # a torch tensor, on any device
        a = a.detach().cpu()
        if "bfloat16" in str(a.dtype):
            a = a.float()
        a = a.numpy()
    try:
        return np.asarray(backend.to_numpy(a))
    except Exception as e:                                      # e.g. an object NumPy cannot hold
        raise TypeError(f"{name} must be an array (NumPy, CuPy or torch), got {type(a).__name__}") from e


def float_input(x: Any, name: str = "x") -> np.ndarray:
    """The quantizer's input as float32 (float16 and bfloat16-as-float32 are exact in it).

    float64 is accepted only when every value is a float32: the kernel saw float32, and a second rounding
    here would blame it for an error it did not make.
    """
    a = host(x, name)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array (float16 or float32), got dtype {a.dtype}")
    f32 = a.astype(np.float32)
    if a.dtype.itemsize > 4 and not np.array_equal(f32.astype(a.dtype), a, equal_nan=True):
        raise ValueError(f"{name} is {a.dtype} with values float32 cannot hold; pass the float32 array the "
                         f"kernel quantized (quantizers compute in float32)")
    if not np.all(np.isfinite(f32)):
        i = int(np.flatnonzero(~np.isfinite(f32.reshape(-1)))[0])
        raise ValueError(f"{name} contains NaN or Inf (first at index {index_of(i, f32.shape)}): quantizers "
                         f"reject them, so there is nothing to bound")
    return f32


def output_like(x_hat: Any, shape: tuple[int, ...], name: str = "x_hat") -> np.ndarray:
    """A kernel's float output as float64, checked to have ``shape``."""
    a = host(x_hat, name)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)} but x has shape {tuple(shape)}; they must be the "
                         f"same (reshape the kernel's output to x's shape first)")
    return a.astype(np.float64)


def index_of(flat: int, shape: tuple[int, ...]) -> Any:
    """The multi-index of flat index ``flat`` (an int for 0-d and 1-d arrays)."""
    if len(shape) <= 1:
        return int(flat)
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def f32_text(v: Any) -> str:
    """A float32 value with its bit pattern: ``0.123456791  (float32 0x3dfcd6e9)``."""
    f = np.float32(v)
    return f"{float(f):.9g}  (float32 0x{int(np.array(f).view(np.uint32)):08x})"


def num(v: float) -> str:
    return f"{v:.6g}"


def worst_index(err: np.ndarray, bound: np.ndarray, bad: np.ndarray) -> int:
    """Flat index of the failing element with the largest ``err / bound`` (NaN errors first)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isnan(err), np.inf, err / bound).reshape(-1)
    ratio = np.where(bad.reshape(-1), ratio, -np.inf)
    return int(np.argmax(ratio))


def excess_text(err: float, bound: float) -> str:
    if not np.isfinite(err):
        return "— the kernel's output is not finite"
    return f"{num(err - bound)}  (|error| = {err / bound:.4g} × bound)"
