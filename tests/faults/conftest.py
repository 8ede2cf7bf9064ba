"""Shared pieces of the fault tests: the tiny BERT and data of tests/training, cheap codegen."""

import pytest


@pytest.fixture(autouse=True)
def _cheap_codegen(cheap_codegen):
    """Every test here compiles train steps: see ``cheap_codegen`` in tests/conftest.py."""
