"""The safetensors file format, read and written with the standard library and NumPy (no pickle, ever).

A ``.safetensors`` file is three parts::

    [ 8 bytes: N, unsigned little-endian ][ N bytes: JSON header ][ data: the tensors' bytes, back to back ]

The header maps each tensor name to ``{"dtype": "F32", "shape": [768, 2304], "data_offsets": [begin, end]}``
(offsets relative to the start of the data part) and may hold ``"__metadata__"``: a dict of strings
(transformers writes ``{"format": "pt"}``). The data is little-endian and C-ordered.

Nothing in a file is trusted before it is checked. :func:`read_header` validates what the reference
implementation validates, and says which file and what is wrong: the header length fits in the file and
under :data:`MAX_HEADER_BYTES`; the header is UTF-8 JSON starting with ``{``, without duplicate names;
every entry has a known dtype, a shape of non-negative integers and ``end - begin == prod(shape) ·
itemsize``; the tensors, sorted by offset, tile the data part exactly, with no gap, no overlap and no
trailing bytes (a truncated file fails here, before any tensor is read). :func:`read_tensor` then reads one
tensor into a fresh array, so a loader holds one tensor at a time besides its model.

:func:`write_file` writes a header padded with spaces to a multiple of 8 bytes (as the reference writer
does, so the data is aligned) and then each tensor; a tensor may be given as a :class:`LazyTensor` (shape,
dtype and a function that makes it) so that a whole state dict never has to exist at once. The file is
written under a temporary name and renamed when complete: an interrupted write leaves no half file.

Left out: the dtypes NumPy has no type for are read only for BF16 (decoded exactly to float32 with
:func:`minilora.formats.decode`); FP8 and the other exotic dtypes are refused with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: the reference implementation refuses headers larger than this (100 MB)
MAX_HEADER_BYTES = 100_000_000
#: safetensors dtype codes NumPy can hold (BF16 is stored as its uint16 bit patterns and decoded on read)
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
#: NumPy dtype -> safetensors code, for writing
CODES = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items() if k != "BF16"}


class SafetensorsError(ValueError):
    """A file that is not a valid safetensors file (the message names the file and the problem)."""


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: ``name``, ``dtype`` (safetensors code), ``shape``, and its byte range in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset of the first byte in the file
    end: int  # absolute offset one past the last byte

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class LazyTensor:
    """A tensor to write, made only when its turn comes: ``make()`` returns an array of ``shape``/``dtype``."""

    shape: tuple[int, ...]
    dtype: np.dtype
    make: Callable[[], np.ndarray]


def _fail(path: Path, what: str) -> SafetensorsError:
    return SafetensorsError(f"{path}: not a valid safetensors file: {what}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def _check_entry(path: Path, name: str, entry: Any) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _fail(path, f"tensor {name!r} must be an object with exactly dtype, shape and data_offsets, "
                          f"got {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise _fail(path, f"tensor {name!r} has dtype {dtype!r}; minilora reads {sorted(DTYPES)}")
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if not isinstance(shape, list) or not all(map(is_int, shape)):
        raise _fail(path, f"tensor {name!r} has shape {shape!r}; expected a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_int, offsets))
            and offsets[0] <= offsets[1]):
        raise _fail(path, f"tensor {name!r} has data_offsets {offsets!r}; expected [begin, end], begin <= end")
    expected = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        raise _fail(path, f"tensor {name!r} ({dtype}, shape {tuple(shape)}) needs {expected} bytes but "
                          f"data_offsets {offsets} span {offsets[1] - offsets[0]}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate the header of a safetensors file; return ``({name: TensorInfo}, metadata)``.

    Raises :class:`SafetensorsError` (a ValueError) naming the file and the problem, for any of the
    checks of the module docstring; reads only the header (8 + N bytes).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < 8:
            raise _fail(path, f"the file has {size} bytes, fewer than the 8-byte header length")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise _fail(path, f"header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
        if 8 + n > size:
            raise _fail(path, f"header length {n} runs past the end of the file ({size} bytes): truncated?")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _fail(path, f"the header is not UTF-8 ({err})") from None
    if not text.startswith("{"):
        raise _fail(path, f"the header must start with '{{', got {text[:20]!r}")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as err:
        raise _fail(path, f"the header is not valid JSON ({err})") from None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, f"__metadata__ must map strings to strings, got {metadata!r}")
    data_start, data_len = 8 + n, size - 8 - n
    entries = sorted(((name, *_check_entry(path, name, e)) for name, e in header.items()),
                     key=lambda t: (t[3], t[4]))
    tensors, pos = {}, 0
    for name, dtype, shape, begin, end in entries:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap of {begin - pos} bytes"
            raise _fail(path, f"tensor {name!r} at data_offsets [{begin}, {end}] {what}")
        pos = end
        tensors[name] = TensorInfo(name, dtype, shape, data_start + begin, data_start + end)
    if pos != data_len:
        what = (f"the file is truncated: the header describes {pos} data bytes, the file holds {data_len}"
                if pos > data_len else f"{data_len - pos} bytes after the last tensor belong to no tensor")
        raise _fail(path, what)
    return tensors, dict(metadata)


def read_tensor(f, info: TensorInfo) -> np.ndarray:
    """Read one tensor from the open binary file ``f``: a fresh native-endian array (BF16 → float32)."""
    stored = DTYPES[info.dtype]
    out = np.empty(info.shape, dtype=stored)
    f.seek(info.start)
    view = memoryview(out.reshape(-1).view(np.uint8))
    got = f.readinto(view) if out.size else 0
    if got != info.nbytes:
        raise SafetensorsError(f"{getattr(f, 'name', '<file>')}: tensor {info.name!r}: read {got} of "
                               f"{info.nbytes} bytes (the file changed while it was read?)")
    if info.dtype == "BF16":
        from minilora.formats import BF16, decode

        return decode(out, BF16)
    return out if stored.isnative else out.astype(stored.newbyteorder("="))


def load_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a (validated) file, by name: for small files and tests."""
    tensors, _ = read_header(path)
    with open(path, "rb") as f:
        return {name: read_tensor(f, info) for name, info in tensors.items()}


