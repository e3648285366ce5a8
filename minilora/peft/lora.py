"""LoRA: a frozen ``Linear`` plus a trainable low-rank side path (Hu et al. 2021, arXiv 2106.09685).

Eq. (3) of the paper, with PEFT's names and PyTorch's (out, in) weight layout::

    y = x W0ᵀ + b + s · (dropout(x) Aᵀ) Bᵀ        W0 (d, k) frozen, A (r, k), B (d, r), s = α / r

so ``ΔW = s · B A`` (the blog writes ``A ∈ R^{d×r}`` and ``(W0 + AB)x``: both are wrong, docs/errata.md,
errata 1–2). With ``G = dL/dy`` and ``H = dropout(x)``, all rows flattened (llm.c-style backward)::

    dB = s · Gᵀ (H Aᵀ)        dA = s · (G B)ᵀ H        dx = G W0 + dropout'(s · (G B) A)

and no ``dW0`` is ever computed: that skipped matmul and the missing optimizer state for W0 are what
LoRA saves. ``merge()`` folds ``s · B A`` into W0 for inference (``W += (B @ A) · s`` as PEFT does);
``unmerge()`` subtracts it again, which is not bit-exact in float32 (PEFT's is not either).

Initializations (``init_lora_weights``): ``True`` = PEFT's default, A ~ U(±1/√k) (Kaiming-uniform with
a = √5, as ``nn.Linear``) and B = 0; ``False`` = PEFT's "leave nn.Linear's init": A ~ U(±1/√k) and
B ~ U(±1/√r) (``lora_B`` is an ``nn.Linear(r, d)``, so its fan-in is r); ``"gaussian"``: A ~ N(0, (1/r)²),
B = 0; ``"pissa"`` (Meng et al. 2024, arXiv 2404.02948): A, B from the top-r SVD of W0 and W0 ← W0 − s·BA;
``"olora"`` (Büyükakyüz 2024, arXiv 2406.01775): B, A = the first r columns of Q and rows of R of W0 = QR,
and W0 ← W0 − s·BA; and three teaching variants that PEFT does not have: ``"zero_A"`` (A = 0,
B ~ U(±1/√r), the mirror image of the default), ``"zeros"`` (both zero) and ``"random"`` (both random, the
same draws as ``False``, so the model's output changes before any training).

PiSSA and OLoRA adapt the *residual* W0 − s·B0A0: the layer keeps the initial pair ``(A0, B0)``
(``residual_init``), which :func:`~minilora.peft.adapter_io.save_adapter` needs to convert the trained
adapter to a plain LoRA relative to the original W0 (PEFT's ``path_initial_model_for_weight_conversion``), and
with which :meth:`enable_adapters` (``False``) and ``unwrap(merge=False)`` give back the original layer.

Departures from PEFT: one adapter per layer (no adapter names), no LoRA bias, no DoRA; a merged layer
is for inference only (``backward`` refuses it, where PEFT would silently train a merged copy), and so is
a disabled one; merging twice or unmerging an unmerged layer is a no-op with a warning, as in PEFT.
Disabling the adapter of a PiSSA/OLoRA layer computes the original W0 = (W0 − s·B0A0) + s·B0A0, where
PEFT's ``disable_adapter`` computes with the residual alone.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from minilora import backend
from minilora.nn import functional as F
from minilora.nn.module import Module
from minilora.nn.modules import Linear
from minilora.peft.config import RESIDUAL_INITS, _check_init, check_lora_hyperparameters, lora_scaling


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

    Returns ``(A, B, W0)`` in ``weight.dtype``; ``W0`` is ``weight`` itself except for ``"pissa"`` and
    ``"olora"``, where it is the residual ``weight − s·BA`` (a new array). Signs of the PiSSA singular vectors
    are fixed so that the largest-magnitude entry of each row of A is positive (PEFT leaves them to LAPACK);
    OLoRA's QR keeps LAPACK's signs, as PEFT does (the residual does not depend on them).

    >>> A, B, W0 = init_lora_matrices(np.ones((3, 4), np.float32), r=2, scaling=1.0)
    >>> A.shape, B.shape, bool((B == 0).all()), bool((np.abs(A) <= 0.5).all())
    ((2, 4), (3, 2), True, True)
    """
    xp = backend.xp()
    init = _check_init(init_lora_weights)
    rng = _rng(seed)
    out_f, in_f = weight.shape
    dt = weight.dtype
    uniform = lambda shape, fan_in: rng.uniform(-1.0, 1.0, shape) / math.sqrt(fan_in)  # Kaiming-uniform, a=√5
    A = xp.zeros((r, in_f), dt)
    B = xp.zeros((out_f, r), dt)
    if init is True or init is False or init == "random":  # A as nn.Linear(in, r) draws it
        A[...] = xp.asarray(uniform((r, in_f), in_f))
    if init == "gaussian":
        A[...] = xp.asarray(rng.normal(0.0, 1.0 / r, (r, in_f)))
    if init is False or init in ("zero_A", "random"):  # B as nn.Linear(r, out) draws it: fan-in r
        B[...] = xp.asarray(uniform((out_f, r), r))
    if init == "pissa":
        V, S, Uh = xp.linalg.svd(weight.astype(xp.float64), full_matrices=False)  # W = V diag(S) Uh
        root = xp.sqrt(S[:r] / scaling)  # (r,)
        A64, B64 = root[:, None] * Uh[:r], V[:, :r] * root  # (r, in), (out, r)
        sign = xp.sign(A64[xp.arange(r), xp.abs(A64).argmax(axis=1)])
        A[...], B[...] = A64 * sign[:, None], B64 * sign
    if init == "olora":
        Q, R = xp.linalg.qr(weight.astype(xp.float64))  # W = Q R, Q (out, k) orthonormal, R (k, in)
        A[...], B[...] = R[:r], Q[:, :r]
    if init in RESIDUAL_INITS:
        return A, B, (weight - scaling * (B @ A)).astype(dt)
    return A, B, weight


