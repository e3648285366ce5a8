"""LoRA: a frozen ``Linear`` plus a trainable low-rank side path (Hu et al. 2021, arXiv 2106.09685).

Eq. (3) of the paper, with PEFT's names and PyTorch's (out, in) weight layout::

    y = x W0ᵀ + b + s · (dropout(x) Aᵀ) Bᵀ        W0 (d, k) frozen, A (r, k), B (d, r), s = α / r

so ``ΔW = s · B A`` (the blog writes ``A ∈ R^{d×r}`` and ``(W0 + AB)x``: both are wrong, SEED-NOTES
errata 1–2). With ``G = dL/dy`` and ``H = dropout(x)``, all rows flattened (llm.c-style backward)::

    dB = s · Gᵀ (H Aᵀ)        dA = s · (G B)ᵀ H        dx = G W0 + dropout'(s · (G B) A)

and no ``dW0`` is ever computed: that skipped matmul and the missing optimizer state for W0 are what
LoRA saves. ``merge()`` folds ``s · B A`` into W0 for inference (``W += (B @ A) · s`` as PEFT does);
``unmerge()`` subtracts it again, which is not bit-exact in float32 (PEFT's is not either).

Initializations (``init_lora_weights``): ``True`` = PEFT's default, A ~ U(±1/√k) (Kaiming-uniform with
a = √5, as ``nn.Linear``) and B = 0; ``"gaussian"``: A ~ N(0, (1/r)²), B = 0; ``"pissa"`` (Meng et al.
2024): A, B from the top-r SVD of W0 and W0 ← W0 − s·BA; and three teaching variants that PEFT does not
have: ``"zero_A"`` (A = 0, B ~ U(±1/√r), the mirror image of the default), ``"zeros"`` (both zero) and
``"random"`` (both random, so the model's output changes before any training).

Departures from PEFT: one adapter per layer (no adapter names), no LoRA bias, no DoRA; a merged layer
is for inference only (``backward`` refuses it, where PEFT would silently train a merged copy);
merging twice or unmerging an unmerged layer is a no-op with a warning, as in PEFT.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from minilora.nn import functional as F
from minilora.nn.module import Module
from minilora.nn.modules import Linear
from minilora.peft.config import _check_init, check_lora_hyperparameters, lora_scaling


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def init_lora_matrices(
    weight: np.ndarray,
    r: int,
    scaling: float,
    init_lora_weights: bool | str = True,
    seed: int | np.random.Generator | None = 0,
):
    """Initial ``A`` (r, in) and ``B`` (out, r) for a base ``weight`` (out, in), and the base weight to keep.

    Returns ``(A, B, W0)`` in ``weight.dtype``; ``W0`` is ``weight`` itself except for ``"pissa"``, where it
    is the residual ``weight − s·BA`` (a new array). Signs of the PiSSA singular vectors are fixed so that the
    largest-magnitude entry of each row of A is positive (PEFT leaves them to LAPACK).

    >>> A, B, W0 = init_lora_matrices(np.ones((3, 4), np.float32), r=2, scaling=1.0)
    >>> A.shape, B.shape, bool((B == 0).all()), bool((np.abs(A) <= 0.5).all())
    ((2, 4), (3, 2), True, True)
    """
    init = _check_init(init_lora_weights)
    rng = _rng(seed)
    out_f, in_f = weight.shape
    dt = weight.dtype
    uniform = lambda shape, fan_in: rng.uniform(-1.0, 1.0, shape) / math.sqrt(fan_in)  # Kaiming-uniform, a=√5
    A = np.zeros((r, in_f), dt)
    B = np.zeros((out_f, r), dt)
    if init in (True, "random"):
        A[...] = uniform((r, in_f), in_f)
    if init == "gaussian":
        A[...] = rng.normal(0.0, 1.0 / r, (r, in_f))
    if init in ("zero_A", "random"):
        B[...] = uniform((out_f, r), r)
    if init == "pissa":
        V, S, Uh = np.linalg.svd(weight.astype(np.float64), full_matrices=False)  # W = V diag(S) Uh
        root = np.sqrt(S[:r] / scaling)  # (r,)
        A64, B64 = root[:, None] * Uh[:r], V[:, :r] * root  # (r, in), (out, r)
        sign = np.sign(A64[np.arange(r), np.abs(A64).argmax(axis=1)])
        A64, B64 = A64 * sign[:, None], B64 * sign
        A[...], B[...] = A64, B64
        return A, B, (weight - scaling * (B @ A)).astype(dt)
    return A, B, weight


class LoRALinear(Module):
    """A frozen :class:`~minilora.nn.modules.Linear` with a trainable rank-``r`` update ``s · B A``.

    Parameters
    ----------
    base : Linear
        The layer to adapt, ``weight`` (out, in) and optional ``bias`` (out,). Its arrays are shared (not
        copied) and frozen; :meth:`unwrap` hands the layer back.
    r, lora_alpha, lora_dropout, init_lora_weights, use_rslora
        As in :class:`~minilora.peft.config.LoraConfig`; ``1 ≤ r ≤ min(in, out)``.
    seed : int or numpy.random.Generator
        Drives the initialization and then the dropout masks.

    Attributes
    ----------
    params / grads : dict
        ``weight``, ``bias`` (frozen: never in ``grads``), ``lora_A.weight`` (r, in),
        ``lora_B.weight`` (out, r).
    scaling : float
        ``lora_alpha / r`` (``/ √r`` with rsLoRA).
    merged : bool
        Whether ``s · B A`` is currently folded into ``weight``.
    """

    def __init__(
        self,
        base: Linear,
        r: int = 8,
        lora_alpha: float = 8,
        lora_dropout: float = 0.0,
        init_lora_weights: bool | str = True,
        use_rslora: bool = False,
        seed: int | np.random.Generator | None = 0,
    ) -> None:
        if not isinstance(base, Linear):
            raise TypeError(f"base must be a minilora.nn.modules.Linear, got {type(base).__name__}")
        check_lora_hyperparameters(r, lora_alpha, lora_dropout)
        out_f, in_f = base.params["weight"].shape
        if r > min(in_f, out_f):
            raise ValueError(
                f"r must be <= min(in_features, out_features) = {min(in_f, out_f)} for a "
                f"({out_f}, {in_f}) weight, got r={r}"
            )
        super().__init__()
        self.in_features, self.out_features = in_f, out_f
        self.r, self.lora_alpha, self.lora_dropout = int(r), lora_alpha, float(lora_dropout)
        self.use_rslora, self.init_lora_weights = bool(use_rslora), _check_init(init_lora_weights)
        self.scaling = lora_scaling(self.r, lora_alpha, self.use_rslora)
        self.merged = False
        self.rng = _rng(seed)
        object.__setattr__(self, "_base", base)  # kept for unwrap(), not a child: its params are ours
        weight = base.params["weight"]
        A, B, W0 = init_lora_matrices(weight, self.r, self.scaling, self.init_lora_weights, self.rng)
        if W0 is not weight:  # PiSSA: the base keeps the residual (in place, as PEFT does)
            weight[...] = W0
        self.add_param("weight", weight, trainable=False)
        if "bias" in base.params:
            self.add_param("bias", base.params["bias"], trainable=False)
        self.lora_A = Linear(in_f, self.r, bias=False, seed=0, dtype=weight.dtype)  # values set just below
        self.lora_B = Linear(self.r, out_f, bias=False, seed=0, dtype=weight.dtype)
        self.lora_A.params["weight"][...] = A
        self.lora_B.params["weight"][...] = B
        base.freeze()

    @property
    def weight(self) -> np.ndarray:
        """The frozen base weight W0 (out, in); holds W0 + s·BA while merged."""
        return self._params["weight"]

    @property
    def bias(self) -> np.ndarray | None:
        """The frozen base bias (out,), or None."""
        return self._params.get("bias")

    @property
    def A(self) -> np.ndarray:
        """``lora_A.weight``, (r, in)."""
        return self.lora_A.params["weight"]

    @property
    def B(self) -> np.ndarray:
        """``lora_B.weight``, (out, r)."""
        return self.lora_B.params["weight"]

    def delta_weight(self) -> np.ndarray:
        """``ΔW = (B @ A) · s``, (out, in), in the weight's dtype (PEFT's ``get_delta_weight``)."""
        return (self.B @ self.A) * self.scaling

    def merge(self) -> None:
        """Fold ``ΔW`` into ``weight`` in place; forward then runs the plain layer. Merged: warns, no-op."""
        if self.merged:
            warnings.warn("LoRALinear is already merged; merge() did nothing", stacklevel=2)
            return
        self._params["weight"] += self.delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        """Subtract ``ΔW`` again (the original up to float rounding). Not merged: warns, no-op."""
        if not self.merged:
            warnings.warn("LoRALinear is not merged; unmerge() did nothing", stacklevel=2)
            return
        self._params["weight"] -= self.delta_weight()
        self.merged = False

    def unwrap(self) -> Linear:
        """Merge and return the base Linear holding the merged weight (for :func:`merge_and_unload`)."""
        if not self.merged:
            self.merge()
        base = self._base
        base._params["weight"] = self._params["weight"]  # same array unless to(dtype) recast it
        if "bias" in self._params:
            base._params["bias"] = self._params["bias"]
        base._grads.clear()
        return base

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = x W0ᵀ + b + s · (dropout(x) Aᵀ) Bᵀ``; x (..., in) → y (..., out). Merged: ``x Wᵀ + b``."""
        y, base_cache = F.linear_forward(x, self._params["weight"], self._params.get("bias"))  # (..., out)
        if self.merged:
            self.cache = (base_cache, None, True)
            return y
        h, drop_cache = F.dropout_forward(x, self.lora_dropout, self.rng, self.training)  # (..., in)
        y += self.lora_B.forward(self.lora_A.forward(h)) * self.scaling  # (..., out)
        self.cache = (base_cache, drop_cache, False)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Accumulate ``dA``, ``dB`` (never ``dW0``, ``db``) and return ``dx`` (..., in)."""
        if self.cache is None:
            raise RuntimeError("LoRALinear.backward called before forward")
        base_cache, drop_cache, merged = self.cache
        if merged:
            raise RuntimeError("LoRALinear is merged (inference only): call unmerge() before training")
        dx, _, _ = F.linear_backward(dout, base_cache, need_dw=False, need_db=False)  # G W0, (..., in)
        du = self.lora_B.backward(dout * self.scaling)  # dB += s Gᵀ u;  du = s G B, (..., r)
        dh = self.lora_A.backward(du)  # dA += duᵀ h;  dh = s G B A, (..., in)
        return dx + F.dropout_backward(dh, drop_cache)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
            f"lora_alpha={self.lora_alpha}, scaling={self.scaling:g}, lora_dropout={self.lora_dropout}, "
            f"init_lora_weights={self.init_lora_weights!r}, merged={self.merged}"
        )
