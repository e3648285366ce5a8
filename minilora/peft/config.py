"""``LoraConfig``: the hyper-parameters of LoRA, with PEFT's names, defaults and validation.

LoRA (Hu et al. 2021, arXiv 2106.09685, eq. 3) adds ``ΔW = s · B A`` to a frozen weight
``W0 ∈ R^{d×k}`` with ``B ∈ R^{d×r}``, ``A ∈ R^{r×k}`` and ``s = lora_alpha / r``; rsLoRA
(Kalajdzievski 2023, arXiv 2312.03732) uses ``s = lora_alpha / √r`` instead. The defaults follow
PEFT 0.21.2's ``LoraConfig`` (r = 8, lora_alpha = 8, lora_dropout = 0, init_lora_weights = True,
use_rslora = False). ``target_modules`` is matched as PEFT does: a sequence of names matches a module
whose dotted name equals one of them or ends in ``"." + name``; a string is a regular expression that
must match the whole dotted name (``re.fullmatch``); ``"all-linear"`` means every ``Linear`` except the
output layer ``lm_head``.

Departures from PEFT: ``init_lora_weights`` also accepts the teaching variants ``"zero_A"`` (A = 0,
B random), ``"zeros"`` (both zero) and ``"random"`` (both random), which PEFT does not have, and does not
accept PEFT's ``False``/``"olora"``/``"loftq"``/... ; there is no ``bias``/``modules_to_save``/DoRA.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field

#: accepted values of ``init_lora_weights`` (True is PEFT's default: A Kaiming-uniform, B = 0)
INIT_CHOICES = (True, "gaussian", "pissa", "zero_A", "zeros", "random")


def _check_init(value: object) -> bool | str:
    if isinstance(value, bool):
        if value is True:
            return True
    elif isinstance(value, str) and value in INIT_CHOICES:
        return value
    raise ValueError(f"init_lora_weights must be one of {INIT_CHOICES}, got {value!r}")


def check_lora_hyperparameters(r: object, lora_alpha: object, lora_dropout: object) -> None:
    """Raise ValueError/TypeError unless ``r ≥ 1`` is an int, ``lora_alpha > 0``, ``0 ≤ lora_dropout < 1``."""
    if isinstance(r, bool) or not hasattr(r, "__index__"):
        raise TypeError(f"r must be an integer >= 1, got {r!r} of type {type(r).__name__}")
    if operator.index(r) < 1:
        raise ValueError(f"r must be an integer >= 1, got {r!r}")
    if isinstance(lora_alpha, bool) or not isinstance(lora_alpha, (int, float)):
        raise TypeError(f"lora_alpha must be a positive number, got {lora_alpha!r}")
    if not (math.isfinite(lora_alpha) and lora_alpha > 0):
        raise ValueError(f"lora_alpha must be a positive finite number, got {lora_alpha!r}")
    if isinstance(lora_dropout, bool) or not isinstance(lora_dropout, (int, float)):
        raise TypeError(f"lora_dropout must be a number in [0, 1), got {lora_dropout!r}")
    if not 0.0 <= lora_dropout < 1.0:
        raise ValueError(f"lora_dropout must be in [0, 1), got {lora_dropout!r}")


def lora_scaling(r: int, lora_alpha: float, use_rslora: bool = False) -> float:
    """The factor ``s`` in ``ΔW = s · B A``: ``lora_alpha / r``, or ``lora_alpha / √r`` with rsLoRA.

    >>> lora_scaling(8, 16), lora_scaling(4, 8, use_rslora=True)
    (2.0, 4.0)
    """
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


@dataclass(frozen=True)
class LoraConfig:
    """LoRA hyper-parameters, named as in PEFT.

    Parameters
    ----------
    r : int
        Rank of the update ``B A`` (``A`` is (r, in_features), ``B`` is (out_features, r)); ``r ≥ 1``.
    lora_alpha : float
        Numerator of the scaling ``s = lora_alpha / r`` (``/ √r`` with ``use_rslora``); ``> 0``.
    lora_dropout : float
        Dropout probability on the input of the LoRA path only, in [0, 1).
    target_modules : tuple of str, or str
        Module names (exact or dotted suffix), a regular expression for the whole dotted name, or
        ``"all-linear"``.
    init_lora_weights : bool or str
        One of :data:`INIT_CHOICES`.
    use_rslora : bool
        Use the rank-stabilized scaling ``lora_alpha / √r``.
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] | str = field(default=("q_proj", "v_proj"))
    init_lora_weights: bool | str = True
    use_rslora: bool = False

    def __post_init__(self) -> None:
        check_lora_hyperparameters(self.r, self.lora_alpha, self.lora_dropout)
        object.__setattr__(self, "r", operator.index(self.r))
        object.__setattr__(self, "init_lora_weights", _check_init(self.init_lora_weights))
        if not isinstance(self.use_rslora, bool):
            raise TypeError(f"use_rslora must be True or False, got {self.use_rslora!r}")
        tm = self.target_modules
        if isinstance(tm, str):
            if not tm:
                raise ValueError("target_modules must not be empty, got ''")
            if tm != "all-linear":
                try:
                    re.compile(tm)
                except re.error as err:
                    raise ValueError(
                        f"target_modules {tm!r} is not a valid regular expression: {err}"
                    ) from err
        else:
            try:
                names = tuple(tm)
            except TypeError:
                raise TypeError(
                    "target_modules must be a sequence of module names, a regex string or 'all-linear', "
                    f"got {tm!r}"
                ) from None
            if not names or not all(isinstance(n, str) and n for n in names):
                raise ValueError(
                    f"target_modules must be a non-empty sequence of non-empty names, got {tm!r}"
                )
            object.__setattr__(self, "target_modules", names)

    @property
    def scaling(self) -> float:
        """``lora_alpha / r`` (or ``lora_alpha / √r`` with rsLoRA)."""
        return lora_scaling(self.r, self.lora_alpha, self.use_rslora)

    def matches(self, name: str) -> bool:
        """Whether the module called ``name`` (dotted, e.g. ``blocks.0.attn.q_proj``) is a target.

        ``"all-linear"`` matches every name except ``lm_head`` (the caller checks that it is a Linear).
        """
        tm = self.target_modules
        if tm == "all-linear":
            return name.split(".")[-1] != "lm_head"
        if isinstance(tm, str):
            return re.fullmatch(tm, name) is not None
        return name in tm or any(name.endswith("." + t) for t in tm)


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Trainable parameters LoRA adds to one (out_features, in_features) weight: ``r · (in + out)``.

    >>> lora_parameter_count(12288, 12288, 4)   # one GPT-3 175B attention projection
    98304
    """
    return r * (in_features + out_features)
