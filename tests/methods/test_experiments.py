"""The chapter experiments' helpers: counts against real models, the attention identity, prompt-as-prefix,
position shifts, seed runs through the one recipe, verdicts, and the value-reflection probe."""

import numpy as np
import pytest

import minilora
from minilora import data
from minilora.experiments import methods as M
from minilora.experiments import methods_probe as probe
from minilora.experiments import recipe as R
from minilora.experiments.methods_probe import value_reflection_probe
from minilora.peft import (
    DoubleSeqBnConfig,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    SeqBnConfig,
)

from .cases import apply_method, batch


def test_parameter_counts_of_the_tiny_gpt_are_those_of_the_real_models():
    counts = M.parameter_counts(M.SHAPES["tiny GPT"], num_virtual_tokens=20, reduction_factor=16, lora_r=8)
    d = minilora.load_base_model().config.n_embd
    configs = {"full fine-tuning": None, "LoRA (r=8, q and v)": LoraConfig(),
               "prompt tuning (p=20)": PromptTuningConfig(20),
               "p-tuning, MLP (p=20, H=d)": PromptEncoderConfig(20, encoder_hidden_size=d),
               "prefix tuning (p=20)": PrefixTuningConfig(20),
               "prefix tuning + projection (p=20, H=d)": PrefixTuningConfig(20, True, d),
               "Houlsby adapters (reduction 16)": DoubleSeqBnConfig(),
               "Pfeiffer adapters (reduction 16)": SeqBnConfig()}
    assert set(configs) == set(counts)
    for name, config in configs.items():
        model = R.prepare(minilora.load_base_model(), config)
        assert counts[name] == model.num_params(trainable_only=True), name


def test_toy_tokenizer_refuses_unknown_tokens():
    assert M.toy_tokenizer("[sort] [reverse]") == [data.TASK_TOKEN["sort"], data.TASK_TOKEN["reverse"]]
    with pytest.raises(ValueError, match="'11' is not in the toy vocabulary"):
        M.toy_tokenizer("1 11")


@pytest.mark.parametrize("name", ["prompt", "ptuning_mlp", "prefix", "prefix_proj"])
def test_attention_decomposition_holds_to_float64_rounding(name):
    model, _ = apply_method(name)
    dec = probe.attention_decomposition(model, batch(B=3, T=5)[0])
    assert dec["decomposition_error"] < 1e-12 and dec["real_attention_error"] < 1e-12 and dec["model_error"] < 1e-12
    assert dec["lambda"].shape == (3, 2, 5) and ((dec["lambda"] > 0) & (dec["lambda"] < 1)).all()


@pytest.mark.parametrize("name", ["prompt", "ptuning_mlp", "ptuning_lstm"])
def test_prompt_as_prefix_gives_the_prompt_models_logits(name):
    model, _ = apply_method(name)
    prefix = probe.prompt_as_prefix(model)
    idx, _ = batch(B=3, T=5)
    np.testing.assert_allclose(prefix.forward(idx)[0], model.forward(idx)[0], rtol=0, atol=1e-12)
    assert prefix.get_prompt().shape == (3, 2 * 2 * 8) and prefix.trainable_names() == []
    with pytest.raises(ValueError, match="prompt-tuning or p-tuning model, got PrefixTuningModel"):
        probe.prompt_as_prefix(prefix)


def test_shifted_exact_match_at_zero_is_the_plain_exact_match():
    base = minilora.load_base_model()
    got = M.shifted_exact_match(base, [0, 3], tasks=("copy",), n=64)
    idx, targets = data.task_batch("copy", 64, np.random.default_rng([12345, 1 << 30]))
    assert got["copy"][0] == data.accuracy(base, idx, targets)["exact_match"] and got["copy"].shape == (2,)
    logits, _ = base.forward(idx, position_ids=np.arange(3, 3 + idx.shape[1]))
    answered = ((logits.argmax(-1) == targets) | (targets == -100)).all(axis=1).mean()
    assert got["copy"][1] == answered


