"""Memory accounting: the formulas reproduce the measured bytes of the tiny GPT, and the paper's 65B figures."""

import numpy as np
import pytest

from minilora import data
from minilora.nn.gpt import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.peft import LoraConfig, inject_lora
from minilora.peft.memory import (
    FP32,
    METHODS,
    PAPER_16BIT,
    ModelShape,
    activation_bytes,
    estimate,
    format_table,
    measure,
    paper_comparison,
    quantized_nbytes,
    weight_bytes,
)
from minilora.peft.qlora import QuantizedWeight, prepare_qlora

CFG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=17, n_layer=2, n_head=4, n_embd=64)
LCFG = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")


def _model(method):
    model = GPT(CFG, seed=0)
    if method == "lora":
        inject_lora(model, LCFG)
    elif method == "qlora":
        prepare_qlora(model, LCFG)
    return model


@pytest.fixture(scope="module")
def measured():
    batch = data.task_batch(data.PRETRAIN_TASKS, 16, seed=0)
    out = {}
    for method in METHODS:
        model = _model(method)
        out[method] = measure(model, AdamW(model, lr=1e-3), batch, method)
    return out


def test_shape_from_gpt_counts_the_real_parameters():
    shape = ModelShape.from_gpt(CFG)
    assert shape.n_params == GPT(CFG, seed=0).num_params()
    assert shape.lora_params(8) == inject_lora(GPT(CFG, seed=0), LCFG).num_params(trainable_only=True)


@pytest.mark.parametrize("method", METHODS)
def test_formulas_equal_measured_bytes(measured, method):
    est = estimate(ModelShape.from_gpt(CFG), method, FP32, r=8)
    m = measured[method]
    assert (m.weights, m.gradients, m.optimizer, m.trainable) == (est.weights, est.gradients, est.optimizer,
                                                                  est.trainable)
    assert m.activations > 0


def test_ordering_of_methods(measured):
    full, lora, qlora = (measured[k] for k in METHODS)
    assert full.gradients == full.weights and full.optimizer == 2 * full.weights  # float32 Adam: m and v
    assert lora.gradients < full.gradients / 5 and lora.optimizer < full.optimizer / 5
    assert qlora.weights < lora.weights / 2
    assert qlora.gradients == lora.gradients and qlora.optimizer == lora.optimizer


@pytest.mark.parametrize("n, bs, dq", [(4096 * 4096, 64, True), (1000, 64, True), (65536, 64, False),
                                       (12345, 128, True)])
def test_quantized_nbytes_equals_stored_arrays(n, bs, dq):
    w = np.random.default_rng(0).standard_normal((1, n)).astype(np.float32) if n < 10**6 else None
    if w is None:  # the big case by the arithmetic only: 4.127 bits + 1092 bytes of constants
        assert quantized_nbytes(n, bs, dq) == n * 4.126953125 / 8 + 1092
        return
    assert quantized_nbytes(n, bs, dq) == QuantizedWeight(w, blocksize=bs, compress_statistics=dq).nbytes


def test_llama_parameter_counts():
    assert ModelShape.llama("7B").n_params == 6_738_415_616  # Meta's LLaMA-7B, as transformers counts it
    assert 65.2e9 < ModelShape.llama("65B").n_params < 65.3e9


def test_paper_65b_figures():
    rows = paper_comparison("65B")
    full = rows["full_16bit"]
    assert full.total > 780e9 and full.total == 12 * ModelShape.llama("65B").n_params
    assert rows["qlora"].total < 48e9
    assert rows["qlora_no_ckpt"].total > 48e9  # activations without checkpointing break the budget
    assert rows["full_mixed"].total > 1e12


def test_activation_estimate_grows_and_checkpointing_saves():
    shape = ModelShape.llama("7B")
    a = estimate(shape, "lora", PAPER_16BIT, seq_len=512).activations
    b = estimate(shape, "lora", PAPER_16BIT, seq_len=1024).activations
    c = estimate(shape, "lora", PAPER_16BIT, seq_len=1024, checkpointing=True).activations
    assert b > 2 * a and c < b / 5


def test_activation_bytes_are_freed_by_backward():
    model = _model("qlora")
    idx, tgt = data.task_batch("copy", 4, seed=0)
    model.forward(idx, tgt)
    assert activation_bytes(model) > idx.nbytes
    model.backward()
    assert activation_bytes(model) == 0


def test_table_and_errors(measured):
    text = format_table(measured)
    assert text.splitlines()[0].split()[:3] == ["method", "weights", "gradients"]
    assert len(text.splitlines()) == 4 and "qlora" in text
    with pytest.raises(ValueError, match="method must be one of"):
        estimate(ModelShape.from_gpt(CFG), "prefix")
    with pytest.raises(ValueError, match="size must be one of"):
        ModelShape.llama("70B")
    with pytest.raises(ValueError, match="method must be one of"):
        measure(GPT(CFG), None, data.task_batch("copy", 2, seed=0), "adapter")


def _reachable_bytes(obj) -> int:
    """nbytes of every distinct array (and NumPy scalar) reachable from ``obj`` (attributes, dicts, lists, tuples)."""
    seen, roots = set(), {}
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            while isinstance(o.base, np.ndarray):  # a view counts as the memory it looks into
                o = o.base
            roots[id(o)] = o.nbytes
        elif isinstance(o, np.generic):  # a NumPy scalar (the float32 offset of double quantization)
            roots[id(o)] = o.nbytes
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif type(o).__module__.startswith("minilora") and hasattr(o, "__dict__"):
            stack.extend(vars(o).values())
    return sum(roots.values())


@pytest.mark.parametrize("method", METHODS)
def test_table_counts_every_byte_the_model_keeps(method):
    """Weights + gradients + activations = every array reachable from the model, after a forward.

    Also after a whole training step and a second forward, when any persistent work buffer would show.
    """
    model = _model(method)
    opt = AdamW(model, lr=1e-3)
    batch = data.task_batch(data.PRETRAIN_TASKS, 16, seed=0)
    for step in range(2):
        model.zero_grad()
        model.forward(*batch)
        grads = sum(g.nbytes for g in model.grads.values())
        counted = weight_bytes(model) + grads + activation_bytes(model)
        assert counted == _reachable_bytes(model), (step, counted, _reachable_bytes(model))
        model.backward()
        opt.step()
