"""The training-strategy experiments: recipes, runs, the learning-rate sweep, the claims' verdicts, epochs."""

import math

import numpy as np
import pytest

from minilora import data
from minilora.experiments import recipe as R
from minilora.experiments import training as T
from minilora.experiments.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Summary

TINY = T.BASE.replace(steps=4, warmup_steps=1)  # a few steps: the machinery, not the science


def test_blog_recipes_are_the_blogs_numbers():
    assert T.Recipe is R.Recipe and all(type(r) is R.Recipe for r in (T.BLOG_ADAMW, T.BLOG_SGD, T.BASE))
    assert (T.BLOG_ADAMW.optimizer, T.BLOG_ADAMW.lr, T.BLOG_ADAMW.warmup_steps, T.BLOG_ADAMW.weight_decay,
            T.BLOG_ADAMW.schedule) == ("adamw", 3e-4, 100, 0.1, "cosine")
    assert (T.BLOG_SGD.optimizer, T.BLOG_SGD.lr, T.BLOG_SGD.momentum) == ("sgd", 0.1, 0.9)
    assert 3e-4 in T.LR_GRID["adamw"] and 3e-4 in T.LR_GRID["adam"] and 0.1 in T.LR_GRID["sgd"]
    assert (T.LORA.r, T.LORA.lora_alpha, tuple(T.LORA.target_modules)) == (8, 16, ("q_proj", "v_proj"))


def test_blog_optimizer_sets_the_blogs_settings():
    assert T.blog_optimizer(T.BASE, "sgd") == T.BASE.replace(optimizer="sgd", momentum=0.9, weight_decay=0.0)
    assert T.blog_optimizer(T.BLOG_SGD, "adam") == T.BLOG_SGD.replace(optimizer="adam", momentum=0.0)
    assert T.blog_optimizer(T.BLOG_SGD, "adamw") == T.BLOG_SGD.replace(optimizer="adamw", momentum=0.0,
                                                                       weight_decay=0.1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        T.blog_optimizer(T.BASE, "lion")


@pytest.mark.parametrize("kw,match", [(dict(optimizer="rmsprop"), "optimizer must be one of"),
                                      (dict(schedule="step"), "schedule must be"), (dict(steps=-1), "steps"),
                                      (dict(warmup_steps=-1), "warmup"), (dict(lr=float("nan")), "lr must be"),
                                      (dict(momentum=0.9), "momentum is SGD's")])
def test_recipe_refuses_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        T.Recipe(**kw)


def test_make_optimizer_and_schedule_follow_the_recipe():
    model = T.lora_model(0)
    sgd = T.BLOG_SGD.make_optimizer(model, "lora")
    assert type(sgd).__name__ == "SGD" and sgd.momentum == 0.9 and sgd.lr == 0.1
    adamw = T.BLOG_ADAMW.make_optimizer(model, "lora")
    assert type(adamw).__name__ == "AdamW" and adamw.weight_decay == 0.1 and adamw.lr == 3e-4
    cos = T.BLOG_ADAMW.replace(steps=200).make_schedule("lora")
    assert cos(100) == pytest.approx(3e-4) and cos(0) == 0.0 and cos(150) == pytest.approx(1.5e-4)
    const = T.BLOG_ADAMW.replace(schedule="constant").make_schedule("lora")
    assert const(50) == pytest.approx(1.5e-4) and const(120) == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="warmup_steps must be <= steps=50"):  # no silent cap of the warmup
        T.BLOG_ADAMW.replace(schedule="constant", steps=50)


def test_run_is_deterministic_and_memoised():
    a = T.run(TINY.replace(seed=0))
    assert T.run(TINY.replace(seed=0)) is a  # memoised: the same object
    fresh = T._run(TINY, None, ())
    assert fresh.loss == a.loss and fresh.exact_match == a.exact_match
    assert T.run(TINY.replace(seed=1)).loss != a.loss  # the seed draws A and the batches
    assert len(a.history.step) == TINY.steps and 0 < a.loss < 20 and 0 <= a.exact_match <= 1
    with pytest.raises(TypeError, match="recipe must be a minilora.experiments.recipe.Recipe"):
        T.run({"steps": 4})


