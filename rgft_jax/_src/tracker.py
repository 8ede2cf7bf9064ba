# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The residual tracker shared by :func:`~rgft_jax.residual_mask` and
:func:`~rgft_jax.residual_guided`: one configuration, one validation path, one step.

The tracker keeps, per component ``i`` of a :class:`~rgft_jax.components.Partition`, the EMA
of its share of the gradient norm (the *error map*), and every ``update_every`` steps turns it
into a mask and component learning-rate multipliers. Every per-step value lives in
:class:`ResidualTrackerState`, so changing masks never recompiles.

The hyperparameters ``alpha``, ``gamma``, ``beta``, ``min_lr_scale``, ``update_every`` and
``warmup_steps`` may be array-likes (``optax.inject_hyperparams`` passes them as arrays,
traced inside ``update``): they are validated when they are concrete Python / NumPy numbers
and are never branched on in Python.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgft_jax._src import components as comp_lib
from rgft_jax._src import thresholds as th_lib

__all__ = ["ResidualTrackerState", "Tracker", "make_tracker", "refreshes"]


class ResidualTrackerState(NamedTuple):
    """The error map and its step counters (the state of the residual tracker)."""

    count: jax.Array  # int32 []: finite steps seen
    residuals: jax.Array  # float32 [C]: EMA of normalised gradient-norm shares (the error map)
    mask: jax.Array  # float32 [C]: 1 for active components, gamma for masked ones
    lr_scale: jax.Array  # float32 [C]: component learning-rate multipliers eta_i / eta_0
    skipped: jax.Array  # int32 []: steps skipped because the gradient was not finite


def is_placeholder(params: Any) -> bool:
    """Whether ``params`` is optax's stand-in for a params tree (``tree_map_params``)."""
    return type(params).__name__ == "_ParamsPlaceholder"


def placeholder_tracker() -> ResidualTrackerState:
    """A tracker state whose leaves are not params: what ``init`` returns for optax's
    params placeholder (``optax.tree_utils.tree_map_params`` only needs the structure)."""
    z = np.zeros((), np.int32)
    return ResidualTrackerState(z, z, z, z, z)


def _is_concrete_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float, np.integer, np.floating)):
        return True
    return isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "iuf"


def _is_array(v: Any) -> bool:
    """A JAX array or tracer (``inject_hyperparams``): accepted, validated by its user."""
    return isinstance(v, jax.Array)


def _check_real(name: str, v: Any, ok: Callable[[float], bool], what: str) -> None:
    if _is_array(v):
        return
    if not _is_concrete_number(v) or not ok(float(v)):
        raise ValueError(f"{name}={v!r}: {what}.")