def _code(dtype: np.dtype, name: str) -> str:
    code = CODES.get(np.dtype(dtype).newbyteorder("="))
    if code is None:
        raise TypeError(f"tensor {name!r} has dtype {np.dtype(dtype)}, which safetensors cannot store; "
                        f"allowed: {sorted(str(d) for d in CODES)}")
    return code


def write_file(path: str | os.PathLike, tensors: Mapping[str, np.ndarray | LazyTensor],
               metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` (arrays or :class:`LazyTensor`, in this order) to a safetensors file; return its path.

    Each lazy tensor is made, checked against its declared shape and dtype, written and dropped, so peak
    memory is one tensor. The file appears under its name only once complete.
    """
    path = Path(path)
    header: dict[str, Any] = {}
    if metadata:
        bad = {k: v for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise TypeError(f"metadata must map strings to strings, got {bad!r}")
        header["__metadata__"] = dict(metadata)
    pos = 0
    for name, t in tensors.items():
        if name == "__metadata__" or not isinstance(name, str):
            raise ValueError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        nbytes = math.prod(t.shape) * np.dtype(t.dtype).itemsize
        header[name] = {"dtype": _code(t.dtype, name), "shape": list(t.shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data starts 8-byte aligned
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name, t in tensors.items():
                a = t.make() if isinstance(t, LazyTensor) else t
                a = np.asarray(a)
                if a.shape != tuple(t.shape) or a.dtype != np.dtype(t.dtype):
                    raise ValueError(f"tensor {name!r} was declared {tuple(t.shape)} {np.dtype(t.dtype)} "
                                     f"but made {a.shape} {a.dtype}")
                f.write(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


__all__ = ["DTYPES", "MAX_HEADER_BYTES", "LazyTensor", "SafetensorsError", "TensorInfo", "load_file",
           "read_header", "read_tensor", "write_file"]
