# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""k-means with static ``k``: k-means++ seeding, Lloyd iterations, restarts, size control.

Everything has static shapes: ``k`` cluster slots always exist, and a slot may be empty
(after merging small clusters); splitting a large cluster moves one half into an empty slot.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "KMeansResult",
    "cluster_sizes",
    "kmeans",
    "kmeans_plusplus",
    "lloyd",
    "match_labels",
    "merge_small",
    "split_large",
]

_HI = jax.lax.Precision.HIGHEST


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans` / :func:`lloyd`."""

    centroids: jax.Array  # float32 [k, d]
    labels: jax.Array  # int32 [n]
    inertia: jax.Array  # float32 []: sum of squared distances to the assigned centroid
    iters: jax.Array  # int32 []: Lloyd iterations run


def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
    """``[n, k]`` squared distances (clipped at 0)."""
    d = (
        jnp.sum(x * x, axis=1)[:, None]
        - 2.0 * jnp.matmul(x, c.T, precision=_HI)
        + jnp.sum(c * c, axis=1)[None, :]
    )
    return jnp.maximum(d, 0.0)


def cluster_sizes(labels: jax.Array, k: int, weights: jax.Array | None = None) -> jax.Array:
    """``float32[k]``: (weighted) number of points per cluster."""
    w = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    return jax.ops.segment_sum(w, labels, num_segments=k)


def kmeans_plusplus(key: jax.Array, x: jax.Array, k: int, n_local_trials: int | None = None):
    """k-means++ seeding (Arthur & Vassilvitskii, 2007) with greedy local trials.

    As scikit-learn: every new centre is the best (lowest potential) of
    ``2 + floor(ln k)`` candidates sampled with probability proportional to the squared
    distance to the nearest chosen centre.

    Returns:
      ``float32[k, d]`` initial centroids.
    """
    x = x.astype(jnp.float32)
    n, d = x.shape
    trials = n_local_trials or 2 + int(np.log(k))
    k0, key = jax.random.split(key)
    first = jax.random.randint(k0, (), 0, n)
    c = jnp.zeros((k, d), jnp.float32).at[0].set(x[first])
    closest = jnp.sum((x - x[first]) ** 2, axis=1)

    def body(i, carry):
        c, closest, key = carry
        key, sub = jax.random.split(key)
        pot = jnp.sum(closest)
        logits = jnp.where(pot > 0, jnp.log(jnp.maximum(closest, 1e-30)), 0.0)
        logits = jnp.where((closest <= 0) & (pot > 0), -jnp.inf, logits)
        cand = jax.random.categorical(sub, logits, shape=(trials,))
        dc = _sq_dists(x, x[cand])  # [n, trials]
        new_closest = jnp.minimum(closest[:, None], dc)
        best = jnp.argmin(jnp.sum(new_closest, axis=0))
        return c.at[i].set(x[cand[best]]), new_closest[:, best], key

    c, _, _ = jax.lax.fori_loop(1, k, body, (c, closest, key))
    return c


def _assign(x, c):
    d = _sq_dists(x, c)
    labels = jnp.argmin(d, axis=1).astype(jnp.int32)
    return labels, jnp.take_along_axis(d, labels[:, None], axis=1)[:, 0]


def lloyd(
    x: jax.Array, centroids: jax.Array, *, max_iters: int = 100, tol: float = 1e-4
) -> KMeansResult:
    r"""Lloyd iterations in a ``lax.while_loop`` from ``centroids``.

    Stops after ``max_iters`` or when the total squared centre shift is at most
    ``tol * mean(var(x, axis=0))`` (scikit-learn's relative tolerance). Empty clusters are
    re-seeded at the points farthest from their centres.
    """
    x = x.astype(jnp.float32)
    n = x.shape[0]
    k = centroids.shape[0]
    tol_abs = tol * jnp.mean(jnp.var(x, axis=0))

    def step(c):
        labels, mind = _assign(x, c)
        sums = jax.ops.segment_sum(x, labels, num_segments=k)
        counts = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), labels, num_segments=k)
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)
        empty = counts == 0
        far = jax.lax.top_k(mind, min(k, n))[1]
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, far.shape[0] - 1)
        new = jnp.where(empty[:, None], x[far[rank]], new)
        return new

    def cond(s):
        it, _, shift = s
        return (it < max_iters) & (shift > tol_abs)

    def body(s):
        it, c, _ = s
        new = step(c)
        return it + 1, new, jnp.sum((new - c) ** 2)

    it, c, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), centroids, jnp.inf))
    labels, mind = _assign(x, c)
    return KMeansResult(c, labels, jnp.sum(mind), it)


def kmeans(
    key: jax.Array,
    x: jax.Array,
    k: int,
    *,
    n_init: int = 3,
    max_iters: int = 100,
    tol: float = 1e-4,
) -> KMeansResult:
    """Best-of-``n_init`` k-means (k-means++ seeding + Lloyd), restarts run with ``vmap``."""
    if not isinstance(k, (int, np.integer)) or k < 1 or k > x.shape[0]:
        raise ValueError(f"kmeans: k must be an int in [1, n={x.shape[0]}], got {k!r}.")
    if not isinstance(n_init, (int, np.integer)) or n_init < 1:
        raise ValueError(f"kmeans: n_init must be an int >= 1, got {n_init!r}.")
    keys = jax.random.split(key, n_init)

    def one(kk):
        return lloyd(x, kmeans_plusplus(kk, x, k), max_iters=max_iters, tol=tol)

    res = jax.vmap(one)(keys)
    best = jnp.argmin(res.inertia)
    return jax.tree_util.tree_map(lambda a: a[best], res)


def _centroids(x, labels, k, old):
    sums = jax.ops.segment_sum(x, labels, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones(labels.shape, jnp.float32), labels, num_segments=k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], old)


def merge_small(
    x: jax.Array,
    labels: jax.Array,
    centroids: jax.Array,
    min_size: float,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Moves the points of clusters smaller than ``min_size`` to the nearest large centroid.

    A cluster is *small* when its (weighted) size is positive and below ``min_size``. When
    every cluster is small nothing changes. The emptied slots stay empty (size 0).

    Returns:
      ``(labels, centroids)``.
    """
    k = centroids.shape[0]
    sizes = cluster_sizes(labels, k, weights)
    big = sizes >= min_size
    small_pt = ~big[labels]
    d = jnp.where(big[None, :], _sq_dists(x, centroids), jnp.inf)
    target = jnp.argmin(d, axis=1).astype(jnp.int32)
    do = jnp.any(big) & small_pt
    labels = jnp.where(do, target, labels)
    return labels, _centroids(x, labels, k, centroids)


def split_large(
    x: jax.Array,
    labels: jax.Array,
    centroids: jax.Array,
    max_size: float,
    weights: jax.Array | None = None,
    *,
    refine_iters: int = 5,
) -> tuple[jax.Array, jax.Array]:
    """Bisects clusters larger than ``max_size`` into empty slots (at most ``k`` splits).

    Each round takes the largest cluster; if it exceeds ``max_size`` and a slot is empty, it
    is cut by the sign of the projection on its principal axis, refined by ``refine_iters``
    2-means steps restricted to its points, and one half moves to the empty slot (bisecting
    k-means, Steinbach et al., 2000). Without an empty slot a large cluster stays.

    Returns:
      ``(labels, centroids)``.
    """
    k, d = centroids.shape
    x = x.astype(jnp.float32)
    w = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)

    def round_(_, carry):
        labels, c = carry
        sizes = cluster_sizes(labels, k, w)
        big = jnp.argmax(sizes)
        empty = sizes <= 0
        slot = jnp.argmax(empty)
        do = (sizes[big] > max_size) & jnp.any(empty)
        member = labels == big
        mf = member.astype(jnp.float32)
        cnt = jnp.maximum(jnp.sum(mf), 1.0)
        mu = jnp.sum(x * mf[:, None], axis=0) / cnt
        xc = (x - mu) * mf[:, None]
        cov = jnp.matmul(xc.T, xc, precision=_HI)
        v = jnp.linalg.eigh(cov)[1][:, -1]
        side = (jnp.matmul(xc, v, precision=_HI) > 0) & member

        def refine(_, side):
            sf = side.astype(jnp.float32)
            of = mf - sf
            c1 = jnp.sum(x * sf[:, None], 0) / jnp.maximum(jnp.sum(sf), 1.0)
            c0 = jnp.sum(x * of[:, None], 0) / jnp.maximum(jnp.sum(of), 1.0)
            closer1 = jnp.sum((x - c1) ** 2, 1) < jnp.sum((x - c0) ** 2, 1)
            return closer1 & member

        side = jax.lax.fori_loop(0, refine_iters, refine, side)
        new_labels = jnp.where(side, slot.astype(jnp.int32), labels)
        labels = jnp.where(do, new_labels, labels)
        return labels, _centroids(x, labels, k, c)

    return jax.lax.fori_loop(0, k, round_, (labels, centroids))


def match_labels(
    prev_labels: jax.Array, labels: jax.Array, centroids: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Permutes cluster ids to agree with ``prev_labels`` as much as possible.

    Greedy maximum-overlap matching on the ``k x k`` contingency table (``k`` rounds: take the
    largest remaining cell, fix that pair, remove its row and column). Cluster ``j`` then
    keeps its identity ("module 3") across updates when its members mostly stay.

    Returns:
      ``(labels, centroids)`` relabelled.
    """
    k = centroids.shape[0]
    n = jax.ops.segment_sum(
        jnp.ones(labels.shape, jnp.float32), labels * k + prev_labels, num_segments=k * k
    ).reshape(k, k)  # [new, prev]

    def body(_, carry):
        n, perm = carry
        flat = jnp.argmax(n)
        i, j = flat // k, flat % k
        perm = perm.at[i].set(j.astype(jnp.int32))
        n = n.at[i, :].set(-1.0).at[:, j].set(-1.0)
        return n, perm

    _, perm = jax.lax.fori_loop(0, k, body, (n, jnp.zeros((k,), jnp.int32)))
    new_c = jnp.zeros_like(centroids).at[perm].set(centroids)
    return perm[labels], new_c
