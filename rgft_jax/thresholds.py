# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Thresholds for ``threshold=`` of :func:`~rgft_jax.residual_mask` and
:func:`~rgft_jax.residual_guided`: callables ``residuals float32[C] -> bool[C]``.

Each is validated when it is built and checked against the partition at ``init``. The
shorthand forms (``'median'``, ``('percentile', p)``, ``('top_k', k)``,
``('top_fraction', f)``) map onto these same callables.

>>> import optax, rgft_jax as rgft
>>> opt = rgft.residual_guided(optax.adamw(1e-4), threshold=rgft.thresholds.top_fraction(0.25))
"""

from rgft_jax._src.thresholds import Threshold as Threshold
from rgft_jax._src.thresholds import budget as budget
from rgft_jax._src.thresholds import median as median
from rgft_jax._src.thresholds import percentile as percentile
from rgft_jax._src.thresholds import top_fraction as top_fraction
from rgft_jax._src.thresholds import top_k as top_k

__all__ = [
    "Threshold",
    "budget",
    "median",
    "percentile",
    "top_fraction",
    "top_k",
]
