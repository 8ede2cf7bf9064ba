# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Spectral embedding: the ``r`` smallest eigenvectors of the normalised Laplacian.

:math:`L_\mathrm{sym} = I - D^{-1/2} W D^{-1/2}`, so its smallest eigenpairs are the *largest*
of the normalised adjacency :math:`A_n = D^{-1/2} W D^{-1/2}`, which is what
``jax.experimental.sparse.linalg.lobpcg_standard`` finds (it only finds largest eigenpairs).
LOBPCG is warm-started from the previous embedding; a *full recompute* is either a dense
``eigh`` (small ``m``) or a cold start from a randomized subspace iteration on
:math:`(A_n + I)/2` (whose spectrum lies in ``[0, 1]``, so power steps cannot lock onto the
eigenvalues near ``-1`` of bipartite-like parts) followed by LOBPCG.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse
from jax.experimental.sparse.linalg import lobpcg_standard

__all__ = [
    "lobpcg_tol",
    "matvec",
    "procrustes_align",
    "randomized_subspace",
    "row_normalize",
    "subspace_drift",
    "top_eigh",
    "top_lobpcg",
]

_HI = jax.lax.Precision.HIGHEST


def matvec(a):
    """``v -> a @ v`` for a dense array (f32-exact precision) or a BCOO matrix."""
    if isinstance(a, jsparse.BCOO):
        return lambda v: a @ v
    return lambda v: jnp.matmul(a, v, precision=_HI)


def lobpcg_tol(residual_tol: float, m: int) -> float:
    r"""LOBPCG's ``tol`` for a target eigen-residual.

    The target is :math:`\|A_n v - \lambda v\| \lesssim` ``residual_tol``.

    ``lobpcg_standard`` declares a pair converged when
    :math:`\|r\| < \mathrm{tol}\cdot 10\, n\,(\lambda + \|A v\|)`, a bound that loosens with
    ``n``; with :math:`\lambda \approx \|Av\| \le 1` this picks ``tol`` so the bound is
    ``residual_tol``.
    """
    return float(residual_tol) / (20.0 * m)


def top_lobpcg(a, x0: jax.Array, *, max_iters: int, tol: float):
    """``(theta[r], U[m, r], iters)``: the top ``r`` eigenpairs of ``a`` by LOBPCG from ``x0``."""
    theta, u, it = lobpcg_standard(matvec(a), x0.astype(jnp.float32), m=max_iters, tol=tol)
    return theta, u, jnp.asarray(it, jnp.int32)


def top_eigh(a: jax.Array, r: int):
    """``(theta[r], U[m, r], 0)``: the top ``r`` eigenpairs of a dense symmetric ``a``."""
    w, v = jnp.linalg.eigh(a)
    return w[::-1][:r], v[:, ::-1][:, :r], jnp.zeros((), jnp.int32)


def randomized_subspace(a, key: jax.Array, m: int, r: int, *, power_iters: int = 4):
    r"""An orthonormal ``[m, r]`` start: ``power_iters`` subspace steps on :math:`(A_n + I)/2`.

    Halko, Martinsson & Tropp, `Finding structure with randomness
    <https://arxiv.org/abs/0909.4061>`_, 2011 (Alg. 4.4 with QR re-orthonormalisation).
    """
    mv = matvec(a)
    q, _ = jnp.linalg.qr(jax.random.normal(key, (m, r), jnp.float32))

    def body(_, q):
        q, _ = jnp.linalg.qr(0.5 * (mv(q) + q))
        return q

    return jax.lax.fori_loop(0, power_iters, body, q)


def procrustes_align(u: jax.Array, u_prev: jax.Array) -> jax.Array:
    r"""Rotates ``u`` within its span to best match ``u_prev``: :math:`U R`,
    :math:`R = \arg\min_{R^\top R = I}\|U R - U_\mathrm{prev}\|_F` (polar factor of
    :math:`U^\top U_\mathrm{prev}`).

    Eigenvectors of (nearly) repeated eigenvalues are only defined up to a rotation; aligning
    keeps the embedding coordinates, and so the k-means centroids, comparable across steps.
    """
    p, _, qt = jnp.linalg.svd(jnp.matmul(u.T, u_prev, precision=_HI))
    return jnp.matmul(u, p @ qt, precision=_HI)


def subspace_drift(u: jax.Array, u_prev: jax.Array) -> jax.Array:
    r"""Subspace drift :math:`\|\Pi_r(t) - \Pi_r(t-\Delta)\|_F`.

    Equals :math:`\sqrt{2r - 2\|U^\top U'\|_F^2}` for orthonormal ``U``, ``U'``.

    Ranges over :math:`[0, \sqrt{2r}]`; :math:`\sqrt{2}\,\|\sin\Theta\|_F`.
    """
    r = u.shape[1]
    c = jnp.matmul(u.T, u_prev, precision=_HI)
    return jnp.sqrt(jnp.maximum(2.0 * r - 2.0 * jnp.sum(c * c), 0.0))


def row_normalize(u: jax.Array) -> jax.Array:
    """Rows scaled to unit norm (Ng, Jordan & Weiss, 2001); zero rows stay zero."""
    n = jnp.linalg.norm(u, axis=1, keepdims=True)
    return u / jnp.maximum(n, 1e-12)
