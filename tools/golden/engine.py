"""Golden vectors for the GPT engine from PyTorch autograd (torch CPU): tests/golden/engine.npz.

A PyTorch twin of :class:`minilora.nn.GPT` (the same parameter names and layout: pre-LayerNorm blocks,
eps 1e-5, GELU tanh approximation, learned positions, q/k/v/o projections, ``lm_head`` without bias or tied
to ``wte``) is built from minilora's own initial weights (``GPT(config, seed)``), perturbed by N(0, 0.2) so
that biases are non-zero and attention is far from uniform. For each case it stores, in float64, the logits,
the loss (``torch.nn.functional.cross_entropy`` with ``ignore_index=-100``: targets hold some -100) and the
gradient of every parameter; in float32, the logits. Paths:

* ``ids``: token ids;
* ``embeds``: ``inputs_embeds`` (its gradient stored as ``d_inputs_embeds``);
* ``prefix``: token ids after a ``past_key_values`` prefix of P = 3 positions per layer (its gradients
  stored as ``d_past.{layer}.{k|v}``), at positions P .. P + T - 1 (GPT-2 with a key/value cache of length P);
* ``embeds_prefix_pos``: ``inputs_embeds``, a prefix and explicit (B, T) ``position_ids``.

Single operations, for tests that point at one function (float64, gradients of ``L = sum(out * dout)``):
``ops.gelu.*`` (``gelu(approximate="tanh")``), ``ops.layernorm.*`` (``layer_norm``, eps 1e-5),
``ops.linear.*`` (``linear`` with leading dimensions) and ``ops.ce.*`` (``cross_entropy``, mean over the
targets that are not -100).

Each case with biases is also run through ``transformers.GPT2LMHeadModel`` (eager attention, ``gelu_new``,
the weights moved into its fused ``c_attn`` / Conv1D layout, the prefix passed as a ``DynamicCache``) and the
generator asserts that the twin agrees with it (logits, loss, every gradient and the input gradients, to
1e-10 relative in float64): the twin's prefix and position semantics are transformers' GPT-2's.

Keys: ``cases_json`` (a JSON list of cases: name, config, paths, batch and prefix sizes, and the parameter
names and shapes in state_dict order), then per case ``{case}.w`` (the float64 weights, flattened and
concatenated in that order) and per path ``{case}.{path}.{idx|targets|inputs_embeds|position_ids|past|
logits|loss|logits32|grads|d_inputs_embeds|d_past}``: ``grads`` flattened like the weights, ``past`` and
``d_past`` stacked as (n_layer, 2 (k, v), B, n_head, P, head_size). Few, large arrays keep the file small.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from golden._meta import meta

#: (name, GPTConfig fields, batch, sequence length); each is run with an untied and a tied head
CONFIGS = [
    ("odd", dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, mlp_ratio=4, bias=True), 2, 5),
    ("nobias", dict(vocab_size=13, block_size=10, n_layer=1, n_head=4, n_embd=12, mlp_ratio=2, bias=False), 3, 6),
    ("deep", dict(vocab_size=17, block_size=12, n_layer=3, n_head=3, n_embd=6, mlp_ratio=4, bias=True), 2, 7),
]
#: the paths stored for each config besides ``ids`` (inputs_embeds, prefix, positions)
INPUT_PATHS = {"odd": ["embeds", "prefix", "embeds_prefix_pos"], "nobias": [], "deep": ["prefix"]}
PREFIX = 3
SEED = 20240611


def _twin(config: dict, tied: bool, dtype):
    """The PyTorch twin of minilora's GPT: same parameter names (``blocks.0.attn.q_proj.weight``, ...)."""
    import torch
    from torch import nn

    C, nh, L, V = config["n_embd"], config["n_head"], config["n_layer"], config["vocab_size"]
    bias = config["bias"]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(self, name, nn.Linear(C, C, bias=bias))

        def forward(self, x, past):
            B, T, _ = x.shape
            split = lambda t: t.view(B, T, nh, C // nh).transpose(1, 2)  # (B, nh, T, hs)
            q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            P = k.shape[2] - T
            att = q @ k.transpose(-2, -1) / math.sqrt(C // nh)  # (B, nh, T, P + T)
            allowed = torch.arange(P + T)[None, :] <= torch.arange(T)[:, None] + P
            att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
            return self.o_proj((att @ v).transpose(1, 2).reshape(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.up_proj = nn.Linear(C, config["mlp_ratio"] * C, bias=bias)
            self.down_proj = nn.Linear(config["mlp_ratio"] * C, C, bias=bias)

        def forward(self, x):
            return self.down_proj(nn.functional.gelu(self.up_proj(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(C, eps=1e-5), Attention()
            self.ln_2, self.mlp = nn.LayerNorm(C, eps=1e-5), MLP()

        def forward(self, x, past):
            x = x + self.attn(self.ln_1(x), past)
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(config["block_size"], C)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C, eps=1e-5)
            if not tied:
                self.lm_head = nn.Linear(C, V, bias=False)

        def forward(self, idx=None, inputs_embeds=None, past=None, position_ids=None):
            x = self.wte(idx) if inputs_embeds is None else inputs_embeds
            T, P = x.shape[1], 0 if past is None else past[0][0].shape[2]
            pos = torch.arange(P, P + T) if position_ids is None else position_ids
            x = x + self.wpe(pos)
            for i, block in enumerate(self.blocks):
                x = block(x, None if past is None else past[i])
            h = self.ln_f(x)
            return h @ self.wte.weight.T if tied else self.lm_head(h)

    return GPT().to(dtype)


def _hf_gpt2(config: dict, tied: bool, weights: dict[str, np.ndarray]):
    """transformers' GPT2LMHeadModel in float64 holding the same weights (fused c_attn, Conv1D = W.T)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    C = config["n_embd"]
    hf_config = GPT2Config(vocab_size=config["vocab_size"], n_positions=config["block_size"], n_embd=C,
                           n_layer=config["n_layer"], n_head=config["n_head"], n_inner=config["mlp_ratio"] * C,
                           activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           layer_norm_epsilon=1e-5, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0,
                           attn_implementation="eager")
    model = GPT2LMHeadModel(hf_config).to(torch.float64).eval()
    assert model.config._attn_implementation == "eager"
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    state = {"transformer.wte.weight": t(weights["wte.weight"]), "transformer.wpe.weight": t(weights["wpe.weight"]),
             "transformer.ln_f.weight": t(weights["ln_f.weight"]), "transformer.ln_f.bias": t(weights["ln_f.bias"])}
    for i in range(config["n_layer"]):
        w = lambda n, i=i: weights[f"blocks.{i}.{n}"]
        h = f"transformer.h.{i}."
        qkv = ("q_proj", "k_proj", "v_proj")
        state |= {h + "ln_1.weight": t(w("ln_1.weight")), h + "ln_1.bias": t(w("ln_1.bias")),
                  h + "ln_2.weight": t(w("ln_2.weight")), h + "ln_2.bias": t(w("ln_2.bias")),
                  h + "attn.c_attn.weight": t(np.concatenate([w(f"attn.{n}.weight") for n in qkv]).T),
                  h + "attn.c_attn.bias": t(np.concatenate([w(f"attn.{n}.bias") for n in qkv])),
                  h + "attn.c_proj.weight": t(w("attn.o_proj.weight").T),
                  h + "attn.c_proj.bias": t(w("attn.o_proj.bias")),
                  h + "mlp.c_fc.weight": t(w("mlp.up_proj.weight").T), h + "mlp.c_fc.bias": t(w("mlp.up_proj.bias")),
                  h + "mlp.c_proj.weight": t(w("mlp.down_proj.weight").T),
                  h + "mlp.c_proj.bias": t(w("mlp.down_proj.bias"))}
    if not tied:
        state["lm_head.weight"] = t(weights["lm_head.weight"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    assert (model.lm_head.weight is model.transformer.wte.weight) == tied
    return model


def _hf_grads(model, config: dict, tied: bool) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel's parameter gradients in minilora's names and layout."""
    g = {n: np.zeros(tuple(p.shape)) if p.grad is None else p.grad.detach().numpy()
         for n, p in model.named_parameters()}
    C = config["n_embd"]
    out = {"wte.weight": g["transformer.wte.weight"], "wpe.weight": g["transformer.wpe.weight"],
           "ln_f.weight": g["transformer.ln_f.weight"], "ln_f.bias": g["transformer.ln_f.bias"]}
    if not tied:
        out["lm_head.weight"] = g["lm_head.weight"]
    for i in range(config["n_layer"]):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        for n in ("ln_1", "ln_2"):
            out[f"{b}{n}.weight"], out[f"{b}{n}.bias"] = g[f"{h}{n}.weight"], g[f"{h}{n}.bias"]
        for j, n in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{b}attn.{n}.weight"] = g[f"{h}attn.c_attn.weight"][:, j * C:(j + 1) * C].T
            out[f"{b}attn.{n}.bias"] = g[f"{h}attn.c_attn.bias"][j * C:(j + 1) * C]
        for ours, theirs in (("attn.o_proj", "attn.c_proj"), ("mlp.up_proj", "mlp.c_fc"),
                             ("mlp.down_proj", "mlp.c_proj")):
            out[f"{b}{ours}.weight"] = g[f"{h}{theirs}.weight"].T
            out[f"{b}{ours}.bias"] = g[f"{h}{theirs}.bias"]
    return out


def _rel(a, b, floor: float = 1e-6) -> float:
    """max|a - b| relative to max|b|, or to ``floor`` for arrays that are zero by symmetry (a key bias)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor))


def _inputs(rng, config: dict, B: int, T: int, path: str) -> dict[str, np.ndarray]:
    C, nh = config["n_embd"], config["n_head"]
    x = {"targets": rng.integers(0, config["vocab_size"], (B, T))}
    x["targets"][0, :2] = -100  # ignored positions
    x["targets"][-1, -1] = -100
    if path.startswith("embeds"):
        x["inputs_embeds"] = rng.standard_normal((B, T, C))
    else:
        x["idx"] = rng.integers(0, config["vocab_size"], (B, T))
    if "prefix" in path:
        x["past"] = rng.standard_normal((config["n_layer"], 2, B, nh, PREFIX, C // nh))
    if path.endswith("pos"):
        x["position_ids"] = np.stack([rng.permutation(config["block_size"])[:T] for _ in range(B)])
    return x


def _run_twin(model, x: dict[str, np.ndarray], n_layer: int, dtype) -> dict[str, np.ndarray]:
    """Logits, loss, every parameter gradient and the input gradients of one path."""
    import torch

    model.zero_grad(set_to_none=True)
    t = lambda a: torch.from_numpy(a).to(dtype).requires_grad_(True)
    embeds = t(x["inputs_embeds"]) if "inputs_embeds" in x else None
    past = None
    if "past" in x:
        past = [(t(x["past"][i, 0]), t(x["past"][i, 1])) for i in range(n_layer)]
    idx = torch.from_numpy(x["idx"]) if "idx" in x else None
    pos = torch.from_numpy(x["position_ids"]) if "position_ids" in x else None
    logits = model(idx, embeds, past, pos)
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(x["targets"]).reshape(-1),
                                             ignore_index=-100)
    loss.backward()
    out = {"logits": logits.detach().numpy(), "loss": np.array(loss.item())}
    # a parameter the path does not use (wte under inputs_embeds, untied) has no grad in torch: zero
    out |= {f"grad.{n}": np.zeros(tuple(p.shape)) if p.grad is None else p.grad.detach().numpy()
            for n, p in model.named_parameters()}
    if embeds is not None:
        out["d_inputs_embeds"] = embeds.grad.numpy()
    if past is not None:
        for i, (k, v) in enumerate(past):
            out[f"d_past.{i}.k"], out[f"d_past.{i}.v"] = k.grad.numpy(), v.grad.numpy()
    return out


def _pack(got: dict[str, np.ndarray], names: list[str], n_layer: int) -> dict[str, np.ndarray]:
    """Few arrays for the file: gradients flattened in ``names`` order, prefix gradients stacked."""
    out = {k: v for k, v in got.items() if not k.startswith(("grad.", "d_past."))}
    out["grads"] = np.concatenate([got[f"grad.{n}"].reshape(-1) for n in names])
    if "d_past.0.k" in got:
        out["d_past"] = np.stack([np.stack([got[f"d_past.{i}.k"], got[f"d_past.{i}.v"]]) for i in range(n_layer)])
    return out


def _check_against_hf(config: dict, tied: bool, weights: dict[str, np.ndarray], x: dict[str, np.ndarray],
                      got: dict[str, np.ndarray]) -> None:
    """Assert that transformers' GPT2LMHeadModel computes what the twin computed, for this path."""
    import torch
    from transformers import DynamicCache

    model = _hf_gpt2(config, tied, weights)
    t = lambda a: torch.from_numpy(a).requires_grad_(True)
    kwargs, past = {}, None
    if "inputs_embeds" in x:
        kwargs["inputs_embeds"] = t(x["inputs_embeds"])
    else:
        kwargs["input_ids"] = torch.from_numpy(x["idx"])
    if "past" in x:
        past = [(t(x["past"][i, 0]), t(x["past"][i, 1])) for i in range(config["n_layer"])]
        kwargs |= dict(cache=DynamicCache(past), use_cache=True)
    if "position_ids" in x:
        kwargs["position_ids"] = torch.from_numpy(x["position_ids"])
    logits = model(**kwargs).logits
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(x["targets"]).reshape(-1),
                                             ignore_index=-100)
    loss.backward()
    checks = {"logits": (logits.detach().numpy(), got["logits"]), "loss": (loss.item(), got["loss"])}
    checks |= {f"grad.{n}": (g, got[f"grad.{n}"]) for n, g in _hf_grads(model, config, tied).items()}
    if "inputs_embeds" in kwargs:
        checks["d_inputs_embeds"] = (kwargs["inputs_embeds"].grad.numpy(), got["d_inputs_embeds"])
    for i, (k, v) in enumerate(past or []):
        checks[f"d_past.{i}.k"] = (k.grad.numpy(), got[f"d_past.{i}.k"])
        checks[f"d_past.{i}.v"] = (v.grad.numpy(), got[f"d_past.{i}.v"])
    assert len(checks) == sum(k.startswith(("logits", "loss", "grad.", "d_")) and k != "logits32" for k in got)
    worst = max(checks, key=lambda k: _rel(*checks[k]))
    assert _rel(*checks[worst]) < 1e-10, (worst, _rel(*checks[worst]))


def _ops(rng) -> dict[str, np.ndarray]:
    """Forward outputs and input gradients of single operations, from torch.nn.functional."""
    import torch
    from torch.nn import functional as F

    out = {}

    def record(name, fn, **arrays):
        ts = {k: torch.from_numpy(a).requires_grad_(True) for k, a in arrays.items() if a.dtype.kind == "f"}
        args = {k: ts.get(k, torch.from_numpy(a) if isinstance(a, np.ndarray) else a) for k, a in arrays.items()}
        y = fn(**args)
        dout = rng.standard_normal(tuple(y.shape)) if y.ndim else np.array(1.0)
        (y * torch.from_numpy(dout)).sum().backward()
        out.update({f"ops.{name}.{k}": a for k, a in arrays.items()})
        out.update({f"ops.{name}.out": y.detach().numpy(), f"ops.{name}.dout": dout})
        out.update({f"ops.{name}.d{k}": t.grad.numpy() for k, t in ts.items()})

    record("gelu", lambda x: F.gelu(x, approximate="tanh"), x=np.linspace(-6, 6, 49) + rng.normal(0, 0.05, 49))
    record("layernorm", lambda x, w, b: F.layer_norm(x, (8,), w, b, eps=1e-5),
           x=rng.standard_normal((2, 3, 8)) * 3 + 1, w=rng.standard_normal(8), b=rng.standard_normal(8))
    record("linear", lambda x, w, b: F.linear(x, w, b), x=rng.standard_normal((2, 3, 5)),
           w=rng.standard_normal((4, 5)), b=rng.standard_normal(4))
    targets = rng.integers(0, 7, (3, 4))
    targets[0, 1:3] = -100
    record("ce", lambda z, t: F.cross_entropy(z.reshape(-1, 7), t.reshape(-1), ignore_index=-100),
           z=rng.standard_normal((3, 4, 7)) * 2, t=targets)
    return out


def make(out_dir: Path) -> list[Path]:
    import torch

    from minilora.nn import GPT, GPTConfig

    torch.manual_seed(0)
    rng = np.random.default_rng(SEED)
    data: dict[str, np.ndarray] = _ops(rng)
    cases = []
    for k, (cname, config, B, T) in enumerate(CONFIGS):
        init = GPT(GPTConfig(**config, dtype="float64"), seed=k).state_dict()  # minilora's initial weights
        weights = {n: w + rng.normal(0.0, 0.2, w.shape) for n, w in init.items()}
        for tied in (False, True):
            name = f"{cname}_{'tied' if tied else 'untied'}"
            w = {n: a for n, a in weights.items() if not (tied and n == "lm_head.weight")}
            paths = ["ids"] + INPUT_PATHS[cname]
            names = list(w)
            cases.append({"name": name, "config": {**config, "tie_word_embeddings": tied}, "paths": paths,
                          "batch": B, "seq_len": T, "prefix": PREFIX, "params": names,
                          "shapes": [list(w[n].shape) for n in names]})
            data[f"{name}.w"] = np.concatenate([w[n].reshape(-1) for n in names])
            twin64, twin32 = _twin(config, tied, torch.float64), _twin(config, tied, torch.float32)
            state = {n: torch.from_numpy(a) for n, a in w.items()}
            twin64.load_state_dict(state)
            twin32.load_state_dict({n: a.float() for n, a in state.items()})
            for path in paths:
                x = _inputs(rng, config, B, T, path)
                got = _run_twin(twin64, x, config["n_layer"], torch.float64)
                if config["bias"]:
                    _check_against_hf(config, tied, w, x, got)
                got = _pack(got, names, config["n_layer"])
                got["logits32"] = _run_twin(twin32, x, config["n_layer"], torch.float32)["logits"]
                data |= {f"{name}.{path}.{key}": a for key, a in (x | got).items()}
    path = out_dir / "engine.npz"
    np.savez_compressed(path, cases_json=np.array(json.dumps(cases)), **data, **meta("tools/golden/engine.py"))
    return [path]
