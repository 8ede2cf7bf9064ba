# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Compact optimizer state: the inner optimizer's moments exist only for active components.

A :class:`Pool` lays every non-excluded leaf out *group-major* (the split axis moved to the
front, one row per group, rows padded to a multiple of ``width`` entries) and cuts the
result into ``width``-wide *chunks*; every chunk belongs to exactly one component. The
compact tree an inner optimizer sees is ``{'pool': [slots, width], 'excluded': (...)}``:
the chunks of the *admitted* components packed in chunk order, then unused slots, plus the
excluded leaves (task heads: always trained) at full size; frozen leaves are not stored.
``slots = ceil(capacity * chunks)`` is static, so state memory is ``capacity`` of the dense
state whatever the mask.

The slot layout is a pure function of the boolean mask (``nonzero`` over the chunk table),
so nothing but the mask needs storing. When the mask changes, :meth:`Pool.remap` moves the
rows of components that stay active to their new slots and zeroes the rest: a component
that leaves loses its moments, one that (re-)enters starts from zero (policy ``'reset'``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rgft_jax._src import components as comp_lib

__all__ = ["Pool", "admit"]


def admit(residuals: jax.Array, active: jax.Array, chunks: np.ndarray, slots: int) -> jax.Array:
    """The highest-residual active components whose chunks fit in ``slots`` (a prefix rule).

    Active components are taken by decreasing residual (ties: lower index); a component is
    admitted while the running chunk count stays ``<= slots``. Pure ``jnp``; ``[C]`` bool.
    """
    c = residuals.shape[0]
    key = jnp.where(active, residuals.astype(jnp.float32), -jnp.inf)
    order = jnp.argsort(-key, stable=True)
    need = jnp.where(active, jnp.asarray(chunks, jnp.int32), 0)[order]
    fits = jnp.cumsum(need) <= slots
    return jnp.zeros((c,), bool).at[order].set(fits & active[order])


class Pool:
    """Static chunk layout of a partition's leaves for the compact optimizer state.

    Args:
      part: the partition.
      capacity: fraction of the partitioned (non-excluded) entries the pool holds, in
        ``(0, 1]``.
      width: entries per chunk.
    """

    def __init__(self, part: comp_lib.Partition, capacity: float, width: int = 32):
        self.part, self.width = part, int(width)
        rows = []  # per non-excluded leaf: (leaf index, groups, row size, padded row size)
        chunk_comp = []
        for i, s in enumerate(part.leaves):
            if not s.n_groups:
                continue
            size = math.prod(s.shape)
            row = size // s.n_groups
            padded = -(-row // self.width) * self.width
            rows.append((i, s.n_groups, row, padded))
            per_row = padded // self.width
            chunk_comp.append(np.repeat(np.asarray(s.component_ids, np.int32), per_row))
        self.rows = tuple(rows)
        self.chunk_comp = (np.concatenate(chunk_comp) if chunk_comp
                           else np.zeros((0,), np.int32))
        self.num_chunks = int(self.chunk_comp.shape[0])
        #: chunks of every component
        self.component_chunks = np.bincount(self.chunk_comp, minlength=part.num_components)
        self.slots = max(1, math.ceil(capacity * self.num_chunks - 1e-9))
        # Excluded leaves are always trained (kept at full size); frozen ones are not stored.
        self.excluded = tuple(i for i, s in enumerate(part.leaves)
                              if not s.n_groups and not s.frozen)
        self.frozen = tuple(i for i, s in enumerate(part.leaves) if s.frozen)

    # ------------------------------------------------------------------ layout
    def _rows(self, x: jax.Array, i: int) -> jax.Array:
        """Leaf ``i`` as ``[groups, padded_row]`` (split axis first)."""
        s = self.part.leaves[i]
        if s.axis is None:
            r = x.reshape(1, -1)
        else:
            split = x.reshape(s.split_shape)
            r = jnp.moveaxis(split, s.axis, 0).reshape(s.n_groups, -1)
        pad = -r.shape[1] % self.width
        return jnp.pad(r, ((0, 0), (0, pad))) if pad else r

    def _unrows(self, r: jax.Array, i: int, row: int) -> jax.Array:
        s = self.part.leaves[i]
        r = r[:, :row]
        if s.axis is None:
            return r.reshape(s.shape)
        split = s.split_shape
        moved = (s.n_groups,) + split[:s.axis] + split[s.axis + 1:]
        return jnp.moveaxis(r.reshape(moved), 0, s.axis).reshape(s.shape)

    def indices(self, mask: jax.Array) -> jax.Array:
        """Chunk index of every slot (``num_chunks`` for unused slots), int32 ``[slots]``."""
        on = jnp.asarray(mask)[self.chunk_comp] > 0
        return jnp.nonzero(on, size=self.slots, fill_value=self.num_chunks)[0].astype(jnp.int32)

    def gather(self, tree: Any, idx: jax.Array) -> dict[str, Any]:
        """The compact tree of ``tree`` for slot indices ``idx``."""
        leaves = jax.tree_util.tree_leaves(tree)
        chunks = jnp.concatenate(
            [self._rows(leaves[i], i).reshape(-1, self.width) for i, *_ in self.rows])
        pool = jnp.take(chunks, idx, axis=0, mode="fill", fill_value=0)
        return {"pool": pool, "excluded": tuple(leaves[i] for i in self.excluded)}

    def scatter(self, compact: dict[str, Any], idx: jax.Array, like: Any) -> Any:
        """The full tree (structure of ``like``) of ``compact``; zeros outside the slots."""
        leaves = jax.tree_util.tree_leaves(like)
        pool = compact["pool"]
        full = jnp.zeros((self.num_chunks, self.width), pool.dtype).at[idx].set(
            pool, mode="drop")
        out: list[Any] = [None] * len(leaves)
        start = 0
        for i, groups, row, padded in self.rows:
            n = groups * padded // self.width
            r = full[start:start + n].reshape(groups, padded)
            out[i] = self._unrows(r, i, row).astype(leaves[i].dtype)
            start += n
        for i, x in zip(self.excluded, compact["excluded"]):
            out[i] = x
        for i in self.frozen:
            out[i] = jnp.zeros_like(leaves[i])
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), out)

    def slot_values(self, values: jax.Array, idx: jax.Array) -> jax.Array:
        """Per-component ``values`` broadcast to the slots, ``[slots, 1]`` (0 when unused)."""
        comp = jnp.asarray(self.chunk_comp)
        v = jnp.take(values[comp], idx, mode="fill", fill_value=0)
        return v[:, None]

    def remap(self, pool: jax.Array, old_idx: jax.Array, new_idx: jax.Array) -> jax.Array:
        """Moves the rows of chunks present in both layouts; zeros for new chunks."""
        pos = jnp.full((self.num_chunks + 1,), -1, jnp.int32).at[old_idx].set(
            jnp.arange(self.slots, dtype=jnp.int32))
        src = pos[new_idx]
        src = jnp.where(new_idx >= self.num_chunks, -1, src)
        moved = jnp.take(pool, jnp.maximum(src, 0), axis=0)
        return jnp.where((src >= 0)[:, None], moved, jnp.zeros((), pool.dtype))

    def abstract(self, tree: Any, dtype: Any = jnp.float32) -> dict[str, Any]:
        """A zero compact tree for ``tree`` (what the inner optimizer is initialised on)."""
        leaves = jax.tree_util.tree_leaves(tree)
        return {"pool": jnp.zeros((self.slots, self.width), dtype),
                "excluded": tuple(leaves[i] for i in self.excluded)}
