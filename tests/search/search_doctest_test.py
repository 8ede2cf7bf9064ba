"""The examples in the search docstrings run."""

import doctest

import pytest

from rgft_jax import search
from rgft_jax.search import _predictor, _solve


@pytest.mark.parametrize("module", [search, _solve, _predictor], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
