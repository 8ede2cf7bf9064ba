# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""RGFT variants that try to make the error map beat the "top k layers" heuristic.

Both are plain :class:`~rgft_jax.training.methods.RGFT` runs (the one mask mechanism, the
one loop); they differ only in *which* budgeted mask rule they install and *when*:

* ``rgft_depth`` (:func:`rgft_depth`): the adaptive depth cut. The mask rule is
  :func:`rgft_jax._src.budget.depth_cut_threshold`: the residuals first choose how deep to
  backpropagate (the cut whose whole above-cut set has the most residual mass per FLOP),
  then heads / neuron groups inside the cut fill the budget.
* ``rgft_front`` (:func:`rgft_front`): the front-loaded budget schedule. The first
  ``front_steps`` steps train everything (the error map warms up on full gradients, where
  early fine-tuning moves most), the rest run a budgeted mask whose budget is lowered so
  that the run's mean stays at ``budget``:
  ``b_late = (budget * T - front_steps) / (T - front_steps)``.

* ``rgft_layers`` (:func:`rgft_layers`): the error map over whole layers
  (``components='layers'``): each refresh the budgeted mask chooses which layers to train
  densely by their residual per FLOP — the "top k layers" heuristic's unit, chosen by the
  map instead of by position, and re-chosen as the map moves.

Registered as ``methods.get('rgft_depth')`` / ``'rgft_front'`` / ``'rgft_layers'``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from rgft_jax._src.budget import depth_cut_threshold
from rgft_jax.training import _methods as methods_lib

__all__ = ["RGFTDepth", "front_loaded_budget", "rgft_depth", "rgft_front", "rgft_layers"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RGFTDepth(methods_lib.RGFT):
    """RGFT whose budgeted mask chooses the depth cut by residuals first (needs ``budget``)."""

    kind: ClassVar[str] = "rgft_depth"

    def __post_init__(self):
        super().__post_init__()
        self._check(self.budget is not None, "budget",
                    "the fraction of the full step's FLOPs, in (0, 1] (the depth cut needs it)")

    def resolved_threshold(self, part, params, num_heads, num_layers, batch_shape) -> Any:
        return depth_cut_threshold(self.budget_costs(part, params, num_heads, num_layers,
                                                     batch_shape), self.budget)


def rgft_depth(budget: float = 0.45, **kwargs: Any) -> RGFTDepth:
    """RGFT with the adaptive depth cut at ``budget`` of the full step's FLOPs."""
    return RGFTDepth(budget=budget, **kwargs)


def front_loaded_budget(budget: float, front_steps: int, total_steps: int) -> float:
    """The late budget that keeps the run's mean at ``budget`` after ``front_steps`` full steps.

    Raises:
      ValueError: unless ``0 <= front_steps < total_steps`` and the late budget is > 0.
    """
    if not (isinstance(total_steps, int) and total_steps >= 1):
        raise ValueError(f"rgft_front: total_steps={total_steps!r}; allowed: an int >= 1.")
    if not (isinstance(front_steps, int) and 0 <= front_steps < total_steps):
        raise ValueError(f"rgft_front: front_steps={front_steps!r}; allowed: an int in "
                         f"[0, total_steps={total_steps}).")
    late = (budget * total_steps - front_steps) / (total_steps - front_steps)
    if not late > 0:
        raise ValueError(f"rgft_front: front_steps={front_steps} full steps already spend "
                         f"budget={budget} of {total_steps} steps; allowed: front_steps < "
                         f"{budget * total_steps:g}.")
    return late


def rgft_front(budget: float = 0.45, *, front_steps: int, total_steps: int,
               **kwargs: Any) -> methods_lib.RGFT:
    """RGFT with a front-loaded budget: ``front_steps`` full steps, then a lower budget.

    Args:
      budget: the run's mean fraction of the full step's FLOPs (probe steps aside).
      front_steps: full steps before the first mask (RGFT's ``warmup_steps``).
      total_steps: the run's steps (the Trainer's ``TrainConfig.steps``).
      **kwargs: any other :class:`~rgft_jax.training.methods.RGFT` argument.
    """
    late = front_loaded_budget(budget, front_steps, total_steps)
    return methods_lib.RGFT(budget=late, warmup_steps=max(front_steps, 1),
                            **{"name": "rgft_front", **kwargs})


def rgft_layers(budget: float = 0.45, **kwargs: Any) -> methods_lib.RGFT:
    """RGFT over whole layers: a budgeted mask of dense layers, chosen by residual per FLOP."""
    return methods_lib.RGFT(budget=budget, **{"components": "layers", "name": "rgft_layers",
                                              **kwargs})


methods_lib.register("rgft_depth", rgft_depth)
methods_lib.register("rgft_layers", rgft_layers)
methods_lib.register("rgft_front", rgft_front)
