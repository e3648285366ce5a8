"""The experiments the notebooks, figures and CLI run, one module per chapter, as functions.

Each module sits above the library (``peft``, ``train``, ``data``, ...) and below the notebooks: no logic
lives only in a notebook, and the library never imports this package.

* :mod:`minilora.experiments.training` — the blog's training-strategy claims (cosine schedule with SGD and
  Adam/AdamW, the recipe, repeated epochs) tested by LoRA fine-tuning of the shipped base GPT;
* :mod:`minilora.experiments.memory` — the same chapter's memory claims: optimizer state (why not SGD?) and
  gradient accumulation;
* :mod:`minilora.experiments.verdicts` — numbers over seeds, paired effects and the rule that turns them into
  "supported", "not supported" or "inconclusive at this budget".
"""
