# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Spectral clustering of a fixed graph, from the same pieces as the dynamic update.

:func:`spectral_clustering` is the functional twin of scikit-learn's
``SpectralClustering(affinity="precomputed")``: normalised-Laplacian embedding (top
eigenvectors of :math:`D^{-1/2} W D^{-1/2}`, or ``eigh`` for tiny graphs),
row normalisation (Ng, Jordan & Weiss, 2001) and best-of-``n_init`` k-means. A cold start
uses a block Krylov space (:func:`rgft_jax.dsca._spectral.top_block_krylov`) by default.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from rgft_jax.dsca import _graph, _kmeans, _spectral

__all__ = ["spectral_clustering", "spectral_embedding"]


def _check_graph(affinity, fn: str):
    if isinstance(affinity, jsparse.BCOO):
        shape = affinity.shape
    else:
        affinity = jnp.asarray(affinity)
        shape = affinity.shape
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 2:
        raise ValueError(f"{fn}: affinity must be a square [m, m] matrix (m >= 2), got {shape}.")
    if not jnp.issubdtype(affinity.dtype, jnp.floating):
        raise ValueError(f"{fn}: affinity must be a float matrix, got dtype={affinity.dtype}.")
    return affinity, shape[0]


def _pos_int(v, name, fn, upper=None):
    if (
        not isinstance(v, (int, np.integer))
        or isinstance(v, bool)
        or v < 1
        or (upper is not None and v > upper)
    ):
        allowed = "an int >= 1" if upper is None else f"an int in [1, {upper}]"
        raise ValueError(f"{fn}: {name}={v!r}; allowed: {allowed}.")


@functools.partial(jax.jit, static_argnames=("r", "max_iters", "tol", "d_min", "use_eigh"))
def _embedding(affinity, x0, *, r, max_iters, tol, d_min, use_eigh):
    affinity = affinity.astype(jnp.float32)
    an, _ = _graph.normalized_adjacency(affinity, d_min)
    if use_eigh:
        return _spectral.top_eigh(an if not isinstance(an, jsparse.BCOO) else an.todense(), r)
    return _spectral.top_lobpcg(an, x0, max_iters=max_iters, tol=tol)


