"""The engine, the training loop, data batching, the memory table and the paged optimizer on every backend.

Each test runs the same code on NumPy and on a device backend and compares. The device backends are the
strict device emulation (always: NumPy underneath, so the results must be equal bit for bit, and any
leaked ``np.`` call raises) and CuPy where it is installed with a GPU (results within round-off: other
kernels); see ``tests/device_backends.py``. The PEFT layers, adapter files and the CLI on the backends are in
``tests/lora/test_backends.py`` and ``tests/qlora/test_backends.py``.
"""

import importlib.util

import numpy as np
import pytest
from device_backends import DEVICE_BACKENDS, host, on, same

from minilora import backend, data
from minilora.nn import GPT, GPTConfig
from minilora.nn import functional as F
from minilora.nn.gradcheck import check_function, gradcheck
from minilora.nn.mlp import MLPRegressor
from minilora.optim import AdamW
from minilora.peft.memory import measure
from minilora.peft.paged import DeviceMemory, PagedAdamW, PagedBuffer, train_steps
from minilora.train import evaluate, train

CFG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=20, n_layer=2, n_head=2, n_embd=16)


def _full_step(tied=False):
    """One full fine-tuning step: forward, backward, AdamW; the arrays a test compares."""
    model = GPT(GPTConfig(**{**vars(CFG), "tie_word_embeddings": tied}), seed=0)
    opt = AdamW(model, lr=1e-2, weight_decay=0.1)
    idx, targets = data.task_batch(data.PRETRAIN_TASKS, 4, seed=0)
    assert isinstance(idx, backend.xp().ndarray)
    model.zero_grad()
    logits, loss = model.forward(idx, targets)
    model.backward()
    grads = {k: g.copy() for k, g in model.grads.items()}
    opt.step()
    return {"logits": logits, "loss": loss, "grads": grads, "params": model.params,
            "state": {k: {n: a for n, a in s.items() if n != "step"} for k, s in opt.state.items()}}


@pytest.mark.parametrize("tied", [False, True])
def test_full_finetuning_step_equals_numpy(device, tied):
    ref = _full_step(tied)
    got = on(device, lambda: host(_full_step(tied)))
    assert got["loss"] == ref["loss"] or device == "cupy"
    same(device, got, ref)


def test_gpt_features_equal_numpy(device):
    """inputs_embeds, a past_key_values prefix, position ids and their input gradients."""
    def run():
        xp = backend.xp()
        model = GPT(GPTConfig(**{**vars(CFG), "tie_word_embeddings": True}), seed=1)
        rng = np.random.default_rng(3)
        embeds = xp.asarray(rng.standard_normal((3, 5, 16)), dtype=xp.float32)
        past = [tuple(xp.asarray(rng.standard_normal((3, 2, 4, 8)), dtype=xp.float32) for _ in "kv")
                for _ in range(2)]
        targets = xp.asarray(rng.integers(0, data.VOCAB_SIZE, (3, 5)))
        model.zero_grad()
        logits, loss = model.forward(targets=targets, inputs_embeds=embeds, past_key_values=past,
                                     position_ids=xp.asarray([[0, 2, 4, 6, 8]] * 3))
        model.backward()
        return host({"logits": logits, "loss": loss, "grads": model.grads, "inputs": model.input_grads})

    same(device, on(device, run), run())


def test_gradchecks_on_the_backend(device):
    def run():
        xp = backend.xp()
        rng = np.random.default_rng(0)
        x = lambda *shape: xp.asarray(rng.standard_normal(shape))
        reports = {
            "linear": check_function(F.linear_forward, F.linear_backward, [x(2, 3, 4), x(5, 4), x(5)]),
            "layernorm": check_function(F.layernorm_forward, F.layernorm_backward, [x(2, 3, 6), x(6), x(6)]),
            "gelu": check_function(F.gelu_forward, F.gelu_backward, [x(4, 5)]),
            "attention": check_function(lambda q, k, v, pk, pv: F.attention_forward(q, k, v, 2, pk, pv),
                                        F.attention_backward,
                                        [x(2, 5, 6), x(2, 5, 6), x(2, 5, 6), x(2, 2, 3, 3), x(2, 2, 3, 3)]),
        }
        model = GPT(GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=4, mlp_ratio=2,
                              dtype="float64"), seed=0)
        idx, targets = xp.asarray([[1, 2, 3, 4]]), xp.asarray([[2, 3, -100, 5]])
        reports["gpt"] = gradcheck(model, idx, targets)
        return reports

    for name, report in on(device, run).items():
        assert report and max(report.values()) < 1e-6, (name, report)


