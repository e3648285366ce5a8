"""The experiments behind the notebooks, figures and CLI, one module per chapter (the library never imports them).

* :mod:`~minilora.experiments.methods` — prompt tuning, p-tuning, prefix tuning / p-tuning v2 and adapters on
  the shipped base GPT (chapters 11–13).
"""