def test_a_run_is_finetune_with_the_chapters_lora():
    """No private training loop: the run is recipe.finetune's, step for step."""
    import minilora

    res = T.run(TINY.replace(seed=2))
    _, hist, rep = R.finetune(minilora.load_base_model(), T.LORA, TINY.replace(seed=2))
    assert res.history.loss == hist.loss and res.history.lr == hist.lr
    assert res.loss == rep["loss_after"] and res.exact_match == rep["exact_match_after"]
    assert res.report["trainable"] == T.lora_model(0).num_params(trainable_only=True) == 4096


def test_a_diverged_run_reports_inf():
    diverged = T._run(TINY.replace(optimizer="sgd", lr=1e6, warmup_steps=0), None, ())
    assert diverged.loss == math.inf  # so that the sweep ranks it last


def test_tune_lr_extends_the_grid_while_the_best_is_at_an_end(monkeypatch):
    # a bowl in log(lr) with its bottom at 0.05, beyond the grid's top
    fake = lambda recipe: T.RunResult((math.log10(recipe.lr) - math.log10(0.05)) ** 2, 0.0, None)
    monkeypatch.setattr(T, "run", fake)
    tuned = T.tune_lr(TINY, (1e-3, 3e-3, 1e-2))
    assert list(tuned.sweep) == [1e-3, 3e-3, 1e-2, 0.032, 0.1] and tuned.best_lr == 0.032 and not tuned.at_edge
    short = T.tune_lr(TINY, (1e-3, 3e-3, 1e-2), extend=1)
    assert short.best_lr == 0.032 and short.at_edge
    with pytest.raises(ValueError, match="at least 2"):
        T.tune_lr(TINY, (1e-3,))


def test_schedule_study_and_its_verdicts_on_a_tiny_budget():
    grids = {"sgd": (0.003, 0.01), "adam": (0.003, 0.01), "adamw": (0.003, 0.01)}
    study = T.schedule_study(seeds=(0, 1), base=TINY, grids=grids)
    for name in T.OPTIMIZERS:
        res = study[name]
        for sched in ("constant", "cosine"):
            assert res[sched].recipe.schedule == sched and res[sched].best_lr in res[sched].sweep
            assert len(res["loss"][sched].values) == 2
        assert res["effect"].diffs == pytest.approx(tuple(np.subtract(res["loss"]["constant"].values,
                                                                      res["loss"]["cosine"].values)))
    assert study["adamw"]["constant"].recipe.weight_decay == 0.1 and study["adam"]["constant"].recipe.weight_decay == 0
    rows = T.schedule_verdicts(study)
    assert [r.claim for r in rows][:3] == ["cosine annealing helps SGD noticeably",
                                           "cosine annealing has little effect on Adam",
                                           "cosine annealing has little effect on AdamW"]
    assert all(r.verdict in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE) for r in rows)


def test_schedule_verdicts_test_each_half(monkeypatch):
    """Synthetic study: cosine helps SGD by far more than the spread; Adam unchanged; AdamW much worse."""
    def arm(const, cos):
        tuned = T.Tuned(TINY, {0.01: 1.0}, 0.01, False)
        loss = {"constant": Summary(const), "cosine": Summary(cos)}
        return {"constant": tuned, "cosine": tuned, "loss": loss, "exact_match": loss,
                "effect": T.paired_effect(loss["constant"], loss["cosine"])}

    study = {"sgd": arm((1.0, 1.1, 1.05), (0.5, 0.6, 0.52)), "adam": arm((0.3, 0.32, 0.31), (0.31, 0.3, 0.32)),
             "adamw": arm((0.3, 0.32, 0.31), (0.9, 0.95, 0.92))}
    assert [r.verdict for r in T.schedule_verdicts(study)] == [SUPPORTED, SUPPORTED, NOT_SUPPORTED, NOT_SUPPORTED]
    study["adamw"] = study["adam"]
    assert T.schedule_verdicts(study)[-1].verdict == SUPPORTED


