"""minilora.experiments.compare: the comparison chapter's measurements (tiny runs)."""

import numpy as np
import pytest

import minilora
from minilora.experiments import compare as C
from minilora.experiments.recipe import METHODS, Recipe, finetune, method_config, prepare
from minilora.peft import count_parameters, peft_config_of
from minilora.train import History

pytest.importorskip("safetensors")
TINY = Recipe(steps=3, batch_size=4)


def test_every_method_has_a_default_configuration_and_a_budget_knob():
    defaults = C.default_configs()
    assert list(defaults) == list(METHODS)
    assert set(C.BUDGET_KNOBS) == set(METHODS) - {"full"}


def test_budget_configs_are_the_nearest_counts_to_the_budget():
    budget = C.budget_configs(2048)
    for method, (config, quant) in budget.items():
        count = count_parameters(prepare(minilora.load_base_model(), config, quant))[0]
        knob, values = C.BUDGET_KNOBS[method]
        fixed = {"target_modules": ("q_proj", "v_proj")} if method == "qlora" else {}
        others = [count_parameters(prepare(minilora.load_base_model(), method_config(method, **fixed, **{knob: v})[0],
                                           None))[0] for v in values]
        assert abs(count - 2048) == min(abs(c - 2048) for c in others), method
    assert budget["qlora"][1] is not None and budget["qlora"][0].target_modules == ("q_proj", "v_proj")


def test_steps_to_threshold_reads_the_running_mean():
    hist = History(loss=[5.0, 4.0, 0.9, 0.8, 0.7, 2.0])
    assert C.steps_to_threshold(hist, threshold=1.0, window=3) == 5  # mean of steps 3..5 = 0.8
    assert C.steps_to_threshold(hist, threshold=0.1, window=3) is None
    assert C.steps_to_threshold(History(loss=[0.1]), threshold=1.0, window=3) is None  # fewer steps than window


def test_saved_bytes_are_the_files_written(tmp_path):
    from minilora.peft import save_adapter

    for method in ("lora", "ptuning"):
        model, _, _ = finetune(minilora.load_base_model(), method_config(method)[0], TINY)
        total, inference = C.saved_bytes(model)
        path = save_adapter(model, tmp_path / method)
        sizes = {f.name: f.stat().st_size for f in path.iterdir()}
        assert total == sum(sizes.values())
        assert inference == sum(v for k, v in sizes.items() if k != "minilora_prompt_encoder.safetensors")
    assert inference < total  # p-tuning's encoder is written to resume training, not needed for inference
    full, _, _ = finetune(minilora.load_base_model(), None, TINY)
    assert peft_config_of(full) is None
    full.save(tmp_path / "model.npz")
    assert C.saved_bytes(full) == ((tmp_path / "model.npz").stat().st_size,) * 2


def test_memory_of_every_method_counts_its_arrays():
    for method in METHODS:
        config, quant = method_config(method)
        mem = C.measure_memory(method, config, quant, TINY)
        trainable = count_parameters(prepare(minilora.load_base_model(), config, quant))[0]
        assert mem.method == method and mem.trainable == trainable
        assert mem.gradients == 4 * trainable and mem.optimizer == 2 * 4 * trainable  # float32 grads, AdamW m and v
        assert mem.activations > 0


def test_step_time_ratios_are_relative_to_full():
    configs = {m: C.default_configs()[m] for m in ("full", "lora")}
    ratios = C.step_time_ratios(configs, TINY, steps=2)
    assert ratios["full"] == 1.0 and ratios["lora"] > 0
    with pytest.raises(ValueError, match="reference 'full' must be one of"):
        C.step_time_ratios({"lora": configs["lora"]}, TINY, steps=1)


def test_compare_runs_each_configuration_for_each_seed():
    configs = {m: C.default_configs()[m] for m in ("full", "prefix")}
    rows = C.compare(configs, seeds=(0, 1), recipe=TINY)
    assert list(rows) == ["full", "prefix"]
    for label, r in rows.items():
        assert len(r["exact_match"]) == len(r["loss"]) == len(r["steps_to_threshold"]) == len(r["curve"]) == 2
        assert all(c.shape == (3,) for c in r["curve"]) and r["step_ratio"] > 0
        alone = finetune(minilora.load_base_model(), configs[label][0], TINY.replace(seed=1))[2]
        assert r["loss"][1] == alone["loss_after"] and r["exact_match"][1] == alone["exact_match_after"]
    assert rows["full"]["step_ratio"] == 1.0 and rows["prefix"]["trainable"] == 8 * 2 * 2 * 64
    text = C.table(rows)
    assert text.splitlines()[0].startswith("configuration") and "prefix" in text and "±" in text


def test_spread_and_threshold_summary():
    assert C.spread([1.0]) == (1.0, 0.0)
    mean, sd = C.spread([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2) and sd == pytest.approx(np.std([0.1, 0.2, 0.3], ddof=1))
    assert C.threshold_summary([10, None, None]) == "10 ± 0 (1/3)"


def test_one_blas_thread_sets_and_restores_the_thread_count():
    get, _ = C._openblas_threads()
    if get is None:
        pytest.skip("NumPy's bundled OpenBLAS not found: one_blas_thread is a no-op here")
    before = get()
    with C.one_blas_thread():
        assert get() == 1
        a = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
        inside = a @ a
    assert get() == before
    with C.one_blas_thread():
        np.testing.assert_array_equal(a @ a, inside)  # the same round-off on one thread, every time
    with pytest.raises(RuntimeError), C.one_blas_thread():
        raise RuntimeError("restored on error too")
    assert get() == before
