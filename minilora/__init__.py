"""minilora: a pure-NumPy reference for parameter-efficient fine-tuning and low-bit formats.

Every gradient is written by hand (no autograd) and checked by finite differences; every
behaviour that bitsandbytes, PyTorch, ml_dtypes or PEFT define is checked against golden
vectors made by those libraries (``tools/make_golden.py``).

Layers, bottom to top (each imports only from those below it)::

    backend -> formats -> quant
    backend -> nn -> optim / schedules -> peft -> train, data, figures, CLI
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_base_model"]


def __getattr__(name: str):
    # lazy: ``import minilora`` stays light; ``minilora.load_base_model()`` imports the engine on first use
    if name == "load_base_model":
        from minilora.base_model import load_base_model

        return load_base_model
    raise AttributeError(f"module 'minilora' has no attribute {name!r}")
