"""The memory side of the blog's training strategy: optimizer state (why not SGD?) and gradient accumulation.

* **"SGD saves the memory of Adam's extra state"** (为什么不使用SGD作为优化函数，其相对Adam等优化器节省了多余参数的存储)
  — :func:`optimizer_memory` measures ``state_bytes()`` after one step on the tiny GPT, for full fine-tuning
  and for LoRA (r = 8 on q, v), with plain SGD, the blog's SGD (momentum 0.9), Adam and AdamW;
  :func:`llama_memory` applies the measured number of state arrays per trainable parameter to LLaMA-7B's
  shape (:func:`minilora.peft.memory.estimate`). With LoRA only the adapter has optimizer state, so the
  saving is measured against the weights it sits next to.
* **gradient accumulation** (梯度累积的使用) — :func:`accumulation_study`: k accumulated micro-batches give the
  update of one k-times larger batch (the difference measured in float64: round-off), and the activations
  held for the backward are those of one micro-batch (measured with
  :func:`minilora.peft.memory.activation_bytes`).
"""

from __future__ import annotations

import numpy as np

from minilora import data, optim
from minilora.experiments.training import lora_model
from minilora.experiments.verdicts import NOT_SUPPORTED, SUPPORTED, Verdict
from minilora.train import train

#: the optimizers of the memory table: plain SGD, the blog's SGD (momentum 0.9), Adam, AdamW
MEMORY_OPTIMIZERS = {
    "SGD": lambda m: optim.SGD(m, lr=0.1),
    "SGD, momentum 0.9": lambda m: optim.SGD(m, lr=0.1, momentum=0.9),
    "Adam": lambda m: optim.Adam(m, lr=3e-4),
    "AdamW": lambda m: optim.AdamW(m, lr=3e-4, weight_decay=0.1),
}


def optimizer_memory(batch_size: int = 8, seed: int = 0) -> dict:
    """Measured optimizer state (``state_bytes()`` after one step) on the tiny GPT, full fine-tuning and LoRA.

    Returns ``{method: {"weights": bytes, "trainable": params, optimizer: state bytes, ...}}`` for ``method``
    in ``("full", "lora")``, plus ``"buffers"``: state arrays per trainable parameter of each optimizer
    (state bytes / (trainable × 4 bytes)), which :func:`llama_memory` applies to LLaMA-7B.
    """
    import minilora
    from minilora.peft.memory import weight_bytes

    batch = data.task_batch(data.HELDOUT_TASK, batch_size, seed=seed)
    out: dict = {}
    for method in ("full", "lora"):
        row: dict = {}
        for name, make in MEMORY_OPTIMIZERS.items():
            model = minilora.load_base_model().unfreeze() if method == "full" else lora_model(seed)
            opt = make(model)
            model.zero_grad()
            model.forward(*batch)
            model.backward()
            opt.step()
            row[name] = int(opt.state_bytes())
            row["weights"], row["trainable"] = weight_bytes(model), model.num_params(trainable_only=True)
        out[method] = row
    itemsize = np.dtype(np.float32).itemsize
    out["buffers"] = {name: out["full"][name] / (out["full"]["trainable"] * itemsize) for name in MEMORY_OPTIMIZERS}
    return out


def llama_memory(buffers: dict[str, float], size: str = "7B", r: int = 8,
                 target_modules: tuple[str, ...] = ("q_proj", "v_proj")) -> dict:
    """Weights and optimizer state of LLaMA-``size`` for full fine-tuning and LoRA, per optimizer.

    16-bit weights and 32-bit optimizer state (the QLoRA paper's precisions,
    :data:`minilora.peft.memory.PAPER_16BIT`); ``buffers`` (from :func:`optimizer_memory`) gives the state
    arrays per trainable parameter. Returns ``{method: {"weights": bytes, "trainable": params, optimizer:
    state bytes}}``.
    """
    from minilora.peft.memory import PAPER_16BIT, ModelShape, estimate

    shape, p = ModelShape.llama(size), PAPER_16BIT
    out = {}
    for method in ("full", "lora"):
        est = estimate(shape, method, p, r=r, target_modules=target_modules)
        row = {"weights": est.weights, "trainable": est.trainable}
        for name, k in buffers.items():
            row[name] = int(round(k * est.trainable * p.optim))
        out[method] = row
    return out


