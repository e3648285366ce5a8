"""Inputs shared by the golden generators and the tests (NumPy only, so tests can import it)."""

from __future__ import annotations

import numpy as np

N_RANDOM = 1 << 20
SEED = 20261128


def random_float32_bits(n: int = N_RANDOM, seed: int = SEED) -> np.ndarray:
    """``n`` float32 bit patterns (uint32): half uniform over all 2^32 patterns, half with exponent
    fields 95..151 (|x| from 2^-32 to 2^24, where FP16 and FP8 round, overflow and go subnormal)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    uniform = rng.integers(0, 2**32, size=half, dtype=np.uint64).astype(np.uint32)
    sign = rng.integers(0, 2, size=n - half, dtype=np.uint64).astype(np.uint32) << np.uint32(31)
    expo = rng.integers(95, 152, size=n - half, dtype=np.uint64).astype(np.uint32) << np.uint32(23)
    mant = rng.integers(0, 1 << 23, size=n - half, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([uniform, sign | expo | mant])
