# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""The block similarity graph: kernels, temporal smoothing, sparsification, normalisation.

Two representations with static shapes:

* **dense** ``float32[m, m]`` (``m`` up to ~8k): :math:`W \leftarrow \alpha W + (1-\alpha) S`,
  then kNN (``k`` largest per row) or top-p (smallest set of entries per row holding
  fraction ``p`` of the row mass), then the symmetrisation :math:`\tfrac12(A + A^\top)`.
* **kNN lists** ``int32[m, k]`` / ``float32[m, k]`` (any ``m``): each node keeps its ``k``
  best neighbours; the smoothing acts on candidate lists (previous neighbours plus new
  candidates), and the symmetrised graph is a ``jax.experimental.sparse.BCOO`` with a fixed
  ``nnz = 2 m k`` (the entries ``(i, j)`` and ``(j, i)`` with half weight each, which is
  again :math:`\tfrac12(A + A^\top)` since BCOO sums duplicates).

Similarities are non-negative: cosine similarities are clipped at 0 (anti-correlated blocks
are *not* neighbours), and the Gaussian kernel is
:math:`e^{-\|x_i - x_j\|^2 / (2\delta^2)}` with :math:`\delta` given or the median pairwise
distance (median heuristic) over a random sample of pairs.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

__all__ = [
    "dense_similarity",
    "knn_candidates_exact",
    "knn_candidates_local",
    "knn_select",
    "knn_to_bcoo",
    "median_bandwidth",
    "normalized_adjacency",
    "pair_similarity",
    "sparsify_knn",
    "sparsify_top_p",
    "symmetrize",
]

Kernel = Literal["cosine", "gaussian"]
KERNELS = ("cosine", "gaussian")
_EPS = 1e-12


def _prepare(x: jax.Array, kernel: str) -> jax.Array:
    x = jnp.asarray(x).astype(jnp.float32)
    if kernel == "cosine":
        n = jnp.linalg.norm(x, axis=1, keepdims=True)
        return x / jnp.maximum(n, _EPS)
    return x


def median_bandwidth(x: jax.Array, key: jax.Array, num_pairs: int = 4096) -> jax.Array:
    """Median Euclidean distance between ``num_pairs`` random pairs of rows of ``x``.

    A sample keeps it ``O(num_pairs * dim)`` instead of ``O(m^2)``; pairs ``(i, i)`` are
    dropped from the median (as NaN). Returns a float32 scalar, floored at ``1e-6``.
    """
    x = jnp.asarray(x).astype(jnp.float32)
    m = x.shape[0]
    ki, kj = jax.random.split(key)
    i = jax.random.randint(ki, (num_pairs,), 0, m)
    j = jax.random.randint(kj, (num_pairs,), 0, m)
    d = jnp.linalg.norm(x[i] - x[j], axis=1)
    d = jnp.where(i == j, jnp.nan, d)
    med = jnp.nanmedian(d)
    return jnp.maximum(jnp.where(jnp.isnan(med), 1.0, med), 1e-6)


def _kernel_from_dots(dots, sq_i, sq_j, kernel: str, bandwidth):
    if kernel == "cosine":
        return jnp.maximum(dots, 0.0)
    d2 = jnp.maximum(sq_i + sq_j - 2.0 * dots, 0.0)
    return jnp.exp(-d2 / (2.0 * bandwidth * bandwidth))


def dense_similarity(
    x: jax.Array, *, kernel: Kernel = "cosine", bandwidth: jax.Array | float | None = None
) -> jax.Array:
    r"""``float32[m, m]`` similarity of the rows of ``x`` with a zero diagonal.

    Args:
      x: ``[m, s]`` sketches.
      kernel: ``"cosine"`` (:math:`\max(0, \cos)`) or ``"gaussian"``.
      bandwidth: Gaussian :math:`\delta` (required for ``"gaussian"``; see
        :func:`median_bandwidth`). Ignored for cosine.
    """
    if kernel not in KERNELS:
        raise ValueError(f"dense_similarity: kernel={kernel!r}; allowed: {KERNELS}.")
    if kernel == "gaussian" and bandwidth is None:
        raise ValueError("dense_similarity: kernel='gaussian' needs a bandwidth, got None.")
    y = _prepare(x, kernel)
    dots = y @ y.T
    sq = jnp.sum(y * y, axis=1)
    s = _kernel_from_dots(dots, sq[:, None], sq[None, :], kernel, bandwidth)
    m = s.shape[0]
    return jnp.where(jnp.eye(m, dtype=bool), 0.0, s)


