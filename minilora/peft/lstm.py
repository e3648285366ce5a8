"""A bidirectional, multi-layer LSTM with a hand-written backward through time (p-tuning's ``lstm_head``).

One direction of one layer, PyTorch's ``torch.nn.LSTM`` equations (Hochreiter & Schmidhuber 1997, with the
forget gate of Gers et al. 2000), gates in PyTorch's order ``i, f, g, o``::

    [i, f, g, o] = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh          (4H)
    i, f, o = σ(·),  g = tanh(·)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)                                              h_0 = c_0 = 0

The reverse direction is the same recurrence run over the reversed sequence; a layer's output is
``[h_forward ; h_reverse]`` (2H) per step and feeds the next layer (with dropout between layers, as
``torch.nn.LSTM(dropout=...)``). Backward through time, step ``t`` from last to first, with ``dh`` the
gradient reaching ``h_t`` (from the output and from step t+1) and ``dc`` the one reaching ``c_t``::

    do = dh ⊙ tanh(c_t)                   dc += dh ⊙ o ⊙ (1 − tanh²(c_t))
    di = dc ⊙ g,   df = dc ⊙ c_{t-1},   dg = dc ⊙ i,   dc_{t-1} = dc ⊙ f
    dgates = [di ⊙ i(1−i), df ⊙ f(1−f), dg ⊙ (1−g²), do ⊙ o(1−o)]
    dh_{t-1} = dgates W_hh,   dx_t = dgates W_ih,   dW_ih += dgatesᵀ x_t,   dW_hh += dgatesᵀ h_{t-1}

Parameter names are PyTorch's (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, the same
with ``_reverse``, then ``_l1`` ...), shapes (4H, in), (4H, H), (4H,), (4H,); initialization PyTorch's
U(−1/√H, 1/√H) for all of them. Input and output are batch-first, (B, T, in) → (B, T, 2H). Left out:
projections (``proj_size``), a given initial state, packed sequences.
"""

from __future__ import annotations

import math

import numpy as np

from minilora import backend
from minilora.nn import functional as F
from minilora.nn.module import Module
from minilora.peft.layers import sigmoid


def lstm_direction_forward(x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray,
                           b_hh: np.ndarray):
    """One direction of one layer: x (B, T, I) -> h (B, T, H), and the cache for the backward."""
    xp = backend.xp()
    B, T, _ = x.shape
    H = w_hh.shape[1]
    gx = x @ w_ih.T + b_ih  # (B, T, 4H): the input's share of every gate, all steps at once
    i, f, g, o, c, tanh_c = (xp.empty((B, T, H), dtype=x.dtype) for _ in range(6))
    h = xp.empty((B, T, H), dtype=x.dtype)
    h_prev, c_prev = xp.zeros((B, H), dtype=x.dtype), xp.zeros((B, H), dtype=x.dtype)
    for t in range(T):
        gates = gx[:, t] + h_prev @ w_hh.T + b_hh  # (B, 4H)
        i[:, t], f[:, t] = sigmoid(gates[:, :H]), sigmoid(gates[:, H:2 * H])
        g[:, t], o[:, t] = xp.tanh(gates[:, 2 * H:3 * H]), sigmoid(gates[:, 3 * H:])
        c[:, t] = f[:, t] * c_prev + i[:, t] * g[:, t]
        tanh_c[:, t] = xp.tanh(c[:, t])
        h[:, t] = o[:, t] * tanh_c[:, t]
        h_prev, c_prev = h[:, t], c[:, t]
    return h, (x, w_ih, w_hh, i, f, g, o, c, tanh_c, h)


