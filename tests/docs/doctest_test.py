"""Docstring examples of the core run as doctests; every public core symbol is documented."""

import doctest
import importlib
import inspect

import pytest

import rgft_jax

CORE_MODULES = [
    "rgft_jax",
    "rgft_jax.components",
    "rgft_jax.thresholds",
    "rgft_jax._src.accessors",
    "rgft_jax._src.budget",
    "rgft_jax._src.compact",
    "rgft_jax._src.components",
    "rgft_jax._src.presets",
    "rgft_jax._src.residual",
    "rgft_jax._src.thresholds",
    "rgft_jax._src.tracker",
]


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name} (see stdout)"


def _public_core():
    for mod in (rgft_jax, rgft_jax.components, rgft_jax.thresholds):
        for name in mod.__all__:
            if name in rgft_jax._LAZY_SUBPACKAGES:
                continue
            yield f"{mod.__name__}.{name}", getattr(mod, name)


@pytest.mark.parametrize("qualname,obj", list(_public_core()), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_every_public_core_symbol_has_a_docstring(qualname, obj):
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{qualname} has no docstring"


def test_transform_docstrings_are_literals_that_render():
    for fn in (rgft_jax.residual_mask, rgft_jax.residual_guided):
        assert fn.__doc__ is not None
        assert "Args:" in fn.__doc__ and "alpha:" in fn.__doc__ and "Examples:" in fn.__doc__
