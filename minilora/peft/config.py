"""``LoraConfig``: the hyper-parameters of LoRA, with PEFT's names, defaults and validation.

LoRA (Hu et al. 2021, arXiv 2106.09685, eq. 3) adds ``ΔW = s · B A`` to a frozen weight
``W0 ∈ R^{d×k}`` with ``B ∈ R^{d×r}``, ``A ∈ R^{r×k}`` and ``s = lora_alpha / r``; rsLoRA
(Kalajdzievski 2023, arXiv 2312.03732) uses ``s = lora_alpha / √r`` instead. The defaults follow
PEFT 0.21.2's ``LoraConfig`` (r = 8, lora_alpha = 8, lora_dropout = 0, init_lora_weights = True,
use_rslora = False, modules_to_save = None). ``target_modules`` is matched as PEFT does: a sequence of
names matches a module whose dotted name equals one of them or ends in ``"." + name``; a string is a
regular expression that must match the whole dotted name (``re.fullmatch``); ``"all-linear"`` means every
``Linear`` except the output layer ``lm_head``. ``modules_to_save`` is matched as PEFT matches it: a
module whose dotted name ends with one of the strings (plain ``str.endswith``, so ``"head"`` also matches
``lm_head``).

Numbers: ``lora_alpha`` and ``lora_dropout`` accept any real number (``numbers.Real``: Python and NumPy
ints and floats, not bool) and are stored as Python numbers, so an ``np.arange`` sweep works and the
``adapter_config.json`` written reads as PEFT's: integers stay integers (``np.int64(16)`` → ``16``), a NumPy
float becomes the shortest decimal that rounds to it (``np.float32(0.1)`` → ``0.1``).

``init_lora_weights``: PEFT's ``True`` (A Kaiming-uniform, B = 0), ``False`` (both keep ``nn.Linear``'s
Kaiming-uniform init: A ~ U(±1/√in), B ~ U(±1/√r), since ``lora_B`` is an ``nn.Linear(r, out)``),
``"gaussian"`` (A ~ N(0, (1/r)²), B = 0), ``"pissa"`` (Meng et al. 2024, arXiv 2404.02948) and ``"olora"``
(Büyükakyüz 2024, arXiv 2406.01775), which take ``s·B0A0`` out of the base weight; and three teaching
variants PEFT does not have: ``"zero_A"`` (A = 0, B random), ``"zeros"`` (both zero) and ``"random"`` (both
random: the same draws as ``False``). PEFT's other creation-time values (``"pissa_niter_16"``, ``"loftq"``,
``"eva"``, ``"corda"``, ...) need data or algorithms minilora does not have: they cannot create an adapter
here, but an adapter file that carries them loads (:func:`load_time_init`).

Departures from PEFT: no ``bias``/DoRA/``rank_pattern``/``layers_to_transform``.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

#: accepted values of ``init_lora_weights`` (True is PEFT's default: A Kaiming-uniform, B = 0)
INIT_CHOICES = (True, False, "gaussian", "pissa", "olora", "zero_A", "zeros", "random")
#: initializations that move ``s·B0A0`` out of the base weight (W ← W − s·B0A0): the adapter is relative to
#: the residual, so a file of one must rebuild the residual, or be converted to plain LoRA, to be loaded
RESIDUAL_INITS = ("pissa", "olora")
#: minilora's teaching initializations and the value written for them into adapter_config.json, which PEFT
#: must accept (it only uses the key to create the layers, then loads the weights over them)
TEACHING_INITS = {"random": False, "zero_A": True, "zeros": True}
#: PEFT initializations that need data or a quantizer (LoftQ, CorDA, LoRA-GA) and change the base weights
#: when PEFT creates the adapter; minilora cannot redo that change
BASE_CHANGING_INITS = ("loftq", "corda", "lora_ga")
#: PEFT initializations that leave the base weights alone (the file's A, B are all there is)
PLAIN_INITS = ("eva", "orthogonal", "mica")


def _check_init(value: object) -> bool | str:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value in INIT_CHOICES:
        return value
    hint = " (PEFT's value for an existing adapter file: load_adapter accepts it)" if isinstance(value, str) else ""
    raise ValueError(f"init_lora_weights must be one of {INIT_CHOICES}, got {value!r}{hint}")


def load_time_init(value: object, where: str = "adapter") -> bool | str:
    """The initialization minilora creates the layers with when it *loads* an adapter made with ``value``.

    The weights of the file are loaded over the layers anyway, so only inits that change the base weight
    matter: ``"pissa"`` and ``"olora"`` rebuild their residual base; PEFT's ``"pissa_niter_K"`` (a randomized
    SVD) is rebuilt with the exact SVD (warns: the residual agrees to the accuracy of PEFT's randomized SVD);
    ``"loftq"``, ``"corda"``, ``"lora_ga"`` and unknown strings load onto the base weights as given (warns:
    minilora cannot redo the change of the base those made); every other value loads as ``True``.
    """
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, str) and value in INIT_CHOICES):
        return _check_init(value)
    if not isinstance(value, str):
        raise ValueError(f"{where}: init_lora_weights must be a bool or a string, got {value!r}")
    if value.startswith("pissa_niter_"):
        warnings.warn(
            f"{where}: init_lora_weights={value!r} (PEFT's randomized SVD): minilora rebuilds the PiSSA residual "
            "base weight with the exact SVD; the two agree to the accuracy of the randomized SVD",
            UserWarning, stacklevel=3)
        return "pissa"
    if value in PLAIN_INITS:
        return True
    kind = "changes the base weights when PEFT creates the adapter" if value in BASE_CHANGING_INITS else \
        "is unknown to minilora and may have changed the base weights"
    warnings.warn(
        f"{where}: init_lora_weights={value!r} {kind}; minilora cannot rebuild that change and applies the "
        "adapter to the base weights it is given: load it onto the base model it was trained with",
        UserWarning, stacklevel=3)
    return True


def as_real(value: object, name: str) -> int | float:
    """``value`` as a Python number: ints stay ints, NumPy floats become their shortest decimal.

    >>> as_real(np.int64(16), "lora_alpha"), as_real(np.float32(0.1), "lora_dropout"), as_real(8, "x")
    (16, 0.1, 8)
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number (int or float, not bool), got {value!r} "
                        f"of type {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, np.floating):
        return float(str(value))  # the shortest decimal that rounds to it: np.float32(0.1) -> 0.1
    return float(value)


def check_lora_hyperparameters(r: object, lora_alpha: object, lora_dropout: object) -> tuple[int, int | float, float]:
    """Validate and return ``(r, lora_alpha, lora_dropout)`` as Python numbers.

    Raises TypeError/ValueError unless ``r ≥ 1`` is an integer, ``lora_alpha > 0`` is finite and
    ``0 ≤ lora_dropout < 1`` (both real numbers, not bool).
    """
    if isinstance(r, (bool, np.bool_)) or not hasattr(r, "__index__"):
        raise TypeError(f"r must be an integer >= 1, got {r!r} of type {type(r).__name__}")
    if operator.index(r) < 1:
        raise ValueError(f"r must be an integer >= 1, got {r!r}")
    alpha = as_real(lora_alpha, "lora_alpha")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"lora_alpha must be a positive finite number, got {lora_alpha!r}")
    dropout = as_real(lora_dropout, "lora_dropout")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora_dropout must be in [0, 1), got {lora_dropout!r}")
    return operator.index(r), alpha, float(dropout)