def _check_int(name: str, v: Any, lo: int) -> None:
    if _is_array(v):
        return
    ok = (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or (
        isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "iu")
    if not ok or int(v) < lo:
        raise ValueError(f"{name}={v!r}: must be an int >= {lo}.")


def refreshes(count: Any, update_every: Any, warmup_steps: Any) -> Any:
    """Whether the step that brings the tracker's count to ``count`` refreshes the mask.

    The first refresh is at ``warmup_steps`` (``update_every`` when it is 0), the next ones
    every ``update_every`` steps after it. Works on Python ints, numpy and traced ``jnp``
    values alike.

    Examples:
      >>> from rgft_jax._src.tracker import refreshes
      >>> [c for c in range(1, 12) if refreshes(c, update_every=4, warmup_steps=2)]
      [2, 6, 10]
    """
    if isinstance(warmup_steps, (int, np.integer)) and isinstance(update_every,
                                                                   (int, np.integer)):
        first = warmup_steps if warmup_steps > 0 else update_every
    else:
        first = jnp.where(jnp.asarray(warmup_steps) > 0, warmup_steps, update_every)
    return (count >= first) & ((count - first) % update_every == 0)


def _lr_scale(residuals: jax.Array, beta: Any, min_lr_scale: Any) -> jax.Array:
    # beta == 0 needs no branch: 1 + 0 * z is exactly 1 and min_lr_scale <= 1.
    mean = jnp.mean(residuals)
    std = jnp.std(residuals)
    z = jnp.where(std > 0, (residuals - mean) / jnp.where(std > 0, std, 1.0), 0.0)
    beta = jnp.asarray(beta, jnp.float32)
    return jnp.maximum(1.0 + beta * z, jnp.asarray(min_lr_scale, jnp.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class Tracker:
    """A validated tracker configuration bound to a ``partition=`` argument."""

    partition: Any
    alpha: Any
    threshold: th_lib.Threshold
    gamma: Any
    beta: Any
    update_every: Any
    warmup_steps: Any
    min_lr_scale: Any
    axis_name: Any = None

    def resolve(self, tree: Any, tree_name: str = "params") -> comp_lib.Partition:
        return comp_lib.resolve(self.partition, tree, tree_name=tree_name)

    def init(self, params: Any) -> tuple[comp_lib.Partition, ResidualTrackerState]:
        """The partition of ``params`` (validated) and the initial tracker state."""
        part = self.resolve(params)
        self.threshold.check(part.num_components)
        c = part.num_components
        return part, ResidualTrackerState(
            count=jnp.zeros([], jnp.int32),
            residuals=jnp.full((c,), 1.0 / c, jnp.float32),
            mask=jnp.ones((c,), jnp.float32),
            lr_scale=jnp.ones((c,), jnp.float32),
            skipped=jnp.zeros([], jnp.int32),
        )

    def step(
        self, grads: Any, s: ResidualTrackerState, observe: Any = True,
        admit: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
        part: comp_lib.Partition | None = None,
    ) -> tuple[comp_lib.Partition, ResidualTrackerState]:
        """One tracker step: EMA of norm shares, then (maybe) a mask/LR refresh.

        ``observe=False`` (a sparse step whose gradient omits frozen components) keeps the
        residuals as they are; the step still counts and may refresh from the kept residuals.
        ``admit(residuals, active) -> active`` (the compact state's capacity) narrows the
        active set; with it the first step refreshes too (everything active does not fit).
        With ``axis_name`` the squared component norms are summed over that mapped axis
        first, so every replica of a ``shard_map`` / ``pmap`` computes the same mask.
        """
        if part is None:
            part = self.resolve(grads, "updates")
        c = s.residuals.shape[0]
        if part.num_components != c:
            raise ValueError(
                f"update: the updates split into {part.num_components} components but the "
                f"state was initialised for {c}; was init called on another params tree? "
                f"(updates' leaves: {[x.path for x in part.leaves][:6]})")
        # The barrier keeps XLA from sharing ``g * g`` with the inner optimizer's ``g ** 2``
        # (CSE), which would materialise it and unfuse this reduction.
        sq = part.sq_norms(jax.lax.optimization_barrier(grads))
        if self.axis_name is not None:
            sq = jax.lax.psum(sq, self.axis_name)
        finite = jnp.all(jnp.isfinite(sq))
        norms = jnp.sqrt(jnp.where(finite, sq, 0.0))
        total = jnp.sum(norms) * jnp.asarray(observe, jnp.float32)
        share = norms / jnp.where(total > 0, total, 1.0)
        alpha = jnp.asarray(self.alpha, jnp.float32)
        residuals = jnp.where(total > 0, alpha * s.residuals + (1.0 - alpha) * share,
                              s.residuals)
        count = optax.safe_increment(s.count)
        refresh = refreshes(count, self.update_every, self.warmup_steps)
        if admit is not None:
            refresh = refresh | (count == 1)

        def _refresh(r):
            active = self.threshold(r)
            if admit is not None:
                active = admit(r, active)
            mask = jnp.where(active, 1.0, jnp.asarray(self.gamma, jnp.float32))
            lr = _lr_scale(r, self.beta, self.min_lr_scale)
            return mask.astype(jnp.float32), lr.astype(jnp.float32)

        mask, lr_scale = jax.lax.cond(
            refresh & finite, _refresh, lambda r: (s.mask, s.lr_scale), residuals)
        return part, ResidualTrackerState(
            count=jnp.where(finite, count, s.count),
            residuals=jnp.where(finite, residuals, s.residuals),
            mask=mask,
            lr_scale=lr_scale,
            skipped=s.skipped + (~finite).astype(jnp.int32),
        )


def make_tracker(
    partition: Any, *, alpha: Any, threshold: Any, gamma: Any, beta: Any, update_every: Any,
    warmup_steps: Any, min_lr_scale: Any, axis_name: Any = None,
) -> Tracker:
    """Validates the shared arguments of both transforms (raising at construction)."""
    _check_real("alpha", alpha, lambda v: 0 <= v < 1,
                "the EMA decay must be a number in [0, 1)")
    _check_real("gamma", gamma, lambda v: 0 <= v < 1,
                "the masked-component scale must be in [0, 1) "
                "(0 = hard mask, > 0 = soft mask floor)")
    _check_real("beta", beta, lambda v: v >= 0 and math.isfinite(v),
                "the LR-scaling strength must be a finite number >= 0")
    _check_int("update_every", update_every, 1)
    _check_int("warmup_steps", warmup_steps, 0)
    _check_real("min_lr_scale", min_lr_scale, lambda v: 0 < v <= 1,
                "the floor of the component LR multipliers must be in (0, 1]")
    if axis_name is not None and not isinstance(axis_name, (str, tuple)):
        raise TypeError(f"axis_name={axis_name!r}: expected None, a mapped axis name (str) or "
                        "a tuple of names.")
    comp_lib.check_partition_arg(partition)

    def norm(v):  # concrete numbers become Python numbers (static), arrays stay arrays
        if _is_array(v):
            return v
        return int(v) if isinstance(v, (int, np.integer)) or (
            isinstance(v, np.ndarray) and v.dtype.kind in "iu") else float(v)

    return Tracker(partition, norm(alpha), th_lib.as_threshold(threshold), norm(gamma),
                   norm(beta), norm(update_every), norm(warmup_steps), norm(min_lr_scale),
                   axis_name)
