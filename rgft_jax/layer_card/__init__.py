# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Layer Card: per-layer residual, activation energy, coupling and cost, and placements.

Example::

  import rgft_jax.layer_card as lc
  card = lc.compute(model, batches, loss_fn, num_heads=12, batch_shape=(32, 64))
  card.plot("layer_card.png")
  print(card.to_markdown())
  lc.place(card, "spread", k=2, budget=0.6).layers  # e.g. (2, 5)

References:
  Xu et al, `Understanding and Guiding Layer Placement in Parameter-Efficient Fine-Tuning of
  Large Language Models`, 2025 (seed 002 of this library).
"""

from rgft_jax.layer_card._card import LayerCard as LayerCard
from rgft_jax.layer_card._card import compute as compute
from rgft_jax.layer_card._place import OBJECTIVES as OBJECTIVES
from rgft_jax.layer_card._place import Placement as Placement
from rgft_jax.layer_card._place import coupled_gain as coupled_gain
from rgft_jax.layer_card._place import place as place
from rgft_jax.layer_card._probe import MatrixProbe as MatrixProbe
from rgft_jax.layer_card._probe import ProbeResult as ProbeResult
from rgft_jax.layer_card._probe import probe as probe
from rgft_jax.layer_card._stats import MomentState as MomentState
from rgft_jax.layer_card._stats import activation_energy as activation_energy
from rgft_jax.layer_card._stats import coupling as coupling
from rgft_jax.layer_card._stats import moments_init as moments_init
from rgft_jax.layer_card._stats import moments_update as moments_update
from rgft_jax.layer_card._stats import projected_residual_norm as projected_residual_norm
from rgft_jax.layer_card._stats import whitened_coupling_matrix as whitened_coupling_matrix

__all__ = [
    "OBJECTIVES",
    "LayerCard",
    "MatrixProbe",
    "MomentState",
    "Placement",
    "ProbeResult",
    "activation_energy",
    "compute",
    "coupled_gain",
    "coupling",
    "moments_init",
    "moments_update",
    "place",
    "probe",
    "projected_residual_norm",
    "whitened_coupling_matrix",
]
