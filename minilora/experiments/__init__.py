"""The experiments behind the notebooks, figures and CLI, one module per chapter (the library never imports them).

Each module sits above the library (``peft``, ``train``, ``data``, ...) and below the notebooks: no logic lives
only in a notebook.

* :mod:`~minilora.experiments.recipe` — the one training recipe (:class:`~minilora.experiments.recipe.Recipe`) and
  the one function that fine-tunes the shipped base GPT with any PEFT config
  (:func:`~minilora.experiments.recipe.finetune`);
* :mod:`~minilora.experiments.lora` — chapters 02–03: the low-rank teacher, LoRA on the base GPT;
* :mod:`~minilora.experiments.qlora` — chapter 10: QLoRA against LoRA and full fine-tuning, memory, paging;
* :mod:`~minilora.experiments.methods` (with ``methods_probe`` and ``methods_plots``) — prompt tuning, p-tuning,
  prefix tuning / p-tuning v2 and adapters on the shipped base GPT (chapters 11–13);
* :mod:`~minilora.experiments.compare` — chapter 14: every PEFT method on one task, side by side;
* :mod:`~minilora.experiments.gpt2` — fine-tuning a real GPT-2 checkpoint on a text file (LoRA, QLoRA, full);
* :mod:`~minilora.experiments.quant_eval` — QLoRA's Table 2 on any model: held-out perplexity with every
  linear weight round-tripped through each storage format;
* :mod:`~minilora.experiments.training` — the blog's training-strategy claims (cosine schedule with SGD and
  Adam/AdamW, the recipe, repeated epochs) tested by LoRA fine-tuning of the shipped base GPT, every run one
  :func:`~minilora.experiments.recipe.finetune` with one :class:`~minilora.experiments.recipe.Recipe`;
* :mod:`~minilora.experiments.memory` — the same chapter's memory claims: optimizer state (why not SGD?) and
  gradient accumulation;
* :mod:`~minilora.experiments.verdicts` — numbers over seeds, paired effects and the rule that turns them into
  "supported", "not supported" or "inconclusive at this budget".

Nothing heavy is imported here: import the chapter module you need.
"""
