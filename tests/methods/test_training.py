"""Training from the shipped base on the held-out task through the one entry point and the one recipe
(:func:`minilora.experiments.recipe.finetune` with a :class:`~minilora.experiments.recipe.Recipe`, each method
at its ``DEFAULT_LR``): only the method's parameters change, and every method learns.

"Learns" is measured at this scale (chapters 11–14 show the runs over seeds):

* every method lowers the held-out loss and raises the token accuracy within a short run, and leaves every base
  weight bit-identical;
* every method raises the held-out exact match from the base model's (0: it never saw the task) within a short
  run. The prompt methods learn slowest (chapter 11: a prompt cannot change the frozen computation), so they get
  more steps, chosen so that every seed measured answered several of the 512 held-out sequences exactly.
"""

import numpy as np
import pytest

import minilora
from minilora.experiments import recipe as R
from minilora.peft import (
    DoubleSeqBnConfig,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    SeqBnConfig,
)

CONFIGS = {
    "prompt": PromptTuningConfig(8),
    "prompt_vocab": PromptTuningConfig(8, "SAMPLE_VOCAB"),
    "ptuning_mlp": PromptEncoderConfig(8, encoder_hidden_size=32),
    "ptuning_lstm": PromptEncoderConfig(4, "LSTM", encoder_hidden_size=16),
    "prefix": PrefixTuningConfig(8),
    "prefix_proj": PrefixTuningConfig(8, True, 32),
    "houlsby": DoubleSeqBnConfig(),
    "pfeiffer": SeqBnConfig(),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_changes_only_the_method_and_lowers_the_loss(name):
    base = minilora.load_base_model()
    before = base.state_dict()
    model, _, report = R.finetune(base, CONFIGS[name], R.Recipe(steps=30, batch_size=16))
    assert all(np.array_equal(base.params[k], v) for k, v in before.items())  # every base weight, bit for bit
    assert set(model.trainable_names()).isdisjoint(f"base_model.{k}" for k in before)
    assert set(model.trainable_names()).isdisjoint(before)
    assert report["loss_after"] < report["loss_before"]
    assert report["token_acc_after"] > report["token_acc_before"]


#: every method of the library, and the steps (batches of 16, the method's DEFAULT_LR) its test trains
EXACT_MATCH_RUNS = {
    "prompt": (PromptTuningConfig(8), 400),
    "ptuning": (PromptEncoderConfig(8, encoder_hidden_size=32), 800),
    "prefix": (PrefixTuningConfig(8), 150),
    "adapter-houlsby": (DoubleSeqBnConfig(), 150),
    "adapter-pfeiffer": (SeqBnConfig(), 150),
    "lora": (LoraConfig(r=4, lora_alpha=4), 150),
    "full": (None, 100),
}


@pytest.mark.parametrize("name", list(EXACT_MATCH_RUNS))
def test_every_method_raises_the_exact_match(name):
    config, steps = EXACT_MATCH_RUNS[name]
    _, _, report = R.finetune(minilora.load_base_model(), config, R.Recipe(steps=steps, batch_size=16))
    assert report["lr"] == R.DEFAULT_LR[R.method_of(config)]
    assert report["exact_match_before"] == 0.0  # the base model never saw the held-out task
    assert report["exact_match_after"] > report["exact_match_before"]