def lora_scaling(r: int, lora_alpha: float, use_rslora: bool = False) -> float:
    """The factor ``s`` in ``ΔW = s · B A``: ``lora_alpha / r``, or ``lora_alpha / √r`` with rsLoRA.

    >>> lora_scaling(8, 16), lora_scaling(4, 8, use_rslora=True)
    (2.0, 4.0)
    """
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


def _names(value: object, arg: str) -> tuple[str, ...]:
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(f"{arg} must be a sequence of module names, got {value!r}") from None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{arg} must be a non-empty sequence of non-empty names, got {value!r}")
    return names


@dataclass(frozen=True)
class LoraConfig:
    """LoRA hyper-parameters, named as in PEFT.

    Parameters
    ----------
    r : int
        Rank of the update ``B A`` (``A`` is (r, in_features), ``B`` is (out_features, r)); ``r ≥ 1``.
    lora_alpha : int or float
        Numerator of the scaling ``s = lora_alpha / r`` (``/ √r`` with ``use_rslora``); ``> 0``.
    lora_dropout : float
        Dropout probability on the input of the LoRA path only, in [0, 1).
    target_modules : tuple of str, or str
        Module names (exact or dotted suffix), a regular expression for the whole dotted name, or
        ``"all-linear"``.
    init_lora_weights : bool or str
        One of :data:`INIT_CHOICES` (see the module docstring).
    use_rslora : bool
        Use the rank-stabilized scaling ``lora_alpha / √r``.
    modules_to_save : tuple of str or None
        Modules (other than the LoRA targets) trained in full and saved in the adapter file, as PEFT's
        ``modules_to_save`` (e.g. ``("lm_head",)``); matched by ``str.endswith`` as PEFT does.
    """

    r: int = 8
    lora_alpha: int | float = 8
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] | str = field(default=("q_proj", "v_proj"))
    init_lora_weights: bool | str = True
    use_rslora: bool = False
    modules_to_save: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        r, alpha, dropout = check_lora_hyperparameters(self.r, self.lora_alpha, self.lora_dropout)
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "lora_alpha", alpha)
        object.__setattr__(self, "lora_dropout", dropout)
        object.__setattr__(self, "init_lora_weights", _check_init(self.init_lora_weights))
        if not isinstance(self.use_rslora, (bool, np.bool_)):
            raise TypeError(f"use_rslora must be True or False, got {self.use_rslora!r}")
        object.__setattr__(self, "use_rslora", bool(self.use_rslora))
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
            object.__setattr__(self, "target_modules", _names(tm, "target_modules"))
        mts = self.modules_to_save
        if mts is not None:
            object.__setattr__(self, "modules_to_save", _names((mts,) if isinstance(mts, str) else mts,
                                                               "modules_to_save"))

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

    def saves(self, name: str) -> bool:
        """Whether the module called ``name`` is in ``modules_to_save`` (PEFT: ``name.endswith(key)``)."""
        return bool(name) and any(name.endswith(key) for key in self.modules_to_save or ())


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Trainable parameters LoRA adds to one (out_features, in_features) weight: ``r · (in + out)``.

    >>> lora_parameter_count(12288, 12288, 4)   # one GPT-3 175B attention projection
    98304
    """
    return r * (in_features + out_features)