class LoRALinear(Module):
    """A frozen :class:`~minilora.nn.modules.Linear` with a trainable rank-``r`` update ``s · B A``.

    Parameters
    ----------
    base : Linear
        The layer to adapt, ``weight`` (out, in) and optional ``bias`` (out,). Its arrays are shared (not
        copied) and frozen; :attr:`base_layer` is that layer, :meth:`unwrap` hands it back.
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
    residual_init : tuple (A0 (r, in), B0 (out, r)) or None
        PiSSA/OLoRA: the initial adapter whose ``s·B0A0`` was taken out of ``weight``; None otherwise.
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
        r, lora_alpha, lora_dropout = check_lora_hyperparameters(r, lora_alpha, lora_dropout)
        out_f, in_f = base.params["weight"].shape
        if r > min(in_f, out_f):
            raise ValueError(
                f"r must be <= min(in_features, out_features) = {min(in_f, out_f)} for a "
                f"({out_f}, {in_f}) weight, got r={r}"
            )
        super().__init__()
        self.in_features, self.out_features = in_f, out_f
        self.r, self.lora_alpha, self.lora_dropout = r, lora_alpha, lora_dropout
        self.use_rslora, self.init_lora_weights = bool(use_rslora), _check_init(init_lora_weights)
        self.scaling = lora_scaling(self.r, lora_alpha, self.use_rslora)
        self.merged = False
        self._disabled = False
        self.rng = _rng(seed)
        object.__setattr__(self, "_base", base)  # kept for base_layer/unwrap(), not a child: its params are ours
        weight = base.params["weight"]
        A, B, W0 = init_lora_matrices(weight, self.r, self.scaling, self.init_lora_weights, self.rng)
        self.residual_init = None
        if W0 is not weight:  # PiSSA/OLoRA: the base keeps the residual (in place, as PEFT does)
            weight[...] = W0
            self.residual_init = (A.copy(), B.copy())
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

    @property
    def base_layer(self) -> Linear:
        """The wrapped Linear (PEFT's ``base_layer``), sharing this layer's frozen ``weight`` and ``bias``.

        Its weight is what this layer holds: the residual for PiSSA/OLoRA, ``W0 + s·BA`` while merged.
        """
        base = self._base
        base._params["weight"] = self._params["weight"]  # the same array unless to(dtype) recast it
        if "bias" in self._params:
            base._params["bias"] = self._params["bias"]
        return base

    def get_base_layer(self) -> Linear:
        """PEFT's name for :attr:`base_layer`."""
        return self.base_layer

    def delta_weight(self) -> np.ndarray:
        """``ΔW = (B @ A) · s``, (out, in), in the weight's dtype (PEFT's ``get_delta_weight``)."""
        return (self.B @ self.A) * self.scaling

    def merge(self) -> None:
        """Fold ``ΔW`` into ``weight`` in place; forward then runs the plain layer. Merged: warns, no-op."""
        if self.merged:
            warnings.warn("LoRALinear is already merged; merge() did nothing", stacklevel=2)
            return
        if self._disabled:
            raise ValueError("LoRALinear's adapter is disabled; enable_adapters(True) before merge()")
        self._params["weight"] += self.delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        """Subtract ``ΔW`` again (the original up to float rounding). Not merged: warns, no-op."""
        if not self.merged:
            warnings.warn("LoRALinear is not merged; unmerge() did nothing", stacklevel=2)
            return
        self._params["weight"] -= self.delta_weight()
        self.merged = False

    @property
    def disable_adapters(self) -> bool:
        """Whether the adapter is switched off (PEFT's ``disable_adapters``): forward is the base layer's."""
        return self._disabled

    def enable_adapters(self, enabled: bool) -> None:
        """Switch the adapter on (True) or off (False), as PEFT's ``enable_adapters``; nothing else changes.

        While off, ``forward`` computes the original layer: ``x W0ᵀ + b`` (PiSSA/OLoRA: the residual plus
        the initial ``s·B0A0``, i.e. the weight before initialization up to float rounding), and ``backward``
        refuses (inference only). A merged layer must be unmerged first (PEFT would unmerge it silently).
        """
        if not isinstance(enabled, (bool, np.bool_)):
            raise TypeError(f"enabled must be True or False, got {enabled!r}")
        if not enabled and self.merged:
            raise ValueError("LoRALinear is merged; unmerge() before disabling the adapter")
        self._disabled = not bool(enabled)

    def unwrap(self, merge: bool = True) -> Linear:
        """Hand back the base Linear: merged (``merge_and_unload``) or as it was before LoRA (``unload``).

        ``merge=True`` folds ``s·BA`` into the weight; ``merge=False`` unmerges a merged layer and, for
        PiSSA/OLoRA, adds the initial ``s·B0A0`` back into the residual, so the Linear computes what it did
        before :func:`~minilora.peft.inject.inject_lora` (up to float rounding there).
        """
        if merge and not self.merged:
            self.merge()
        if not merge:
            if self.merged:
                self.unmerge()
            if self.residual_init is not None:
                A0, B0 = self.residual_init
                self._params["weight"] += (B0 @ A0).astype(self.weight.dtype) * self.scaling
        base = self.base_layer
        base._grads.clear()
        return base

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = x W0ᵀ + b + s · (dropout(x) Aᵀ) Bᵀ``; x (..., in) → y (..., out). Merged: ``x Wᵀ + b``."""
        y, base_cache = F.linear_forward(x, self._params["weight"], self._params.get("bias"))  # (..., out)
        if self.merged or self._disabled:
            if self._disabled and self.residual_init is not None:  # the original W0 = residual + s·B0A0
                A0, B0 = self.residual_init
                y += ((x @ A0.T) @ B0.T) * self.scaling  # (..., out)
            self.cache = (base_cache, None, True)
            return y
        h, drop_cache = F.dropout_forward(x, self.lora_dropout, self.rng, self.training)  # (..., in)
        y += self.lora_B.forward(self.lora_A.forward(h)) * self.scaling  # (..., out)
        self.cache = (base_cache, drop_cache, False)
        return y

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Accumulate ``dA``, ``dB`` (never ``dW0``, ``db``) and return ``dx`` (..., in), or None with
        ``need_dx=False`` (then neither ``G W0`` nor ``s G B A`` is computed)."""
        if self.cache is None:
            raise RuntimeError("LoRALinear.backward called before forward")
        base_cache, drop_cache, inference = self.cache
        if inference:
            raise RuntimeError("LoRALinear is merged or its adapter disabled (inference only): call unmerge() / "
                               "enable_adapters(True) before training")
        du = self.lora_B.backward(dout * self.scaling)  # dB += s Gᵀ u;  du = s G B, (..., r)
        dh = self.lora_A.backward(du, need_dx=need_dx)  # dA += duᵀ h;  dh = s G B A, (..., in)
        if not need_dx:
            return None
        dx, _, _ = F.linear_backward(dout, base_cache, need_dw=False, need_db=False)  # G W0, (..., in)
        dx += F.dropout_backward(dh, drop_cache)  # dx is the new array linear_backward returned
        return dx

    def extra_repr(self) -> str:
        disabled = ", disable_adapters=True" if self._disabled else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
            f"lora_alpha={self.lora_alpha}, scaling={self.scaling:g}, lora_dropout={self.lora_dropout}, "
            f"init_lora_weights={self.init_lora_weights!r}, merged={self.merged}{disabled}"
        )
