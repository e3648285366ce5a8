"""The worked examples in minilora.testing's docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = ["strategies", "assertions", "oracles"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"minilora.testing.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
