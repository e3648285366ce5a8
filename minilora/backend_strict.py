"""A strict, device-emulating array backend for the tests: NumPy underneath, CuPy's rules on top.

``minilora.backend.use("strict")`` makes :func:`minilora.backend.xp` return :data:`namespace`, a module-like
object with NumPy's functions whose arrays (:class:`StrictArray`) behave like arrays on a GPU:

* they refuse to mix with plain NumPy arrays: ``strict + numpy_array``, ``xp.concatenate([strict,
  numpy_array])``, ``strict[numpy_index]`` raise ``TypeError`` (CuPy: "Unsupported type numpy.ndarray");
* they refuse implicit conversion to host: ``np.asarray(strict)``, ``np.exp(strict)`` or any other NumPy
  function called on one raises ``TypeError`` (CuPy: "Implicit conversion to a NumPy array is not allowed");
  ``float()``, ``int()`` and ``bool()`` work on size-1 arrays only, as on CuPy;
* moving data is explicit: ``xp.asarray(numpy_array)`` copies to the "device" (a later change of the host
  array does not show), ``minilora.backend.to_numpy(strict)`` / ``strict.get()`` copy back.

So any ``np.`` call left in array code fails under it: a leak that would crash (or silently copy) on a GPU
fails on a CPU-only CI run. Results are NumPy's, bit for bit: a test can compare the strict backend with
the NumPy backend exactly. Deliberately stricter than CuPy in one way: NumPy functions are never dispatched
to the strict namespace (CuPy implements ``__array_function__``, so ``np.concatenate`` of CuPy arrays works
there); and ``xp.random`` is refused (draw with a host ``numpy.random.Generator`` and move the numbers with
``xp.asarray``, so every backend gets the same numbers).

Not emulated: streams, asynchronous execution, device memory limits.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

_HOST_ERROR = ("implicit conversion of a strict-backend (device) array to NumPy is not allowed, as on CuPy: "
               "use minilora.backend.to_numpy(a) for host work")
_MIX_ERROR = ("a NumPy array cannot be mixed with strict-backend (device) arrays, as on CuPy: move it with "
              "xp.asarray(a) first (xp = minilora.backend.xp())")
#: ndarray attributes that would expose host memory or bypass the rules
_REFUSED_ATTRIBUTES = frozenset({"data", "ctypes", "flat", "tobytes", "tofile", "dump", "dumps", "tostring",
                                 "__array_interface__", "__array_struct__", "__dlpack__", "__buffer__"})
#: NumPy submodules the namespace does not offer
_REFUSED_MODULES = frozenset({"random", "testing", "ctypeslib", "ma", "rec", "char", "polynomial"})
#: namespace functions that move host data to the device (NumPy arrays allowed as input; copied)
_TRANSFERS = frozenset({"asarray", "array", "asanyarray", "ascontiguousarray"})


def _operand(x: Any) -> Any:
    """An operand for NumPy: a strict array unwrapped, a NumPy array refused, anything else as is."""
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(_MIX_ERROR)
    if isinstance(x, (list, tuple)):
        return type(x)(_operand(v) for v in x)
    if isinstance(x, dict):
        return {k: _operand(v) for k, v in x.items()}
    return x


def _wrap(r: Any) -> Any:
    """A NumPy result as the device would return it: arrays and NumPy scalars become StrictArrays."""
    if isinstance(r, np.ndarray):
        return StrictArray(r)
    if isinstance(r, np.generic):  # CuPy returns 0-d arrays where NumPy returns scalars
        return StrictArray(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    return r


def _strict_call(fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return _wrap(fn(*_operand(args), **_operand(kwargs)))
    call.__name__ = getattr(fn, "__name__", "function")
    call.__doc__ = getattr(fn, "__doc__", None)
    return call


def _binary(name: str):
    def op(self: StrictArray, other: Any) -> Any:
        return _wrap(getattr(self._a, name)(_operand(other)))
    op.__name__ = name
    return op


def _inplace(name: str):
    def op(self: StrictArray, other: Any) -> StrictArray:
        getattr(self._a, name)(_operand(other))
        return self
    op.__name__ = name
    return op


def _unary(name: str):
    def op(self: StrictArray) -> Any:
        return _wrap(getattr(self._a, name)())
    op.__name__ = name
    return op


class StrictArray:
    """An array on the emulated device: a NumPy array that follows CuPy's rules (see the module docstring).

    ``base`` is the host buffer it lives in (never None), so that ``a.base.base...`` chains end at the one
    NumPy array that owns the memory, as :mod:`minilora.peft.memory` counts it.
    """

    __slots__ = ("_a",)
    __array_ufunc__ = None  # NumPy ufuncs and ndarray operators refuse it (ndarray + strict -> our __radd__)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, a: np.ndarray) -> None:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"StrictArray wraps a numpy.ndarray, got {type(a).__name__}")
        object.__setattr__(self, "_a", a)

    # ------------------------------------------------------------------ the rules
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(_HOST_ERROR)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(f"numpy.{func.__name__} called on a strict-backend (device) array: call "
                        f"xp.{func.__name__} (xp = minilora.backend.xp()) or convert with backend.to_numpy")

    def get(self) -> np.ndarray:
        """A host copy (NumPy array), as ``cupy.ndarray.get``."""
        return self._a.copy()

    # ------------------------------------------------------------------ attributes and methods
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _REFUSED_ATTRIBUTES:
            raise AttributeError(f"strict-backend arrays have no {name!r} (it would expose host memory)")
        attr = getattr(self._a, name)
        return _strict_call(attr) if callable(attr) else _wrap(attr)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "shape":
            self._a.shape = value
            return
        raise AttributeError(f"cannot set {name!r} on a strict-backend array")

    @property
    def T(self) -> StrictArray:
        return StrictArray(self._a.T)

    @property
    def base(self) -> np.ndarray:
        return self._a if self._a.base is None else self._a.base

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_operand(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_operand(key)] = _operand(value)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __index__(self) -> int:
        return self._a.__index__()

    def __complex__(self) -> complex:
        return complex(self._a)

    def __repr__(self) -> str:
        return "strict " + np.array_repr(self._a)

    def __str__(self) -> str:
        return str(self._a)

    def __format__(self, spec: str) -> str:
        return format(self._a.item(), spec) if spec and self._a.size == 1 else format(str(self), spec)

    def __copy__(self) -> StrictArray:
        return StrictArray(self._a.copy())

    def __deepcopy__(self, memo: dict) -> StrictArray:
        return StrictArray(self._a.copy())

    def __reduce__(self):
        raise TypeError("strict-backend arrays cannot be pickled (move them to the host first)")



for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift",
              "rshift"):
    setattr(StrictArray, f"__{_name}__", _binary(f"__{_name}__"))
    setattr(StrictArray, f"__r{_name}__", _binary(f"__r{_name}__"))
    setattr(StrictArray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(StrictArray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(StrictArray, f"__{_name}__", _unary(f"__{_name}__"))
del _name


class _StrictUfunc:
    """A NumPy ufunc on strict arrays (``xp.add(a, b)``, ``xp.maximum.reduce(a)``)."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap(self._ufunc(*_operand(args), **_operand(kwargs)))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ufunc, name)
        return _strict_call(attr) if callable(attr) else attr

    def __repr__(self) -> str:
        return f"<strict ufunc {self.__name__!r}>"


