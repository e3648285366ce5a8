"""Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning", arXiv 2104.08691).

The whole method is one trainable matrix: ``p`` soft-prompt vectors ``P ∈ R^{p×C}`` put in front of the token
embeddings of every input, everything else frozen (§2 of the paper: "we freeze the entire pre-trained model and
only allow an additional k tunable tokens per downstream task to be prepended to the input text")::

    logits = GPT([P ; wte(x)])[p:]          trainable parameters: p · C

The gradient ``dP`` is the GPT's input gradient at the first ``p`` positions, summed over the batch
(:class:`~minilora.peft.prompt_learning.PromptLearningModel`). The prompt lives in the embedding space but need
not be the embedding of any token: it is a "soft" prompt.

Initialization (``prompt_tuning_init``, PEFT's ``PromptTuningInit``):

* ``"RANDOM"`` (PEFT's default): N(0, 1), ``torch.nn.Embedding``'s initialization;
* ``"SAMPLE_VOCAB"``: the embeddings of ``p`` token ids drawn uniformly from the vocabulary (Lester et al.
  §3.2 "sampled vocab");
* ``"TEXT"``: the embeddings of the tokens of ``prompt_tuning_init_text``, repeated or cut to ``p`` tokens as
  PEFT does (Lester et al.'s "class label" initialization is this with the label words).

The text is either token ids (a sequence of ints) or a string, which the ``tokenizer`` given to :func:`apply`
turns into ids (any callable ``str -> list[int]``, or an object with ``.encode``; for the toy vocabulary of
:mod:`minilora.data`, :func:`minilora.experiments.methods.toy_tokenizer`). ``get_peft_model(model, config)``, and so
every fine-tuning run (``minilora.experiments.recipe.finetune``), takes no tokenizer: give it the text as token ids.

Departures from PEFT: PEFT reads a Hugging Face tokenizer by ``tokenizer_name_or_path``; minilora takes the
tokenizer object (or ids) and keeps ``tokenizer_name_or_path`` only as the record written to
``adapter_config.json`` (where it names the tokenizer used, or ``"token ids"``). Logits cover the real
tokens only (see :mod:`minilora.peft.prompt_learning`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from minilora import backend
from minilora.nn.gpt import GPT
from minilora.peft.prompt_learning import PromptLearningConfig, PromptLearningModel, PromptTable

INIT_CHOICES = ("RANDOM", "SAMPLE_VOCAB", "TEXT")
#: ``tokenizer_name_or_path`` recorded when the init text was given as token ids
TOKEN_IDS = "token ids"


@dataclass(frozen=True)
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning, named as PEFT's ``PromptTuningConfig``.

    Parameters
    ----------
    num_virtual_tokens : int
        ``p ≥ 1``, the length of the soft prompt.
    prompt_tuning_init : ``"RANDOM"`` | ``"SAMPLE_VOCAB"`` | ``"TEXT"``
        How the prompt starts (module docstring).
    prompt_tuning_init_text : str or sequence of int, optional
        Required for ``"TEXT"``: a string (tokenized by :func:`apply`'s ``tokenizer``) or token ids.
    tokenizer_name_or_path : str, optional
        A name for the record (``adapter_config.json``); minilora does not load tokenizers by name.
    """

    prompt_tuning_init: str = "RANDOM"
    prompt_tuning_init_text: str | Sequence[int] | None = None
    tokenizer_name_or_path: str | None = None
    peft_type: ClassVar[str] = "PROMPT_TUNING"

    def __post_init__(self) -> None:
        super().__post_init__()
        init = str(getattr(self.prompt_tuning_init, "value", self.prompt_tuning_init))
        if init not in INIT_CHOICES:
            raise ValueError(f"prompt_tuning_init must be one of {INIT_CHOICES}, got {self.prompt_tuning_init!r}")
        object.__setattr__(self, "prompt_tuning_init", init)
        text = self.prompt_tuning_init_text
        if init == "TEXT":
            if text is None or len(text) == 0:
                raise ValueError(f"prompt_tuning_init='TEXT' needs a non-empty prompt_tuning_init_text (a string or "
                                 f"token ids), got {text!r}")
            if not isinstance(text, str):
                if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in text):
                    raise TypeError(f"prompt_tuning_init_text must be a string or a sequence of int token ids, "
                                    f"got {text!r}")
                object.__setattr__(self, "prompt_tuning_init_text", tuple(int(i) for i in text))


