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

_MOVED = {
    "METHOD_KINDS": "rgft_jax.training.methods.names()",
    "build_optimizer": "a method's own build(): rgft_jax.training.methods.rgft().build(...)",
    "component_rules": "a masked method's rules(): rgft_jax.training.methods.rgft().rules(...)",
    "fixed_mask": "a fixed-mask method's initial_mask(): methods.random_mask(r).initial_mask(...)",
    "sparse_pattern": "rgft_jax.training._patterns.sparse_pattern (engine internal)",
}


def __getattr__(name: str):
    if name in _MOVED:
        raise AttributeError(f"rgft_jax.training.{name} is no longer public; use {_MOVED[name]}.")
    raise AttributeError(f"module 'rgft_jax.training' has no attribute {name!r}")