def symmetrize(a: jax.Array) -> jax.Array:
    r""":math:`\tfrac12 (A + A^\top)`."""
    return 0.5 * (a + a.T)


def sparsify_knn(w: jax.Array, k: int) -> jax.Array:
    """Keeps the ``k`` largest entries of every row of a zero-diagonal ``[m, m]`` matrix."""
    m = w.shape[0]
    k = int(min(k, m - 1))
    _, idx = jax.lax.top_k(w, k)
    keep = jnp.zeros(w.shape, bool).at[jnp.arange(m)[:, None], idx].set(True)
    return jnp.where(keep & (w > 0), w, 0.0)


def sparsify_top_p(w: jax.Array, p: float) -> jax.Array:
    """Keeps, per row, the largest entries whose mass before them is below ``p`` of the row."""
    srt = -jnp.sort(-w, axis=1)
    total = jnp.maximum(jnp.sum(srt, axis=1, keepdims=True), _EPS)
    before = (jnp.cumsum(srt, axis=1) - srt) / total
    kept = before < p
    # Smallest kept value per row is the threshold (ties at the threshold are kept).
    thresh = jnp.min(jnp.where(kept, srt, jnp.inf), axis=1, keepdims=True)
    return jnp.where((w >= thresh) & (w > 0), w, 0.0)


def normalized_adjacency(w: jax.Array, d_min: float) -> tuple[jax.Array, jax.Array]:
    r"""``(D^{-1/2} W D^{-1/2}, d)`` with degrees floored at ``d_min``.

    ``w`` is a dense ``[m, m]`` array or a BCOO matrix (the result then is BCOO with the same
    sparsity pattern). The Laplacian's smallest eigenvectors are this matrix's largest:
    :math:`L_\mathrm{sym} = I - D^{-1/2} W D^{-1/2}`.
    """
    if isinstance(w, jsparse.BCOO):
        m = w.shape[0]
        deg = jsparse.bcoo_reduce_sum(w, axes=(1,)).todense()
        deg = jnp.maximum(deg, d_min)
        dinv = jax.lax.rsqrt(deg)
        rows, cols = w.indices[:, 0], w.indices[:, 1]
        data = w.data * dinv[rows] * dinv[cols]
        return jsparse.BCOO((data, w.indices), shape=(m, m)), deg
    deg = jnp.maximum(jnp.sum(w, axis=1), d_min)
    dinv = jax.lax.rsqrt(deg)
    return w * dinv[:, None] * dinv[None, :], deg


# ------------------------------------------------------------------------------ kNN lists
def pair_similarity(
    x: jax.Array, i: jax.Array, j: jax.Array, *, kernel: Kernel, bandwidth=None
) -> jax.Array:
    """Similarity of row pairs ``(i, j)`` (any equal shapes) of ``x`` (prepared per kernel)."""
    y = _prepare(x, kernel)
    yi, yj = y[i], y[j]
    dots = jnp.sum(yi * yj, axis=-1)
    return _kernel_from_dots(
        dots, jnp.sum(yi * yi, axis=-1), jnp.sum(yj * yj, axis=-1), kernel, bandwidth
    )


