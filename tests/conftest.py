"""Test configuration: CPU, float32 matmuls.

Strict dtype promotion (equinox's habit) is not switched on globally: optax's own Adam
(``decay ** count`` with an int32 count) fails under it. Our pure numerics are checked under
strict promotion in ``tests/components/components_test.py`` instead.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")
