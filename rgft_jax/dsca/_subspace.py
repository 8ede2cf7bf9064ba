# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""The seed's low-dimensional-structure diagnostics over steps (MFTC §3.1, appendix B).

The gradient covariance over steps :math:`\Sigma = \mathbb{E}_t[g_t g_t^\top]` (the second
moment; the seed notes the empirical Fisher gives the same form) is estimated from a sliding
window of the last ``W`` gradients, each count-sketched to ``p`` coordinates (a sketch of the
concatenated block sketches; inner products are preserved in expectation). Its non-zero
spectrum is that of the ``W x W`` Gram matrix, so everything is ``O(W p + W^3)``:

* :math:`\kappa(r) = \sum_{i \le r} \lambda_i / \sum_i \lambda_i` (principal energy share);
* :math:`\Pi_r`: the span of the top ``r`` eigenvectors of :math:`\Sigma`;
* the gradient-subspace drift :math:`\|\sin\Theta(\Pi_r(t), \Pi_r(t-1))\|_2`;
* the residuals :math:`\|v - \Pi_r v\| / \|v\|` of the new gradient and of the update
  :math:`\Delta\theta` against the *previous* :math:`\Pi_r` (out of sample);

and for the graph and the clustering (equations 4 and 5):

* :math:`\|L_\mathrm{sym}(t) - L_\mathrm{sym}(t-1)\|_2` by power iteration;
* per-module centroid movement and the largest row movement of the embedding
  (:math:`\varepsilon_u`; the seed bounds centroid movement by it);
* per-module temporal stability: the Jaccard overlap of each module's blocks with the
  same module's blocks at the previous update.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rgft_jax.dsca import _sketch, _spectral

_HI = jax.lax.Precision.HIGHEST
_FLAT_ID = 0x5EED0FF  # hash stream of the flattening sketch (distinct from any leaf's)


def flatten(x: jax.Array, seed: jax.Array, dim: int) -> jax.Array:
    """``float32[dim]``: a count sketch of the ``[m, s]`` block sketches read as one vector."""
    x = jnp.asarray(x, jnp.float32).reshape(-1)
    bucket, sign = _sketch._bucket_and_sign(x.shape, seed, _FLAT_ID, dim)
    return jax.ops.segment_sum(x * sign.reshape(-1), bucket.reshape(-1), num_segments=dim)


def push(window: jax.Array, count: jax.Array, v: jax.Array) -> jax.Array:
    """``window`` (``[W, p]`` ring buffer) with row ``count % W`` replaced by ``v``."""
    return window.at[count % window.shape[0]].set(v.astype(window.dtype))


def spectrum(window: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (descending, ``>= 0``) and eigenvectors of the window's Gram matrix."""
    gram = jnp.matmul(window, window.T, precision=_HI)
    w, v = jnp.linalg.eigh(gram)
    return jnp.maximum(w[::-1], 0.0), v[:, ::-1]


def kappa(eigvals: jax.Array, r: int, filled: jax.Array) -> jax.Array:
    r""":math:`\kappa(r)`; NaN until the window holds more than ``r`` gradients."""
    share = jnp.sum(eigvals[:r]) / jnp.maximum(jnp.sum(eigvals), 1e-30)
    return jnp.where(filled > r, share, jnp.nan)


def basis(window: jax.Array, eigvals: jax.Array, eigvecs: jax.Array, r: int) -> jax.Array:
    r"""``[p, r]``: orthonormal :math:`\Pi_r` (zero columns for zero eigenvalues)."""
    lam = eigvals[:r]
    scale = jnp.where(lam > 1e-12 * jnp.maximum(eigvals[0], 1e-30), jax.lax.rsqrt(
        jnp.maximum(lam, 1e-30)), 0.0)
    return jnp.matmul(window.T, eigvecs[:, :r], precision=_HI) * scale[None, :]


def sin_theta(u: jax.Array, u_prev: jax.Array) -> jax.Array:
    r""":math:`\|\sin\Theta(U, U')\|_2 = \sqrt{1 - \sigma_{\min}(U^\top U')^2}` (orthonormal)."""
    s = jnp.linalg.svd(jnp.matmul(u.T, u_prev, precision=_HI), compute_uv=False)
    return jnp.sqrt(jnp.maximum(1.0 - jnp.min(s) ** 2, 0.0))


def residual(v: jax.Array, u: jax.Array) -> jax.Array:
    r""":math:`\|v - U U^\top v\| / \|v\|` (NaN for ``v = 0``)."""
    proj = jnp.matmul(u, jnp.matmul(u.T, v, precision=_HI), precision=_HI)
    n = jnp.linalg.norm(v)
    return jnp.where(n > 0, jnp.linalg.norm(v - proj) / jnp.where(n > 0, n, 1.0), jnp.nan)


def norm_of_difference(a, b, key: jax.Array, m: int, iters: int = 30) -> jax.Array:
    r""":math:`\|A - B\|_2` of two symmetric ``[m, m]`` matrices (dense or BCOO), by power
    iteration on :math:`(A - B)^2` (a lower bound that is tight after a few steps)."""
    ma, mb = _spectral.matvec(a), _spectral.matvec(b)

    def op(v):
        return ma(v) - mb(v)

    v = jax.random.normal(key, (m, 1), jnp.float32)
    v = v / jnp.linalg.norm(v)

    def body(_, v):
        w = op(op(v))
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v)
    return jnp.linalg.norm(op(v))


def module_stability(prev: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """``float32[k]``: Jaccard overlap of every module's blocks now and at the previous update
    (NaN for a module empty at both)."""
    slots = jnp.arange(k, dtype=labels.dtype)[:, None]
    now, before = labels[None, :] == slots, prev[None, :] == slots
    inter = jnp.sum(now & before, axis=1).astype(jnp.float32)
    union = jnp.sum(now | before, axis=1).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), jnp.nan)


def row_movement(y: jax.Array, y_prev: jax.Array) -> jax.Array:
    r""":math:`\varepsilon_u = \max_j \|y_j(t) - y_j(t-1)\|` over embedding rows."""
    return jnp.max(jnp.linalg.norm(y - y_prev, axis=1))


def centroid_movement(cents: jax.Array, cents_prev: jax.Array) -> jax.Array:
    """``float32[k]``: how far every (matched) k-means centroid moved."""
    return jnp.linalg.norm(cents - cents_prev, axis=1)