def test_training_loop_and_evaluation_equal_numpy(device):
    def run():
        model = GPT(CFG, seed=0)
        stream = data.task_stream(data.PRETRAIN_TASKS, 4, seed=1)
        hist = train(model, stream, AdamW(model, lr=1e-2), steps=2, grad_accum=2, max_grad_norm=0.5,
                     eval_data=data.task_batch("copy", 8, seed=2),
                     eval_fn=lambda m: data.accuracy(m, *data.task_batch("copy", 8, seed=3)), progress=False)
        return {"loss": hist.loss, "grad_norm": hist.grad_norm, "eval": hist.eval_loss,
                "metrics": [list(m.values()) for m in hist.eval_metrics], "params": host(model.params),
                "again": evaluate(model, data.task_batch("sort", 8, seed=4))}

    got, ref = on(device, run), run()
    if device == "strict":
        assert got == {**ref, "params": got["params"]}
    same(device, got["params"], ref["params"])


def test_mlp_and_low_rank_teacher_equal_numpy(device):
    def run():
        teacher = data.low_rank_teacher(6, 4, rank=2, noise=0.1, seed=0)
        x, y = teacher.sample(16, seed=1)
        model = MLPRegressor([6, 8, 4], "gelu", seed=0)
        hist = train(model, teacher.stream(16), AdamW(model, lr=1e-2), steps=3, progress=False)
        return {"x": x, "y": y, "loss": hist.loss, "params": host(model.params)}

    same(device, on(device, run), run())


def test_generate_and_save_load_on_the_backend(device, tmp_path):
    def run():
        model = GPT(CFG, seed=0)
        start = backend.xp().asarray([[data.TASK_TOKEN["copy"], 1, 2]])
        out = model.generate(start, 5, temperature=0.8, top_k=4, seed=3)
        model.save(tmp_path / f"{backend.name()}.npz")
        again = GPT.load(tmp_path / f"{backend.name()}.npz")
        return {"tokens": out, "again": again.forward(start)[0], "first": model.forward(start)[0]}

    got, ref = on(device, run), run()
    same(device, got, ref)
    assert data.decode(ref["tokens"][0]).startswith("[copy] 1 2")


def test_memory_table_equals_numpy(device):
    def run():
        model = GPT(CFG, seed=0)
        return measure(model, AdamW(model, lr=1e-3), data.task_batch(data.PRETRAIN_TASKS, 8, seed=0), "full")

    assert on(device, run) == run()


def test_paged_step_equals_plain_adamw(device):
    """A PagedAdamW step under a budget a spike overflows: pages move, and the update is AdamW's."""
    def run():
        batches = [data.task_batch(data.PRETRAIN_TASKS, 2, seed=i, n_digits=9 if i == 1 else 8) for i in range(3)]
        ref = GPT(CFG, seed=0)
        ref_losses = train_steps(ref, AdamW(ref, lr=1e-2), batches)
        model = GPT(CFG, seed=0)
        memory = DeviceMemory(budget=10**9)
        opt = PagedAdamW(model, memory, lr=1e-2, page_size=1024)
        pages = opt.buffer.npages * 1024
        memory.budget = pages + 4096  # room for the state and little else: the activations evict pages
        losses = train_steps(model, opt, batches, memory, lambda m: 8192)
        assert opt.stats.page_outs > 0 and opt.stats.page_ins > 0
        assert isinstance(opt.buffer.array, backend.xp().ndarray) and isinstance(opt.buffer.host, np.ndarray)
        return {"losses": losses, "ref_losses": ref_losses, "params": host(model.params),
                "ref_params": host(ref.params)}

    got = on(device, run)
    assert got["losses"] == got["ref_losses"]
    same("strict", got["params"], got["ref_params"])  # same backend: paging must change no bit
    same(device, got, run())


