# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reading the error map out of an optimizer state, at any depth of a chain."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rgft_jax._src import components as comp_lib
from rgft_jax._src.tracker import ResidualTrackerState

__all__ = ["ErrorMap", "error_map", "find_error_maps", "update_ratio"]


class ErrorMap(NamedTuple):
    """The error map read out of an optimizer state (see :func:`error_map`)."""

    residuals: jax.Array  # float32 [C]
    mask: jax.Array  # float32 [C]
    lr_scale: jax.Array  # float32 [C]
    step: jax.Array  # int32 []
    skipped: jax.Array  # int32 []


def _array(x: Any) -> Any:
    """The array inside an ``nnx.Variable`` (``nnx.Optimizer`` wraps its state), else ``x``."""
    if hasattr(x, "get_value"):
        return x.get_value()
    return x


def _is_tracker(x: Any) -> bool:
    return isinstance(x, ResidualTrackerState)


def find_error_maps(opt_state: Any) -> list[ErrorMap]:
    """All error maps inside ``opt_state`` (chained, wrapped, injected: any depth).

    Outer transforms come before the transforms they wrap.

    Args:
      opt_state: any optimizer state (an ``nnx.Optimizer``'s ``opt_state`` included).

    Returns:
      One :class:`ErrorMap` per :func:`~rgft_jax.residual_mask` /
      :func:`~rgft_jax.residual_guided` state found, in tree order.

    Examples:
      >>> import jax.numpy as jnp, optax, rgft_jax as rgft
      >>> tx = optax.chain(rgft.residual_mask(), rgft.residual_guided(optax.sgd(1.0)))
      >>> len(rgft.find_error_maps(tx.init({'a': jnp.ones(2)})))
      2
    """
    found = []

    def visit(x):
        if _is_tracker(x):
            found.append(ErrorMap(*(_array(v) for v in (
                x.residuals, x.mask, x.lr_scale, x.count, x.skipped))))
        return x

    jax.tree_util.tree_map(visit, opt_state, is_leaf=_is_tracker)
    return found


def error_map(opt_state: Any) -> ErrorMap:
    """The error map (residuals, mask, LR multipliers, step, skipped) inside ``opt_state``.

    Args:
      opt_state: an optimizer state holding exactly one RGFT state, at any depth.

    Returns:
      Its :class:`ErrorMap`.

    Raises:
      ValueError: when ``opt_state`` holds no RGFT state, or more than one (then use
        :func:`find_error_maps`).

    Examples:
      >>> import jax.numpy as jnp, optax, rgft_jax as rgft
      >>> tx = optax.chain(optax.clip(1.0), rgft.residual_guided(optax.adam(1e-3)))
      >>> rgft.error_map(tx.init({'a': jnp.ones(2), 'b': jnp.ones(3)})).residuals.tolist()
      [0.5, 0.5]
    """
    maps = find_error_maps(opt_state)
    if not maps:
        raise ValueError(
            "error_map: no residual_mask / residual_guided state found in opt_state "
            f"(a {type(opt_state).__name__}); was the optimizer built with one?"
        )
    if len(maps) > 1:
        raise ValueError(
            f"error_map: opt_state holds {len(maps)} RGFT states; use find_error_maps()."
        )
    return maps[0]


def update_ratio(
    state_or_map: Any, partition: comp_lib.Partition
) -> tuple[jax.Array, jax.Array]:
    """``(sum_i M_i |Theta_i| / |Theta|, hard-active fraction)`` of the current mask.

    Excluded leaves count as fully updated (the transforms pass them through).

    Args:
      state_or_map: an :class:`ErrorMap`, a mask ``[C]``, or an optimizer state holding one.
      partition: the partition the mask refers to.

    Returns:
      ``(ratio, hard)``: float32 scalars.

    Raises:
      ValueError: when the mask does not have one entry per component.

    Examples:
      >>> import jax.numpy as jnp, rgft_jax as rgft
      >>> part = rgft.Partition.build({'a': jnp.ones(3), 'b': jnp.ones(1)})
      >>> [float(x) for x in rgft.update_ratio(jnp.array([1.0, 0.0]), part)]
      [0.75, 0.75]
    """
    if isinstance(state_or_map, ErrorMap):
        mask = state_or_map.mask
    elif hasattr(state_or_map, "shape") and hasattr(state_or_map, "dtype"):
        mask = state_or_map
    else:
        mask = error_map(state_or_map).mask
    mask = jnp.asarray(mask, jnp.float32)
    if mask.shape != (len(partition),):
        raise ValueError(
            f"update_ratio: mask has shape {mask.shape} but the partition has "
            f"{len(partition)} components."
        )
    sizes = jnp.asarray(partition.sizes, jnp.float32)
    total = float(partition.total_size)
    excl = float(partition.excluded_size)
    ratio = (jnp.sum(mask * sizes) + excl) / total
    hard = (jnp.sum(jnp.where(mask >= 1.0, sizes, 0.0)) + excl) / total
    return ratio, hard
