"""Golden vectors for minilora.formats, from ml_dtypes, PyTorch and NumPy.

Writes tests/golden/formats.npz:

* ``decode_<fmt>``: every bit pattern of FP16/BF16 (2^16) and FP8 E4M3/E5M2 (2^8) decoded to float32
  bits by ml_dtypes (FP16 also checked against NumPy and torch, BF16 against torch);
* ``random_sha256`` + ``encode_random_<fmt>_sha256``: the encodings of 1,048,576 float32 bit patterns
  that the test regenerates from a fixed seed (half uniform over all 2^32 patterns, half with exponents
  in the range where FP16/FP8 round, overflow and go subnormal). To keep the file small the inputs are
  pinned by their SHA-256 and the library's outputs by theirs (equal digests mean equal bits); the
  first 65,536 outputs are also stored in full (``encode_random_<fmt>``) so a failure shows where;
* ``edge_inputs`` + ``encode_edge_<fmt>``: hand-picked edge cases: ties (exact midpoints between
  neighbours) at every exponent of every format and the float32 values just either side of them,
  largest finite, first overflow, subnormal boundaries, ±0, ±inf, NaNs with payloads, float32 subnormals.

``<fmt>`` is fp16, bf16, fp8_e4m3 (ml_dtypes: overflow → NaN), fp8_e4m3_sat (torch: saturate to ±448)
and fp8_e5m2. Where libraries disagree on NaN payloads, the canonical quiet NaN with the input's sign
is stored (docs/facts.md §1), and the generator asserts that every non-NaN output agrees across libraries.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import ml_dtypes
import numpy as np
import torch

from golden._inputs import random_float32_bits as random_inputs
from golden._meta import meta

N_STORED = 1 << 16

FORMATS = {  # name -> (ml_dtypes type, torch dtype, uint dtype, canonical NaN)
    "fp16": (np.float16, torch.float16, np.uint16, 0x7E00),
    "bf16": (ml_dtypes.bfloat16, torch.bfloat16, np.uint16, 0x7FC0),
    "fp8_e4m3": (ml_dtypes.float8_e4m3fn, torch.float8_e4m3fn, np.uint8, 0x7F),
    "fp8_e5m2": (ml_dtypes.float8_e5m2, torch.float8_e5m2, np.uint8, 0x7E),
}


def _bits_via_numpy_type(x: np.ndarray, np_type, udt) -> np.ndarray:
    with np.errstate(all="ignore"):
        return x.astype(np_type).view(udt)


def _bits_via_torch(x: np.ndarray, tdt, udt) -> np.ndarray:
    t = torch.from_numpy(x.copy()).to(tdt)
    if t.element_size() == 1:
        return t.view(torch.uint8).numpy().astype(udt)
    return t.view(torch.int16).numpy().view(udt)


def _canon_nan(x: np.ndarray, bits: np.ndarray, canon: int, nbits: int) -> np.ndarray:
    sign = (x.view(np.uint32) >> np.uint32(31)).astype(bits.dtype) << bits.dtype.type(nbits - 1)
    return np.where(np.isnan(x), sign | bits.dtype.type(canon), bits)


def encode_all(x: np.ndarray) -> dict[str, np.ndarray]:
    """Encode float32 ``x`` in every format with the reference libraries; check they agree."""
    out = {}
    nan_in = np.isnan(x)
    for name, (np_type, tdt, udt, canon) in FORMATS.items():
        nbits = np.dtype(udt).itemsize * 8
        ref = _canon_nan(x, _bits_via_numpy_type(x, np_type, udt), canon, nbits)
        tor = _bits_via_torch(x, tdt, udt)
        if name == "fp8_e4m3":
            # torch saturates overflow (and inf) to ±448; ml_dtypes gives NaN: both are kept
            sat = tor.copy()
            assert np.all(tor[np.abs(x) <= 464] == ref[np.abs(x) <= 464])
            out["fp8_e4m3_sat"] = _canon_nan(x, sat, canon, nbits)
        else:
            ok = ~nan_in
            mismatch = np.flatnonzero(tor[ok] != ref[ok])
            assert mismatch.size == 0, (name, x[ok][mismatch[:5]], tor[ok][mismatch[:5]], ref[ok][mismatch[:5]])
        if name == "fp16":
            ok = ~nan_in
            assert np.all(_bits_via_numpy_type(x, np.float16, np.uint16)[ok] == ref[ok])
        out[name] = ref
    return out


def edge_inputs() -> np.ndarray:
    vals: list[np.ndarray] = []
    f32 = np.float32
    for name, (np_type, _tdt, udt, _canon) in FORMATS.items():
        nbits = np.dtype(udt).itemsize * 8
        pats = np.arange(0, 1 << (nbits - 1), dtype=np.uint32).astype(udt)
        with np.errstate(invalid="ignore"):
            v = pats.view(np_type).astype(np.float64)
        finite = np.isfinite(v)
        v = v[finite]
        man_bits = {"fp16": 10, "bf16": 7, "fp8_e4m3": 3, "fp8_e5m2": 2}[name]
        mant = pats[finite].astype(np.uint32) & np.uint32((1 << man_bits) - 1)
        # a few mantissas per exponent (both parities, the ends) for 16-bit formats; all for FP8
        keep = np.ones(v.size - 1, bool) if nbits == 8 else np.isin(mant[:-1], [0, 1, 2, 3, (1 << man_bits) - 2,
                                                                                 (1 << man_bits) - 1])
        mid = ((v[:-1] + v[1:]) / 2)[keep].astype(f32)  # exact in float32
        vals += [mid, np.nextafter(mid, f32(np.inf)), np.nextafter(mid, f32(0))]
        top = f32(v[-1])  # largest finite
        spacing = v[-1] - v[-2]
        first_overflow = f32(v[-1] + spacing / 2)  # the tie at the top: rounds to even = overflow
        with np.errstate(over="ignore"):
            vals.append(np.array([top, first_overflow, np.nextafter(first_overflow, f32(0)),
                                  np.nextafter(first_overflow, f32(np.inf)), f32(v[-1] + spacing),
                                  f32(2 * v[-1])], f32))
        tiny = f32(v[1])  # smallest subnormal
        vals.append(np.array([tiny, tiny / 2, np.nextafter(tiny / 2, f32(1)), np.nextafter(tiny / 2, f32(0)),
                              tiny * f32(1.5), tiny / 4, f32(v[1 << man_bits]),  # smallest normal
                              np.nextafter(f32(v[1 << man_bits]), f32(0))], f32))
    specials = np.array([0x00000000, 0x7F800000, 0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0x7FA00000, 0x7F80FFFF,
                         0x00000001, 0x00400000, 0x007FFFFF, 0x00800000, 0x3F800000, 0x7F7FFFFF, 0x477FE000,
                         0x477FF000, 0x477FEFFF, 0x43E80000, 0x43E7FFFF, 0x43E80001, 0x7F7F8000, 0x7F7F7FFF],
                        np.uint32).view(f32)
    vals.append(specials)
    allv = np.concatenate(vals).astype(f32)
    allv = np.concatenate([allv, -allv])
    return np.unique(allv.view(np.uint32))  # sorted, unique bit patterns


def make(out_dir: Path) -> list[Path]:
    data: dict[str, np.ndarray] = {}
    for name, (np_type, tdt, udt, _canon) in FORMATS.items():
        nbits = np.dtype(udt).itemsize * 8
        pats = np.arange(1 << nbits, dtype=np.uint32).astype(udt)
        dec = pats.view(np_type).astype(np.float32)
        if nbits == 16:
            tdec = torch.from_numpy(pats.view(np.int16).copy()).view(tdt).to(torch.float32).numpy()
        else:
            tdec = torch.from_numpy(pats.copy()).view(tdt).to(torch.float32).numpy()
        ok = ~np.isnan(dec)
        assert np.array_equal(np.isnan(dec), np.isnan(tdec))
        assert np.array_equal(dec[ok].view(np.uint32), tdec[ok].view(np.uint32))
        data[f"decode_{name}"] = dec.view(np.uint32)
    x = random_inputs().view(np.float32)
    data["random_sha256"] = np.frombuffer(hashlib.sha256(x.tobytes()).digest(), np.uint8)
    for k, v in encode_all(x).items():
        # all 2^20 outputs by digest (equal digests = equal bits), the first 2^16 in full for diagnosis
        data[f"encode_random_{k}_sha256"] = np.frombuffer(hashlib.sha256(v.tobytes()).digest(), np.uint8)
        data[f"encode_random_{k}"] = v[:N_STORED]
    e = edge_inputs()
    data["edge_inputs"] = e
    for k, v in encode_all(e.view(np.float32)).items():
        data[f"encode_edge_{k}"] = v
    path = out_dir / "formats.npz"
    np.savez_compressed(path, **data, **meta("tools/golden/formats.py"))
    return [path]
