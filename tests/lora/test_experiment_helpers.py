"""The helpers that notebook sentences are computed with (minilora.lora_experiments): each checked on a case
whose answer is known independently of the helper's own formula."""

import numpy as np
import pytest

import minilora
from minilora import lora_experiments as E
from minilora.data import low_rank_teacher
from minilora.peft import LoraConfig


def test_power_law_exponent_recovers_a_planted_exponent():
    x = np.array([1, 2, 4, 8, 16, 32])
    assert E.power_law_exponent(x, 5.0 * x**-1.3) == pytest.approx(-1.3)
    with pytest.raises(ValueError, match="positive"):
        E.power_law_exponent([1, 2], [1.0, 0.0])


def test_compare_losses_verdicts():
    rng = np.random.default_rng(0)
    low, high = 1.0 + 0.01 * rng.standard_normal(5), 2.0 + 0.01 * rng.standard_normal(5)
    assert E.compare_losses(low, high)["verdict"] == "lower"
    assert E.compare_losses(high, low)["verdict"] == "higher"
    assert E.compare_losses([1.0, 2.0], [1.2, 1.8])["verdict"] == "within seed spread"
    assert E.compare_losses([1.0], [2.0])["verdict"] == "one seed: no spread"


def test_energy_rank_of_planted_ranks():
    rng = np.random.default_rng(1)
    for rank in (1, 3, 7):
        m = rng.standard_normal((40, rank)) @ rng.standard_normal((rank, 30))
        s = np.linalg.svd(m, compute_uv=False)
        assert E.energy_rank(s, 0.999999) == rank
    assert E.energy_rank(np.ones(10), 0.9) == 9  # equal singular values: 9 of 10 hold 90 %
    with pytest.raises(ValueError, match="fraction"):
        E.energy_rank([1.0], 0.0)


def test_update_spectra_finds_a_planted_rank_2_update():
    base = minilora.load_base_model()
    tuned = minilora.load_base_model()
    rng = np.random.default_rng(2)
    w = tuned.params["blocks.0.attn.q_proj.weight"]
    w += (0.1 * rng.standard_normal((w.shape[0], 2)) @ rng.standard_normal((2, w.shape[1]))).astype(w.dtype)
    spectra = E.update_spectra(base, tuned)
    q = spectra["blocks.0.attn.q_proj.weight"]
    assert q["energy_rank"] <= 2 and q["random_energy_rank"] > 20
    assert spectra["blocks.0.attn.k_proj.weight"]["relative_change"] == 0.0  # untouched weights: ΔW = 0
    assert all(name.startswith("blocks.") and v["s"].ndim == 1 for name, v in spectra.items())


def test_first_step_update_the_scaling_enters_squared():
    # ΔW = −lr s² Gᵀ X AᵀA after one step from B = 0: the part without s² is the same for α/r and α/√r
    teacher = low_rank_teacher(16, 16, rank=2, seed=0)
    plain = E.first_step_update(teacher, (1, 4, 16))
    rs = E.first_step_update(teacher, (1, 4, 16), use_rslora=True)
    np.testing.assert_allclose(plain["rest"], rs["rest"], rtol=1e-5)
    np.testing.assert_allclose(plain["scaling"], [8, 2, 0.5])
    np.testing.assert_allclose(rs["scaling"], [8, 4, 2])


def test_recipe_is_what_finetune_gpt_runs(monkeypatch):
    from minilora import data, optim

    seen = {}
    real_data, real_adamw = data.heldout_train_data, optim.AdamW

    def spy_data(batch_size, seed=0):
        seen["batch_size"] = batch_size
        return real_data(batch_size, seed)

    def spy_adamw(model, lr, **kw):
        seen["lr"] = lr
        return real_adamw(model, lr, **kw)

    monkeypatch.setattr(data, "heldout_train_data", spy_data)
    monkeypatch.setattr(optim, "AdamW", spy_adamw)
    for method in ("lora", "full"):
        rec = E.recipe(method)
        _, hist, _ = E.finetune_gpt(minilora.load_base_model(), method, LoraConfig(r=1), steps=2)
        assert (seen["batch_size"], seen["lr"]) == (rec["batch_size"], rec["lr"]) and len(hist.step) == 2
    assert E.recipe("full")["lr"] != E.recipe("lora")["lr"]
    with pytest.raises(ValueError, match="method"):
        E.recipe("prefix")


def test_gpt_runs_keeps_models_on_request():
    runs = E.gpt_runs({"a": LoraConfig(r=1)}, steps=1, keep_models=True)
    assert len(runs["a"]["models"]) == 1 and "lora" in repr(runs["a"]["models"][0]).lower()
    assert "models" not in E.gpt_runs({"a": LoraConfig(r=1)}, steps=1)["a"]


def test_doctests():
    import doctest

    assert doctest.testmod(E).failed == 0


def test_gpt_runs_defaults_to_the_recipe_of_finetune_gpt(monkeypatch):
    from minilora import data

    seen = []
    real = data.heldout_train_data
    monkeypatch.setattr(data, "heldout_train_data", lambda batch_size, seed=0: seen.append(batch_size) or real(
        batch_size, seed))
    runs = E.gpt_runs({"a": LoraConfig(r=1)}, steps=1)
    assert seen == [E.recipe()["batch_size"]] and len(runs["a"]["histories"][0].step) == 1


def test_steps_to_fraction_and_is_stuck():
    from minilora.train import History

    h = History(eval_step=[0, 10, 20, 30], eval_loss=[1.0, 0.5, 0.009, 0.001])
    assert E.steps_to_fraction(h, 0.01) == 20 and E.steps_to_fraction(h, 1e-4) is None
    assert not E.is_stuck(h) and E.is_stuck(History(eval_step=[0, 5], eval_loss=[2.0, 2.0]))
    teacher = low_rank_teacher(8, 8, rank=2, seed=0)
    zeros = E.finetune_teacher(E.teacher_lora(teacher, r=2, init_lora_weights="zeros"), teacher, lr=1.0, steps=20)
    assert E.is_stuck(zeros)  # A = B = 0: both gradients zero forever


def test_stable_lr_verdict_on_hand_made_sweeps():
    lrs = [1, 2, 4, 8]
    inf = np.inf
    sweeps = {32: {"initial": 1.0, True: np.array([0.5, 0.4, 2.0, inf]), "zero_A": np.array([0.6, 0.5, 3.0, inf])},
              128: {"initial": 1.0, True: np.array([0.3, 0.2, 0.1, inf]), "zero_A": np.array([0.4, inf, inf, inf])}}
    v = E.stable_lr_verdict(lrs, sweeps)
    assert v["per_width"][32]["ratio"] == 1.0 and v["per_width"][128]["ratio"] == 4.0
    assert v["per_width"][32]["b0_lower_where_both_stable"] == 1.0 and v["agrees"]
    sweeps[128]["zero_A"] = sweeps[128][True]
    assert not E.stable_lr_verdict(lrs, sweeps)["agrees"]
