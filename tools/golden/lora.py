"""Golden vectors for LoRA from PEFT 0.21.2 (torch CPU): tests/golden/lora.npz.

For random W, b, A, B, x and an upstream gradient G, each case stores what a PEFT LoRA ``Linear``
computes: the forward output ``y``, the gradients ``dA``, ``dB``, ``dx`` of ``L = sum(y * G)``, the delta
weight (``get_delta_weight``) and the merged weight (``merge()``). Cases cover several (r, lora_alpha), with
and without ``use_rslora``. A PiSSA case stores PEFT's initialization of A, B and the residual base weight.
Keys: ``c{i}_{name}`` with ``c{i}_r``, ``c{i}_alpha``, ``c{i}_rslora`` describing case i, ``n_cases``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CASES = [  # (in_features, out_features, r, lora_alpha, use_rslora)
    (24, 20, 1, 1, False),
    (24, 20, 4, 8, False),
    (24, 20, 8, 16, True),
    (16, 32, 16, 8, True),
    (32, 12, 2, 32, False),
]


def _peft_linear(W, b, r, alpha, rslora, init="default"):
    import torch
    from peft import LoraConfig, get_peft_model

    out_f, in_f = W.shape

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(in_f, out_f)

        def forward(self, x):
            return self.proj(x)

    base = One()
    with torch.no_grad():
        base.proj.weight.copy_(torch.from_numpy(W))
        base.proj.bias.copy_(torch.from_numpy(b))
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=["proj"],
        use_rslora=rslora,
        init_lora_weights=True if init == "default" else init,
    )
    model = get_peft_model(base, config)
    return model, model.base_model.model.proj


def make(out_dir: Path) -> list[Path]:
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(20240318)
    data: dict[str, np.ndarray] = {"n_cases": np.array(len(CASES))}
    for i, (in_f, out_f, r, alpha, rslora) in enumerate(CASES):
        W = rng.standard_normal((out_f, in_f)).astype(np.float32) / np.sqrt(in_f, dtype=np.float32)
        b = rng.standard_normal(out_f).astype(np.float32) * np.float32(0.1)
        A = rng.standard_normal((r, in_f)).astype(np.float32) * np.float32(0.3)
        B = rng.standard_normal((out_f, r)).astype(np.float32) * np.float32(0.3)
        x = rng.standard_normal((2, 5, in_f)).astype(np.float32)
        G = rng.standard_normal((2, 5, out_f)).astype(np.float32)
        _, layer = _peft_linear(W, b, r, alpha, rslora)
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(torch.from_numpy(A))
            layer.lora_B["default"].weight.copy_(torch.from_numpy(B))
        xt = torch.from_numpy(x).requires_grad_(True)
        y = layer(xt)
        (y * torch.from_numpy(G)).sum().backward()
        assert layer.base_layer.weight.grad is None  # frozen base: no dW0
        delta = layer.get_delta_weight("default").detach().numpy()
        layer.merge()
        merged = layer.base_layer.weight.detach().numpy().copy()
        layer.unmerge()
        unmerged = layer.base_layer.weight.detach().numpy().copy()
        case = {
            "r": np.array(r),
            "alpha": np.array(alpha),
            "rslora": np.array(rslora),
            "scaling": np.array(layer.scaling["default"], dtype=np.float64),
            "W": W,
            "b": b,
            "A": A,
            "B": B,
            "x": x,
            "G": G,
            "y": y.detach().numpy(),
            "dA": layer.lora_A["default"].weight.grad.numpy(),
            "dB": layer.lora_B["default"].weight.grad.numpy(),
            "dx": xt.grad.numpy(),
            "delta": delta,
            "merged": merged,
            "unmerged": unmerged,
        }
        data.update({f"c{i}_{k}": v for k, v in case.items()})

    # PiSSA: A, B from the top-r SVD of W, scaled by 1/s; the base keeps the residual W - s·BA
    W = rng.standard_normal((20, 24)).astype(np.float32) / np.float32(np.sqrt(24))
    b = np.zeros(20, np.float32)
    _, layer = _peft_linear(W, b, 4, 8, False, init="pissa")
    data.update(
        {
            "pissa_W": W,
            "pissa_r": np.array(4),
            "pissa_alpha": np.array(8),
            "pissa_A": layer.lora_A["default"].weight.detach().numpy(),
            "pissa_B": layer.lora_B["default"].weight.detach().numpy(),
            "pissa_residual": layer.base_layer.weight.detach().numpy(),
        }
    )
    path = Path(out_dir) / "lora.npz"
    np.savez_compressed(path, **data)
    return [path]
