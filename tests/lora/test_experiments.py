"""minilora.lora_experiments: the functions behind the LoRA notebooks, figures and CLI (short runs)."""

import numpy as np
import pytest

import minilora
from minilora import lora_experiments as E
from minilora.data import low_rank_teacher
from minilora.peft import LoraConfig, lora_modules


@pytest.fixture(scope="module")
def teacher():
    return low_rank_teacher(16, 16, rank=2, seed=0)


def test_step0_gradients_follow_the_formulas(teacher):
    g = {init: E.step0_gradients(teacher, init, r=2) for init in E.INIT_LABELS}
    assert g[True]["dA"] == 0 and g[True]["dB"] > 0 and g[True]["BA"] == 0  # B = 0 ⇒ dA = s (G B)ᵀ X = 0
    assert g["zero_A"]["dB"] == 0 and g["zero_A"]["dA"] > 0  # A = 0 ⇒ dB = s Gᵀ (X Aᵀ) = 0
    assert g["zeros"] == {"BA": 0.0, "dA": 0.0, "dB": 0.0, "output_change": 0.0}
    assert g["random"]["output_change"] > 0.01  # both random: the model changes before training


def test_zero_init_is_a_saddle_and_zero_a_trains(teacher):
    stuck = E.teacher_lora(teacher, r=2, init_lora_weights="zeros")
    hist = E.finetune_teacher(stuck, teacher, lr=1.0, steps=20)
    assert not stuck.fc0.A.any() and not stuck.fc0.B.any()
    assert hist.eval_loss[-1] == hist.eval_loss[0]
    moving = E.finetune_teacher(E.teacher_lora(teacher, r=2, init_lora_weights="zero_A"), teacher, lr=1.0, steps=20)
    assert moving.eval_loss[-1] < 0.9 * moving.eval_loss[0]


def test_max_stable_lr():
    lrs = [1, 2, 4, 8]
    assert E.max_stable_lr(lrs, [0.5, 0.2, np.inf, 0.1], initial_loss=1.0) == 8
    assert E.max_stable_lr(lrs, [0.5, 0.2, 2.0, np.nan], initial_loss=1.0) == 2
    assert E.max_stable_lr(lrs, [1.5, 2.0, 3.0, 4.0], initial_loss=1.0) == 0.0


def test_alpha_verdict():
    v = E.alpha_verdict([4, 8, 16, 32], [0.5, 0.21, 0.2, 0.4], r=8)
    assert v["best_alpha"] == 16 and v["is_best"] and v["heuristic_excess"] == 0.0 and v["near_best"] == [8, 16]
    v = E.alpha_verdict([4, 8, 16, 32], [0.5, 0.1, 0.2, 0.4], r=8)
    assert v["best_alpha"] == 8 and not v["is_best"] and v["heuristic_excess"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2r = 8"):
        E.alpha_verdict([1, 2], [0.1, 0.2], r=4)


def test_finetune_gpt_lora_keeps_the_base_and_learns():
    shipped = minilora.load_base_model().params
    model, hist, rep = E.finetune_gpt(minilora.load_base_model(), "lora", LoraConfig(r=4, lora_alpha=8),
                                      steps=20, batch_size=16, eval_every=10, include_step0=True, pretrained=True)
    assert all(np.array_equal(model.params[k], v) for k, v in shipped.items())  # frozen, bit for bit
    assert set(model.grads) == {f"{n}.lora_{ab}.weight" for n in lora_modules(model) for ab in "AB"}
    assert rep["trainable"] == 2 * 2 * 4 * (64 + 64) and rep["total"] == rep["trainable"] + sum(
        v.size for v in shipped.values())
    assert hist.eval_step == [0, 10, 20]
    assert hist.eval_loss[0] == pytest.approx(rep["loss_before"])  # B = 0: step 0 is the base model
    assert hist.eval_loss[-1] == rep["loss_after"] < 0.5 * rep["loss_before"]
    assert rep["token_acc_after"] > rep["token_acc_before"]
    assert rep["pretrained_before"] > 0.95 and 0 <= rep["pretrained_after"] <= 1


def test_finetune_gpt_full_and_bad_method():
    model, hist, rep = E.finetune_gpt(minilora.load_base_model(), "full", steps=2, batch_size=8)
    assert rep["trainable"] == rep["total"] == model.num_params() and "pretrained_before" not in rep
    assert hist.eval_step == [2]
    with pytest.raises(ValueError, match="method must be 'lora', 'qlora' or 'full', got 'bogus'"):
        E.finetune_gpt(minilora.load_base_model(), "bogus")


def test_gpt_runs_aggregates_independent_seeded_runs():
    """Each per-seed report is the run finetune_gpt makes alone with that seed; the aggregate of one seed is
    that run's value, and of two seeds lies between the two."""
    configs = {"lora": LoraConfig(r=2, lora_alpha=4), "full": None}
    kw = dict(steps=2, batch_size=4)
    runs = E.gpt_runs(configs, seeds=(0, 1), **kw)
    assert set(runs) == {"lora", "full"}
    for run in runs.values():
        assert len(run["reports"]) == len(run["histories"]) == 2
        for key, per_seed in (("loss", "loss_after"), ("exact_match", "exact_match_after")):
            values = [rep[per_seed] for rep in run["reports"]]
            assert min(values) <= run[key] <= max(values)
    alone = E.finetune_gpt(minilora.load_base_model(), "lora", configs["lora"], seed=0, **kw)[2]
    assert runs["lora"]["reports"][0] == alone
    one = E.gpt_runs({"lora": configs["lora"]}, seeds=(1,), **kw)["lora"]
    assert one["reports"] == runs["lora"]["reports"][1:]  # seed 1 alone = seed 1 after seed 0
    rep1 = one["reports"][0]
    assert (one["loss"], one["exact_match"]) == (rep1["loss_after"], rep1["exact_match_after"])
    assert runs["lora"]["trainable"] == 2 * 2 * 2 * 128
    assert runs["lora"]["reports"][0]["loss_after"] != runs["lora"]["reports"][1]["loss_after"]  # seeds differ


def test_finetune_gpt_qlora_reports_peft_counts():
    """The QLoRA report's total counted only the float parameters (4-bit weights missing)."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    rep_l = E.finetune_gpt(minilora.load_base_model(), "lora", config, steps=0)[2]
    rep_q = E.finetune_gpt(minilora.load_base_model(), "qlora", config, steps=0)[2]
    assert (rep_q["trainable"], rep_q["total"]) == (rep_l["trainable"], rep_l["total"])
    assert rep_q["total"] == minilora.load_base_model().num_params() + rep_q["trainable"]