def spectral_embedding(
    affinity: jax.Array | jsparse.BCOO,
    n_components: int,
    *,
    x0: jax.Array | None = None,
    key: jax.Array | None = None,
    max_iters: int = 200,
    residual_tol: float = 1e-4,
    degree_floor: float = 1e-6,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Top ``n_components`` eigenpairs of :math:`D^{-1/2} W D^{-1/2}` (the Laplacian's bottom).

    Args:
      affinity: symmetric non-negative ``[m, m]`` dense array or BCOO matrix.
      n_components: ``r``; LOBPCG needs ``5 r < m``, smaller graphs use ``eigh``.
      x0: optional ``[m, r]`` warm start (e.g. a previous embedding).
      key: PRNG key of the random start when ``x0`` is None (default ``PRNGKey(0)``).
      max_iters: LOBPCG iteration cap.
      residual_tol: target residual :math:`\|A_n u - \lambda u\|`.
      degree_floor: lower bound on degrees.

    Returns:
      ``(eigvals float32[r] descending, U float32[m, r], iterations int32)``; the Laplacian's
      eigenvalues are ``1 - eigvals``.
    """
    affinity, m = _check_graph(affinity, "spectral_embedding")
    _pos_int(n_components, "n_components", "spectral_embedding", m - 1)
    _pos_int(max_iters, "max_iters", "spectral_embedding")
    use_eigh = 5 * n_components >= m
    if use_eigh and isinstance(affinity, jsparse.BCOO) and m > 4096:
        raise ValueError(
            f"spectral_embedding: n_components={n_components} needs 5*n_components < m={m} "
            "for LOBPCG on a sparse graph."
        )
    if x0 is None:
        key = jax.random.PRNGKey(0) if key is None else key
        x0 = jax.random.normal(key, (m, n_components), jnp.float32)
    elif tuple(x0.shape) != (m, n_components):
        raise ValueError(
            f"spectral_embedding: x0 must have shape {(m, n_components)}, got {x0.shape}."
        )
    return _embedding(
        affinity,
        jnp.asarray(x0, jnp.float32),
        r=int(n_components),
        max_iters=int(max_iters),
        tol=_spectral.lobpcg_tol(residual_tol, m),
        d_min=float(degree_floor),
        use_eigh=use_eigh,
    )


_SOLVERS = ("krylov", "lobpcg")
# Columns of a full Krylov space (Krylov-Schur restarts beyond). Its Rayleigh-Ritz ``eigh``
# stays below the size where LAPACK (OpenBLAS) threads it: a threaded [64, 64] eigh took
# ~8 ms per call on a busy 2-core CPU, a [48, 48] one 0.2 ms.
_KRYLOV_COLUMNS = 48


def _krylov_shape(m: int, r: int, oversample: int) -> tuple[int, int]:
    """``(b, max_blocks)`` of the Krylov space for an ``[m, m]`` graph; ``(0, 0)``: use eigh."""
    b = r + oversample
    q = min(max(2, _KRYLOV_COLUMNS // b), m // b)
    return (b, q) if q >= 2 else (0, 0)


@functools.partial(
    jax.jit,
    static_argnames=(
        "k",
        "r",
        "n_init",
        "max_iters",
        "kmeans_iters",
        "tol",
        "d_min",
        "solver",
        "power_iters",
        "oversample",
    ),
)
def _cluster(
    affinity,
    key,
    *,
    k,
    r,
    n_init,
    max_iters,
    kmeans_iters,
    tol,
    d_min,
    solver,
    power_iters,
    oversample,
):
    affinity = affinity.astype(jnp.float32)
    k_start, k_km = jax.random.split(key)
    m = affinity.shape[0]
    if solver == "eigh":
        an, _ = _graph.normalized_adjacency(affinity, d_min)
        dense = an.todense() if isinstance(an, jsparse.BCOO) else an
        _, u, _ = _spectral.top_eigh(dense, r)
    elif solver == "lobpcg":
        an, _ = _graph.normalized_adjacency(affinity, d_min)
        x0 = _spectral.randomized_subspace(an, k_start, m, r, power_iters=power_iters)
        _, u, _ = _spectral.top_lobpcg(an, x0, max_iters=max_iters, tol=tol)
    else:
        mv, _ = _spectral.normalized_matvec(affinity, d_min)
        b, q = _krylov_shape(m, r, oversample)
        k_x, k_p = jax.random.split(k_start)
        x0 = jax.random.normal(k_x, (m, b), jnp.float32)
        _, u, _ = _spectral.top_block_krylov(
            mv, x0, r, k_p, max_blocks=q, max_products=max_iters, tol=tol, converge=min(r, k)
        )
    y = _spectral.row_normalize(u)
    return _kmeans.kmeans(k_km, y, k, n_init=n_init, max_iters=kmeans_iters, tol=1e-4).labels


def spectral_clustering(
    affinity: jax.Array | jsparse.BCOO,
    n_clusters: int,
    *,
    n_components: int | None = None,
    key: jax.Array | None = None,
    n_init: int = 4,
    max_iters: int = 100,
    kmeans_iters: int = 100,
    residual_tol: float = 1e-2,
    degree_floor: float = 1e-6,
    power_iters: int = 2,
    solver: str = "krylov",
    oversample: int = 4,
) -> jax.Array:
    r"""Spectral clustering of a fixed graph; ``int32[m]`` labels in ``[0, n_clusters)``.

    The functional twin of ``sklearn.cluster.SpectralClustering(n_clusters,
    affinity="precomputed")``: the top ``n_components`` eigenvectors of
    :math:`D^{-1/2} W D^{-1/2}`, row-normalised, then best-of-``n_init`` k-means. The
    eigenvectors come from a block Krylov space (``solver="krylov"``, the default: block
    size ``n_components + oversample``, grown one product with the graph at a time until the
    top ``min(n_components, n_clusters)`` Ritz pairs have residual ``<= residual_tol`` (any
    further components are the next Ritz vectors, not converged: they lie in the spectrum's
    bulk, where convergence is slow and there is no cluster structure); see
    :func:`rgft_jax.dsca._spectral.top_block_krylov`), or from LOBPCG after a short
    randomized subspace iteration (``solver="lobpcg"``, the solver before 2026-11-30); tiny
    graphs (``5 n_components >= m``, or too small for a Krylov space of 2 blocks) use
    ``eigh``. Jitted; one compilation per (shape, static arguments).

    Args:
      affinity: symmetric non-negative ``[m, m]`` dense array or ``BCOO`` matrix.
      n_clusters: number of clusters ``k`` (``<= m``).
      n_components: embedding dimension ``r`` (``< m``); ``None`` (the default) means
        ``n_clusters``, as scikit-learn's default. (Until 2026-11-30 the default was 16;
        eigenvectors past the ``k``-th lie in the bulk of the spectrum, converge slowly and
        carry no cluster structure.)
      key: PRNG key (default ``PRNGKey(0)``).
      n_init: k-means restarts.
      max_iters: eigensolver cap: LOBPCG iterations, or products with the graph (Krylov
        blocks).
      kmeans_iters: Lloyd iteration cap.
      residual_tol: target eigen-residual :math:`\|A_n u - \theta u\|`; clustering needs
        only coarse eigenvectors (row-normalised k-means is insensitive to ``O(1e-2)``
        errors), so the default is loose.
      degree_floor: lower bound on degrees (isolated nodes).
      power_iters: subspace-iteration steps before LOBPCG (``solver="lobpcg"`` only).
      solver: ``"krylov"`` or ``"lobpcg"``.
      oversample: extra Krylov block columns beyond ``n_components`` (``solver="krylov"``).

    Returns:
      ``int32[m]`` cluster labels.

    Raises:
      ValueError: on a non-square / non-float affinity, out-of-range integers or an unknown
        solver.

    Examples:
      >>> import jax.numpy as jnp
      >>> a = jnp.kron(jnp.eye(2), jnp.ones((20, 20))) + 0.01
      >>> labels = spectral_clustering(a, 2)
      >>> bool((labels[:20] == labels[0]).all() and (labels[20:] != labels[0]).all())
      True
    """
    affinity, m = _check_graph(affinity, "spectral_clustering")
    _pos_int(n_clusters, "n_clusters", "spectral_clustering", m)
    if n_components is None:
        n_components = min(int(n_clusters), m - 1)
    _pos_int(n_components, "n_components", "spectral_clustering", m - 1)
    for name, v in (("n_init", n_init), ("max_iters", max_iters), ("kmeans_iters", kmeans_iters)):
        _pos_int(v, name, "spectral_clustering")
    if not isinstance(power_iters, (int, np.integer)) or power_iters < 0:
        raise ValueError(f"spectral_clustering: power_iters={power_iters!r}; allowed: int >= 0.")
    if not isinstance(oversample, (int, np.integer)) or oversample < 0:
        raise ValueError(f"spectral_clustering: oversample={oversample!r}; allowed: int >= 0.")
    if solver not in _SOLVERS:
        raise ValueError(f"spectral_clustering: solver={solver!r}; allowed: {_SOLVERS}.")
    if 5 * n_components >= m or (
        solver == "krylov" and _krylov_shape(m, n_components, oversample)[1] == 0
    ):
        solver = "eigh"
    if solver == "krylov":
        tol = float(residual_tol)
    else:
        tol = _spectral.lobpcg_tol(residual_tol, m)
    key = jax.random.PRNGKey(0) if key is None else key
    return _cluster(
        affinity,
        key,
        k=int(n_clusters),
        r=int(n_components),
        n_init=int(n_init),
        max_iters=int(max_iters),
        kmeans_iters=int(kmeans_iters),
        tol=tol,
        d_min=float(degree_floor),
        solver=solver,
        power_iters=int(power_iters),
        oversample=int(oversample),
    )