def test_paged_buffer_round_trip_on_the_backend(device):
    def run():
        memory = DeviceMemory(budget=3 * 4096)
        buf = PagedBuffer(3 * 1024, memory, page_size=4096)
        buf.array[...] = backend.xp().arange(3 * 1024, dtype=np.float32)
        memory.allocate("spike", 4096)
        poisoned = bool(backend.xp().isnan(buf.array[:1024]).all())
        memory.free("spike")
        buf.page_in(0, 10)
        return poisoned, backend.to_numpy(buf.array)

    poisoned, values = on(device, run)
    assert poisoned or device == "cupy"
    np.testing.assert_array_equal(values, np.arange(3 * 1024, dtype=np.float32))


def test_managed_paging_needs_the_cupy_backend():
    """``managed=True`` allocates CUDA managed memory (cupy.cuda.malloc_managed); never run here without a GPU."""
    if importlib.util.find_spec("cupy") is None:
        with pytest.raises(ImportError, match=r"minilora\[gpu\]"):
            PagedBuffer(1024, DeviceMemory(10**6), managed=True)
    else:  # pragma: no cover - CuPy machines
        with pytest.raises(ValueError, match="needs the cupy backend"):
            PagedBuffer(1024, DeviceMemory(10**6), managed=True)


@pytest.mark.parametrize("kw, arg", [
    (dict(idx=np.zeros((1, 3), np.int64)), "idx"),
    (dict(inputs_embeds=np.zeros((1, 3, 16), np.float32)), "inputs_embeds"),
    (dict(idx=[[1, 2, 3]], targets=np.zeros((1, 3), np.int64)), "targets"),
    (dict(idx=[[1, 2, 3]], position_ids=np.arange(3)), "position_ids"),
    (dict(idx=[[1, 2, 3]], past_key_values=[(np.zeros((1, 2, 1, 8), np.float32),) * 2] * 2),
     r"past_key_values\[0\]\[0\]"),
])
def test_host_arrays_on_a_device_backend_are_refused_by_name(device, kw, arg):
    """As torch refuses a CPU tensor on a CUDA model: the error names the argument and the fix."""
    def run():
        model = GPT(CFG, seed=0)
        with pytest.raises(TypeError, match=arg + r" is a NumPy \(host\) array but the backend is"):
            model.forward(**kw)
        model.forward([[1, 2, 3]])  # lists are converted: they are nobody's device

    on(device, run)


@pytest.mark.skipif("cupy" not in DEVICE_BACKENDS, reason="CUDA managed memory needs CuPy and a GPU")
def test_managed_paged_step_equals_plain_adamw_on_cupy():  # pragma: no cover - GPU machines
    """``PagedAdamW(managed=True)``: the state in cupy.cuda.malloc_managed memory, paged by prefetches; the
    update is AdamW's (tiny buffers: never ask for managed memory near the card's size)."""
    def run():
        batches = [data.task_batch(data.PRETRAIN_TASKS, 2, seed=i) for i in range(3)]
        ref = GPT(CFG, seed=0)
        ref_losses = train_steps(ref, AdamW(ref, lr=1e-2), batches)
        model = GPT(CFG, seed=0)
        memory = DeviceMemory(budget=10**9)
        opt = PagedAdamW(model, memory, lr=1e-2, page_size=4096, managed=True)
        memory.budget = opt.buffer.npages * 4096 + 8192
        losses = train_steps(model, opt, batches, memory, lambda m: 16384)
        assert opt.buffer.managed and opt.stats.page_outs > 0 and opt.stats.page_ins > 0
        return {"losses": losses, "ref_losses": ref_losses, "params": host(model.params),
                "ref_params": host(ref.params)}

    got = on("cupy", run)
    np.testing.assert_allclose(got["losses"], got["ref_losses"], rtol=1e-6)
    same("cupy", got["params"], got["ref_params"])