class StrictNamespace(types.ModuleType):
    """NumPy's namespace for :class:`StrictArray`: ``xp.zeros``, ``xp.exp``, ``xp.concatenate``, ..."""

    ndarray = StrictArray

    def __init__(self, name: str = "strict", module: types.ModuleType = np) -> None:
        super().__init__(name, f"NumPy's {module.__name__} on the strict device-emulating backend")
        self._module = module

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._module is np and name in _REFUSED_MODULES:
            raise AttributeError(f"the strict backend has no {name!r}" + (
                ": draw with a numpy.random.Generator on the host and move the numbers with xp.asarray"
                if name == "random" else ""))
        attr = getattr(self._module, name)
        if isinstance(attr, types.ModuleType):
            return StrictNamespace(f"{self.__name__}.{name}", attr)
        if isinstance(attr, np.ufunc):
            return _StrictUfunc(attr)
        if isinstance(attr, type) or not callable(attr):  # dtypes, finfo, constants (pi, inf, newaxis)
            return attr
        if self._module is np and name in _TRANSFERS:
            return _transfer(attr)
        return _strict_call(attr)

    def asnumpy(self, a: Any) -> np.ndarray:
        """``cupy.asnumpy``: a host copy."""
        return a.get() if isinstance(a, StrictArray) else np.array(a)

    def __repr__(self) -> str:
        return f"<strict backend namespace {self.__name__!r}>"


def _transfer(fn: Any) -> Any:
    """``xp.asarray`` and friends: host data (NumPy arrays, lists, scalars) copied onto the device."""

    def call(a: Any, *args: Any, **kwargs: Any) -> StrictArray:
        if isinstance(a, StrictArray):
            return _wrap(fn(a._a, *args, **_operand(kwargs)))
        host = fn(a, *args, **_operand(kwargs))
        return StrictArray(np.array(host, copy=True))  # a device copy: later host writes do not show

    call.__name__ = fn.__name__
    return call


def scatter_add(dst: StrictArray, idx: Any, src: Any) -> None:
    """``dst[idx] += src`` with repeated indices accumulating (``np.add.at`` on the device)."""
    np.add.at(_operand(dst), _operand(idx), _operand(src))


#: the namespace ``minilora.backend.use("strict")`` selects
namespace = StrictNamespace()

__all__ = ["StrictArray", "StrictNamespace", "namespace", "scatter_add"]
