"""The configurations of bottleneck adapters, AdapterHub's names: ``BnConfig``, ``DoubleSeqBnConfig`` (Houlsby
et al. 2019), ``SeqBnConfig`` (Pfeiffer et al. 2021); the method itself is :mod:`minilora.peft.adapters`.

A configuration checks its own values (a positive ``reduction_factor``, a known ``non_linearity`` and
``init_weights``, at least one adapter per block); :meth:`BnConfig.bottleneck_size` applies AdapterHub's rule
``m = int(hidden_size // reduction_factor)`` and, unlike AdapterHub (which silently uses m = 1), refuses a factor
that leaves no hidden unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from minilora.peft.layers import ACTIVATIONS

INIT_WEIGHTS = ("bert", "mam_adapter", "houlsby")


@dataclass(frozen=True)
class BnConfig:
    """A sequential bottleneck adapter, AdapterHub's ``BnConfig`` (the subset minilora implements).

    Parameters
    ----------
    mh_adapter : adapter after the attention sublayer.  output_adapter : adapter after the MLP sublayer.
    reduction_factor : ``m = n_embd // reduction_factor``; a number, or a mapping from layer index (as a string)
        to a number with a ``"default"`` entry (AdapterHub's form).
    non_linearity : one of :data:`minilora.peft.layers.ACTIVATIONS` (``"swish"``, ``"relu"``, ...).
    original_ln_before : the adapter reads the sublayer output plus the block residual (Pfeiffer).
    init_weights : ``"bert"`` | ``"mam_adapter"`` | ``"houlsby"``.  scaling : ``s``.
    leave_out : layer indices without adapters.
    """

    mh_adapter: bool
    output_adapter: bool
    reduction_factor: float | Mapping[str, float]
    non_linearity: str
    original_ln_before: bool = False
    init_weights: str = "bert"
    scaling: float = 1.0
    leave_out: tuple[int, ...] = field(default=())
    architecture: ClassVar[str] = "bottleneck"

    def __post_init__(self) -> None:
        for name in ("mh_adapter", "output_adapter", "original_ln_before"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (self.mh_adapter or self.output_adapter):
            raise ValueError("mh_adapter and output_adapter are both False: the config adds no adapter")
        factors = dict(self.reduction_factor) if isinstance(self.reduction_factor, Mapping) else {"default": None}
        for key, value in factors.items():
            value = self.reduction_factor if value is None else value
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                         and value > 0):
                raise ValueError(f"reduction_factor must be a positive number (or a mapping of them), got "
                                 f"{self.reduction_factor!r}" + ("" if value is self.reduction_factor
                                                                  else f" (entry {key!r})"))
        if isinstance(self.reduction_factor, Mapping):
            object.__setattr__(self, "reduction_factor", {str(k): v for k, v in self.reduction_factor.items()})
        if not isinstance(self.non_linearity, str) or self.non_linearity.lower() not in ACTIVATIONS:
            raise ValueError(f"non_linearity must be one of {sorted(ACTIVATIONS)}, got {self.non_linearity!r}")
        if self.init_weights not in INIT_WEIGHTS:
            raise ValueError(f"init_weights must be one of {INIT_WEIGHTS}, got {self.init_weights!r}")
        if isinstance(self.scaling, bool) or not isinstance(self.scaling, (int, float)) \
                or not math.isfinite(self.scaling):
            raise ValueError(f"scaling must be a finite number, got {self.scaling!r}")
        try:
            leave_out = tuple(int(i) for i in self.leave_out)
        except (TypeError, ValueError):
            raise TypeError(f"leave_out must be a sequence of layer indices, got {self.leave_out!r}") from None
        object.__setattr__(self, "leave_out", leave_out)

    def reduction_for(self, layer: int) -> float:
        """The reduction factor of ``layer`` (AdapterHub's mapping rule: the layer's entry, else ``default``)."""
        rf = self.reduction_factor
        if not isinstance(rf, Mapping):
            return rf
        if str(layer) in rf:
            return rf[str(layer)]
        if "default" not in rf:
            raise ValueError(f"reduction_factor {rf!r} has no entry for layer {layer} and no 'default'")
        return rf["default"]

    def bottleneck_size(self, layer: int, hidden_size: int) -> int:
        """``m = int(hidden_size // reduction_factor)`` (AdapterHub's rule), at least 1 or a ValueError."""
        m = int(hidden_size // self.reduction_for(layer))
        if m < 1:
            raise ValueError(f"reduction_factor={self.reduction_for(layer)!r} leaves no hidden unit in layer {layer}: "
                             f"{hidden_size} // {self.reduction_for(layer)!r} = {m}; it must be at most {hidden_size}")
        return m


@dataclass(frozen=True)
class DoubleSeqBnConfig(BnConfig):
    """Houlsby et al. 2019: adapters after attention and after the MLP, swish, ``reduction_factor=16``."""

    mh_adapter: bool = True
    output_adapter: bool = True
    reduction_factor: float | Mapping[str, float] = 16
    non_linearity: str = "swish"
    original_ln_before: bool = False


@dataclass(frozen=True)
class SeqBnConfig(BnConfig):
    """Pfeiffer et al. 2021: one adapter, after the MLP, reading ``h + x``; relu, ``reduction_factor=16``."""

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: float | Mapping[str, float] = 16
    non_linearity: str = "relu"
    original_ln_before: bool = True


__all__ = ["BnConfig", "DoubleSeqBnConfig", "INIT_WEIGHTS", "SeqBnConfig"]
