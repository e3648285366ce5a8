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
walks through a worked example. hypothesis is an optional dependency: ``pip install -e ".[test]"``.
"""

try:
    import hypothesis  # noqa: F401
except ImportError as e:                                        # pragma: no cover - tested in a subprocess
    raise ImportError(
        "minilora.testing needs hypothesis, which is not installed. It comes with minilora's 'test' extra: "
        "pip install -e \".[test]\" (from a clone) or pip install \"minilora[test]\" (or pip install hypothesis)"
    ) from e

from minilora.testing.assertions import (
    METHODS,
    assert_matmul_within_bound,
    assert_rounds_like,
    assert_within_bound,
    correctly_rounded,
)
from minilora.testing.oracles import CodeDiff, ExpectedCodes, assert_codes_equal, diff_codes, expected_codes
from minilora.testing.strategies import BIT_CLASSES, KINDS, blocksizes, code_midpoints, float32_bits, tensors

__all__ = [
    "tensors", "blocksizes", "float32_bits", "code_midpoints", "KINDS", "BIT_CLASSES",
    "assert_within_bound", "assert_matmul_within_bound", "assert_rounds_like", "correctly_rounded", "METHODS",
    "expected_codes", "ExpectedCodes", "diff_codes", "CodeDiff", "assert_codes_equal",
]
