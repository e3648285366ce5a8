"""minilora.experiments.recipe: one Recipe and one finetune() for every method (short runs)."""

import numpy as np
import pytest

import minilora
from minilora import schedules
from minilora.experiments.recipe import (
    DEFAULT_LR,
    METHODS,
    Recipe,
    finetune,
    method_config,
    method_of,
    prepare,
    step_seconds,
)
from minilora.optim import SGD, Adam, AdamW
from minilora.peft import LoraConfig, QuantizationConfig, lora_modules
from minilora.peft.qlora import QLoRALinear, quantized_modules


def test_every_method_has_a_default_learning_rate():
    assert set(DEFAULT_LR) == set(METHODS)
    assert Recipe().lr_for("full") == DEFAULT_LR["full"] and Recipe(lr=0.5).lr_for("full") == 0.5
    with pytest.raises(ValueError, match="method must be one of"):
        Recipe().lr_for("bogus")


@pytest.mark.parametrize("field, value, match", [
    ("steps", -1, "steps must be an integer >= 0, got -1"),
    ("steps", 2.5, "steps must be an integer"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("lr", 0.0, "lr must be a finite number > 0"),
    ("lr", float("nan"), "lr must be a finite number"),
    ("schedule", "step", "schedule must be one of"),
    ("warmup_steps", 200, "warmup_steps must be <= steps=150"),
    ("weight_decay", -0.1, "weight_decay must be a finite number >= 0"),
    ("optimizer", "lion", "optimizer must be one of"),
    ("max_grad_norm", 0, "max_grad_norm must be a finite number > 0"),
    ("grad_accum", 0, "grad_accum must be an integer >= 1"),
    ("seed", True, "seed must be an integer"),
    ("eval_every", -5, "eval_every must be an integer >= 0"),
    ("momentum", -0.1, "momentum must be a finite number >= 0"),
    ("momentum", float("inf"), "momentum must be a finite number"),
])
def test_recipe_refuses_bad_values_by_name(field, value, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**{field: value})


@pytest.mark.parametrize("momentum", [1.0, 1.5])
def test_momentum_must_be_below_one(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got"):
        Recipe(optimizer="sgd", momentum=momentum)


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_momentum_is_sgds_only(optimizer):
    with pytest.raises(ValueError, match=f"momentum is SGD's .*momentum=0.9 with optimizer='{optimizer}'"):
        Recipe(optimizer=optimizer, momentum=0.9)
    with pytest.raises(ValueError, match="momentum is SGD's"):  # replace checks it again
        Recipe(optimizer="sgd", momentum=0.9).replace(optimizer=optimizer)


def test_sgd_gets_the_recipes_momentum():
    model = minilora.load_base_model()
    plain = Recipe(optimizer="sgd", lr=0.1).make_optimizer(model, "full")
    heavy = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01).make_optimizer(model, "full")
    assert (type(plain), plain.momentum) == (SGD, 0.0)
    assert (type(heavy), heavy.lr, heavy.momentum, heavy.weight_decay) == (SGD, 0.1, 0.9, 0.01)
    assert Recipe(optimizer="sgd", momentum=0.9).describe("lora").startswith(
        "150 steps of SGD (momentum 0.9, weight decay 0)")
    assert "momentum" not in Recipe(optimizer="sgd").describe("lora")


def test_sgd_momentum_changes_the_run():
    """The momentum reaches the update: two steps of SGD with momentum differ from plain SGD from step 2 on."""
    recipe = Recipe(steps=2, batch_size=4, lr=0.05, optimizer="sgd")
    runs = [finetune(minilora.load_base_model(), LoraConfig(r=2), recipe.replace(momentum=m))[0] for m in (0, 0.9)]
    names = [n for n in runs[0].trainable_names() if n.endswith("lora_B.weight")]
    assert names and any(not np.array_equal(runs[0].params[n], runs[1].params[n]) for n in names)


def test_finetune_takes_a_train_data_stream_and_eval_at():
    fixed = minilora.data.heldout_train_data(4, seed=7)
    calls = []

    def stream(i):
        calls.append(i)
        return fixed(i % 2)  # two batches, over and over

    recipe = Recipe(steps=5, batch_size=4, lr=0.01, eval_every=4)
    _, hist, rep = finetune(minilora.load_base_model(), LoraConfig(r=2), recipe, train_data=stream, eval_at=[1, 3])
    assert set(calls) == {0, 1, 2, 3, 4}  # micro-batch i of the stream at step i
    assert hist.eval_step == [1, 3, 4, 5] and len(hist.eval_loss) == len(hist.eval_metrics) == 4
    assert rep["loss_after"] == hist.eval_loss[-1]
    default = finetune(minilora.load_base_model(), LoraConfig(r=2), recipe.replace(seed=7))[1]
    same = finetune(minilora.load_base_model(), LoraConfig(r=2), recipe.replace(seed=7), train_data=fixed)[1]
    assert same.loss == default.loss and default.loss != hist.loss  # the default stream is the recipe's
    with pytest.raises(ValueError, match="train_data\\(0\\) has 4 sequences, recipe.batch_size is 8"):
        finetune(minilora.load_base_model(), LoraConfig(r=2), recipe.replace(batch_size=8), train_data=fixed)
    with pytest.raises(TypeError, match="train_data must be a callable"):
        finetune(minilora.load_base_model(), LoraConfig(r=2), recipe, train_data=[fixed(0)])
    with pytest.raises(ValueError, match="eval_at must lie in 1 … steps=5"):
        finetune(minilora.load_base_model(), LoraConfig(r=2), recipe, eval_at=[6])


def test_replace_checks_again_and_names_unknown_fields():
    assert Recipe().replace(steps=20, seed=3) == Recipe(steps=20, seed=3)
    with pytest.raises(ValueError, match="batch_size"):
        Recipe().replace(batch_size=0)
    with pytest.raises(TypeError, match=r"Recipe has no field\(s\) \['step'\]"):
        Recipe().replace(step=20)


def test_the_recipe_builds_its_optimizer_and_schedule():
    model = minilora.load_base_model()
    for name, cls in (("adamw", AdamW), ("adam", Adam), ("sgd", SGD)):
        opt = Recipe(optimizer=name, weight_decay=0.1).make_optimizer(model, "lora")
        assert type(opt) is cls and (opt.lr, opt.weight_decay) == (DEFAULT_LR["lora"], 0.1)
    assert Recipe().make_schedule("lora") is None  # constant, no warmup: the optimizer's lr
    sched = Recipe(steps=20, lr=0.1, schedule="cosine", warmup_steps=5, lr_min=0.01).make_schedule("full")
    assert [sched(s) for s in (0, 5, 20)] == [schedules.cosine_with_warmup(s, 20, 5, 0.1, 0.01) for s in (0, 5, 20)]
    lin = Recipe(steps=10, lr=0.1, schedule="linear").make_schedule("full")
    assert lin(10) == schedules.linear(10, 10, 0.1)


def test_history_records_the_schedule_the_recipe_asks_for():
    recipe = Recipe(steps=6, batch_size=4, lr=0.02, schedule="constant", warmup_steps=3)
    _, hist, rep = finetune(minilora.load_base_model(), LoraConfig(r=1), recipe)
    assert hist.lr == [schedules.constant(s, 0.02, warmup=3) for s in range(6)] and rep["lr"] == 0.02


def test_finetune_lora_keeps_the_base_and_learns():
    shipped = minilora.load_base_model().params
    model, hist, rep = finetune(minilora.load_base_model(), LoraConfig(r=4, lora_alpha=8),
                                Recipe(steps=20, batch_size=16, eval_every=10), include_step0=True, pretrained=True)
    assert all(np.array_equal(model.params[k], v) for k, v in shipped.items())  # frozen, bit for bit
    assert set(model.grads) == {f"{n}.lora_{ab}.weight" for n in lora_modules(model) for ab in "AB"}
    assert rep["trainable"] == 2 * 2 * 4 * (64 + 64) and rep["total"] == rep["trainable"] + sum(
        v.size for v in shipped.values())
    assert (rep["method"], rep["lr"]) == ("lora", DEFAULT_LR["lora"])
    assert hist.eval_step == [0, 10, 20]
    assert hist.eval_loss[0] == pytest.approx(rep["loss_before"])  # B = 0: step 0 is the base model
    assert hist.eval_loss[-1] == rep["loss_after"] < 0.5 * rep["loss_before"]
    assert rep["token_acc_after"] > rep["token_acc_before"]
    assert rep["pretrained_before"] > 0.95 and 0 <= rep["pretrained_after"] <= 1
    assert rep["seconds"] > 0 and step_seconds(hist, 16 * 17).shape == (20,)


def test_finetune_full_and_bad_configs():
    model, hist, rep = finetune(minilora.load_base_model(), None, Recipe(steps=2, batch_size=8))
    assert rep["trainable"] == rep["total"] == model.num_params() and "pretrained_before" not in rep
    assert hist.eval_step == [2] and rep["method"] == "full" and rep["lr"] == DEFAULT_LR["full"]
    assert finetune(minilora.load_base_model(), "full", Recipe(steps=0))[2]["method"] == "full"
    with pytest.raises(TypeError, match="peft_config must be None, 'full' or a PEFT config"):
        finetune(minilora.load_base_model(), "bogus")
    with pytest.raises(TypeError, match="recipe must be a Recipe"):
        finetune(minilora.load_base_model(), None, {"steps": 2})
    with pytest.raises(ValueError, match="quantization needs a PEFT config"):
        finetune(minilora.load_base_model(), None, Recipe(steps=0), quantization=QuantizationConfig())


def test_the_same_recipe_gives_the_same_run_and_another_seed_another():
    runs = [finetune(minilora.load_base_model(), LoraConfig(r=2), Recipe(steps=3, batch_size=4, seed=s))[1]
            for s in (0, 0, 1)]
    assert runs[0].loss == runs[1].loss and runs[0].loss != runs[2].loss


def test_finetune_qlora_reports_peft_counts():
    """The QLoRA report counts the 4-bit weights by their elements, so it equals LoRA's."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    rep_l = finetune(minilora.load_base_model(), config, Recipe(steps=0))[2]
    model, _, rep_q = finetune(minilora.load_base_model(), config, Recipe(steps=0), quantization=QuantizationConfig())
    assert rep_q["method"] == "qlora" and len(quantized_modules(model)) == 12
    assert (rep_q["trainable"], rep_q["total"]) == (rep_l["trainable"], rep_l["total"])
    assert rep_q["total"] == minilora.load_base_model().num_params() + rep_q["trainable"]


def test_qlora_keeps_modules_to_save_in_float():
    config = LoraConfig(r=2, target_modules=("q_proj",), modules_to_save=("blocks.0.mlp.up_proj",))
    model = prepare(minilora.load_base_model(), config, QuantizationConfig())
    assert isinstance(model.get_submodule("blocks.0.attn.q_proj"), QLoRALinear)
    assert "blocks.0.mlp.up_proj" not in quantized_modules(model) and "blocks.1.mlp.up_proj" in quantized_modules(model)


def test_method_of_and_method_config():
    assert method_of(None) == method_of("full") == "full"
    assert method_of(LoraConfig()) == "lora" and method_of(LoraConfig(), QuantizationConfig()) == "qlora"
    config, quant = method_config("qlora", r=4, quant_type="fp4", blocksize=32)
    assert (config.r, config.target_modules, quant) == (4, "all-linear", QuantizationConfig(32, "fp4"))
    assert method_config("lora", r=None)[0].r == 8  # None: the default
    with pytest.raises(ValueError, match="method must be one of"):
        method_config("ia3")
    with pytest.raises(ValueError, match=r"LoraConfig has no option\(s\) \['num_virtual_tokens'\]"):
        method_config("lora", num_virtual_tokens=4)
    with pytest.raises(ValueError, match=r"\['quant_type'\] configure QLoRA's 4-bit base, not method 'lora'"):
        method_config("lora", quant_type="nf4")
    with pytest.raises(ValueError, match="full fine-tuning takes no method options"):
        method_config("full", r=4)
