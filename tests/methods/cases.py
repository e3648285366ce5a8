"""The methods under test, each as (config, apply, trainable-parameter formula), and tiny float64 GPTs.

The formulas are the papers' counts written out for the tiny sizes (they are the specification, not the code's
own arithmetic): prompt tuning ``p·C``; p-tuning's MLP encoder ``pC + (CH + H) + (HH + H) + (HC + C)``; prefix
tuning ``p·L·2·C`` (with a projection ``pC + (CH + H) + (H·2LC + 2LC)``); adapters ``(2md + d + m)`` per
adapter, two per block for Houlsby, one for Pfeiffer.
"""

import numpy as np

from minilora.nn import GPT, GPTConfig
from minilora.peft import adapters, p_tuning, prefix_tuning, prompt_tuning

TINY = dict(vocab_size=7, block_size=9, n_layer=2, n_head=2, n_embd=8, mlp_ratio=2)
P = 3  # virtual tokens
C, L = TINY["n_embd"], TINY["n_layer"]


def lstm_params(n_in, H, layers):
    """torch.nn.LSTM(bidirectional=True): per layer and direction 4H·in + 4H·H + 4H + 4H."""
    total = 0
    for layer in range(layers):
        total += 2 * (4 * H * (n_in if layer == 0 else 2 * H) + 4 * H * H + 8 * H)
    return total


#: name -> (config, apply, formula for the trainable parameters of the tiny GPT)
METHODS = {
    "prompt": (prompt_tuning.PromptTuningConfig(P), prompt_tuning.apply, P * C),
    "prompt_text": (prompt_tuning.PromptTuningConfig(P, "TEXT", [4, 2]), prompt_tuning.apply, P * C),
    "prompt_vocab": (prompt_tuning.PromptTuningConfig(P, "SAMPLE_VOCAB"), prompt_tuning.apply, P * C),
    "ptuning_mlp": (p_tuning.PromptEncoderConfig(P, encoder_hidden_size=5), p_tuning.apply,
                    P * C + (C * 5 + 5) + (5 * 5 + 5) + (5 * C + C)),
    "ptuning_lstm": (p_tuning.PromptEncoderConfig(P, "LSTM", encoder_hidden_size=3), p_tuning.apply,
                     P * C + lstm_params(C, 3, 2) + (6 * 6 + 6) + (6 * C + C)),
    "prefix": (prefix_tuning.PrefixTuningConfig(P), prefix_tuning.apply, P * L * 2 * C),
    "prefix_proj": (prefix_tuning.PrefixTuningConfig(P, prefix_projection=True, encoder_hidden_size=5),
                    prefix_tuning.apply, P * C + (C * 5 + 5) + (5 * 2 * L * C + 2 * L * C)),
    "houlsby": (adapters.DoubleSeqBnConfig(reduction_factor=2), adapters.apply, 2 * L * (2 * 4 * C + C + 4)),
    "pfeiffer": (adapters.SeqBnConfig(reduction_factor=4), adapters.apply, 1 * L * (2 * 2 * C + C + 2)),
    "houlsby_tanh_leave_out": (adapters.DoubleSeqBnConfig(reduction_factor=8, non_linearity="tanh", leave_out=[0]),
                               adapters.apply, 2 * 1 * (2 * 1 * C + C + 1)),
}
PROMPT_METHODS = [m for m in METHODS if not m.startswith(("houlsby", "pfeiffer"))]
ADAPTER_METHODS = [m for m in METHODS if m.startswith(("houlsby", "pfeiffer"))]


def tiny_gpt(dtype="float64", seed=0, **kw) -> GPT:
    """A GPT whose weights are far from GPT-2's small init (so attention is far from uniform)."""
    model = GPT(GPTConfig(**{**TINY, "dtype": dtype, **kw}), seed=seed)
    rng = np.random.default_rng(seed + 100)
    for name, p in model.params.items():
        p[...] = rng.normal(0, 0.3, p.shape) + (1.0 if ".ln_" in name and name.endswith("weight") else 0.0)
    return model


def apply_method(name, dtype="float64", seed=0, perturb=True, **kw):
    """``(model, base_state)``: the method applied to a fresh tiny GPT, its trainable parameters moved off
    their initialization (so an adapter's up-projection is not ~0 and every path carries gradient)."""
    config, apply, _ = METHODS[name]
    base = tiny_gpt(dtype, seed, **kw)
    state = base.state_dict()
    model = apply(base, config, seed=seed + 1)
    if perturb:
        rng = np.random.default_rng(seed + 2)
        for n in model.trainable_names():
            model.params[n][...] += rng.normal(0, 0.3, model.params[n].shape)
    return model, state


def batch(seed=0, B=2, T=4):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, TINY["vocab_size"], (B, T))
    targets = rng.integers(0, TINY["vocab_size"], (B, T))
    targets[0, :2] = -100
    return idx, targets
