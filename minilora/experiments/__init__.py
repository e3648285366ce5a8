"""The experiments behind the notebooks, figures and CLI, one module per chapter (the library never imports them).

* :mod:`~minilora.experiments.gpt2` — fine-tuning a real GPT-2 checkpoint on a text file (LoRA, QLoRA, full);
* :mod:`~minilora.experiments.quant_eval` — QLoRA's Table 2 on any model: held-out perplexity with every
  linear weight round-tripped through each storage format;
* :mod:`~minilora.experiments.methods` (with ``methods_probe`` and ``methods_plots``) — prompt tuning, p-tuning,
  prefix tuning / p-tuning v2 and adapters on the shipped base GPT (chapters 11–13).
"""
