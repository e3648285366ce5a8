"""GPT-2 small (124M) in minilora: loading memory, and one LoRA training step next to PyTorch + PEFT.

1. **Memory.** A synthetic GPT-2-small-shaped checkpoint (random weights, the shapes of ``gpt2``: vocab
   50257, 1024 positions, 12 layers, width 768, tied embeddings) is written with ``save_pretrained`` to a
   temporary directory (about 0.5 GB, deleted afterwards) and read back with ``GPT.from_pretrained``;
   ``tracemalloc`` reports the peak of NumPy's allocations during each call. The claim: the peak holds the
   model plus less than one extra copy of its weights. The committed tiny checkpoint is measured the same way.
2. **Speed.** One step (``zero_grad``, forward, backward, AdamW) of LoRA r = 8 on q_proj and v_proj at
   batch 4 × 256 tokens, minilora vs PyTorch running ``transformers.GPT2LMHeadModel`` + PEFT LoRA on
   ``c_attn`` (the same adapter, exported by :func:`minilora.hf.adapter.save_hf_adapter`: rank 16 block
   structured, exactly the same function; the script checks the two losses agree), same weights, same
   number of threads, same process. Reported as the ratio of median step times (goal ≤ 1.5×).

Run: ``python benchmarks/bench_gpt2.py [--threads N] [--steps K]`` (PyTorch, transformers and PEFT are
optional; without them only minilora is timed). Heavy: ~3 GB of memory, minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS / torch threads (default: all)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per library (median; one warm-up first)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--memory-only", action="store_true", help="only the memory part (no step timing)")
    p.add_argument("--n-layer", type=int, default=12, help="fewer layers for a quick smoke run (default 12)")
    return p.parse_args()


ARGS = parse()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before NumPy loads its BLAS

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minilora.hf.adapter import save_hf_adapter  # noqa: E402
from minilora.nn.gpt import GPT, GPTConfig  # noqa: E402
from minilora.optim import AdamW  # noqa: E402
from minilora.peft import LoraConfig, inject_lora  # noqa: E402

GPT2_SMALL = GPTConfig(vocab_size=50257, block_size=1024, n_layer=ARGS.n_layer, n_head=12, n_embd=768,
                       tie_word_embeddings=True)
LORA = LoraConfig(r=8, lora_alpha=16, target_modules=("q_proj", "v_proj"))


def traced(fn):
    """``(result, peak bytes, bytes still held)`` of NumPy/Python allocations during ``fn()``."""
    tracemalloc.start()
    try:
        out = fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak, current


def weights_bytes(model: GPT) -> int:
    return sum(v.nbytes for v in model.params.values())


def memory(label: str, path: Path) -> GPT:
    model, peak, _ = traced(lambda: GPT.from_pretrained(path))
    w = weights_bytes(model)
    print(f"{label}: from_pretrained peak {peak / 2**20:9.1f} MiB for {w / 2**20:8.1f} MiB of weights: "
          f"extra {(peak - w) / w:.2f} copies of the weights")
    return model


def median_step(step, n: int) -> tuple[float, float]:
    loss = step()  # warm-up (allocates the work buffers)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(loss)


def main() -> None:
    print(f"threads {ARGS.threads}; LoRA r={LORA.r} on {LORA.target_modules}; batch {ARGS.batch} x {ARGS.seq}")
    memory("tiny (tests/golden/gpt2_tiny)", ROOT / "tests" / "golden" / "gpt2_tiny")
    with tempfile.TemporaryDirectory(prefix="minilora-gpt2-") as tmp:
        ckpt, adapter = Path(tmp) / "gpt2-small", Path(tmp) / "adapter"
        t0 = time.perf_counter()
        model = GPT(GPT2_SMALL, seed=0)
        print(f"synthetic GPT-2 small: {model.num_params():,d} parameters, built in {time.perf_counter() - t0:.1f} s")
        _, peak, _ = traced(lambda: model.save_pretrained(ckpt))
        w = weights_bytes(model)
        print(f"save_pretrained: peak {peak / 2**20:.1f} MiB of allocations beyond the model's {w / 2**20:.1f} MiB "
              f"({peak / w:.2f} copies; the file is {(ckpt / 'model.safetensors').stat().st_size / 2**20:.1f} MiB)")
        model = None
        t0 = time.perf_counter()
        model = memory("GPT-2 small (124M)", ckpt)
        print(f"  (from_pretrained took {time.perf_counter() - t0:.1f} s with tracemalloc on)")
        if ARGS.memory_only:
            return

        inject_lora(model, LORA, seed=0)
        rng = np.random.default_rng(0)
        for name, p in model.params.items():  # B = 0 at init: make the adapter do something
            if name.endswith("lora_B.weight"):
                p[...] = rng.standard_normal(p.shape) * 0.01
        save_hf_adapter(model, adapter)
        idx = rng.integers(0, GPT2_SMALL.vocab_size, (ARGS.batch, ARGS.seq + 1))
        x, y = idx[:, :-1], idx[:, 1:]
        opt = AdamW(model, lr=1e-4, weight_decay=0.0)
        model.train()

        def ml_step():
            model.zero_grad()
            _, loss = model.forward(x, y)
            model.backward()
            opt.step()
            return loss

        first_loss = float(model.forward(x, y)[1])
        model.loss_cache = None
        t_ml, _ = median_step(ml_step, ARGS.steps)
        _, step_peak, _ = traced(ml_step)
        print(f"minilora LoRA step: {t_ml:.3f} s median of {ARGS.steps}; one step allocates at most "
              f"{step_peak / 2**20:.0f} MiB beyond the model (work buffers reused across steps)")
        model = opt = None  # free minilora's copy before PyTorch loads its own
        try:
            import torch
            from peft import PeftModel
            from transformers import GPT2LMHeadModel
        except ImportError as err:
            print(f"PyTorch/transformers/PEFT not installed ({err.name}): no ratio")
            return
        torch.set_num_threads(ARGS.threads)
        hf = GPT2LMHeadModel.from_pretrained(ckpt, attn_implementation="eager")
        pm = PeftModel.from_pretrained(hf, adapter, is_trainable=True).train()
        params = [p for p in pm.parameters() if p.requires_grad]
        topt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def loss_of():
            logits = pm(input_ids=tx).logits
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ty.reshape(-1))

        with torch.no_grad():
            torch_first = float(loss_of())
        print(f"same model, same adapter: loss minilora {first_loss:.6f}  torch {torch_first:.6f}")
        assert abs(first_loss - torch_first) < 1e-4 * abs(torch_first), "the two models differ"

        def torch_step():
            topt.zero_grad(set_to_none=True)
            loss = loss_of()
            loss.backward()
            topt.step()
            return loss.item()

        t_pt, _ = median_step(torch_step, ARGS.steps)
        print(f"PyTorch {torch.__version__} + PEFT LoRA step: {t_pt:.3f} s median of {ARGS.steps}")
        print(f"ratio minilora / PyTorch: {t_ml / t_pt:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