def test_epoch_stream_passes_over_every_example_once_per_epoch():
    stream, per_epoch = T.epoch_stream(64, 16, seed=3)
    assert per_epoch == 4
    x_all, _ = data.task_batch(data.HELDOUT_TASK, 64, np.random.default_rng([3, 7]))
    for epoch in range(2):
        rows = np.concatenate([stream(epoch * per_epoch + j)[0] for j in range(per_epoch)])
        assert sorted(map(bytes, rows)) == sorted(map(bytes, x_all))
    assert not np.array_equal(stream(0)[0], stream(per_epoch)[0])  # reshuffled
    with pytest.raises(ValueError, match="multiple of batch_size"):
        T.epoch_stream(40, 16, 0)


def test_an_E_epoch_run_is_the_prefix_of_a_longer_constant_run():
    rec = TINY.replace(schedule="constant")
    stream, per_epoch = T.epoch_stream(32, 16, seed=0)
    long = T.run(rec.replace(steps=3 * per_epoch), train_data=stream, eval_at=[per_epoch, 3 * per_epoch])
    short = T.run(rec.replace(steps=per_epoch), train_data=stream)
    assert set(long.curve) == {per_epoch, 3 * per_epoch} and long.loss == long.curve[3 * per_epoch]
    assert long.curve[per_epoch] == short.loss  # bit for bit: the repetition study's shortcut is exact


def test_eval_at_must_lie_in_the_run():
    with pytest.raises(ValueError, match="eval_at must lie in 1"):
        T.run(TINY, 0, eval_at=[TINY.steps + 1])


def test_repetition_study_and_verdicts():
    study = T.repetition_study(n_examples=32, epochs=(1, 2), seeds=(0, 1), recipe=TINY.replace(schedule="constant"))
    assert study["steps_per_epoch"] == 2 and set(study["repeated"]) == set(study["fresh"]) == {1, 2}
    assert len(study["histories"]["repeated"]) == 2
    rows = T.repetition_verdicts(study, 32)
    assert len(rows) == 2 and "32 examples" in rows[0].claim
    with pytest.raises(ValueError, match="constant schedule"):
        T.repetition_study(n_examples=32, epochs=(1,), seeds=(0,), recipe=TINY)


def test_repetition_verdicts_on_synthetic_losses():
    def study(curve):
        return {"repeated": {e: Summary(tuple(v + d for d in (0.0, 0.01, -0.01))) for e, v in curve.items()}}

    improving = study({1: 2.0, 2: 1.0, 4: 0.5, 8: 0.3})
    assert [r.verdict for r in T.repetition_verdicts(improving, 64)] == [NOT_SUPPORTED, NOT_SUPPORTED]
    flat_then_worse = study({1: 0.5, 2: 0.5, 4: 0.5, 8: 0.9})
    assert [r.verdict for r in T.repetition_verdicts(flat_then_worse, 64)] == [SUPPORTED, SUPPORTED]


def test_recipe_ablations_change_one_setting_at_a_time(monkeypatch):
    monkeypatch.setattr(T, "losses", lambda recipe, seeds: Summary((recipe.lr, recipe.lr * 1.1, recipe.lr * 0.9)))
    rows = T.recipe_ablations(0.01)
    assert rows[0][1] == T.BLOG_ADAMW and rows[1][1] == T.BLOG_ADAMW.replace(lr=0.01)
    assert [r.replace(lr=0.01) != rows[1][1] for _, r, _ in rows[2:]] == [True, True, True]
    verdicts = T.ablation_verdicts(rows)
    assert verdicts[0].claim.startswith("the recipe's lr 3e-4") and len(verdicts) == 4
