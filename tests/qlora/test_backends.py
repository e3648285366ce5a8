"""QLoRA on the device backends: the 4-bit base, its compute-format rounding, training, merging, adapter files.

As ``tests/lora/test_backends.py``: the same code on NumPy and on a device backend, equal bit for bit on the
strict device emulation (where any host array leaked into device code raises), within round-off on CuPy.
"""

import warnings

import numpy as np
import pytest
from device_backends import adamw_steps, file_contents, host, on, same

from minilora import backend, data
from minilora.nn import GPT, GPTConfig, Linear
from minilora.optim import AdamW
from minilora.peft import LoraConfig, load_adapter, merge_and_unload, save_adapter
from minilora.peft.memory import measure
from minilora.peft.qlora import Linear4bit, QLoRALinear, merge_rounding_error, prepare_qlora, quantized_modules

CFG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=20, n_layer=2, n_head=2, n_embd=32)


def _qlora_model(**kw):
    return prepare_qlora(GPT(CFG, seed=0), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                      init_lora_weights="random"), seed=1, **kw)


def _steps(model, n=2):
    """``n`` AdamW steps (tests/device_backends.py) and the 4-bit codes and statistics afterwards."""
    out = adamw_steps(model, n)
    return {**out, "codes": {k: (q.packed, q.quant_state.absmax) for k, q in quantized_modules(model).items()}}


@pytest.mark.parametrize("kw", [{}, {"compress_statistics": False, "quant_type": "fp4"},
                                {"compute_format": "fp16"}])
def test_qlora_training_steps_equal_numpy(device, kw):
    """Quantizing the base on the device, BF16/FP16 rounding of inputs and weights, LoRA's gradients, AdamW."""
    run = lambda: host(_steps(_qlora_model(**kw)))
    same(device, on(device, run), run(), rtol=1e-4)


def test_qlora_layer_float64_mode_and_linear4bit_equal_numpy(device):
    """The float64 compute mode of the gradient checks, and a frozen Linear4bit's forward and backward."""
    def run():
        xp, rng = backend.xp(), np.random.default_rng(0)
        x = xp.asarray(rng.standard_normal((3, 5, 48)), dtype=xp.float32)
        g = xp.asarray(rng.standard_normal((3, 5, 24)), dtype=xp.float32)
        layer = QLoRALinear(Linear(48, 24, seed=0), r=2, init_lora_weights="random", compute_format="float64")
        frozen = Linear4bit(Linear(48, 24, seed=1))
        out = {"y": layer.forward(x), "dx": layer.backward(g), "grads": layer.grads,
               "y4": frozen.forward(x), "dx4": frozen.backward(g), "w": frozen.weight}
        return host(out)

    same(device, on(device, run), run())


def test_merge_unmerge_and_merge_rounding_error_equal_numpy(device):
    def run():
        model = _qlora_model()
        _steps(model, n=1)
        idx = data.task_batch(data.PRETRAIN_TASKS, 3, seed=5)[0]
        layer = model.get_submodule("blocks.0.attn.q_proj")
        x = backend.xp().asarray(np.random.default_rng(2).standard_normal((6, 32)), dtype="float32")
        out = {"errors": merge_rounding_error(layer, x), "adapted": model.forward(idx)[0]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PEFT's 4-bit merge warning
            layer.merge()
            out["merged"] = model.forward(idx)[0]
            layer.unmerge()
            out["unmerged"] = model.forward(idx)[0]
            out["unloaded"] = merge_and_unload(model).forward(idx)[0]
        return host(out)

    got, ref = on(device, run), run()
    assert all(isinstance(v, float) for v in got["errors"].values())
    same(device, got, ref, rtol=1e-4)


def test_qlora_adapter_save_load_on_the_backend(device, tmp_path):
    """A QLoRA adapter is a LoRA file; loading it onto a freshly quantized device model gives the same logits."""
    def run():
        model = _qlora_model()
        _steps(model)
        path = save_adapter(model, tmp_path / backend.name())
        fresh = prepare_qlora(GPT(CFG, seed=0), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                           init_lora_weights="zeros"), seed=1)
        load_adapter(fresh, path)
        idx = data.task_batch(data.PRETRAIN_TASKS, 3, seed=5)[0]
        return {"trained": host(model.forward(idx)[0]), "loaded": host(fresh.forward(idx)[0]),
                "files": {f.name: f.read_bytes() for f in path.iterdir()}}

    got, ref = on(device, run), run()
    np.testing.assert_array_equal(got["loaded"], got["trained"])
    same(device, got["trained"], ref["trained"], rtol=1e-4)
    got_files, ref_files = file_contents(got["files"]), file_contents(ref["files"])
    assert got_files["config"] == ref_files["config"] and got_files["metadata"] == ref_files["metadata"]
    same(device, got_files["tensors"], ref_files["tensors"], rtol=1e-4)


def test_qlora_memory_table_equals_numpy(device):
    def run():
        model = _qlora_model()
        return measure(model, AdamW(model, lr=1e-3), data.task_batch(data.PRETRAIN_TASKS, 4, seed=0), "qlora")

    assert on(device, run) == run()


def test_qlora_refuses_a_host_input_on_a_device_backend(device):
    """As the engine does (and torch for a CPU tensor on a CUDA model): the error names x and the fix."""
    def run():
        layer = QLoRALinear(Linear(48, 24, seed=0), r=2)
        with pytest.raises(TypeError, match=r"x is a NumPy \(host\) array but the backend is"):
            layer.forward(np.zeros((2, 48), np.float32))
        with pytest.raises(TypeError, match="x must be a floating-point array"):
            layer.forward(backend.xp().zeros((2, 48), dtype="int32"))
        assert layer.forward([[0.5] * 48]).shape == (1, 24)  # a list is nobody's device: converted

    on(device, run)