def knn_candidates_exact(
    x: jax.Array, k: int, *, kernel: Kernel, bandwidth=None, block_rows: int = 1024
) -> jax.Array:
    """``int32[m, k]``: the exact ``k`` most similar other rows, blockwise (``O(m^2 s)``).

    Memory is ``O(block_rows * m)``; the rows are processed with ``lax.map`` over blocks.
    """
    y = _prepare(x, kernel)
    m = y.shape[0]
    b = int(min(block_rows, m))
    nb = -(-m // b)
    pad = nb * b - m
    yp = jnp.pad(y, ((0, pad), (0, 0)))
    sq = jnp.sum(y * y, axis=1)

    def one(start):
        rows = jax.lax.dynamic_slice_in_dim(yp, start, b, axis=0)
        dots = rows @ y.T  # [b, m]
        sq_r = jnp.sum(rows * rows, axis=1)
        s = _kernel_from_dots(dots, sq_r[:, None], sq[None, :], kernel, bandwidth)
        self_idx = start + jnp.arange(b)
        s = jnp.where(jnp.arange(m)[None, :] == self_idx[:, None], -jnp.inf, s)
        return jax.lax.top_k(s, k)[1].astype(jnp.int32)

    out = jax.lax.map(one, jnp.arange(nb) * b)
    return out.reshape(nb * b, k)[:m]


def knn_candidates_local(
    idx: jax.Array, key: jax.Array, num_random: int, hop_width: int = 8
) -> jax.Array:
    """``int32[m, k*h + num_random]``: neighbours of neighbours plus random nodes.

    The NN-descent candidate set (Dong et al., 2011): a node's new neighbours are mostly
    among its neighbours' neighbours (here the ``h = min(k, hop_width)`` strongest of each);
    a few random nodes let new clusters be discovered. Cost ``O(m k h s)`` instead of
    ``O(m^2 s)``.
    """
    m, k = idx.shape
    h = int(min(k, hop_width))
    two_hop = idx[idx[:, :], :h].reshape(m, k * h)
    rnd = jax.random.randint(key, (m, num_random), 0, m, dtype=jnp.int32)
    return jnp.concatenate([two_hop, rnd], axis=1)


def knn_select(
    x: jax.Array,
    prev_idx: jax.Array,
    prev_w: jax.Array,
    candidates: jax.Array,
    *,
    alpha: jax.Array | float,
    kernel: Kernel,
    bandwidth=None,
) -> tuple[jax.Array, jax.Array]:
    r"""Smoothed kNN lists: the ``k`` best of previous neighbours ∪ candidates.

    The score of candidate ``j`` of node ``i`` is
    :math:`\alpha W_\mathrm{prev}(i, j) + (1 - \alpha) S(i, j)` with
    :math:`W_\mathrm{prev}(i, j) = 0` for ``j`` not among the previous neighbours, i.e. the
    dense update restricted to the candidate set. Duplicates and self-loops are dropped.

    Args:
      x: ``[m, s]`` sketches.
      prev_idx: ``int32[m, k]`` previous neighbour lists.
      prev_w: ``float32[m, k]`` their weights (zeros before the first update).
      candidates: ``int32[m, c]`` new candidates.
      alpha: forgetting factor.
      kernel: similarity kernel.
      bandwidth: Gaussian bandwidth.

    Returns:
      ``(idx int32[m, k], w float32[m, k])``.
    """
    m, k = prev_idx.shape
    cand = jnp.concatenate([prev_idx, candidates.astype(jnp.int32)], axis=1)
    w_prev = jnp.concatenate([prev_w, jnp.zeros(candidates.shape, jnp.float32)], axis=1)
    order = jnp.argsort(cand, axis=1, stable=True)  # previous neighbours first among equals
    cand = jnp.take_along_axis(cand, order, axis=1)
    w_prev = jnp.take_along_axis(w_prev, order, axis=1)
    dup = jnp.concatenate([jnp.zeros((m, 1), bool), cand[:, 1:] == cand[:, :-1]], axis=1)
    rows = jnp.arange(m, dtype=jnp.int32)[:, None]
    s = pair_similarity(
        x, jnp.broadcast_to(rows, cand.shape), cand, kernel=kernel, bandwidth=bandwidth
    )
    score = alpha * w_prev + (1.0 - alpha) * s
    score = jnp.where(dup | (cand == rows), -jnp.inf, score)
    top, pos = jax.lax.top_k(score, k)
    new_idx = jnp.take_along_axis(cand, pos, axis=1)
    new_w = jnp.where(jnp.isfinite(top), jnp.maximum(top, 0.0), 0.0)
    return new_idx, new_w


def knn_to_bcoo(idx: jax.Array, w: jax.Array) -> jsparse.BCOO:
    r"""Symmetrised sparse graph :math:`\tfrac12(A + A^\top)` of kNN lists, ``nnz = 2 m k``."""
    m, k = idx.shape
    rows = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32)[:, None], (m, k)).reshape(-1)
    cols = idx.reshape(-1).astype(jnp.int32)
    data = 0.5 * w.reshape(-1)
    indices = jnp.concatenate(
        [jnp.stack([rows, cols], axis=1), jnp.stack([cols, rows], axis=1)], axis=0
    )
    return jsparse.BCOO((jnp.concatenate([data, data]), indices), shape=(m, m))


def default_knn(m: int) -> int:
    """``k ~ log m``: ``max(4, ceil(log2 m))``, at most ``m - 1``."""
    return int(min(max(4, int(np.ceil(np.log2(max(m, 2))))), m - 1))
