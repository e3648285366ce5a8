"""A multilayer perceptron with a mean-squared-error loss, for the small (low-rank teacher) experiments.

:class:`MLPRegressor` is :class:`~minilora.nn.modules.MLP` with the model-level interface the training
loop uses: ``forward(x, targets=None) -> (y, loss)`` and ``backward(dloss=1.0)``, exactly like
:class:`~minilora.nn.gpt.GPT`. The loss is ``mean((y - targets)^2)`` over all elements.
"""

from __future__ import annotations

import numpy as np

from minilora import backend
from minilora.nn import functional as F
from minilora.nn.modules import MLP


class MLPRegressor(MLP):
    """``MLP(sizes, activation)`` trained on mean squared error.

    Parameters
    ----------
    sizes : widths ``[d_in, h_1, ..., d_out]``; ``[d_in, d_out]`` is a linear model.
    activation : ``"gelu"`` or ``"relu"``.  bias, seed, dtype : as for :class:`MLP`.
    """

    def forward(self, x: np.ndarray, targets: np.ndarray | None = None):  # type: ignore[override]
        """x: (N, d_in) floats; targets: (N, d_out). Returns ``(y (N, d_out), loss or None)``."""
        y = super().forward(x)
        loss = None
        if targets is not None:
            targets = backend.input_array(targets, "targets")
            if targets.shape != y.shape:
                raise ValueError(f"targets must have shape {y.shape}, got {targets.shape}")
            loss, self.loss_cache = F.mse_forward(y, targets)
        return y, loss

    def backward(self, dloss: float = 1.0) -> np.ndarray:  # type: ignore[override]
        """Backpropagate ``dloss`` times the last loss; returns the input gradient."""
        cache = self.__dict__.get("loss_cache")
        if cache is None:
            raise ValueError("backward() needs a forward(x, targets) with targets first")
        self.loss_cache = None
        return super().backward(F.mse_backward(dloss, cache).astype(self.dtype, copy=False))
