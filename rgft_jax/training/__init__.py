# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""One training loop for every fine-tuning method: methods, config, trainer, metrics.

Methods are built by the constructors of :mod:`rgft_jax.training.methods` (also
registered by name: ``methods.get('rgft')(budget=0.4)``).
"""

from rgft_jax.training import methods as methods
from rgft_jax.training._methods import Method as Method
from rgft_jax.training._metrics import classification_metrics as classification_metrics
from rgft_jax.training._sharding import fsdp_spec as fsdp_spec
from rgft_jax.training._step import TrainState as TrainState
from rgft_jax.training._trainer import TrainConfig as TrainConfig
from rgft_jax.training._trainer import Trainer as Trainer
from rgft_jax.training._trainer import fit_together as fit_together

__all__ = [
    "Method",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "classification_metrics",
    "fit_together",
    "fsdp_spec",
    "methods",
]
