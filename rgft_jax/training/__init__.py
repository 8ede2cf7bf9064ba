# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""One training loop for every fine-tuning method: methods, config, trainer, metrics."""

from rgft_jax.training._methods import METHOD_KINDS as METHOD_KINDS
from rgft_jax.training._methods import Method as Method
from rgft_jax.training._methods import build_optimizer as build_optimizer
from rgft_jax.training._methods import component_rules as component_rules
from rgft_jax.training._methods import fixed_mask as fixed_mask
from rgft_jax.training._methods import sparse_pattern as sparse_pattern
from rgft_jax.training._trainer import TrainConfig as TrainConfig
from rgft_jax.training._trainer import Trainer as Trainer
from rgft_jax.training._trainer import TrainState as TrainState
from rgft_jax.training._trainer import classification_metrics as classification_metrics
from rgft_jax.training._trainer import fit_together as fit_together
from rgft_jax.training._trainer import fsdp_spec as fsdp_spec

__all__ = [
    "METHOD_KINDS",
    "Method",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "build_optimizer",
    "classification_metrics",
    "component_rules",
    "fit_together",
    "fixed_mask",
    "fsdp_spec",
    "sparse_pattern",
]
