"""Golden vectors and adapter files for LoRA from PEFT 0.21.2 (torch CPU): tests/golden/lora.npz and
tests/golden/lora_adapters/<case>/.

For random W, b, A, B, x and an upstream gradient G, each case stores what a PEFT LoRA ``Linear``
computes: the forward output ``y``, the gradients ``dA``, ``dB``, ``dx`` of ``L = sum(y * G)``, the delta
weight (``get_delta_weight``) and the merged weight (``merge()``). Cases cover several (r, lora_alpha), with
and without ``use_rslora``. Keys: ``c{i}_{name}`` with ``c{i}_r``, ``c{i}_alpha``, ``c{i}_rslora`` describing
case i, ``n_cases``.

Initializations: ``pissa_*`` and ``olora_*`` store PEFT's A, B and residual base weight for one W;
``false_A`` / ``false_B`` are PEFT's draws for ``init_lora_weights=False`` (nn.Linear's init of ``lora_A``
(r, in) and ``lora_B`` (out, r)) on a (192, 256) layer with r = 16, for comparing the distributions.

Parameter counts: ``count_lora`` / ``count_qlora`` are PEFT's ``get_nb_trainable_parameters()`` for LoRA
(r = 4 on fc0, fc1) on a torch MLP 64-64-64-16 whose fc layers are ``nn.Linear`` / bitsandbytes
``Linear4bit`` (NF4, double quantization; fc2 stays 4-bit and frozen).

Adapter directories (``ADAPTER_CASES``), written by PEFT's ``save_pretrained`` for a torch twin of
``minilora.nn.MLP([6, 16, 16, 4])`` (fc0, fc1, fc2, GELU tanh) with the base weights ``adapters_base_*``:
LoRA r = 2, lora_alpha = 4 on fc0 and fc1, created with the case's ``init_lora_weights`` (and dtype,
``modules_to_save``), then every trainable tensor moved by N(0, 0.3²) "as if trained" and saved as a PEFT
user saves it (PiSSA/OLoRA unconverted, ``pissa_converted`` through PEFT's
``path_initial_model_for_weight_conversion``). For each case: ``adapters_{case}_y`` = the trained PeftModel's
output on ``adapters_x``; ``adapters_{case}_y_reload`` = the output of ``PeftModel.from_pretrained`` on a fresh
base from that directory; ``adapters_{case}_counts`` = PEFT's (trainable, all) parameter counts.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from golden._meta import meta

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

    # PiSSA: A, B from the top-r SVD of W, scaled by 1/s; OLoRA: B, A = Q[:, :r], R[:r] of W = QR; both leave
    # the residual W - s·BA in the base
    b = np.zeros(20, np.float32)
    for init in ("pissa", "olora"):
        W = rng.standard_normal((20, 24)).astype(np.float32) / np.float32(np.sqrt(24))
        _, layer = _peft_linear(W, b, 4, 8, False, init=init)
        data.update(
            {
                f"{init}_W": W,
                f"{init}_r": np.array(4),
                f"{init}_alpha": np.array(8),
                f"{init}_A": layer.lora_A["default"].weight.detach().numpy(),
                f"{init}_B": layer.lora_B["default"].weight.detach().numpy(),
                f"{init}_residual": layer.base_layer.weight.detach().numpy(),
            }
        )

    torch.manual_seed(1)
    W = np.zeros((192, 256), np.float32)
    _, layer = _peft_linear(W, np.zeros(192, np.float32), 16, 16, False, init=False)
    data["false_A"] = layer.lora_A["default"].weight.detach().numpy()
    data["false_B"] = layer.lora_B["default"].weight.detach().numpy()

    data.update(_counts())
    files = _adapter_dirs(Path(out_dir), rng, data)
    path = Path(out_dir) / "lora.npz"
    np.savez_compressed(path, **data, **meta("tools/golden/lora.py"))
    return [path, *files]


def _counts() -> dict[str, np.ndarray]:
    """PEFT's parameter counts for LoRA on a float and on a 4-bit (bitsandbytes) torch MLP."""
    import bitsandbytes as bnb
    import torch
    from peft import LoraConfig, get_peft_model

    def mlp(four_bit):
        lin = (lambda i, o: bnb.nn.Linear4bit(i, o, compute_dtype=torch.float32, quant_type="nf4",
                                              compress_statistics=True)) if four_bit else torch.nn.Linear
        model = torch.nn.Sequential()
        for i, (d_in, d_out) in enumerate(zip(COUNT_SIZES[:-1], COUNT_SIZES[1:])):
            model.add_module(f"fc{i}", lin(d_in, d_out))
        return model

    out = {}
    weights = mlp(False).state_dict()
    for name, four_bit in (("count_lora", False), ("count_qlora", True)):
        model = mlp(four_bit)
        model.load_state_dict(weights)
        model = model.to("cpu")  # bitsandbytes quantizes a Params4bit when it moves to a device
        packed = model.fc0.weight.__class__.__name__ == "Params4bit" and model.fc0.weight.dtype == torch.uint8
        assert four_bit == packed
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["fc0", "fc1"]))
        out[name] = np.array(model.get_nb_trainable_parameters())
    return out


