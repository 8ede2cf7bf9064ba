# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Shardings of the engine: FSDP for large leaves, batches over every mesh axis."""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def fsdp_spec(x: Any, mesh: Mesh, min_size: int = 2**18) -> P:
    """``P('fsdp', ...)`` on the first axis divisible by the fsdp size for large leaves."""
    n = mesh.shape.get("fsdp", 1)
    if n > 1 and x.size >= min_size:
        for axis, d in enumerate(x.shape):
            if d % n == 0:
                spec = [None] * x.ndim
                spec[axis] = "fsdp"
                return P(*spec)
    return P()


def fsdp_shardings(tree: Any, mesh: Mesh) -> Any:
    """A ``NamedSharding`` per leaf of ``tree`` (:func:`fsdp_spec`; the shape decides)."""
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x, mesh)), tree)


def batch_sharding(mesh: Mesh | None) -> NamedSharding | None:
    """Batches split their leading axis over every mesh axis (``None`` without a mesh)."""
    if mesh is None:
        return None
    return NamedSharding(mesh, P(tuple(mesh.axis_names)))
