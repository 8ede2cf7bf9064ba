# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Step patterns: which leaves a compiled step differentiates, decided on the host.

A *pattern* is a tuple with one entry per params leaf: ``False`` (not differentiated: XLA
skips its weight gradient and, below the lowest differentiated leaf, all backprop),
``True`` (dense gradient) or an int ``K`` (weight gradients of ``K`` active groups only).
Everything here is pure host code over numpy values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, MutableMapping, Sequence
from typing import Any

import jax
import numpy as np

from rgft_jax._src import components as comp_lib
from rgft_jax._src import residual

Pattern = tuple[bool | int, ...]


def trainable_pattern(params: Any, trainable: str | None) -> tuple[bool, ...]:
    """Per-leaf flags of the leaves matching ``trainable`` (all when ``None``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    if trainable is None:
        return (True,) * len(flat)
    rx = re.compile(trainable)
    return tuple(bool(rx.search(comp_lib.key_path_to_str(p))) for p, _ in flat)


def sparse_pattern(
    part: comp_lib.Partition, mask: np.ndarray, params: Any | None = None,
    group_grads: bool = True, levels: int = 4,
) -> Pattern:
    """What a sparse step differentiates, per leaf.

    ``False``: no active component. ``True``: dense gradient. An int ``K``: a matrix split
    into ``G`` groups of which at most ``K`` are active: weight gradients for ``K`` groups
    only (see :func:`rgft_jax.ops.group_sparse_tensordot`). ``K`` is the active count
    rounded up to a multiple of ``ceil(G / levels)``, so masks that differ a little share one
    compiled step; the rounding's extra groups are computed and then masked, and XLA's FLOPs
    count them (nothing masked-but-computed is counted as saved). Excluded leaves (task
    heads) are always ``True``.
    """
    mask = np.asarray(mask)
    shapes = None if params is None else [x.shape for x in jax.tree_util.tree_leaves(params)]
    out: list[bool | int] = []
    for i, s in enumerate(part.leaves):
        if s.n_groups == 0:
            out.append(not s.frozen)
            continue
        k = int(np.sum(mask[list(s.component_ids)] > 0))
        ndim = len(s.shape if shapes is None else shapes[i])
        if k == 0:
            out.append(False)
        elif group_grads and s.axis is not None and 0 < k < s.n_groups and ndim >= 2:
            q = -(-s.n_groups // levels)
            k = min(s.n_groups, -(-k // q) * q)
            out.append(k if k < s.n_groups else True)
        else:
            out.append(True)
    return tuple(out)


def count_params(params: Any, pattern: Pattern | None = None,
                 part: comp_lib.Partition | None = None) -> float:
    """Parameters a step differentiates (an int entry ``K`` counts ``K / G`` of its leaf)."""
    leaves = jax.tree_util.tree_leaves(params)
    if pattern is None:
        pattern = (True,) * len(leaves)
    total = 0.0
    for i, (x, t) in enumerate(zip(leaves, pattern)):
        if t is False:
            continue
        size = math.prod(x.shape)
        if not isinstance(t, bool) and part is not None:
            size = size * t / part.leaves[i].n_groups
        total += size
    return total


def _refreshes_next(method: Any, count: int) -> bool:
    return bool(residual.refreshes(count + 1, method.update_every, method.warmup_steps))


def mask_may_change(method: Any, count: int) -> bool:
    """Whether the step that starts at tracker count ``count`` may change the mask.

    The refresh schedule is known in advance, so the host only needs the device's mask
    after these steps (and before them, to confirm the count: a skipped non-finite step
    leaves the tracker's count behind the trainer's step).
    """
    if not method.uses_mask:
        return False
    if getattr(method, "capacity", None) is not None and count == 0:
        return True  # the compact state's first update admits its first active set
    if method.policy == "fixed":
        return count == 0  # the first update installs it (or keeps the Trainer's)
    if method.policy == "schedule":
        return False  # the host installs the mask itself
    if method.policy == "refresh":
        return _refreshes_next(method, count)
    return False


def _within(base: Sequence[Any], sparse: Sequence[Any]) -> Pattern:
    return tuple(b if a else False for a, b in zip(base, sparse))


def update_pattern(partition: comp_lib.Partition, mask: Any,
                   base_pattern: tuple[bool, ...]) -> Pattern:
    """The leaves a hard ``mask`` lets an update reach (``False``: the update is zero).

    A probe step differentiates every leaf of ``base_pattern``, but under a hard mask
    (``gamma = 0``: :func:`rgft_jax.residual_guided` zeroes masked components' updates,
    weight decay included) only the leaves holding an active component change. The
    activation cache invalidates by this pattern, not the probe's.
    """
    return _within(base_pattern, sparse_pattern(partition, np.asarray(mask)))


def next_pattern(
    error_map: Any,
    method: Any,
    partition: comp_lib.Partition | None,
    *,
    base_pattern: tuple[bool, ...],
    group_leaves: Collection[str] | None = None,
    memo: MutableMapping[bytes, Pattern] | None = None,
) -> tuple[Pattern, bool]:
    """The pattern of the next step and whether it is a probe step (error map observed).

    Args:
      error_map: host values with ``mask`` (``[C]``) and ``step`` (the tracker's count, int)
        as in :class:`rgft_jax.ErrorMap`; unused (may be ``None``) without sparse steps.
      method: the :class:`~rgft_jax.training.Method`.
      partition: the method's partition (``None`` without a mask).
      base_pattern: the method's own trainable leaves (``False`` never differentiated).
      group_leaves: paths of the leaves that support group-sparse weight gradients
        (projection kernels); other leaves with a partly active mask get dense gradients.
        ``None``: every leaf does.
      memo: a dict the caller keeps to reuse the sparse pattern of a mask it has seen
        (keyed by the mask's bytes); the result does not depend on it.

    Returns:
      ``(pattern, observe)``: probe steps (``observe=True``) differentiate every trainable
      leaf; they run on mask refreshes (which need every component's gradient), while the
      mask is all active, and on the first step of compact states and of fixed masks not
      installed before it (the tracker's mask still all active).
    """
    full = tuple(base_pattern)
    if not method.uses_sparse_steps:
        return full, True
    mask = np.asarray(error_map.mask)
    count = int(error_map.step)
    # The device installs these first masks (the Trainer installs a fixed mask before the
    # first step: that step is then sparse).
    if count == 0 and (getattr(method, "capacity", None) is not None
                       or (method.policy == "fixed" and np.all(mask > 0))):
        return full, True
    if method.policy == "refresh" and (_refreshes_next(method, count) or np.all(mask > 0)):
        return full, True
    key = mask.tobytes()
    if memo is not None and key in memo:
        return memo[key], False
    sparse = sparse_pattern(partition, mask)
    if group_leaves is not None:
        sparse = tuple(True if (not isinstance(b, bool) and s.path not in group_leaves) else b
                       for b, s in zip(sparse, partition.leaves))
    pattern = _within(full, sparse)
    if memo is not None:
        memo[key] = pattern
    return pattern, False
