"""minilora.experiments.lora: the functions behind the LoRA notebooks and figures (short runs)."""

import numpy as np
import pytest

import minilora
from minilora.data import low_rank_teacher
from minilora.experiments import lora as E
from minilora.experiments.recipe import Recipe, finetune
from minilora.peft import LoraConfig


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


def test_gpt_runs_aggregates_independent_seeded_runs():
    """Each per-seed report is the run finetune makes alone with that seed; the aggregate of one seed is
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
    alone = finetune(minilora.load_base_model(), configs["lora"], Recipe(seed=0, **kw))[2]
    assert _same_run(runs["lora"]["reports"][0], alone)
    one = E.gpt_runs({"lora": configs["lora"]}, seeds=(1,), **kw)["lora"]
    assert _same_run(one["reports"][0], runs["lora"]["reports"][1])  # seed 1 alone = seed 1 after seed 0
    rep1 = one["reports"][0]
    assert (one["loss"], one["exact_match"]) == (rep1["loss_after"], rep1["exact_match_after"])
    assert runs["lora"]["trainable"] == 2 * 2 * 2 * 128
    assert runs["lora"]["reports"][0]["loss_after"] != runs["lora"]["reports"][1]["loss_after"]  # seeds differ


def _same_run(a: dict, b: dict) -> bool:
    """Two reports of the same run: every number equal but the wall-clock seconds."""
    return {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def test_gpt_runs_follows_the_recipe_and_keeps_models_on_request():
    runs = E.gpt_runs({"a": LoraConfig(r=1)}, recipe=Recipe(steps=3, batch_size=4), keep_models=True)
    assert len(runs["a"]["histories"][0].step) == 3 and len(runs["a"]["models"]) == 1
    assert "models" not in E.gpt_runs({"a": LoraConfig(r=1)}, steps=1, batch_size=4)["a"]
    with pytest.raises(TypeError, match="Recipe has no field"):
        E.gpt_runs({"a": LoraConfig(r=1)}, step=1)
