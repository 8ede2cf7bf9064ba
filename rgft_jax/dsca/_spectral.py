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

Static clustering from a cold start uses :func:`top_block_krylov` instead: a block Krylov
space (block Lanczos with full re-orthogonalisation) grown until the top ``r`` Ritz pairs
have small residuals. It costs one product with the graph per block, and needs no QR
factorisation (orthonormalisation is by :func:`svqb` on small Gram matrices; on CPU
``jnp.linalg.qr`` of a tall ``[4096, 16]`` block takes ~0.2 s).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from jax.experimental.sparse.linalg import lobpcg_standard

__all__ = [
    "lobpcg_tol",
    "normalized_matvec",
    "matvec",
    "procrustes_align",
    "randomized_subspace",
    "row_normalize",
    "subspace_drift",
    "svqb",
    "top_block_krylov",
    "top_eigh",
    "top_lobpcg",
]

_HI = jax.lax.Precision.HIGHEST


def matvec(a):
    """``v -> a @ v`` for a dense array (f32-exact precision) or a BCOO matrix."""
    if isinstance(a, jsparse.BCOO):
        return lambda v: a @ v
    return lambda v: jnp.matmul(a, v, precision=_HI)


def normalized_matvec(w, d_min: float):
    r"""``(v -> D^{-1/2} W D^{-1/2} v, d)`` without forming the normalised matrix.

    For a dense ``w`` the product is :math:`D^{-1/2}(W (D^{-1/2} v))`, one pass over ``W``
    per product and none to build :math:`A_n`; a BCOO ``w`` is rescaled once (its
    ``nnz`` entries), as in :func:`rgft_jax.dsca._graph.normalized_adjacency`.
    """
    if isinstance(w, jsparse.BCOO):
        from rgft_jax.dsca import _graph

        an, deg = _graph.normalized_adjacency(w, d_min)
        return matvec(an), deg
    deg = jnp.maximum(jnp.sum(w, axis=1), d_min)
    dinv = jax.lax.rsqrt(deg)[:, None]
    return (lambda v: dinv * jnp.matmul(w, dinv * v, precision=_HI)), deg


def svqb(x: jax.Array, v: jax.Array | None = None, *, passes: int = 2) -> jax.Array:
    r"""Orthonormal columns spanning ``x`` (minus its component in ``span(v)``).

    SVQB (Stathopoulos & Wu, `A block orthogonalization procedure with constant
    synchronization requirements <https://doi.org/10.1137/S1064827500370883>`_, 2002): scale
    the Gram matrix to unit diagonal, ``eigh`` it, and map ``x`` by
    :math:`D U \Theta^{-1/2}` (tiny :math:`\Theta` clamped); each pass first projects out
    the orthonormal ``v``. Two passes give orthonormality to float32 precision when ``x`` is
    not too ill-conditioned. Only ``[m, b] x [b, b]`` products and a ``[b, b]`` ``eigh``.
    """
    for _ in range(passes):
        if v is not None:
            x = x - jnp.matmul(v, jnp.matmul(v.T, x, precision=_HI), precision=_HI)
        g = jnp.matmul(x.T, x, precision=_HI)
        d = jax.lax.rsqrt(jnp.maximum(jnp.diag(g), 1e-30))
        th, e = jnp.linalg.eigh(g * d[:, None] * d[None, :])
        th = jnp.maximum(th, 1e-7 * jnp.maximum(jnp.max(th), 1e-30))
        x = jnp.matmul(x, d[:, None] * e * jax.lax.rsqrt(th)[None, :], precision=_HI)
    return x