def lstm_direction_backward(dh_out: np.ndarray, cache):
    """Gradients ``(dx, dw_ih, dw_hh, db_ih, db_hh)`` of :func:`lstm_direction_forward`."""
    xp = backend.xp()
    x, w_ih, w_hh, i, f, g, o, c, tanh_c, h = cache
    B, T, H = h.shape
    dgates = xp.empty((B, T, 4 * H), dtype=x.dtype)
    dh_next, dc_next = xp.zeros((B, H), dtype=x.dtype), xp.zeros((B, H), dtype=x.dtype)
    zeros = xp.zeros((B, H), dtype=x.dtype)
    for t in reversed(range(T)):
        c_prev = c[:, t - 1] if t > 0 else zeros
        dh = dh_out[:, t] + dh_next
        do = dh * tanh_c[:, t]
        dc = dh * o[:, t] * (1.0 - tanh_c[:, t] ** 2) + dc_next
        di, df, dg = dc * g[:, t], dc * c_prev, dc * i[:, t]
        dc_next = dc * f[:, t]
        dgates[:, t] = xp.concatenate([di * i[:, t] * (1.0 - i[:, t]), df * f[:, t] * (1.0 - f[:, t]),
                                       dg * (1.0 - g[:, t] ** 2), do * o[:, t] * (1.0 - o[:, t])], axis=1)
        dh_next = dgates[:, t] @ w_hh  # (B, H)
    h_prev = xp.concatenate([xp.zeros((B, 1, H), dtype=x.dtype), h[:, :-1]], axis=1)  # (B, T, H)
    dg2 = dgates.reshape(B * T, 4 * H)
    dx = dgates @ w_ih  # (B, T, I)
    dw_ih = dg2.T @ x.reshape(B * T, -1)  # (4H, I)
    dw_hh = dg2.T @ h_prev.reshape(B * T, H)  # (4H, H)
    db = dg2.sum(axis=0)  # (4H,): b_ih and b_hh enter the gates the same way
    return dx, dw_ih, dw_hh, db, db.copy()


class LSTM(Module):
    """``torch.nn.LSTM(input_size, hidden_size, num_layers, dropout=dropout, bidirectional=True,
    batch_first=True)``; ``forward(x (B, T, input_size)) -> (B, T, 2 hidden_size)``.

    (Only the output sequence is returned: ``torch.nn.LSTM(x)[0]``, what p-tuning uses.)
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 seed: int | np.random.Generator | None = 0, dtype: str = "float32") -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.dropout = int(num_layers), float(dropout)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        H, bound, xp = self.hidden_size, 1.0 / math.sqrt(hidden_size), backend.xp()
        for layer in range(self.num_layers):
            n_in = self.input_size if layer == 0 else 2 * H
            for suffix in self._suffixes(layer):
                for name, shape in (("weight_ih", (4 * H, n_in)), ("weight_hh", (4 * H, H)),
                                    ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,))):
                    self.add_param(name + suffix, xp.asarray(self.rng.uniform(-bound, bound, shape), dtype=dtype))

    @staticmethod
    def _suffixes(layer: int) -> tuple[str, str]:
        return f"_l{layer}", f"_l{layer}_reverse"

    def _weights(self, suffix: str) -> tuple[np.ndarray, ...]:
        return tuple(self._params[n + suffix] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (B, T, input_size) -> (B, T, 2 hidden_size), the last layer's ``[h_forward ; h_reverse]``."""
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must be (B, T, input_size={self.input_size}), got shape {tuple(x.shape)}")
        xp = backend.xp()
        caches = []
        for layer in range(self.num_layers):
            if layer > 0:
                x, drop = F.dropout_forward(x, self.dropout, self.rng, self.training)
                caches.append(drop)
            fwd, rev = self._suffixes(layer)
            h_f, cache_f = lstm_direction_forward(x, *self._weights(fwd))
            h_r, cache_r = lstm_direction_forward(x[:, ::-1], *self._weights(rev))  # the reversed sequence
            caches.append((cache_f, cache_r))
            x = xp.concatenate([h_f, h_r[:, ::-1]], axis=2)  # (B, T, 2H)
        self.cache = caches
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (B, T, 2H) -> dx (B, T, input_size); accumulates every weight's gradient."""
        H, caches = self.hidden_size, self.cache
        for layer in reversed(range(self.num_layers)):
            cache_f, cache_r = caches.pop()
            fwd, rev = self._suffixes(layer)
            dx_f, *dw_f = lstm_direction_backward(dout[:, :, :H], cache_f)
            dx_r, *dw_r = lstm_direction_backward(dout[:, ::-1, H:], cache_r)
            for suffix, dws in ((fwd, dw_f), (rev, dw_r)):
                for name, dw in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), dws):
                    self.accumulate_grad(name + suffix, dw)
            dout = dx_f + dx_r[:, ::-1]  # (B, T, in)
            if layer > 0:
                dout = F.dropout_backward(dout, caches.pop())
        self.cache = None
        return dout

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, dropout={self.dropout}, "
                f"bidirectional=True, batch_first=True")


__all__ = ["LSTM", "lstm_direction_backward", "lstm_direction_forward"]
