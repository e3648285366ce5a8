"""Layers with hand-written backward passes: Linear, Embedding, LayerNorm, Dropout, MLP, attention, Block.

Each class follows the :class:`~minilora.nn.module.Module` protocol (see that module's docstring):
``params`` / ``grads`` dicts, ``forward(x) -> y``, ``backward(dout) -> dx``, ``zero_grad()``, a
trainable/frozen mark per parameter, and a ``cache`` with only what backward needs. The arithmetic is
in :mod:`minilora.nn.functional`; these classes hold parameters and route gradients. LayerNorm, GELU and
attention run their fast paths (:mod:`minilora.nn.fast`: the same operations in the same order, so the same
bits, without the formulas' full-size temporaries); ``with minilora.nn.fast.readable():`` runs the formulas.

Initialisation follows PyTorch's defaults (``nn.Linear``: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in));
``nn.Embedding``: N(0, 1); ``nn.LayerNorm``: ones and zeros). The GPT re-initialises its weights the
GPT-2 way (:mod:`minilora.nn.gpt`). Every constructor takes ``seed``: an int, a
``numpy.random.Generator`` (shared by the children, drawn in construction order) or None. The draws are
made on the host and the parameters moved to the current backend (:mod:`minilora.backend`), so a seed gives
the same weights on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from minilora import backend
from minilora.nn import fast
from minilora.nn import functional as F
from minilora.nn.module import Module, ModuleList

Seed = int | np.random.Generator | None


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


#: elements drawn at a time when a parameter is filled with random values (see :func:`fill_random`)
DRAW_CHUNK = 4096


def fill_random(out, draw) -> None:
    """Fill the backend array ``out`` in place with ``draw(n)`` values (a host ``Generator`` method).

    The values are drawn ``DRAW_CHUNK`` at a time in C order, which gives exactly the numbers of one draw of
    the whole shape (a Generator's stream is sequential), while the float64 host temporary stays small: a model
    built only to be overwritten by a checkpoint then holds at most one extra copy of its weights.
    """
    xp, flat = backend.xp(), out.reshape(-1)  # a view: out is contiguous
    for start in range(0, flat.size, DRAW_CHUNK):
        n = min(DRAW_CHUNK, flat.size - start)
        flat[start:start + n] = xp.asarray(draw(n), dtype=out.dtype)


def random_array(shape: tuple[int, ...], dtype, draw):
    """A new backend array of ``shape`` and ``dtype`` filled by :func:`fill_random`."""
    out = backend.xp().empty(shape, dtype=dtype)
    fill_random(out, draw)
    return out


def _check_dim(name: str, x: np.ndarray, size: int) -> None:
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name} must have last dimension {size}, got shape {tuple(x.shape)}")


class Linear(Module):
    """``y = x @ weight.T + bias`` for any leading dimensions.

    Parameters
    ----------
    in_features, out_features : sizes; ``weight`` is (out_features, in_features), ``bias`` (out_features,).
    bias : whether to add a bias.  seed : int, Generator or None.  dtype : parameter dtype.

    A frozen ``weight`` (``freeze("weight")``) costs no weight-gradient matmul in backward.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, seed: Seed = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        rng, bound = _rng(seed), 1.0 / math.sqrt(in_features)
        uniform = lambda n: rng.uniform(-bound, bound, n)  # U(-1/sqrt(in), 1/sqrt(in)), drawn on the host
        self.add_param("weight", random_array((out_features, in_features), dtype, uniform))
        if bias:
            self.add_param("bias", random_array((out_features,), dtype, uniform))

    @property
    def weight(self) -> np.ndarray:
        return self._params["weight"]

    @property
    def bias(self) -> np.ndarray | None:
        return self._params.get("bias")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x: (..., in_features) -> (..., out_features)."""
        _check_dim("x", x, self.in_features)
        out, self.cache = F.linear_forward(x, self.weight, self.bias)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """dout: (..., out_features) -> dx (..., in_features), or None with ``need_dx=False`` (no dx matmul);
        accumulates trainable grads."""
        dx, dw, db = F.linear_backward(dout, self.cache, need_dw=self.needs_grad("weight"),
                                       need_db=self.needs_grad("bias"), need_dx=need_dx)
        self.accumulate_grad("weight", dw)
        self.accumulate_grad("bias", db)
        self.cache = None
        return dx

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """Lookup table ``weight`` (num_embeddings, embedding_dim); input: integer ids of any shape."""

    def __init__(self, num_embeddings: int, embedding_dim: int, seed: Seed = None, dtype: str = "float32"):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        rng = _rng(seed)
        self.add_param("weight", random_array((num_embeddings, embedding_dim), dtype, rng.standard_normal))

    @property
    def weight(self) -> np.ndarray:
        return self._params["weight"]

    def forward(self, idx: np.ndarray) -> np.ndarray:
        """idx: integer array (...) with values in [0, num_embeddings) -> (..., embedding_dim)."""
        idx = backend.input_array(idx, "idx")
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"idx must be an integer array, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            raise ValueError(f"idx values must be in [0, {self.num_embeddings}), got min {idx.min()} "
                             f"max {idx.max()}")
        out, self.cache = F.embedding_forward(idx, self._params["weight"])
        return out

    def backward(self, dout: np.ndarray) -> None:
        """Accumulates the table gradient (if trainable); ids have no gradient, so returns None."""
        if self.needs_grad("weight"):
            self.accumulate_grad("weight", F.embedding_backward(dout, self.cache))
        self.cache = None
        return None

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """LayerNorm over the last axis with ``weight`` (ones) and ``bias`` (zeros), eps 1e-5."""

    def __init__(self, n: int, eps: float = F.LN_EPS, dtype: str = "float32") -> None:
        super().__init__()
        self.n, self.eps = int(n), float(eps)
        xp = backend.xp()
        self.add_param("weight", xp.ones(n, dtype=dtype))
        self.add_param("bias", xp.zeros(n, dtype=dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_dim("x", x, self.n)
        out, self.cache = fast.layernorm_forward(x, self._params["weight"], self._params["bias"], self.eps)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """dx, or None with ``need_dx=False``; accumulates trainable grads."""
        need = self.needs_grad("weight") or self.needs_grad("bias")
        dx, dw, db = fast.layernorm_backward(dout, self.cache, need_dw=need, need_dx=need_dx)
        self.accumulate_grad("weight", dw)
        self.accumulate_grad("bias", db)
        self.cache = None
        return dx

    def extra_repr(self) -> str:
        return f"{self.n}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout with probability ``p``; identity in eval mode or when ``p == 0``."""

    def __init__(self, p: float = 0.0, seed: Seed = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p!r}")
        self.p, self.rng = float(p), _rng(seed)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self.cache = F.dropout_forward(x, self.p, self.rng, self.training)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F.dropout_backward(dout, self.cache)
        self.cache = None
        return dx

    def extra_repr(self) -> str:
        return f"p={self.p}"


#: the MLP's activations: name -> names of the (forward, backward) pair; GELU's fast path from
#: :mod:`minilora.nn.fast`, looked up at each call (so that ``fast.readable()`` applies)
ACTIVATIONS = {"gelu": (fast, "gelu_forward", "gelu_backward"), "relu": (F, "relu_forward", "relu_backward")}


def _activation(name: str, i: int):
    """The forward (``i = 1``) or backward (``i = 2``) function of the activation ``name``."""
    return getattr(ACTIVATIONS[name][0], ACTIVATIONS[name][i])


class MLP(Module):
    """A stack of Linear layers with an activation between them (none after the last).

    Parameters
    ----------
    sizes : layer widths ``[d_in, h_1, ..., d_out]`` (at least two).
    activation : ``"gelu"`` (tanh approximation) or ``"relu"``.

    Naming: with exactly two layers (the transformer's feed-forward) they are ``up_proj`` and
    ``down_proj``, as in the GPT's state_dict; otherwise ``fc0``, ``fc1``, ...
    """

    def __init__(self, sizes: Sequence[int], activation: str = "gelu", bias: bool = True, seed: Seed = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must hold at least two positive widths, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.sizes, self.activation = sizes, activation
        n = len(sizes) - 1
        self.layer_names = ["up_proj", "down_proj"] if n == 2 else [f"fc{i}" for i in range(n)]
        rng = _rng(seed)
        for name, d_in, d_out in zip(self.layer_names, sizes[:-1], sizes[1:]):
            setattr(self, name, Linear(d_in, d_out, bias=bias, seed=rng, dtype=dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        act, caches = _activation(self.activation, 1), []
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name).forward(x)
            if i < len(self.layer_names) - 1:
                x, c = act(x)
                caches.append(c)
        self.cache = caches
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        act_bwd, caches = _activation(self.activation, 2), self.cache
        for i in reversed(range(len(self.layer_names))):
            dout = getattr(self, self.layer_names[i]).backward(dout)
            if i > 0:
                dout = act_bwd(dout, caches[i - 1])
        self.cache = None
        return dout

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, activation={self.activation!r}"


class CausalSelfAttention(Module):
    """Multi-head causal self-attention with separate ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``.

    ``forward(x, past_kv=None)``: ``past_kv`` is a ``(k, v)`` pair of (B, n_head, P, head_size) arrays put
    before this call's keys and values (see :func:`~minilora.nn.functional.attention_forward`). After
    ``backward`` their gradients are in ``past_kv_grad`` (a ``(dk, dv)`` pair; None without a prefix),
    until the caller takes them.
    """

    def __init__(self, n_embd: int, n_head: int, bias: bool = True, dropout: float = 0.0, seed: Seed = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        if n_head < 1 or n_embd % n_head != 0:
            raise ValueError(f"n_embd must be divisible by n_head, got n_embd={n_embd}, n_head={n_head}")
        self.n_embd, self.n_head = int(n_embd), int(n_head)
        rng = _rng(seed)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, name, Linear(n_embd, n_embd, bias=bias, seed=rng, dtype=dtype))
        self.resid_drop = Dropout(dropout, seed=rng)
        self.past_kv_grad = None

    def forward(self, x: np.ndarray, past_kv: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """x: (B, T, C) -> (B, T, C); past_kv: None or (k, v), each (B, n_head, P, head_size)."""
        if x.ndim != 3:
            raise ValueError(f"x must be (B, T, C), got shape {tuple(x.shape)}")
        past_k, past_v = (None, None) if past_kv is None else past_kv
        q, k, v = self.q_proj.forward(x), self.k_proj.forward(x), self.v_proj.forward(x)  # (B, T, C) each
        y, self.cache = fast.attention_forward(q, k, v, self.n_head, past_k, past_v)  # (B, T, C)
        self.past_kv_grad = None
        return self.resid_drop.forward(self.o_proj.forward(y))

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """dx (B, T, C), or None with ``need_dx=False``: then q/k/v_proj skip their dx matmuls but still
        accumulate their trainable grads (LoRA's need dq, dv), and ``past_kv_grad`` is set as always."""
        dy = self.o_proj.backward(self.resid_drop.backward(dout))
        dq, dk, dv, dpast_k, dpast_v = fast.attention_backward(dy, self.cache)
        self.cache = None
        self.past_kv_grad = None if dpast_k is None else (dpast_k, dpast_v)
        dx_q = self.q_proj.backward(dq, need_dx=need_dx)
        dx_k = self.k_proj.backward(dk, need_dx=need_dx)
        dx_v = self.v_proj.backward(dv, need_dx=need_dx)
        return dx_q + dx_k + dx_v if need_dx else None

    def extra_repr(self) -> str:
        return f"n_embd={self.n_embd}, n_head={self.n_head}"


class Block(Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, n_embd: int, n_head: int, mlp_ratio: int = 4, bias: bool = True, dropout: float = 0.0,
                 seed: Seed = None, dtype: str = "float32") -> None:
        super().__init__()
        rng = _rng(seed)
        self.ln_1 = LayerNorm(n_embd, dtype=dtype)
        self.attn = CausalSelfAttention(n_embd, n_head, bias=bias, dropout=dropout, seed=rng, dtype=dtype)
        self.ln_2 = LayerNorm(n_embd, dtype=dtype)
        self.mlp = MLP([n_embd, mlp_ratio * n_embd, n_embd], "gelu", bias=bias, seed=rng, dtype=dtype)
        self.mlp_drop = Dropout(dropout, seed=rng)

    def forward(self, x: np.ndarray, past_kv: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """x: (B, T, C) -> (B, T, C); ``past_kv`` goes to the attention (see :class:`CausalSelfAttention`)."""
        h = x + self.attn.forward(self.ln_1.forward(x), past_kv)  # (B, T, C)
        return h + self.mlp_drop.forward(self.mlp.forward(self.ln_2.forward(h)))  # (B, T, C)

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """The residual connections add the gradient that skips each branch to the one through it.

        ``need_dx=False`` (nothing below the block needs its input gradient): returns None, and the attention
        branch computes only what its trainable parameters need (:func:`attention_branch_backward`).
        """
        dh = dout + self.ln_2.backward(self.mlp.backward(self.mlp_drop.backward(dout)))  # (B, T, C)
        dx = attention_branch_backward(self.ln_1, self.attn, dh, need_dx)  # (B, T, C) or None
        return dh + dx if need_dx else None


def attention_branch_backward(ln_1: Module, attn: Module, dout: np.ndarray, need_dx: bool = True
                              ) -> np.ndarray | None:
    """Backward through a block's ``attn(ln_1(x))``: dx, or None with ``need_dx=False``.

    Without dx, the attention still runs its backward (its trainable grads and a prefix's ``past_kv_grad``),
    minus the q/k/v input-gradient matmuls; ln_1's output gradient is computed only when ln_1 has trainable
    parameters (``modules_to_save``), whose gradient needs it, and ln_1's own dx never.
    """
    if need_dx or ln_1.trainable_names():
        return ln_1.backward(attn.backward(dout), need_dx=need_dx)
    attn.backward(dout, need_dx=False)
    ln_1.cache = None  # its backward is not run: nothing needs its gradients
    return None


__all__ = ["Module", "ModuleList", "Linear", "Embedding", "LayerNorm", "Dropout", "MLP",
           "CausalSelfAttention", "Block"]
