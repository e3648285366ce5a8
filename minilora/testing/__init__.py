"""A property-testing kit: test your own quantizer or float cast against minilora's proven bounds.

For the engineer writing an NF4 / int8 / BF16 kernel (CUDA, Triton, C++, NumPy) who wants hypothesis to
hunt for the input that breaks it::

    from hypothesis import given
    from minilora.testing import tensors, blocksizes, assert_within_bound

    @given(x=tensors(), bs=blocksizes())
    def test_my_nf4(x, bs):
        assert_within_bound(x, my_dequant(*my_quant(x, bs)), "nf4", blocksize=bs)

* strategies (:mod:`minilora.testing.strategies`): :func:`tensors`, :func:`blocksizes`, :func:`float32_bits`;
* assertions (:mod:`minilora.testing.assertions`): :func:`assert_within_bound`,
  :func:`assert_matmul_within_bound`, :func:`assert_rounds_like` — each failure names the worst element;
* oracles (:mod:`minilora.testing.oracles`): :func:`expected_codes`, :func:`diff_codes`,
  :func:`assert_codes_equal` — for bit-exactness, where a bound is not the right question.

The bounds themselves live in :mod:`minilora.quant.bounds` (derived in its docstring). docs/testing.md
walks through a worked example. hypothesis is an optional dependency, the ``test`` extra
(``pip install -e ".[test]"``): without it the assertions and oracles still work, and importing a strategy
(``from minilora.testing import tensors``) raises an ImportError that names the extra.
"""

from minilora.testing.assertions import (
    METHODS,
    assert_matmul_within_bound,
    assert_rounds_like,
    assert_within_bound,
    correctly_rounded,
)
from minilora.testing.oracles import CodeDiff, ExpectedCodes, assert_codes_equal, diff_codes, expected_codes
from minilora.testing.strategies import BIT_CLASSES, KINDS, MISSING_HYPOTHESIS, code_midpoints

_STRATEGIES = ("tensors", "blocksizes", "float32_bits")

try:
    import hypothesis  # noqa: F401
except ImportError:
    def __getattr__(name: str):                     # ``from minilora.testing import tensors`` names the extra
        if name in _STRATEGIES:
            raise ImportError(MISSING_HYPOTHESIS)
        raise AttributeError(f"module 'minilora.testing' has no attribute {name!r}")
else:
    from minilora.testing.strategies import blocksizes, float32_bits, tensors

__all__ = [
    "tensors", "blocksizes", "float32_bits", "code_midpoints", "KINDS", "BIT_CLASSES",
    "assert_within_bound", "assert_matmul_within_bound", "assert_rounds_like", "correctly_rounded", "METHODS",
    "expected_codes", "ExpectedCodes", "diff_codes", "CodeDiff", "assert_codes_equal",
]
