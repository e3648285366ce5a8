"""Paged optimizer simulation: eviction under a spike, page accounting, bit-identical training."""

import numpy as np
import pytest

from minilora import data
from minilora.nn.gpt import GPT, GPTConfig
from minilora.optim import Adam, AdamW
from minilora.peft import LoraConfig
from minilora.peft.memory import activation_bytes, weight_bytes
from minilora.peft.paged import DeviceMemory, PagedAdam, PagedAdamW, PagedBuffer, train_steps
from minilora.peft.qlora import prepare_qlora

CFG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=21, n_layer=2, n_head=4, n_embd=64)
SPIKES = (3, 4)  # two long-sequence batches (10 digits instead of 8)
BATCHES = [data.task_batch(data.PRETRAIN_TASKS, 4, seed=i, n_digits=10 if i in SPIKES else 8) for i in range(8)]


def _model():
    return prepare_qlora(GPT(CFG, seed=0), LoraConfig(r=16, lora_alpha=16, target_modules="all-linear"))


def _budget_without_spike(model, optimizer):
    model.forward(*BATCHES[0])
    normal = activation_bytes(model)
    model.forward(*BATCHES[SPIKES[0]])
    spike = activation_bytes(model)
    pages = optimizer.buffer.npages * optimizer.buffer.page_size
    assert 0 < spike - normal < pages  # the spike needs part, not all, of the optimizer's pages
    return weight_bytes(model) + pages + normal, spike - normal


@pytest.mark.parametrize("paged_cls, plain_cls", [(PagedAdamW, AdamW), (PagedAdam, Adam)])
def test_paged_training_is_bit_identical_and_pages_move(paged_cls, plain_cls):
    ref = _model()
    ref_losses = train_steps(ref, plain_cls(ref, lr=1e-2, weight_decay=0.1), BATCHES)
    model = _model()
    memory = DeviceMemory(budget=10**9)
    opt = paged_cls(model, memory, lr=1e-2, weight_decay=0.1, page_size=4096)
    memory.budget, extra = _budget_without_spike(model, opt)
    memory.allocate("weights", weight_bytes(model))
    losses = train_steps(model, opt, BATCHES, memory, activation_bytes)
    assert losses == ref_losses
    for k, v in ref.params.items():
        np.testing.assert_array_equal(model.params[k], v)
    s = opt.stats
    per_spike = -(-extra // 4096)
    assert s.page_outs == s.page_ins == len(SPIKES) * per_spike
    assert s.bytes_out == s.bytes_in == s.page_outs * 4096
    assert memory.peak <= memory.budget
    assert opt.state_bytes() == 2 * 4 * model.num_params(trainable_only=True)


def test_no_spike_no_paging():
    model = _model()
    memory = DeviceMemory(budget=10**9)
    opt = PagedAdamW(model, memory, lr=1e-2)
    train_steps(model, opt, BATCHES[:2], memory, activation_bytes)
    assert opt.stats.page_outs == opt.stats.page_ins == 0


def test_evicted_page_is_poisoned_until_paged_in():
    memory = DeviceMemory(budget=3 * 4096)
    buf = PagedBuffer(3 * 1024, memory, page_size=4096)
    buf.array[...] = np.arange(3 * 1024, dtype=np.float32)
    memory.allocate("spike", 4096)  # evicts the least recently used page: page 0
    assert np.isnan(buf.array[:1024]).all() and not np.isnan(buf.array[1024:]).any()
    memory.free("spike")
    buf.page_in(0, 10)
    np.testing.assert_array_equal(buf.array, np.arange(3 * 1024, dtype=np.float32))
    assert (buf.stats.page_outs, buf.stats.page_ins, buf.stats.bytes_in) == (1, 1, 4096)


def test_lru_order_and_out_of_memory():
    memory = DeviceMemory(budget=4 * 4096)
    buf = PagedBuffer(4 * 1024, memory, page_size=4096)
    buf.page_in(0, 1024)  # page 0 becomes the most recently used
    memory.allocate("a", 2 * 4096)
    assert buf.resident.tolist() == [True, False, False, True]
    with pytest.raises(MemoryError, match="out of device memory"):
        memory.allocate("b", 3 * 4096)
    memory.free("a")
    with pytest.raises(MemoryError):  # more than the whole budget
        DeviceMemory(budget=4096).make_room(8192)


def test_bad_arguments():
    with pytest.raises(ValueError, match="budget"):
        DeviceMemory(0)
    memory = DeviceMemory(10**6)
    with pytest.raises(ValueError, match="page_size"):
        PagedBuffer(10, memory, page_size=4095)
    with pytest.raises(TypeError, match="DeviceMemory"):
        PagedBuffer(10, memory=1024)
    memory.allocate("x", 10)
    with pytest.raises(ValueError, match="exists already"):
        memory.allocate("x", 10)
    with pytest.raises(ValueError, match="no allocation"):
        memory.free("y")
    model = GPT(CFG, seed=0).freeze()
    with pytest.raises(ValueError, match="no trainable"):
        PagedAdamW(model, memory)


def test_managed_memory_needs_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="CuPy"):
            PagedBuffer(1024, DeviceMemory(10**6), managed=True)
        return
    pytest.skip("CuPy is installed: the managed path is exercised on a GPU machine")