def top_block_krylov(
    mv,
    x0: jax.Array,
    r: int,
    key: jax.Array,
    *,
    max_blocks: int,
    max_products: int,
    tol: float,
    min_blocks: int = 3,
    converge: int | None = None,
):
    r"""``(theta[r], U[m, r], products)``: the top ``r`` eigenpairs of a symmetric operator.

    Block Krylov with Rayleigh–Ritz and Krylov–Schur restarts (block Lanczos with full
    re-orthogonalisation; Golub & Underwood, 1977; Stewart, `A Krylov–Schur algorithm for
    large eigenproblems <https://doi.org/10.1137/S0895479800371529>`_, 2001): from the
    ``b = x0.shape[1] >= r`` start columns the space :math:`[X, A X, A^2 X, \dots]` grows one
    block (one product ``mv``) at a time, orthonormalised by :func:`svqb`. From ``min_blocks``
    blocks on, the Ritz pairs of :math:`T = V^\top A V` (assembled from the products, no
    extra ``mv``) are checked after every product, and the iteration stops once the top ``r``
    have residuals :math:`\|A u - \theta u\| \le` ``tol``. A full space (``max_blocks``
    blocks) restarts from its top ``max_blocks // 2`` blocks of Ritz vectors (their products
    are known) plus the next Krylov block, so the restarted space is again a Krylov space.
    Small spaces keep every ``eigh`` small (``[max_blocks * b]^2``): LAPACK's threaded
    ``eigh`` of a ``[128, 128]`` matrix can take 0.1 s on a busy CPU.

    Polynomial acceleration makes it converge much faster than subspace iteration when the
    wanted eigenvalues are barely separated from the spectrum's bulk; eigenvalues near ``-1``
    (bipartite-like parts) enter the space but are never selected (Ritz values are sorted
    algebraically).

    Each new block gets an independent Gaussian perturbation of norm ~1e-4 before
    orthonormalisation, so a space that becomes invariant (e.g. a graph of exactly ``r``
    components) continues with random directions instead of rounding noise; it moves the Ritz
    vectors by ``O(1e-4)``, far below a clustering tolerance.

    Args:
      mv: the symmetric operator, ``[m, b] -> [m, b]``.
      x0: ``float32[m, b]`` start block (``r <= b``).
      r: number of eigenpairs wanted.
      key: PRNG key of the perturbations.
      max_blocks: blocks in a full space (``>= 2``; ``max_blocks * b <= m``).
      max_products: cap on products with the operator (blocks).
      tol: residual target of the top ``r`` Ritz pairs.
      min_blocks: blocks before the first convergence check.
      converge: how many of the top ``r`` pairs must meet ``tol`` (default all ``r``); the
        rest are the next Ritz pairs of the same space, as accurate as they happen to be
        (eigenvectors deep in the spectrum's bulk converge slowly).

    Returns:
      ``(theta float32[r] descending, U float32[m, r] orthonormal, products int32)``.
    """
    m, b = x0.shape
    q = int(max_blocks)
    n = q * b
    if r > b or n > m or q < 2:
        raise ValueError(
            f"top_block_krylov: need r <= b, max_blocks >= 2 and max_blocks * b <= m, got "
            f"r={r}, b={b}, max_blocks={q}, m={m}"
        )
    keep = max(1, q // 2)
    kb = keep * b
    min_blocks = max(1, min(int(min_blocks), q))
    nc = r if converge is None else max(1, min(int(converge), r))
    blk = jnp.arange(n) // b
    upper = blk[:, None] <= blk[None, :]
    eps = 1e-4 / float(np.sqrt(m))

    def ritz(t, j):  # blocks < j are active
        active = blk < j
        ts = jnp.where(upper, t, t.T)
        ts = jnp.where(active[:, None] & active[None, :], ts, 0.0)
        ts = ts - 4.0 * jnp.diag(jnp.where(active, 0.0, 1.0))  # inactive: below the spectrum
        w, s = jnp.linalg.eigh(ts)
        return w[::-1][:kb], s[:, ::-1][:, :kb]

    def check(args):
        v, y, t, j, _, _, _ = args
        w, s = ritz(t, j)
        sr = s[:, :nc]
        u = jnp.matmul(v[:, :n], sr, precision=_HI)
        au = jnp.matmul(y, sr, precision=_HI)
        return jnp.max(jnp.linalg.norm(au - u * w[None, :nc], axis=0)), w, s

    def restart(args):
        v, y, _, s = args
        sk = s[:, :kb]
        vk = jnp.matmul(v[:, :n], sk, precision=_HI)
        yk = jnp.matmul(y, sk, precision=_HI)
        nxt = v[:, n:]
        v = jnp.zeros_like(v).at[:, :kb].set(vk).at[:, kb : kb + b].set(nxt)
        y = jnp.zeros_like(y).at[:, :kb].set(yk)
        t = jnp.zeros((n, n), jnp.float32).at[:, :kb].set(jnp.matmul(v[:, :n].T, yk, precision=_HI))
        return v, y, t, jnp.asarray(keep, jnp.int32)

    def cond(c):
        _, _, _, _, res, _, _, done = c
        return (done < max_products) & (res > tol)

    def body(c):
        j, v, y, t, res, w, s, done = c
        vj = jax.lax.dynamic_slice(v, (0, j * b), (m, b))
        yj = mv(vj)
        y = jax.lax.dynamic_update_slice(y, yj, (0, j * b))
        vf = v[:, :n]  # blocks > j are zero
        cj = jnp.matmul(vf.T, yj, precision=_HI)  # column block j of T (rows <= j)
        t = jax.lax.dynamic_update_slice(t, cj, (0, j * b))
        nxt = yj - jnp.matmul(vf, cj, precision=_HI)
        nxt = nxt + eps * jax.random.normal(jax.random.fold_in(key, done), (m, b), jnp.float32)
        v = jax.lax.dynamic_update_slice(v, svqb(nxt, vf), (0, (j + 1) * b))
        j, done = j + 1, done + 1
        res, w, s = jax.lax.cond(
            (j >= min_blocks) | (done >= max_products),
            check,
            lambda args: args[4:],
            (v, y, t, j, res, w, s),
        )
        v, y, t, j = jax.lax.cond(
            (j == q) & (res > tol),
            restart,
            lambda args: (args[0], args[1], args[2], j),
            (v, y, t, s),
        )
        return j, v, y, t, res, w, s, done

    init = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((m, n + b), jnp.float32).at[:, :b].set(svqb(x0.astype(jnp.float32))),
        jnp.zeros((m, n), jnp.float32),
        jnp.zeros((n, n), jnp.float32),
        jnp.asarray(jnp.inf, jnp.float32),
        jnp.zeros((kb,), jnp.float32),
        jnp.zeros((n, kb), jnp.float32),
        jnp.zeros((), jnp.int32),
    )
    _, v, _, _, _, w, s, done = jax.lax.while_loop(cond, body, init)
    return w[:r], jnp.matmul(v[:, :n], s[:, :r], precision=_HI), done


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
