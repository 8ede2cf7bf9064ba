# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Count sketches of per-component gradients.

Every component ``c`` of a :class:`~rgft_jax.components.Partition` owns, in every leaf it has
entries in, one *group* of that leaf (a head slice, a neuron group, a column block or the whole
leaf). Its gradient is the direct sum of those group tensors. The sketch maps that vector to
``dim`` coordinates with a count sketch (a hashed random-sign projection):

.. math::

  s_c[b] = \sum_{\ell} \sum_{j \,:\, h_\ell(j) = b} \sigma_\ell(j)\, g_{c,\ell}[j],

where ``j`` runs over the *group-local* flat index of the entry, and the bucket
``h_l(j)`` and sign ``sigma_l(j)`` come from an integer hash of ``(seed, role id, j)``. No
projection matrix is ever formed: hashes are computed inside ``jit`` from ``iota`` s, so the
memory is that of the gradient plus ``O(C * dim)``.

Because the hash depends on the *local* index, groups of the same leaf (head 3 and head 5 of
one query kernel) share one coordinate system, and with ``align="role"`` (default) so do the
same leaf in different layers (``layers/2/.../query/kernel`` and ``layers/7/.../query/kernel``
have the same role ``layers/*/.../query/kernel``). Then, for components ``a, b`` of the same
shape,

.. math::

  \mathbb{E}_{h,\sigma}\,\langle s_a, s_b \rangle = \langle g_a, g_b \rangle,
  \qquad \operatorname{Var} \le \tfrac{2}{\mathrm{dim}} \|g_a\|^2 \|g_b\|^2,

(Charikar et al., 2002; Weinberger et al., 2009). Entries of different roles hash
independently, so they are orthogonal in expectation (the direct-sum inner product).
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from rgft_jax._src.components import LeafSpec, Partition

__all__ = ["role_of", "sketch"]

PyTree = Any

_ALIGN = ("role", "leaf")
_DIGITS = re.compile(r"(^|/|_)\d+(?=/|$)")


def role_of(path: str) -> str:
    """The *role* of a leaf: its path with layer indices replaced by ``*``.

    ``encoder/layers/3/attention/query/kernel`` → ``encoder/layers/*/attention/query/kernel``;
    ``h_3/mlp/c_fc/kernel`` → ``h_*/mlp/c_fc/kernel``.
    """
    return _DIGITS.sub(r"\1*", path)


def _leaf_id(spec: LeafSpec, align: str) -> int:
    key = role_of(spec.path) if align == "role" else spec.path
    return zlib.crc32(key.encode()) & 0x7FFFFFFF  # stable across processes (not hash())


def _mix(x: jax.Array) -> jax.Array:
    """``lowbias32`` integer finaliser (C. Wellons): a bijective uint32 → uint32 mix."""
    x = x ^ (x >> 16)
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * np.uint32(0x846CA68B)
    x = x ^ (x >> 16)
    return x


def _bucket_and_sign(
    local_shape: tuple[int, ...], seed: jax.Array, leaf_id: int, dim: int
) -> tuple[jax.Array, jax.Array]:
    """Bucket ``int32`` and sign ``float32`` of every group-local entry (shape ``local_shape``)."""
    n = int(np.prod(local_shape, dtype=np.int64))
    idx = jax.lax.iota(jnp.uint32, n).reshape(local_shape)
    salt = _mix(_mix(seed ^ np.uint32(0x9E3779B9)) + np.uint32(leaf_id))
    h = _mix(idx * np.uint32(0x9E3779B1) + salt)
    h2 = _mix(h ^ np.uint32(0x5BD1E995))
    # Multiply-shift range reduction of the top 24 bits (exact in float32, no modulo).
    bucket = ((h >> 8).astype(jnp.float32) * np.float32(dim / 2.0**24)).astype(jnp.int32)
    bucket = jnp.minimum(bucket, dim - 1)
    sign = jnp.where((h2 & np.uint32(1)) == 0, np.float32(1.0), np.float32(-1.0))
    return bucket, sign


def _leaf_sketch(x: jax.Array, spec: LeafSpec, seed: jax.Array, dim: int, align: str):
    """``float32[n_groups, dim]``: the sketch of every group of one leaf."""
    x = jnp.asarray(x).astype(jnp.float32)
    shape, g = spec.shape, spec.n_groups
    if spec.axis is None:
        split = (1,) + tuple(shape)
        gaxis = 0
    else:
        split, gaxis = spec.split_shape, spec.axis
    local_shape = tuple(d if i != gaxis else 1 for i, d in enumerate(split))
    bucket, sign = _bucket_and_sign(
        tuple(d for i, d in enumerate(split) if i != gaxis) or (1,),
        seed,
        _leaf_id(spec, align),
        dim,
    )
    bucket = bucket.reshape(local_shape)
    sign = sign.reshape(local_shape)
    gidx = jax.lax.broadcasted_iota(jnp.int32, split, gaxis)
    seg = gidx * dim + bucket  # broadcast over the group axis
    vals = x.reshape(split) * sign
    out = jax.ops.segment_sum(vals.reshape(-1), seg.reshape(-1), num_segments=g * dim)
    return out.reshape(g, dim)


def sketch(
    partition: Partition,
    grads: PyTree,
    *,
    dim: int,
    seed: int | jax.Array = 0,
    align: Literal["role", "leaf"] = "role",
) -> jax.Array:
    r"""Count-sketches every component's gradient to ``dim`` coordinates.

    Args:
      partition: the component partition (a DSCA *block* is one component).
      grads: a tree with ``partition`` 's structure and shapes (any float dtype).
      dim: sketch dimension ``s`` (static).
      seed: hash seed (Python int or a traced ``uint32``/``int32`` scalar); the same seed
        gives bit-identical sketches.
      align: ``"role"`` shares the hash across layers (same leaf role, same local index),
        ``"leaf"`` hashes every leaf independently (blocks of different layers are then
        orthogonal in expectation).

    Returns:
      ``float32[C, dim]``; row ``c`` satisfies
      :math:`\mathbb{E}\langle s_a, s_b\rangle = \langle g_a, g_b\rangle`.

    Raises:
      ValueError: on a bad ``dim`` / ``align`` or when ``grads`` does not match ``partition``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rgft_jax.components import Partition, Rule
      >>> g = {'w': jnp.ones((4, 8))}
      >>> part = Partition.build(g, [Rule('w', kind='block', axis=1, width=2)])
      >>> sketch(part, g, dim=16, seed=0).shape
      (4, 16)
    """
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"sketch: dim must be an int >= 1, got {dim!r}.")
    if align not in _ALIGN:
        raise ValueError(f"sketch: align={align!r}; allowed: {_ALIGN}.")
    if not isinstance(partition, Partition):
        raise TypeError(f"sketch: partition must be a Partition, got {type(partition).__name__}.")
    partition.check_tree(grads, "grads")
    dim = int(dim)
    seed = jnp.asarray(seed).astype(jnp.uint32)
    leaves = jax.tree_util.tree_leaves(grads)
    parts = [
        _leaf_sketch(x, s, seed, dim, align)
        for s, x in zip(partition.leaves, leaves, strict=True)
        if s.n_groups
    ]
    groups = jnp.concatenate(parts, axis=0)  # [sum of n_groups, dim]
    return jax.ops.segment_sum(
        groups, jnp.asarray(partition._segment_ids), num_segments=partition.num_components
    )
