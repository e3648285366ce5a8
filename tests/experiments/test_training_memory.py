"""Optimizer memory (measured, and LLaMA-7B by the same arithmetic) and gradient accumulation."""

import pytest

from minilora.experiments import memory as M
from minilora.experiments.verdicts import NOT_SUPPORTED, SUPPORTED
from minilora.peft.memory import PAPER_16BIT, ModelShape, estimate


@pytest.fixture(scope="module")
def tiny():
    return M.optimizer_memory()


def test_state_arrays_per_trainable_parameter(tiny):
    assert tiny["buffers"] == {"SGD": 0.0, "SGD, momentum 0.9": 1.0, "Adam": 2.0, "AdamW": 2.0}
    # LoRA: only the adapter has state, the same number of arrays per trainable parameter
    lora = tiny["lora"]
    assert lora["trainable"] < tiny["full"]["trainable"] / 20
    assert lora["AdamW"] == 2 * lora["SGD, momentum 0.9"] == 2 * 4 * lora["trainable"] and lora["SGD"] == 0


def test_llama_is_estimate_times_the_measured_arrays(tiny):
    llama = M.llama_memory(tiny["buffers"])
    shape = ModelShape.llama("7B")
    lora = estimate(shape, "lora", PAPER_16BIT, r=8, target_modules=("q_proj", "v_proj"))
    assert llama["lora"]["trainable"] == lora.trainable == 32 * 2 * 8 * (4096 + 4096)
    assert llama["lora"]["AdamW"] == lora.optimizer  # estimate's Adam: 2 arrays of 4 bytes
    assert llama["full"]["AdamW"] == 2 * llama["full"]["SGD, momentum 0.9"] == 8 * shape.n_params


def test_memory_verdicts_threshold(tiny):
    llama = M.llama_memory(tiny["buffers"])
    rows = M.memory_verdicts(tiny, llama)
    by = {r.claim.split(": ", 1)[1]: r.verdict for r in rows}
    assert by["LLaMA-7B, full fine-tuning"] == SUPPORTED and by["LLaMA-7B, LoRA r=8 on q, v"] == NOT_SUPPORTED
    assert all(r.verdict == NOT_SUPPORTED for r in M.memory_verdicts(tiny, llama, negligible=0.5))


def test_accumulation_is_the_big_batch_update_with_a_micro_batch_of_activations():
    study = M.accumulation_study(batch_size=8, k=2, steps=2)
    assert study["max_diff"]["float64"] < 1e-12 < study["max_update"]["float64"]
    assert study["max_diff"]["float32"] < 1e-5
    assert 1.8 < study["activations"]["batch"] / study["activations"]["micro"] < 2.01
    assert [r.verdict for r in M.accumulation_verdicts(study)] == [SUPPORTED, SUPPORTED]
    with pytest.raises(ValueError, match="multiple of k"):
        M.accumulation_study(batch_size=9, k=2)
