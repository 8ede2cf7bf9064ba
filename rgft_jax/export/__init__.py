# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""PEFT-style export: a fine-tuned model as a sparse delta against its base.

:func:`save_delta` writes only the changed components of the fine-tuned params (safetensors:
per changed leaf the indices of its changed groups along the component axis and their
values, or the whole leaf); :func:`apply_delta` restores the fine-tuned params from the base
bit for bit and refuses another base with an error naming the leaves that differ. For LoRA,
:func:`save_lora_delta` merges the adapters first and writes the delta of the merged weights.
"""

from rgft_jax.export._delta import FORMAT as FORMAT
from rgft_jax.export._delta import DeltaSummary as DeltaSummary
from rgft_jax.export._delta import apply_delta as apply_delta
from rgft_jax.export._delta import partition_fingerprint as partition_fingerprint
from rgft_jax.export._delta import read_delta_info as read_delta_info
from rgft_jax.export._delta import save_delta as save_delta
from rgft_jax.export._lora import merged_lora_params as merged_lora_params
from rgft_jax.export._lora import save_lora_delta as save_lora_delta

__all__ = [
    "FORMAT",
    "DeltaSummary",
    "apply_delta",
    "merged_lora_params",
    "partition_fingerprint",
    "read_delta_info",
    "save_delta",
    "save_lora_delta",
]
