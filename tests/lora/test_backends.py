"""LoRA, modules_to_save, adapter files, the paged optimizer and the finetune CLI on the device backends.

Each test runs the same code on NumPy and on a device backend (``tests/device_backends.py``): on the strict
device emulation the results must be equal bit for bit (it is NumPy underneath) and any host array leaked into
device code raises; on CuPy (with a GPU) they agree within round-off.
"""

import numpy as np
import pytest
from device_backends import adamw_steps, file_contents, host, on, same

from minilora import backend, data
from minilora.__main__ import main
from minilora.nn import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.peft import (
    LoraConfig,
    adapter_nbytes,
    inject_lora,
    load_adapter,
    lora_modules,
    merge_and_unload,
    save_adapter,
    unload,
)
from minilora.peft.paged import DeviceMemory, PagedAdamW, train_steps

pytest.importorskip("safetensors")

CFG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=20, n_layer=2, n_head=2, n_embd=16)


def _lora_model(init=True, dropout=0.0, modules_to_save=None, targets=("q_proj", "v_proj")):
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=targets, init_lora_weights=init,
                        modules_to_save=modules_to_save)
    return inject_lora(GPT(CFG, seed=0), config, seed=1)


@pytest.mark.parametrize("init", [True, False, "gaussian", "zero_A", "random", "pissa", "olora"])
def test_lora_training_steps_equal_numpy(device, init):
    """Initialization (host draws moved to the device; PiSSA's SVD and OLoRA's QR on the device), forward with
    dropout (host-drawn masks), backward, AdamW."""
    run = lambda: host(adamw_steps(_lora_model(init, dropout=0.1)))
    got, ref = on(device, run), run()
    if device == "cupy" and init == "olora":  # pragma: no cover - cuSOLVER's QR may pick other signs
        same(device, got["logits"], ref["logits"], rtol=1e-4)
        return
    same(device, got, ref, rtol=1e-4)


def test_merge_unmerge_unload_and_disable_adapter_equal_numpy(device):
    def run():
        model = _lora_model("random")
        idx = data.task_batch(data.PRETRAIN_TASKS, 3, seed=5)[0]
        out = {"adapted": model.forward(idx)[0]}
        with model.disable_adapter():
            out["disabled"] = model.forward(idx)[0]
        for layer in lora_modules(model).values():
            layer.merge()
        out["merged"] = model.forward(idx)[0]
        for layer in lora_modules(model).values():
            layer.unmerge()
        out["unmerged"] = model.forward(idx)[0]
        out["unloaded"] = unload(_lora_model("pissa")).forward(idx)[0]
        out["merge_and_unload"] = merge_and_unload(model).forward(idx)[0]
        out["weights"] = model.params
        return host(out)

    same(device, on(device, run), run())


def test_modules_to_save_step_and_originals_equal_numpy(device):
    def run():
        model = _lora_model(modules_to_save=["lm_head"])
        out = adamw_steps(model)
        idx = data.task_batch(data.PRETRAIN_TASKS, 3, seed=5)[0]
        with model.disable_adapter():
            out["disabled"] = model.forward(idx)[0]
        out["again"] = model.forward(idx)[0]
        out["originals"] = model.modules_to_save_originals
        return host(out)

    same(device, on(device, run), run())


@pytest.mark.parametrize("init, convert", [(True, True), ("pissa", True), ("pissa", False), ("zero_A", True)])
def test_adapter_save_load_round_trip_on_the_backend(device, tmp_path, init, convert):
    """The files a device model writes are the NumPy model's, byte for byte on strict; loading them onto a fresh
    device model reproduces the trained logits."""
    def run():
        model = _lora_model(init)
        adamw_steps(model)
        path = save_adapter(model, tmp_path / backend.name(), convert_pissa_to_lora=convert)
        loaded = load_adapter(GPT(CFG, seed=0), path)
        idx = data.task_batch(data.PRETRAIN_TASKS, 3, seed=5)[0]
        files = {f.name: f.read_bytes() for f in path.iterdir()}
        return {"trained": host(model.forward(idx)[0]), "loaded": host(loaded.forward(idx)[0]), "files": files,
                "nbytes": adapter_nbytes(model, convert_pissa_to_lora=convert)}

    got, ref = on(device, run), run()
    np.testing.assert_allclose(got["loaded"], got["trained"], rtol=1e-5, atol=1e-6)
    if init is True:
        np.testing.assert_array_equal(got["loaded"], got["trained"])  # a plain LoRA round trip is exact
    same(device, got["trained"], ref["trained"])
    same(device, got["loaded"], ref["loaded"])
    assert got["nbytes"] == ref["nbytes"] == sum(len(b) for b in got["files"].values())
    got_files, ref_files = file_contents(got["files"]), file_contents(ref["files"])
    assert got_files["config"] == ref_files["config"] and got_files["metadata"] == ref_files["metadata"]
    same(device, got_files["tensors"], ref_files["tensors"])