def test_runs_summary_and_verdicts():
    a, b, c = (M.Runs(label, [{"exact_match_after": v, "trainable": 5} for v in values])
               for label, values in (("a", [0.5, 0.6, 0.7]), ("b", [0.1, 0.2, 0.3]), ("c", [0.25, 0.55, 0.9])))
    assert a.summary() == "0.600 ± 0.100 (0.500–0.700 over 3 seeds)"
    assert (M.verdict(a, b), M.verdict(b, a), M.verdict(a, c)) == ("higher", "lower", "not distinguishable")
    assert (M.compared(a, b), M.compared(b, a), M.compared(a, c)) == ("higher than", "lower than",
                                                                      "not distinguishable from")
    assert "trainable 5" in repr(a)
    for r in (a, b):
        for rep in r.reports:
            rep["token_acc_after"] = 0.5
    table = M.runs_table({"a": a, "longer label": b}).splitlines()
    assert len(table) == 3 and table[1].startswith("a ") and "0.600 ± 0.100" in table[1] and table[2].endswith("0.500")


def test_seed_runs_are_the_recipes_finetune_once_per_seed():
    runs = M.seed_runs(SeqBnConfig(), seeds=(0, 1), keep_models=True, steps=3, eval_every=1)
    assert runs.label == "adapter" and len(runs.reports) == len(runs.histories) == len(runs.models) == 2
    model, hist, report = R.finetune(minilora.load_base_model(), SeqBnConfig(),
                                     M.RECIPE.replace(seed=1, steps=3, eval_every=1), include_step0=True)
    got = runs.reports[1]
    assert got["lr"] == R.DEFAULT_LR["adapter"] == report["lr"]
    for key in ("exact_match_after", "token_acc_after", "loss_before", "loss_after", "trainable", "total"):
        assert got[key] == report[key], key  # the same run, bit for bit
    assert runs.histories[1].eval_step == hist.eval_step == [0, 1, 2, 3]  # step 0: the model as training starts
    np.testing.assert_array_equal(runs.models[1].forward(data.heldout_eval_batch(8)[0])[0],
                                  model.forward(data.heldout_eval_batch(8)[0])[0])
    assert runs.reports[0]["exact_match_after"] != runs.reports[1]["exact_match_after"] or \
        runs.reports[0]["loss_after"] != runs.reports[1]["loss_after"]  # the seed reaches the run
    assert M.seed_runs(None, seeds=(0,), steps=1).label == "full"
    with pytest.raises(TypeError, match="Recipe has no field"):
        M.seed_runs(SeqBnConfig(), seeds=(0,), kept_positions=True)


def test_text_init_goes_through_the_one_entry_point_as_token_ids():
    ids = M.toy_tokenizer("[sort] [reverse]")
    config = PromptTuningConfig(8, "TEXT", ids, tokenizer_name_or_path="toy_tokenizer")
    model, _, report = R.finetune(minilora.load_base_model(), config, M.RECIPE.replace(steps=0))
    wte = minilora.load_base_model().params["wte.weight"]
    np.testing.assert_array_equal(model.prompt_encoder.embedding.weight, wte[(ids * 4)[:8]])
    assert report["method"] == "prompt" and model.prompt_encoder.tokenizer_name == "toy_tokenizer"
    with pytest.raises(ValueError, match="give the token ids instead"):
        R.finetune(minilora.load_base_model(), PromptTuningConfig(8, "TEXT", "[sort] [reverse]"),
                   M.RECIPE.replace(steps=0))


def test_value_reflection_an_adapter_learns_it_a_prefix_does_not():
    adapter = value_reflection_probe("adapter", steps=150, lr=0.03)
    prefix = value_reflection_probe("prefix", steps=150, lr=0.1)
    assert adapter["remaining"] < 0.5 < prefix["remaining"]
    with pytest.raises(ValueError, match="kind"):
        value_reflection_probe("lora")
