# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Adapters for baselines and Layer Card placement: LoRA (mergeable) and BitFit."""

from rgft_jax.adapters._lora import BITFIT_TRAINABLE as BITFIT_TRAINABLE
from rgft_jax.adapters._lora import LORA_TRAINABLE as LORA_TRAINABLE
from rgft_jax.adapters._lora import LoRAProjection as LoRAProjection
from rgft_jax.adapters._lora import add_lora as add_lora
from rgft_jax.adapters._lora import merge_lora as merge_lora

__all__ = ["BITFIT_TRAINABLE", "LORA_TRAINABLE", "LoRAProjection", "add_lora", "merge_lora"]
