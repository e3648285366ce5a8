"""The worked examples in minilora.quant's docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = ["absmax", "blockwise", "bounds", "double_quant", "int8", "nf4", "state", "compare"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"minilora.quant.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
