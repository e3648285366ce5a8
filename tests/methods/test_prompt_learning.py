"""Prompt tuning, p-tuning and prefix tuning: initialization, the wrapper's interface, and bad input.

The numbers themselves (logits, gradients, positions, the prefix layout) are checked against PEFT in
test_golden_methods.py; here: what PEFT's rules say about initialization, what the wrapper promises (a drop-in
for the GPT), and errors that name the argument and change nothing.
"""

import warnings

import numpy as np
import pytest

from minilora.data import accuracy
from minilora.peft import p_tuning, prefix_tuning, prompt_tuning
from minilora.peft.prompt_learning import PromptLearningModel

from .cases import METHODS, PROMPT_METHODS, TINY, apply_method, batch, tiny_gpt


@pytest.mark.parametrize("p,ids,rows", [(5, [4, 2], [4, 2, 4, 2, 4]), (2, [6, 1, 3], [6, 1]),
                                        (3, [5, 0, 2], [5, 0, 2])], ids=["repeated", "cut", "exact"])
def test_text_init_copies_the_texts_token_embeddings_repeated_or_cut(p, ids, rows):
    base = tiny_gpt()
    wte = base.params["wte.weight"].copy()
    model = prompt_tuning.apply(base, prompt_tuning.PromptTuningConfig(p, "TEXT", ids))
    np.testing.assert_array_equal(model.prompt_encoder.embedding.weight, wte[rows])
    assert model.prompt_encoder.init_token_ids == rows


def test_text_init_from_a_string_needs_a_tokenizer():
    vocab = {"a": 1, "b": 5}
    config = prompt_tuning.PromptTuningConfig(3, "TEXT", "a b")
    with pytest.raises(ValueError, match="tokenizer"):
        prompt_tuning.apply(tiny_gpt(), config)
    by_callable = prompt_tuning.apply(tiny_gpt(), config, tokenizer=lambda s: [vocab[w] for w in s.split()])

    class Tok:
        def encode(self, s):
            return [vocab[w] for w in s.split()]

    by_object = prompt_tuning.apply(tiny_gpt(), config, tokenizer=Tok())
    assert by_callable.prompt_encoder.init_token_ids == by_object.prompt_encoder.init_token_ids == [1, 5, 1]


