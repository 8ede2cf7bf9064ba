# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""ViT image classifier (HF ``ViTForImageClassification`` parity, NHWC inputs)."""

from rgft_jax.models.vit.modeling import ViTConfig as ViTConfig
from rgft_jax.models.vit.modeling import ViTForImageClassification as ViTForImageClassification
from rgft_jax.models.vit.modeling import forward as forward
from rgft_jax.models.vit.params import from_pretrained as from_pretrained
from rgft_jax.models.vit.params import load as load

__all__ = [
    "ViTConfig",
    "ViTForImageClassification",
    "forward",
    "from_pretrained",
    "load",
]
