# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""rgft_jax: residual-guided fine-tuning for JAX/Flax.

>>> import optax, rgft_jax as rgft
>>> opt = optax.chain(rgft.residual_mask(), optax.adamw(1e-4))
"""

from rgft_jax import components as components
from rgft_jax import thresholds as thresholds
from rgft_jax._src.budget import ComponentCosts as ComponentCosts
from rgft_jax._src.budget import analytic_costs as analytic_costs
from rgft_jax._src.budget import budget_threshold as budget_threshold
from rgft_jax._src.budget import calibrate as calibrate
from rgft_jax._src.components import Partition as Partition
from rgft_jax._src.components import Rule as Rule
from rgft_jax._src.residual import ErrorMap as ErrorMap
from rgft_jax._src.residual import ResidualGuidedState as ResidualGuidedState
from rgft_jax._src.residual import ResidualMaskState as ResidualMaskState
from rgft_jax._src.residual import ResidualTrackerState as ResidualTrackerState
from rgft_jax._src.residual import error_map as error_map
from rgft_jax._src.residual import find_error_maps as find_error_maps
from rgft_jax._src.residual import residual_guided as residual_guided
from rgft_jax._src.residual import residual_mask as residual_mask
from rgft_jax._src.residual import threshold_mask as threshold_mask
from rgft_jax._src.residual import update_ratio as update_ratio

__version__ = "0.1.0"

# Sub-packages beyond the core are imported on first use: ``import rgft_jax`` needs only
# jax, optax and numpy (tests/layering_test.py checks it).
_LAZY_SUBPACKAGES = (
    "adapters", "data", "dsca", "export", "layer_card", "models", "ops", "reporting", "search",
    "training",
)


def __getattr__(name: str):
    if name in _LAZY_SUBPACKAGES:
        import importlib

        return importlib.import_module(f"rgft_jax.{name}")
    raise AttributeError(f"module 'rgft_jax' has no attribute {name!r}")

__all__ = [
    "ComponentCosts",
    "ErrorMap",
    "Partition",
    "ResidualGuidedState",
    "ResidualMaskState",
    "ResidualTrackerState",
    "Rule",
    "analytic_costs",
    "budget_threshold",
    "calibrate",
    "components",
    "dsca",
    "error_map",
    "find_error_maps",
    "residual_guided",
    "residual_mask",
    "threshold_mask",
    "thresholds",
    "update_ratio",
]