def test_sample_vocab_init_takes_rows_of_the_token_table():
    base = tiny_gpt()
    wte = base.params["wte.weight"].copy()
    model = prompt_tuning.apply(base, prompt_tuning.PromptTuningConfig(4, "SAMPLE_VOCAB"), seed=3)
    ids = model.prompt_encoder.init_token_ids
    assert len(ids) == 4 and all(0 <= i < TINY["vocab_size"] for i in ids)
    np.testing.assert_array_equal(model.prompt_encoder.embedding.weight, wte[ids])


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_same_seed_same_init_other_seed_other_init(name):
    a, b, c = (apply_method(name, seed=s, perturb=False)[0] for s in (0, 0, 1))
    pa, pb, pc = (m.prompt_encoder.params for m in (a, b, c))
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    if name != "prompt_text":  # TEXT is deterministic by construction
        assert not all(np.array_equal(pa[k], pc[k]) for k in pa)


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_wrapper_is_a_drop_in_for_the_gpt(name):
    model, _ = apply_method(name)
    idx, targets = batch()
    logits, loss = model.forward(idx, targets)
    assert isinstance(model, PromptLearningModel)
    assert logits.shape == (*idx.shape, TINY["vocab_size"]) and np.isfinite(loss)
    assert all(n.startswith("prompt_encoder.") for n in model.trainable_names())
    assert model.num_params() == model.base_model.num_params() + model.num_params(trainable_only=True)
    assert set(accuracy(model, idx, targets)) == {"token_acc", "exact_match"}
    assert model.config is model.base_model.config and model.get_base_model() is model.base_model
    assert type(model.peft_config).__name__ in repr(model)


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_the_prompt_is_shared_by_the_batch(name):
    """Row 0's logits do not depend on what else is in the batch (float64, to round-off)."""
    model, _ = apply_method(name)
    model.eval()
    idx, _ = batch(B=3)
    together, _ = model.forward(idx)
    alone, _ = model.forward(idx[:1])
    np.testing.assert_allclose(together[:1], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_prompt_plus_sequence_longer_than_block_size_names_num_virtual_tokens(name):
    model, _ = apply_method(name)
    too_long = np.zeros((1, TINY["block_size"] - METHODS[name][0].num_virtual_tokens + 1), dtype=np.int64)
    with pytest.raises(ValueError, match="num_virtual_tokens=3 .* block_size=9"):
        model.forward(too_long)


@pytest.mark.parametrize("cls", [prompt_tuning.PromptTuningConfig, p_tuning.PromptEncoderConfig,
                                 prefix_tuning.PrefixTuningConfig])
@pytest.mark.parametrize("p,error", [(0, ValueError), (-2, ValueError), (True, TypeError), (1.5, TypeError),
                                     (None, TypeError)])
def test_num_virtual_tokens_must_be_a_positive_int(cls, p, error):
    with pytest.raises(error, match="num_virtual_tokens"):
        cls(p)


@pytest.mark.parametrize("make,match", [
    (lambda: prompt_tuning.PromptTuningConfig(2, "UNIFORM"), "prompt_tuning_init"),
    (lambda: prompt_tuning.PromptTuningConfig(2, "TEXT"), "prompt_tuning_init_text"),
    (lambda: prompt_tuning.PromptTuningConfig(2, "TEXT", [1, "x"]), "prompt_tuning_init_text"),
    (lambda: p_tuning.PromptEncoderConfig(2, "GRU"), "encoder_reparameterization_type"),
    (lambda: p_tuning.PromptEncoderConfig(2, encoder_hidden_size=0), "encoder_hidden_size"),
    (lambda: p_tuning.PromptEncoderConfig(2, "LSTM", encoder_num_layers=0), "encoder_num_layers"),
    (lambda: p_tuning.PromptEncoderConfig(2, "LSTM", encoder_dropout=1.0), "encoder_dropout"),
    (lambda: prefix_tuning.PrefixTuningConfig(2, prefix_projection="yes"), "prefix_projection"),
    (lambda: prefix_tuning.PrefixTuningConfig(2, encoder_hidden_size=-1), "encoder_hidden_size"),
    (lambda: prefix_tuning.PrefixTuningConfig(2, init_weights="ones"), "init_weights"),
], ids=["init", "text-missing", "text-type", "encoder-type", "hidden", "layers", "dropout", "projection",
        "prefix-hidden", "prefix-init"])
def test_bad_configs_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_no_room_for_a_token_is_refused_and_the_model_is_untouched(name):
    config, apply, _ = METHODS[name]
    base = tiny_gpt(block_size=config.num_virtual_tokens)
    before = base.state_dict()
    with pytest.raises(ValueError, match="num_virtual_tokens=3 leaves no room"):
        apply(base, config)
    assert base.trainable_names() == list(base.params)  # not frozen
    assert all(np.array_equal(before[k], v) for k, v in base.params.items())


def test_text_ids_outside_the_vocabulary_are_refused_before_anything_changes():
    base = tiny_gpt()
    with pytest.raises(ValueError, match=r"token ids \[7\] outside \[0, vocab_size=7\)"):
        prompt_tuning.apply(base, prompt_tuning.PromptTuningConfig(2, "TEXT", [1, 7]))
    assert base.trainable_names() == list(base.params)


def test_methods_need_a_gpt_and_their_own_config():
    with pytest.raises(TypeError, match="GPT"):
        prompt_tuning.apply(object(), prompt_tuning.PromptTuningConfig(2))
    with pytest.raises(TypeError, match="PromptEncoderConfig"):
        p_tuning.apply(tiny_gpt(), prompt_tuning.PromptTuningConfig(2))
    with pytest.raises(TypeError, match="PrefixTuningConfig"):
        prefix_tuning.apply(tiny_gpt(), p_tuning.PromptEncoderConfig(2))


def test_mlp_encoder_ignores_encoder_num_layers_with_a_warning_as_peft():
    with pytest.warns(UserWarning, match="encoder_num_layers=3 is ignored"):
        model = p_tuning.apply(tiny_gpt(), p_tuning.PromptEncoderConfig(2, encoder_num_layers=3))
    assert [n for n in model.trainable_names() if n.endswith("weight")] == [
        "prompt_encoder.embedding.weight", "prompt_encoder.mlp_head.0.weight", "prompt_encoder.mlp_head.2.weight",
        "prompt_encoder.mlp_head.4.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p_tuning.apply(tiny_gpt(), p_tuning.PromptEncoderConfig(2))


def test_lstm_dropout_acts_in_training_only():
    model = p_tuning.apply(tiny_gpt(), p_tuning.PromptEncoderConfig(2, "LSTM", 3, encoder_dropout=0.5), seed=0)
    model.eval()
    first, second = model.get_prompt(), model.get_prompt()
    np.testing.assert_array_equal(first, second)
    model.train()
    assert not np.array_equal(model.get_prompt(), first)


def test_zero_init_prefix_starts_with_zero_keys_and_values():
    for projection in (False, True):
        model = prefix_tuning.apply(tiny_gpt(), prefix_tuning.PrefixTuningConfig(2, projection, 4, "zero"))
        assert not model.get_prompt().any()
