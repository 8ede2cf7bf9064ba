"""Test configuration: CPU, float32 matmuls.

Strict dtype promotion (equinox's habit) is not switched on globally: optax's own Adam
(``decay ** count`` with an int32 count) fails under it. Our pure numerics are checked under
strict promotion in ``tests/components/components_test.py`` instead.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")

import pytest  # noqa: E402


@pytest.fixture
def cheap_codegen():
    """Compile with ``jax_disable_most_optimizations`` (XLA backend optimisation level 0,
    expensive LLVM passes skipped): roughly half the compile time of a train step, the same
    programs and the same FLOP counts (see tests/training/conftest.py). Restored afterwards.
    Folders whose tests compile whole train steps use it for every test."""
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