def test_adapter_loaded_into_existing_layers_and_cast_on_the_backend(device, tmp_path):
    """A float64 adapter file loaded into a float32 device model: cast (with PEFT's warning) on the host."""
    def run():
        model = _lora_model().to("float64")
        adamw_steps(model, n=1)
        path = save_adapter(model, tmp_path / backend.name())
        target = _lora_model()  # existing LoRA layers, float32
        with pytest.warns(UserWarning, match="cast to the model's dtype"):
            load_adapter(target, path)
        return host({name: (layer.A, layer.B) for name, layer in lora_modules(target).items()})

    same(device, on(device, run), run())


def test_paged_adamw_step_of_a_lora_model_equals_plain_adamw(device):
    def run():
        batches = [data.task_batch(data.PRETRAIN_TASKS, 2, seed=i) for i in range(3)]
        ref = _lora_model()
        ref_losses = train_steps(ref, AdamW(ref, lr=1e-2), batches)
        model = _lora_model()
        memory = DeviceMemory(budget=10**9)
        opt = PagedAdamW(model, memory, lr=1e-2, page_size=256)
        memory.budget = opt.buffer.npages * 256 + 1024  # the activations' spike evicts pages
        losses = train_steps(model, opt, batches, memory, lambda m: 4096)
        assert opt.stats.page_outs > 0
        return {"losses": losses, "ref_losses": ref_losses, "params": host(model.params),
                "ref_params": host(ref.params)}

    got = on(device, run)
    assert got["losses"] == got["ref_losses"]
    same("strict", got["params"], got["ref_params"])  # same backend: paging changes no bit
    same(device, got, run())


def _cli_methods() -> list[str]:
    """Every ``finetune --method`` the CLI offers (lora, qlora, full, and the prompt methods once wired)."""
    from minilora.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["finetune"]
    return list(next(a for a in sub._actions if a.dest == "method").choices)


@pytest.mark.parametrize("method", _cli_methods())
def test_finetune_cli_runs_on_the_backend_and_prints_what_numpy_prints(device, method, tmp_path, capsys):
    """``MINILORA_BACKEND=<device> python -m minilora finetune --method ...``: the whole CLI path, files included,
    runs under the device backend (no host leak) and prints the NumPy run's numbers."""
    argv = ["finetune", "--method", method, "--steps", "2", "--batch-size", "4"]

    def run(name):
        assert on(name, lambda: main([*argv, "--save", str(tmp_path / name)])) == 0
        out = capsys.readouterr().out
        return [line for line in out.splitlines() if str(tmp_path) not in line], {
            f.name: f.read_bytes() for f in sorted((tmp_path / name).iterdir())}

    (got, got_files), (ref, ref_files) = run(device), run("numpy")
    if device == "strict":
        assert got == ref
        assert sorted(got_files) == sorted(ref_files)
        for name in got_files:  # model.npz (full) or the adapter's two files
            if name == "adapter_model.safetensors":
                same(device, file_contents(got_files)["tensors"], file_contents(ref_files)["tensors"])
            else:  # adapter_config.json, model.npz
                assert got_files[name] == ref_files[name], name
    else:  # pragma: no cover - GPU machines: the same lines, numbers within round-off
        assert [line.split(":")[0] for line in got] == [line.split(":")[0] for line in ref]