#: the MLP of the parameter-count golden (fc0, fc1 adapted; fc2 frozen)
COUNT_SIZES = (64, 64, 64, 16)
#: the MLP of the adapter directories
ADAPTER_SIZES = (6, 16, 16, 4)
#: case -> LoraConfig keywords (beside r=2, lora_alpha=4, target_modules fc0, fc1) and the base dtype
ADAPTER_CASES = {
    "init_false": {"init_lora_weights": False},
    "eva": {"init_lora_weights": "eva"},
    "orthogonal": {"init_lora_weights": "orthogonal"},
    "lora_ga": {"init_lora_weights": "lora_ga"},
    "olora": {"init_lora_weights": "olora"},
    "pissa": {"init_lora_weights": "pissa"},
    "pissa_niter_16": {"init_lora_weights": "pissa_niter_16"},
    "pissa_converted": {"init_lora_weights": "pissa"},
    "fp16": {"dtype": "float16"},
    "modules_to_save": {"target_modules": ["fc0"], "modules_to_save": ["fc2"]},
}


def _twin_mlp(base: dict[str, np.ndarray], dtype: str = "float32"):
    import torch

    class TwinMLP(torch.nn.Module):
        """minilora.nn.MLP's names and function: fc0, fc1, fc2 with GELU (tanh) between them."""

        def __init__(self):
            super().__init__()
            for i, (d_in, d_out) in enumerate(zip(ADAPTER_SIZES[:-1], ADAPTER_SIZES[1:])):
                setattr(self, f"fc{i}", torch.nn.Linear(d_in, d_out))

        def forward(self, x):
            x = torch.nn.functional.gelu(self.fc0(x), approximate="tanh")
            x = torch.nn.functional.gelu(self.fc1(x), approximate="tanh")
            return self.fc2(x)

    twin = TwinMLP()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in base.items()})
    return twin.to(getattr(torch, dtype))


def _adapter_dirs(out_dir: Path, rng: np.random.Generator, data: dict) -> list[Path]:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    base = {}
    for i, (d_in, d_out) in enumerate(zip(ADAPTER_SIZES[:-1], ADAPTER_SIZES[1:])):
        base[f"fc{i}.weight"] = rng.standard_normal((d_out, d_in)).astype(np.float32) / np.float32(np.sqrt(d_in))
        base[f"fc{i}.bias"] = rng.standard_normal(d_out).astype(np.float32) * np.float32(0.1)
    x = rng.standard_normal((5, ADAPTER_SIZES[0])).astype(np.float32)
    data.update({f"adapters_base_{k}": v for k, v in base.items()})
    data["adapters_x"] = x
    root = out_dir / "lora_adapters"
    shutil.rmtree(root, ignore_errors=True)
    files = []
    for case, kwargs in ADAPTER_CASES.items():
        torch.manual_seed(len(files))
        kwargs = dict(kwargs)
        dtype = kwargs.pop("dtype", "float32")
        config = LoraConfig(**{"r": 2, "lora_alpha": 4, "target_modules": ["fc0", "fc1"], **kwargs})
        model = get_peft_model(_twin_mlp(base, dtype), config)
        path = root / case
        with tempfile.TemporaryDirectory() as tmp:
            initial = Path(tmp) / "initial"
            if case == "pissa_converted":
                model.save_pretrained(str(initial))  # the initial PiSSA adapter, before "training"
            with torch.no_grad():
                for _, param in model.named_parameters():
                    if param.requires_grad:  # as if trained
                        param += 0.3 * torch.from_numpy(rng.standard_normal(param.shape).astype(np.float32))
            if case == "pissa_converted":
                model.save_pretrained(str(path), path_initial_model_for_weight_conversion=str(initial))
            else:
                model.save_pretrained(str(path))
        xt = torch.from_numpy(x).to(getattr(torch, dtype))
        with torch.no_grad():
            y = model(xt).float().numpy()
            reloaded = PeftModel.from_pretrained(_twin_mlp(base, dtype), str(path))
            y_reload = reloaded(xt).float().numpy()
        data[f"adapters_{case}_y"] = y
        data[f"adapters_{case}_y_reload"] = y_reload
        data[f"adapters_{case}_counts"] = np.array(model.get_nb_trainable_parameters())
        for name in ("README.md",):  # PEFT writes a model card; only the adapter files are golden
            (path / name).unlink(missing_ok=True)
        files += sorted(path.iterdir())
    return files
