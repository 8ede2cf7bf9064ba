# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Deltas of LoRA fine-tuning: merge the adapters into the base weights, then diff."""

from __future__ import annotations

import os
from typing import Any

from flax import nnx

from rgft_jax.adapters import LoRAProjection, merge_lora
from rgft_jax.export._delta import DeltaSummary, save_delta

__all__ = ["merged_lora_params", "save_lora_delta"]


def merged_lora_params(model: nnx.Module) -> dict[str, Any]:
    """The params of ``model`` with every LoRA adapter folded into its kernel.

    ``model`` is not changed: a clone is merged with :func:`rgft_jax.adapters.merge_lora`.

    Args:
      model: an NNX model adapted with :func:`rgft_jax.adapters.add_lora`.

    Returns:
      The merged model's ``nnx.Param`` state as a pure dict (the base model's leaf paths:
      no ``lora_a`` / ``lora_b`` leaves).

    Raises:
      ValueError: when ``model`` holds no LoRA adapter.
    """
    n = sum(isinstance(m, LoRAProjection) for _, m in nnx.iter_modules(model))
    if not n:
        raise ValueError(f"merged_lora_params: model={type(model).__name__} has no "
                         "LoRAProjection; adapt it with rgft_jax.adapters.add_lora first.")
    merged = nnx.clone(model)
    merge_lora(merged)
    return nnx.to_pure_dict(nnx.state(merged, nnx.Param))


def save_lora_delta(
    model: nnx.Module,
    base_params: Any,
    partition: Any,
    path: str | os.PathLike,
) -> DeltaSummary:
    """:func:`save_delta` of a LoRA-adapted model's merged weights against its base.

    The adapters are merged into a clone of ``model`` (:func:`merged_lora_params`); the
    delta holds the merged kernels (a LoRA update is dense: every head of an adapted kernel
    changes) and whatever else was trained (the task head). :func:`apply_delta` on
    ``base_params`` gives the merged params, which load into the model without adapters.

    Args:
      model: the fine-tuned NNX model with LoRA adapters.
      base_params: the params of the model before :func:`rgft_jax.adapters.add_lora` (the
        leaf paths of the model without adapters).
      partition: as in :func:`save_delta`.
      path: the ``.safetensors`` file to write.

    Returns:
      A :class:`DeltaSummary` of what was written.
    """
    return save_delta(merged_lora_params(model), base_params, partition, path)
