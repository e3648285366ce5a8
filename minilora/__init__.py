"""minilora: a pure-NumPy reference for parameter-efficient fine-tuning and low-bit formats.

Every gradient is written by hand (no autograd) and checked by finite differences; every
behaviour that bitsandbytes, PyTorch, ml_dtypes or PEFT define is checked against golden
vectors made by those libraries (``tools/make_golden.py``).

Layers, bottom to top (each imports only from those below it)::

    backend -> formats -> quant
    backend -> nn -> optim / schedules -> peft -> train, data, figures, CLI
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