def text_token_ids(text: str | Sequence[int], num_virtual_tokens: int, vocab_size: int,
                   tokenizer: Callable[[str], Sequence[int]] | Any | None = None) -> list[int]:
    """The ``p`` token ids of ``"TEXT"`` init: the text's ids, cut or repeated to length ``p`` (PEFT's rule).

    >>> text_token_ids([3, 1, 4], 7, vocab_size=10)
    [3, 1, 4, 3, 1, 4, 3]
    >>> text_token_ids([3, 1, 4, 1, 5], 2, vocab_size=10)
    [3, 1]
    """
    if isinstance(text, str):
        if tokenizer is None:
            raise ValueError("prompt_tuning_init_text is a string: pass tokenizer= (a callable str -> token ids, or "
                             "an object with .encode) to apply(), or give the token ids instead")
        encode = tokenizer.encode if hasattr(tokenizer, "encode") else tokenizer
        ids = [int(i) for i in encode(text)]
        if not ids:
            raise ValueError(f"prompt_tuning_init_text {text!r} has no tokens")
    else:
        ids = [int(i) for i in text]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"prompt_tuning_init_text has token ids {bad} outside [0, vocab_size={vocab_size})")
    reps = math.ceil(num_virtual_tokens / len(ids))
    return (ids * reps)[:num_virtual_tokens]


class PromptEmbedding(PromptTable):
    """The soft prompt ``embedding.weight`` (p, C), initialized as ``config.prompt_tuning_init`` says.

    Parameters
    ----------
    config : PromptTuningConfig.  word_embeddings : the GPT's token table ``wte.weight`` (V, C), read for
    ``"SAMPLE_VOCAB"`` / ``"TEXT"``.  seed : int or Generator.  tokenizer : for a string init text.
    """

    def __init__(self, config: PromptTuningConfig, word_embeddings: np.ndarray,
                 seed: int | np.random.Generator | None = 0, tokenizer: Any = None) -> None:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        p, (V, C) = config.num_virtual_tokens, word_embeddings.shape
        ids = None  # computed (and checked) before the table exists: a bad text leaves nothing behind
        if config.prompt_tuning_init == "SAMPLE_VOCAB":
            ids = rng.integers(0, V, p)
        elif config.prompt_tuning_init == "TEXT":
            ids = text_token_ids(config.prompt_tuning_init_text, p, V, tokenizer)
        super().__init__(p, C, seed=rng, dtype=str(word_embeddings.dtype))
        if ids is not None:
            self.embedding.weight[...] = word_embeddings[backend.xp().asarray(ids)]
        self.init_token_ids = None if ids is None else [int(i) for i in ids]
        self.tokenizer_name = config.tokenizer_name_or_path  # the record adapter_config.json keeps
        if config.prompt_tuning_init == "TEXT" and self.tokenizer_name is None:
            text = config.prompt_tuning_init_text
            self.tokenizer_name = TOKEN_IDS if not isinstance(text, str) else _qualname(tokenizer)


def _qualname(obj: Any) -> str:
    """``module.name`` of a tokenizer (function, class instance or bound method), for the record."""
    target = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(obj).__name__)}"


def apply(model: GPT, config: PromptTuningConfig, seed: int = 0, tokenizer: Any = None) -> PromptLearningModel:
    """Prompt-tune ``model``: freeze it (in place) and return the wrapper that trains only the soft prompt.

    Parameters
    ----------
    model : GPT.  config : PromptTuningConfig.  seed : the prompt's initialization.
    tokenizer : callable ``str -> ids`` (or ``.encode``), for a string ``prompt_tuning_init_text``.

    Returns
    -------
    PromptLearningModel with one trainable parameter, ``prompt_encoder.embedding.weight`` (p, n_embd).
    """
    if not isinstance(config, PromptTuningConfig):
        raise TypeError(f"config must be a PromptTuningConfig, got {type(config).__name__}")
    config.check_model(model)
    encoder = PromptEmbedding(config, model.params["wte.weight"], seed=seed, tokenizer=tokenizer)
    model.freeze()
    return PromptLearningModel(model, encoder, config)


def prompt_tuning_parameter_count(num_virtual_tokens: int, n_embd: int) -> int:
    """Trainable parameters of prompt tuning: ``p · C``.

    >>> prompt_tuning_parameter_count(100, 12288)   # GPT-3 175B, Lester et al.'s longest prompt
    1228800
    """
    return num_virtual_tokens * n_embd


__all__ = ["INIT_CHOICES", "PromptEmbedding", "PromptTuningConfig", "apply", "prompt_tuning_parameter_count",
           "text_token_ids"]
