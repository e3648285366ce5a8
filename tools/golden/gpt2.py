"""Golden vectors for Hugging Face GPT-2 checkpoints, from transformers 5.24.0 and torch autograd.

For each tiny configuration of :data:`CASES` (tied and untied embeddings, several sizes, odd vocabularies,
``n_inner`` other than 4·n_embd) a ``GPT2LMHeadModel`` with random weights (every tensor drawn at random,
LayerNorms and biases included, so a transposed or swapped tensor cannot hide) is written with its own
``save_pretrained`` to ``tests/golden/gpt2/case{i}/`` (``config.json`` + ``model.safetensors``), and
``tests/golden/gpt2.npz`` stores, per case ``c{i}_``:

* ``idx`` (B, T) int64 and ``targets`` (B, T) int64 (some -100);
* ``logits32``: the float32 model's logits (eval mode);
* ``logits64``, ``loss64``: the same model in float64, loss = mean cross-entropy of ``logits`` against
  ``targets`` (ignore_index -100, no shift: minilora's convention);
* ``grad64_<name>``: torch autograd's gradient of ``loss64`` for every parameter, under the Hugging Face
  name (for a tied model ``transformer.wte.weight`` holds both contributions);
* ``qloss_<fmt>``: QLoRA's Table 2 made by torch and bitsandbytes 0.50.2 (its pure-PyTorch kernels, as in
  tools/golden/quant.py): the float32 loss after every Conv1D weight is replaced by its round trip through
  ``fmt`` (bf16, fp16 by torch casts; fp4, nf4, nf4+dq by bitsandbytes' block-wise 4-bit at blocksize 64),
  quantized as minilora's Linear layers hold it — (out, in), c_attn as three separate q, k, v weights;
  ``lm_head`` and the embeddings are left alone. For nf4+dq the offset is the correctly rounded mean of the
  absmax (minilora's documented departure from bitsandbytes' float32 ``torch.mean``).

It also writes ``tests/golden/gpt2_tiny/``: a tied GPT-2 whose vocabulary is the BPE tokenizer of
``tests/golden/tokenizer/`` (its ``vocab.json`` and ``merges.txt`` are copied in), the checkpoint the CLI
and fine-tuning tests run on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from golden._meta import meta

ROOT = Path(__file__).resolve().parents[2]
#: (vocab_size, n_positions, n_embd, n_layer, n_head, n_inner, tie_word_embeddings, batch)
CASES = [
    (37, 16, 24, 2, 3, None, False, 2),
    (53, 12, 16, 1, 2, None, True, 3),
    (101, 20, 24, 3, 4, 48, True, 2),
    (29, 9, 8, 2, 1, None, False, 2),
]
TINY = dict(n_positions=64, n_embd=32, n_layer=2, n_head=4)


def _random_model(cfg_kwargs: dict, seed: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**cfg_kwargs, bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if ("ln_" in name or name.endswith("bias")) else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if "ln_" in name and "weight" in name else 0))
    return model


QUANT_FORMATS = ("bf16", "fp16", "fp4", "nf4", "nf4+dq")


def _roundtrip(w, fmt: str, blocksize: int = 64):
    """``w`` (out, in) float32 through ``fmt`` and back, by torch / bitsandbytes."""
    import bitsandbytes  # noqa: F401  (registers the ops)
    import torch
    from bitsandbytes import functional as F

    keyset = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    op = lambda name, *args: getattr(torch.ops.bitsandbytes, name).default.redispatch(keyset, *args)
    if fmt in ("bf16", "fp16"):
        return w.to(torch.bfloat16 if fmt == "bf16" else torch.float16).float()
    qt = fmt[:3]
    packed, absmax = op("quantize_4bit", w.contiguous(), blocksize, qt, torch.uint8)
    if fmt == "nf4+dq":
        code8 = F.create_dynamic_map().float()
        off = torch.tensor(np.float32(np.mean(absmax.numpy().astype(np.float64))))
        q8, absmax2 = op("quantize_blockwise", absmax - off, code8, 256)
        absmax = op("dequantize_blockwise", q8, absmax2, code8, 256, torch.float32) + off
    return op("dequantize_4bit", packed, absmax, blocksize, qt, list(w.shape), torch.float32)


def _quant_losses(model, idx, targets) -> dict[str, np.ndarray]:
    import copy

    import torch

    out = {}
    V = model.config.vocab_size
    for fmt in QUANT_FORMATS:
        m = copy.deepcopy(model).float().eval()
        with torch.no_grad():
            for name, mod in m.named_modules():
                if type(mod).__name__ != "Conv1D":
                    continue
                W = mod.weight  # (in, out)
                if name.endswith("attn.c_attn"):
                    C = W.shape[0]
                    for j in range(3):
                        W[:, j * C:(j + 1) * C] = _roundtrip(W[:, j * C:(j + 1) * C].T, fmt).T
                else:
                    W.copy_(_roundtrip(W.T, fmt).T)
            logits = m(torch.from_numpy(idx)).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1),
                                                     ignore_index=-100)
        out[f"qloss_{fmt}"] = np.array(loss.item(), np.float64)
    return out


def make(out_dir: Path) -> list[Path]:
    import torch
    from transformers import GPT2LMHeadModel

    data: dict[str, np.ndarray] = {"n_cases": np.array(len(CASES))}
    written = []
    for i, (V, P, C, L, H, n_inner, tied, B) in enumerate(CASES):
        model = _random_model(dict(vocab_size=V, n_positions=P, n_embd=C, n_layer=L, n_head=H, n_inner=n_inner,
                                   tie_word_embeddings=tied), seed=100 + i)
        case_dir = out_dir / "gpt2" / f"case{i}"
        if case_dir.exists():
            shutil.rmtree(case_dir)
        model.save_pretrained(case_dir)
        model = GPT2LMHeadModel.from_pretrained(case_dir).eval()  # what a user loads: the file's weights
        rng = np.random.default_rng(200 + i)
        idx = rng.integers(0, V, (B, P))
        targets = rng.integers(0, V, (B, P))
        targets[rng.random((B, P)) < 0.2] = -100
        with torch.no_grad():
            logits32 = model(torch.from_numpy(idx)).logits.numpy()
        quant_losses = _quant_losses(model, idx, targets)
        model = model.double()
        logits = model(torch.from_numpy(idx)).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1),
                                                 ignore_index=-100)
        loss.backward()
        case = {"idx": idx, "targets": targets, "logits32": logits32, "logits64": logits.detach().numpy(),
                "loss64": np.array(loss.item()), "tied": np.array(tied), **quant_losses}
        for name, p in model.named_parameters():
            case[f"grad64_{name}"] = p.grad.numpy().copy()
        data.update({f"c{i}_{k}": v for k, v in case.items()})
        written.append(case_dir / "model.safetensors")
    path = out_dir / "gpt2.npz"
    np.savez_compressed(path, **data, **meta("tools/golden/gpt2.py"))
    written.insert(0, path)

    tok_dir = out_dir / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        from golden import tokenizer

        tokenizer.make(out_dir)
    vocab_size = len(__import__("json").loads((tok_dir / "vocab.json").read_text(encoding="utf-8")))
    tiny = _random_model(dict(vocab_size=vocab_size, **TINY, tie_word_embeddings=True), seed=7)
    with torch.no_grad():  # GPT-2-like scales, so a fine-tuning test starts from a sane loss
        for name, p in tiny.named_parameters():
            if "ln_" not in name:
                p.mul_(0.2)
    tiny_dir = out_dir / "gpt2_tiny"
    if tiny_dir.exists():
        shutil.rmtree(tiny_dir)
    tiny.save_pretrained(tiny_dir)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tok_dir / name, tiny_dir / name)
    written.append(tiny_dir / "model.safetensors")
    return written