def memory_verdicts(tiny: dict, llama: dict, negligible: float = 0.01) -> list[Verdict]:
    """SGD (with the blog's momentum) against AdamW: the saving as a fraction of weights + AdamW state.

    A saving below ``negligible`` (1 %) of that memory is called negligible: the blog's reason to prefer SGD
    (less GPU memory) then no longer holds.
    """
    rows = []
    for label, table in (("tiny GPT", tiny), ("LLaMA-7B", llama)):
        for method in ("full", "lora"):
            t = table[method]
            saved = t["AdamW"] - t["SGD, momentum 0.9"]
            frac = saved / (t["weights"] + t["AdamW"])
            what = "full fine-tuning" if method == "full" else "LoRA r=8 on q, v"
            verdict = SUPPORTED if frac >= negligible else NOT_SUPPORTED
            rows.append(Verdict(f"SGD (momentum 0.9) saves memory that matters: {label}, {what}",
                                f"AdamW state {format_bytes(t['AdamW'])}, "
                                f"SGD+momentum {format_bytes(t['SGD, momentum 0.9'])}, "
                                f"weights {format_bytes(t['weights'])}: saves {100 * frac:.2g} % of weights + state",
                                verdict))
    return rows


def format_bytes(b: float) -> str:
    """Bytes in decimal units, three significant digits: ``format_bytes(33554432)`` is ``"33.6 MB"``."""
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= k:
            return f"{b / k:.3g} {unit}"
    return f"{b:.0f} B"


# ------------------------------------------------------------------ gradient accumulation
def accumulation_study(batch_size: int = 32, k: int = 4, steps: int = 3, lr: float = 0.01, seed: int = 0) -> dict:
    """``k`` accumulated micro-batches of ``batch_size / k`` against one batch of ``batch_size``.

    Returns ``{"max_diff": {dtype: max |Δ parameter| after ``steps`` AdamW steps}, "max_update": {dtype: max
    |parameter change|}, "activations": {"batch": bytes, "micro": bytes}}``: the difference is measured in
    float64 (round-off only) and float32; the activations held for the backward are measured on the float32
    model after a forward of one batch and of one micro-batch.
    """
    from minilora.peft.memory import activation_bytes

    if batch_size % k:
        raise ValueError(f"batch_size {batch_size} must be a multiple of k {k}")
    big = data.heldout_train_data(batch_size, seed)
    m = batch_size // k

    def micro(i: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = big(i // k)
        j = i % k
        return x[j * m:(j + 1) * m], y[j * m:(j + 1) * m]

    out: dict = {"max_diff": {}, "max_update": {}, "activations": {}}
    for dtype in ("float64", "float32"):
        a, b = lora_model(seed).to(dtype), lora_model(seed).to(dtype)
        start = {n: p.copy() for n, p in a.params.items()}
        train(a, big, optim.AdamW(a, lr=lr, weight_decay=0.1), steps=steps, progress=False)
        train(b, micro, optim.AdamW(b, lr=lr, weight_decay=0.1), steps=steps, grad_accum=k, progress=False)
        names = a.trainable_names()
        out["max_diff"][dtype] = max(float(np.abs(a.params[n] - b.params[n]).max()) for n in names)
        out["max_update"][dtype] = max(float(np.abs(a.params[n] - start[n]).max()) for n in names)
    model = lora_model(seed)
    for key, (x, y) in (("batch", big(0)), ("micro", micro(0))):
        model.zero_grad()
        model.forward(x, y)
        out["activations"][key] = activation_bytes(model)
    model.backward()  # release the caches
    out["batch_size"], out["k"] = batch_size, k
    return out


def accumulation_verdicts(study: dict, tol: float = 1e-12) -> list[Verdict]:
    """Identical update (float64 difference below ``tol``) and the activation memory it saves."""
    d64, d32 = study["max_diff"]["float64"], study["max_diff"]["float32"]
    acts = study["activations"]
    b, k = study["batch_size"], study["k"]
    return [Verdict(f"gradient accumulation ({k} × {b // k}) gives the update of one batch of {b}",
                    f"max |Δ parameter| {d64:.1e} in float64 ({d32:.1e} in float32) after updates of up to "
                    f"{study['max_update']['float64']:.1e}", SUPPORTED if d64 < tol else NOT_SUPPORTED),
            Verdict(f"… with the activation memory of a batch of {b // k}",
                    f"activations held for backward: {format_bytes(acts['batch'])} at batch {b}, "
                    f"{format_bytes(acts['micro'])} at {b // k} ({acts['batch'] / acts['micro']:.2f}× less)",
                    SUPPORTED if acts["micro"] < acts["batch"] else NOT_SUPPORTED)]


__all__ = ["MEMORY_OPTIMIZERS", "format_bytes", "optimizer_memory", "llama_memory", "memory_verdicts",
           "accumulation_study", "accumulation_verdicts"]
