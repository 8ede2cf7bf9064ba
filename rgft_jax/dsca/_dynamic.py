# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""The Dynamic Spectral Clustering Algorithm (DSCA) as one jittable update.

Per update (MFTC, Algorithm 1), for ``m`` blocks with sketches :math:`X \in R^{m\times s}`:

1. :math:`S = \mathrm{sim}(X)` (cosine or Gaussian), :math:`W \leftarrow \alpha W + (1-\alpha)S`
   (:math:`W = S` at the first update), sparsify (kNN / top-p) and symmetrise;
2. :math:`A_n = D^{-1/2} W D^{-1/2}` with degrees floored at :math:`d_\min`; its top ``r``
   eigenvectors (the Laplacian's smallest) by LOBPCG warm-started from the previous ``U``,
   or recomputed from scratch every ``recompute_every`` updates; Procrustes-aligned to the
   previous ``U`` and row-normalised;
3. k-means (warm start from the previous centroids vs k-means++ restarts, best inertia),
   merge clusters below ``min_module_size``, bisect those above ``max_module_size``, and keep
   module ids stable by matching to the previous labels;
4. the :class:`~rgft_jax.dsca.ModuleLibrary` with sizes, energies, ARI/NMI vs the previous
   labels, :math:`\kappa(r)` and the subspace drift.

Every per-update value lives in :class:`DSCAState` (arrays only, orbax-checkpointable) and all
shapes are static, so repeated updates never recompile.

References:
  MFTC: *Modular fine-tuning of clustering: directional updating of weight parameters for
  PLMs* (under review), Algorithm 1 and appendices B, D, E.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rgft_jax._src import presets
from rgft_jax._src.components import Partition, Rule
from rgft_jax.dsca import _graph, _kmeans, _metrics, _spectral, _subspace
from rgft_jax.dsca._modules import ModuleLibrary, build_library
from rgft_jax.dsca._sketch import sketch

__all__ = ["DSCAConfig", "DSCAState", "dsca_init", "dsca_rules", "dsca_step", "dsca_update"]

PyTree = Any
_GRAPHS = ("auto", "dense", "sparse")
_SPARSIFY = ("knn", "top_p")
_ALIGN = ("role", "leaf")
DENSE_MAX_BLOCKS = 8192


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class DSCAConfig:
    r"""Static configuration of DSCA (validated at construction).

    Attributes:
      num_blocks: ``m``, the number of blocks (= ``partition.num_components``).
      num_modules: ``k``, module slots (MFTC: 8–12 works best).
      embed_dim: ``r``, spectral embedding dimension (MFTC default 16), ``1 <= r < m``.
      sketch_dim: ``s``, count-sketch dimension.
      knn: neighbours per block for ``sparsify="knn"``; ``None``: ``max(4, ceil(log2 m))``.
      sparsify: ``"knn"`` or ``"top_p"``; on sparse graphs ``"top_p"`` keeps, per node, the
        largest of its ``knn`` candidates' weights up to ``top_p`` of their mass.
      top_p: row-mass fraction kept by ``"top_p"``, in ``(0, 1]``.
      alpha: forgetting factor of :math:`W \leftarrow \alpha W + (1-\alpha) S`, in ``[0, 1)``
        (MFTC: 0.9–0.95 in general, higher for noisy gradients).
      kernel: ``"cosine"`` (clipped at 0) or ``"gaussian"``.
      bandwidth: Gaussian :math:`\delta`; ``None``: median pairwise sketch distance.
      degree_floor: :math:`d_\min`, lower bound on node degrees.
      graph: ``"dense"`` ``[m, m]``, ``"sparse"`` (kNN lists + BCOO, ``nnz = 2 m knn``), or
        ``"auto"`` (dense up to 8192 blocks).
      recompute_every: ``R``; updates ``0, R, 2R, ...`` recompute the embedding from scratch.
      lobpcg_iters: LOBPCG iteration cap of warm-started updates.
      recompute_iters: LOBPCG iteration cap of full recomputes.
      residual_tol: target eigen-residual :math:`\|A_n u - \lambda u\|` of LOBPCG.
      eigh_max_blocks: full recomputes of dense graphs up to this ``m`` use ``eigh``.
      kmeans_iters: Lloyd iteration cap.
      kmeans_tol: Lloyd relative tolerance (scikit-learn's convention).
      kmeans_restarts: k-means++ restarts per update.
      warm_slack: the warm-started k-means wins unless a restart's inertia is lower by more
        than this fraction (favours stable modules).
      min_module_size: clusters with fewer blocks are merged into the nearest one;
        ``"auto"`` (default): a quarter of the mean module size, ``max(1, m // (4 k))``.
      max_module_size: clusters with more blocks are bisected (``None``: no limit);
        ``"auto"`` (default): three times the mean module size, ``ceil(3 m / k)`` (no limit
        when that is ``>= m``).
      sketch_seed: hash seed of :func:`~rgft_jax.dsca.sketch`.
      sketch_align: ``"role"`` or ``"leaf"`` (see :func:`~rgft_jax.dsca.sketch`).
      seed: PRNG seed (k-means++, random starts, kNN candidates).
      kappa_rank: ``r`` of :math:`\kappa(r)` and of the gradient subspace
        :math:`\Pi_r` (``None``: ``embed_dim``).
      subspace_window: the last ``W`` probe gradients that estimate the gradient
        covariance over steps :math:`\Sigma` (``> kappa_rank``).
      subspace_dim: coordinates ``p`` each gradient is sketched to for :math:`\Sigma`.
      kappa_min: advice threshold for :math:`\kappa(r)` (MFTC: 0.95).
      stability_min: advice threshold for ARI / NMI.
      drift_max: advice threshold for the drift divided by :math:`\sqrt{2r}`.
    """

    num_blocks: int
    num_modules: int = 12
    embed_dim: int = 16
    sketch_dim: int = 64
    knn: int | None = None
    sparsify: Literal["knn", "top_p"] = "knn"
    top_p: float = 0.9
    alpha: float = 0.9
    kernel: Literal["cosine", "gaussian"] = "cosine"
    bandwidth: float | None = None
    degree_floor: float = 1e-3
    graph: Literal["auto", "dense", "sparse"] = "auto"
    recompute_every: int = 50
    lobpcg_iters: int = 30
    recompute_iters: int = 200
    residual_tol: float = 1e-3
    eigh_max_blocks: int = 1024
    kmeans_iters: int = 100
    kmeans_tol: float = 1e-4
    kmeans_restarts: int = 2
    warm_slack: float = 0.02
    min_module_size: int | Literal["auto"] = "auto"
    max_module_size: int | None | Literal["auto"] = "auto"
    sketch_seed: int = 0
    sketch_align: Literal["role", "leaf"] = "role"
    seed: int = 0
    kappa_rank: int | None = None
    subspace_window: int = 32
    subspace_dim: int = 512
    kappa_min: float = 0.95
    stability_min: float = 0.8
    drift_max: float = 0.25

    def __post_init__(self):
        def bad(name, allowed):
            v = getattr(self, name)
            raise ValueError(f"DSCAConfig: {name}={v!r}; allowed: {allowed}.")

        m = self.num_blocks
        if not _is_int(m) or m < 2:
            bad("num_blocks", "an int >= 2")
        for name in (
            "num_modules",
            "embed_dim",
            "sketch_dim",
            "recompute_every",
            "lobpcg_iters",
            "recompute_iters",
            "kmeans_iters",
            "kmeans_restarts",
            "eigh_max_blocks",
            "subspace_window",
            "subspace_dim",
        ):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                bad(name, "an int >= 1")
        if self.num_modules > m:
            bad("num_modules", f"an int in [1, num_blocks={m}]")
        if self.embed_dim >= m:
            bad("embed_dim", f"an int in [1, num_blocks={m})")
        if self.knn is not None and (not _is_int(self.knn) or not 1 <= self.knn < m):
            bad("knn", f"None or an int in [1, num_blocks={m})")
        if self.sparsify not in _SPARSIFY:
            bad("sparsify", _SPARSIFY)
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            bad("top_p", "a float in (0, 1]")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha < 1.0):
            bad("alpha", "a float in [0, 1)")
        if self.kernel not in _graph.KERNELS:
            bad("kernel", _graph.KERNELS)
        if self.bandwidth is not None and not (
            isinstance(self.bandwidth, (int, float)) and self.bandwidth > 0
        ):
            bad("bandwidth", "None or a float > 0")
        if not (isinstance(self.degree_floor, (int, float)) and self.degree_floor > 0):
            bad("degree_floor", "a float > 0")
        if self.graph not in _GRAPHS:
            bad("graph", _GRAPHS)
        if self.sketch_align not in _ALIGN:
            bad("sketch_align", _ALIGN)
        if not (isinstance(self.residual_tol, (int, float)) and self.residual_tol > 0):
            bad("residual_tol", "a float > 0")
        for name in ("kmeans_tol", "warm_slack"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):
                bad(name, "a float >= 0")
        k = max(1, self.num_modules) if _is_int(self.num_modules) else 1
        if self.min_module_size == "auto":
            object.__setattr__(self, "min_module_size", max(1, m // (4 * k)))
        if self.max_module_size == "auto":
            cap = -(-3 * m // k)
            object.__setattr__(self, "max_module_size",
                               None if cap >= m else max(cap, self.min_module_size))
        if not _is_int(self.min_module_size) or self.min_module_size < 1:
            bad("min_module_size", "'auto' or an int >= 1")
        if self.max_module_size is not None and (
            not _is_int(self.max_module_size) or self.max_module_size < self.min_module_size
        ):
            bad("max_module_size",
                f"'auto', None or an int >= min_module_size={self.min_module_size}")
        if self.kappa_rank is not None and (not _is_int(self.kappa_rank) or self.kappa_rank < 1):
            bad("kappa_rank", "None or an int >= 1")
        if _is_int(self.subspace_window) and self.rank >= self.subspace_window:
            bad("subspace_window", f"an int > kappa_rank (r = {self.rank})")
        for name in ("sketch_seed", "seed"):
            if not _is_int(getattr(self, name)):
                bad(name, "an int")
        for name in ("kappa_min", "stability_min", "drift_max"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)):
                bad(name, "a float")
        if self.graph_kind == "sparse":
            if 5 * self.embed_dim >= m:
                bad("embed_dim", f"an int < num_blocks/5 = {m / 5:g} for graph='sparse' (LOBPCG)")

    # ------------------------------------------------------------------ derived
    @property
    def graph_kind(self) -> str:
        """``"dense"`` or ``"sparse"`` (``"auto"`` resolved)."""
        if self.graph == "auto":
            return "dense" if self.num_blocks <= DENSE_MAX_BLOCKS else "sparse"
        return self.graph

    @property
    def rank(self) -> int:
        r"""``r`` of :math:`\kappa(r)` and :math:`\Pi_r` (``kappa_rank`` or ``embed_dim``)."""
        return self.kappa_rank if self.kappa_rank is not None else self.embed_dim

    @property
    def num_neighbors(self) -> int:
        """The resolved ``knn``."""
        return self.knn if self.knn is not None else _graph.default_knn(self.num_blocks)

    @property
    def eigh_only(self) -> bool:
        """Dense graphs too small for LOBPCG (``5 r >= m``) always use ``eigh``."""
        return self.graph_kind == "dense" and 5 * self.embed_dim >= self.num_blocks

    @classmethod
    def for_partition(cls, partition: Partition, **kwargs) -> DSCAConfig:
        """A config with ``num_blocks = partition.num_components``."""
        if not isinstance(partition, Partition):
            raise TypeError(
                f"DSCAConfig.for_partition: expected a Partition, got {type(partition).__name__}."
            )
        return cls(num_blocks=partition.num_components, **kwargs)


class DSCAState(NamedTuple):
    """State of DSCA between updates (arrays only: checkpoint it with orbax as is)."""

    count: jax.Array  # int32 []: updates done
    key: jax.Array  # uint32 [2]: raw PRNG key
    sketch_seed: jax.Array  # uint32 []: hash seed of the sketches
    graph_w: jax.Array  # float32 [m, m] (dense) or [m, knn] (sparse): W(t)
    graph_idx: jax.Array  # int32 [m, knn] (sparse) or [1, 1] (dense, unused)
    embedding: jax.Array  # float32 [m, r]: U, orthonormal columns
    eigvals: jax.Array  # float32 [r]: top eigenvalues of D^-1/2 W D^-1/2
    labels: jax.Array  # int32 [m]: module of every block
    centroids: jax.Array  # float32 [k, r]: k-means centroids (row-normalised embedding)
    grad_window: jax.Array  # float32 [W, p]: the last W probe gradients, sketched (Sigma)
    grad_basis: jax.Array  # float32 [p, r]: Pi_r of the last update (zeros before the first)


def _check_config(config) -> DSCAConfig:
    if not isinstance(config, DSCAConfig):
        raise TypeError(f"config must be a DSCAConfig, got {type(config).__name__}.")
    return config


def dsca_init(partition_or_m: Partition | int, *, config: DSCAConfig) -> DSCAState:
    """Initial :class:`DSCAState` (before the first update).

    Args:
      partition_or_m: the block partition, or the number of blocks ``m``.
      config: the configuration; ``config.num_blocks`` must equal ``m``.

    Raises:
      ValueError: when ``m`` and ``config.num_blocks`` differ.
    """
    cfg = _check_config(config)
    m = partition_or_m.num_components if isinstance(partition_or_m, Partition) else partition_or_m
    if not _is_int(m) or m != cfg.num_blocks:
        raise ValueError(
            f"dsca_init: partition_or_m gives m={m!r} blocks but config.num_blocks="
            f"{cfg.num_blocks}; build the config with DSCAConfig.for_partition(partition)."
        )
    k, r = cfg.num_modules, cfg.embed_dim
    key = jax.random.PRNGKey(cfg.seed)
    if cfg.graph_kind == "dense":
        graph_w = jnp.zeros((m, m), jnp.float32)
        graph_idx = jnp.zeros((1, 1), jnp.int32)
    else:
        kn = cfg.num_neighbors
        graph_w = jnp.zeros((m, kn), jnp.float32)
        ar = jnp.arange(m, dtype=jnp.int32)[:, None]
        graph_idx = (ar + 1 + jnp.arange(kn, dtype=jnp.int32)[None, :]) % m
    return DSCAState(
        count=jnp.zeros((), jnp.int32),
        key=key,
        sketch_seed=jnp.asarray(np.uint32(cfg.sketch_seed & 0xFFFFFFFF)),
        graph_w=graph_w,
        graph_idx=graph_idx,
        embedding=jnp.zeros((m, r), jnp.float32),
        eigvals=jnp.zeros((r,), jnp.float32),
        labels=jnp.zeros((m,), jnp.int32),
        centroids=jnp.zeros((k, r), jnp.float32),
        grad_window=jnp.zeros((cfg.subspace_window, cfg.subspace_dim), jnp.float32),
        grad_basis=jnp.zeros((cfg.subspace_dim, cfg.rank), jnp.float32),
    )


def _update_graph(cfg: DSCAConfig, state: DSCAState, x, alpha, recompute, key):
    """Returns ``(graph for the eigensolver, new graph_w, new graph_idx)``."""
    k_bw, k_cand = jax.random.split(key)
    if cfg.kernel == "gaussian":
        bw = (
            jnp.asarray(cfg.bandwidth, jnp.float32)
            if cfg.bandwidth is not None
            else _graph.median_bandwidth(x, k_bw)
        )
    else:
        bw = None
    if cfg.graph_kind == "dense":
        s = _graph.dense_similarity(x, kernel=cfg.kernel, bandwidth=bw)
        w = alpha * state.graph_w + (1.0 - alpha) * s
        if cfg.sparsify == "knn":
            w = _graph.sparsify_knn(w, cfg.num_neighbors)
        else:
            w = _graph.sparsify_top_p(w, cfg.top_p)
        w = _graph.symmetrize(w)
        return w, w, state.graph_idx
    kn = cfg.num_neighbors

    def exact(_):
        cand = _graph.knn_candidates_exact(x, kn, kernel=cfg.kernel, bandwidth=bw)
        return _graph.knn_select(
            x, state.graph_idx, state.graph_w, cand, alpha=alpha, kernel=cfg.kernel, bandwidth=bw
        )

    def local(_):
        cand = _graph.knn_candidates_local(state.graph_idx, k_cand, num_random=kn)
        return _graph.knn_select(
            x, state.graph_idx, state.graph_w, cand, alpha=alpha, kernel=cfg.kernel, bandwidth=bw
        )

    idx, w = jax.lax.cond(recompute, exact, local, None)
    if cfg.sparsify == "top_p":
        # Per node, the largest of its kNN candidates' weights up to top_p of their mass
        # (the lists are kept; dropped entries get weight 0 and fade from the smoothing).
        w = _graph.sparsify_top_p(w, cfg.top_p)
    return _graph.knn_to_bcoo(idx, w), w, idx


def _embed(cfg: DSCAConfig, an, u_prev, recompute, key):
    m, r = cfg.num_blocks, cfg.embed_dim
    tol = _spectral.lobpcg_tol(cfg.residual_tol, m)
    dense = cfg.graph_kind == "dense"
    if cfg.eigh_only:
        return _spectral.top_eigh(an, r)

    def full(_):
        if dense and m <= cfg.eigh_max_blocks:
            return _spectral.top_eigh(an, r)
        x0 = _spectral.randomized_subspace(an, key, m, r)
        return _spectral.top_lobpcg(an, x0, max_iters=cfg.recompute_iters, tol=tol)

    def warm(_):
        return _spectral.top_lobpcg(an, u_prev, max_iters=cfg.lobpcg_iters, tol=tol)

    return jax.lax.cond(recompute, full, warm, None)


def dsca_update(
    state: DSCAState,
    sketches: jax.Array,
    sq_norms: jax.Array | None = None,
    *,
    config: DSCAConfig,
    block_sizes: jax.Array | np.ndarray | None = None,
    update_sketches: jax.Array | None = None,
) -> tuple[DSCAState, ModuleLibrary]:
    r"""One DSCA update from block sketches (jittable; ``config`` is static).

    Args:
      state: the previous :class:`DSCAState`.
      sketches: ``float[m, s]`` block gradient sketches (see :func:`~rgft_jax.dsca.sketch`).
      sq_norms: optional ``float[m]`` squared gradient norms per block (module energy);
        ``None`` uses the squared sketch norms, unbiased estimates of them.
      config: the :class:`DSCAConfig` (static under ``jit``).
      block_sizes: optional ``[m]`` parameter entries per block (``partition.sizes``);
        ``None`` counts every block as one entry.
      update_sketches: optional ``float[m, s]`` sketches (same seed) of the parameter update
        :math:`\Delta\theta` of this step, for the update-approximation error
        :math:`\|\Delta\theta - \Pi_r \Delta\theta\| / \|\Delta\theta\|` (NaN without).

    Returns:
      ``(new_state, library)``.

    Raises:
      ValueError: when ``sketches`` / ``sq_norms`` / ``block_sizes`` have the wrong shape.
    """
    cfg = _check_config(config)
    m, k, s = cfg.num_blocks, cfg.num_modules, cfg.sketch_dim
    if tuple(sketches.shape) != (m, s):
        raise ValueError(
            f"dsca_update: sketches must have shape (num_blocks, sketch_dim) = {(m, s)}, got "
            f"{tuple(sketches.shape)}."
        )
    if sq_norms is not None and tuple(sq_norms.shape) != (m,):
        raise ValueError(f"dsca_update: sq_norms must have shape ({m},), got {sq_norms.shape}.")
    if update_sketches is not None and tuple(update_sketches.shape) != (m, s):
        raise ValueError(f"dsca_update: update_sketches must have shape {(m, s)}, got "
                         f"{tuple(update_sketches.shape)}.")
    if block_sizes is not None and tuple(np.shape(block_sizes)) != (m,):
        raise ValueError(
            f"dsca_update: block_sizes must have shape ({m},), got {np.shape(block_sizes)}."
        )
    x = jnp.asarray(sketches).astype(jnp.float32)
    first = state.count == 0
    recompute = (state.count % cfg.recompute_every) == 0
    alpha = jnp.where(first, 0.0, jnp.float32(cfg.alpha))
    key, k_graph, k_eig, k_km, k_lap = jax.random.split(state.key, 5)

    # 1. graph
    graph, graph_w, graph_idx = _update_graph(cfg, state, x, alpha, recompute, k_graph)
    an, deg = _graph.normalized_adjacency(graph, cfg.degree_floor)
    prev_graph = (state.graph_w if cfg.graph_kind == "dense"
                  else _graph.knn_to_bcoo(state.graph_idx, state.graph_w))
    an_prev, _ = _graph.normalized_adjacency(prev_graph, cfg.degree_floor)
    # Equation 4: ||L_sym(t) - L_sym(t-1)||_2 = ||A_n(t) - A_n(t-1)||_2.
    lap_change = jnp.where(first, jnp.nan, _subspace.norm_of_difference(an, an_prev, k_lap, m))

    # 2. embedding
    theta, u, iters = _embed(cfg, an, state.embedding, recompute, k_eig)
    u = jnp.where(first, u, _spectral.procrustes_align(u, state.embedding))
    drift = jnp.where(first, jnp.nan, _spectral.subspace_drift(u, state.embedding))
    y = _spectral.row_normalize(u)

    # 3. clustering
    restarts = _kmeans.kmeans(
        k_km, y, k, n_init=cfg.kmeans_restarts, max_iters=cfg.kmeans_iters, tol=cfg.kmeans_tol
    )
    warm = _kmeans.lloyd(y, state.centroids, max_iters=cfg.kmeans_iters, tol=cfg.kmeans_tol)
    use_warm = (~first) & (warm.inertia <= (1.0 + cfg.warm_slack) * restarts.inertia)
    res = jax.tree_util.tree_map(lambda a, b: jnp.where(use_warm, a, b), warm, restarts)
    labels, cents = res.labels, res.centroids
    sizes_w = None
    if cfg.min_module_size > 1:
        labels, cents = _kmeans.merge_small(y, labels, cents, cfg.min_module_size, sizes_w)
    if cfg.max_module_size is not None:
        labels, cents = _kmeans.split_large(y, labels, cents, cfg.max_module_size, sizes_w)
    matched = _kmeans.match_labels(state.labels, labels, cents)
    labels, cents = jax.tree_util.tree_map(
        lambda a, b: jnp.where(first, a, b), (labels, cents), matched
    )
    inertia = jnp.sum(jnp.sum((y - cents[labels]) ** 2, axis=1))
    # Equation 5 and the per-module stability (labels are matched to the previous ones).
    y_prev = _spectral.row_normalize(state.embedding)
    row_move = jnp.where(first, jnp.nan, _subspace.row_movement(y, y_prev))
    cent_move = jnp.where(first, jnp.nan, _subspace.centroid_movement(cents, state.centroids))
    stability = jnp.where(first, jnp.nan, _subspace.module_stability(state.labels, labels, k))

    # 4. diagnostics
    ari = _metrics.adjusted_rand_index(state.labels, labels, num_true=k, num_pred=k)
    nmi = _metrics.normalized_mutual_info(state.labels, labels, num_true=k, num_pred=k)
    ari = jnp.where(first, jnp.nan, ari)
    nmi = jnp.where(first, jnp.nan, nmi)
    # The gradient covariance over steps (a window of sketched probe gradients).
    rg = cfg.rank
    g = _subspace.flatten(x, state.sketch_seed, cfg.subspace_dim)
    had_basis = jnp.any(state.grad_basis != 0)
    grad_residual = jnp.where(had_basis, _subspace.residual(g, state.grad_basis), jnp.nan)
    if update_sketches is None:
        update_residual = jnp.asarray(jnp.nan, jnp.float32)
    else:
        dv = _subspace.flatten(update_sketches, state.sketch_seed, cfg.subspace_dim)
        update_residual = jnp.where(had_basis, _subspace.residual(dv, state.grad_basis), jnp.nan)
    window = _subspace.push(state.grad_window, state.count, g)
    filled = jnp.sum(jnp.any(window != 0, axis=1))  # gradients held (a kept window counts)
    ev, evec = _subspace.spectrum(window)
    kappa = _subspace.kappa(ev, rg, filled)
    grad_basis = _subspace.basis(window, ev, evec, rg)
    # Defined once the previous window held more than r gradients (Pi_r then spans r of
    # the window's directions, not all of them).
    prev_filled = jnp.sum(jnp.any(state.grad_window != 0, axis=1))
    grad_drift = jnp.where(prev_filled > rg, _subspace.sin_theta(grad_basis, state.grad_basis),
                           jnp.nan)
    if block_sizes is None:
        block_sizes = jnp.ones((m,), jnp.float32)
    energy = jnp.sum(x * x, axis=1) if sq_norms is None else sq_norms
    library = build_library(
        labels,
        k,
        block_sizes=jnp.asarray(block_sizes, jnp.float32),
        block_energy=energy,
        ari=ari,
        nmi=nmi,
        kappa=kappa,
        eigvals=theta,
        drift=drift,
        lobpcg_iters=iters,
        recomputed=recompute,
        inertia=inertia,
        step=state.count,
        grad_drift=grad_drift,
        grad_residual=grad_residual,
        update_residual=update_residual,
        module_stability=stability,
        laplacian_change=lap_change,
        degree_min=jnp.min(deg),
        row_drift=row_move,
        centroid_drift=cent_move,
    )
    new_state = DSCAState(
        count=state.count + 1,
        key=key,
        sketch_seed=state.sketch_seed,
        graph_w=graph_w,
        graph_idx=graph_idx,
        embedding=u,
        eigvals=theta,
        labels=labels,
        centroids=cents,
        grad_window=window,
        grad_basis=grad_basis,
    )
    return new_state, library


def dsca_step(
    state: DSCAState, partition: Partition, grads: PyTree, config: DSCAConfig,
    updates: PyTree | None = None,
) -> tuple[DSCAState, ModuleLibrary]:
    """Sketch ``grads`` and run :func:`dsca_update` (one jittable call for probe steps).

    Use as ``jax.jit(dsca_step, static_argnames=("partition", "config"))`` or inside a jitted
    train step (``partition`` and ``config`` are hashable static Python values).

    Args:
      state: the previous :class:`DSCAState`.
      partition: the block partition (``config.num_blocks == partition.num_components``).
      grads: the full gradient tree (a probe step's gradient).
      config: the :class:`DSCAConfig`.
      updates: optional parameter updates of the step (same structure), for the
        update-approximation error.

    Returns:
      ``(new_state, library)``; the library's energies are exact squared block norms.
    """
    cfg = _check_config(config)
    if partition.num_components != cfg.num_blocks:
        raise ValueError(
            f"dsca_step: partition has {partition.num_components} components but "
            f"config.num_blocks={cfg.num_blocks}."
        )
    x = sketch(partition, grads, dim=cfg.sketch_dim, seed=state.sketch_seed, align=cfg.sketch_align)
    dx = None if updates is None else sketch(partition, updates, dim=cfg.sketch_dim,
                                             seed=state.sketch_seed, align=cfg.sketch_align)
    return dsca_update(
        state,
        x,
        partition.sq_norms(grads),
        config=cfg,
        block_sizes=partition.sizes.astype(np.float32),
        update_sketches=dx,
    )


def dsca_rules(
    num_heads: int = 12,
    *,
    block_width: int = 32,
    attention: Literal["head", "block"] = "head",
    **preset_kwargs,
) -> tuple[Rule, ...]:
    """Partition rules for DSCA blocks of a transformer (MFTC appendix D.1).

    Attention matrices are split by head (``attention="head"``) or into blocks of
    ``block_width`` columns *inside each head* (``"block"``: the head and head-dim axes of
    the ``[D, H, Dh]`` query/key/value kernels, ``[H, Dh]`` biases, ``[H, Dh, D]`` output
    kernels and GPT-2's fused ``[D, 3, H, Dh]`` kernel are read as one ``H * Dh`` axis, cut
    every ``block_width`` entries; ``block_width`` must divide ``Dh`` or be a multiple of
    it, so no block spans two heads); MLP matrices into ``block_width``-neuron blocks
    (``d_b`` in {16, 32} in MFTC); norms and embeddings follow the
    :func:`~rgft_jax.components.transformer` preset (``preset_kwargs``).

    Raises:
      ValueError: on a bad ``num_heads`` / ``block_width`` / ``attention`` (and, at
        ``Partition.build``, on widths that do not divide a leaf or would span two heads).
    """
    if not _is_int(block_width) or block_width < 1:
        raise ValueError(f"dsca_rules: block_width must be an int >= 1, got {block_width!r}.")
    if not _is_int(num_heads) or num_heads < 1:
        raise ValueError(f"dsca_rules: num_heads must be an int >= 1, got {num_heads!r}.")
    if attention not in ("head", "block"):
        raise ValueError(f"dsca_rules: attention={attention!r}; allowed: ('head', 'block').")
    rules = presets.transformer(num_heads, neuron_width=block_width, **preset_kwargs)
    if attention == "head":
        return rules
    # One kind per matrix: block j of W_q and of W_o are unrelated. The head axis and the
    # head-dim axis are merged (row-major: head-major), so a block never leaves its head;
    # flat [D, H * Dh] / [H * Dh, D] kernels are cut along their head-major axis.
    bw = block_width
    blocks = [
        Rule(r"attn/c_attn/kernel$", kind="qkv_block", axis=(2, 3), width=bw, ndim=4),
        Rule(r"attn/c_attn/bias$", kind="qkv_block", axis=(1, 2), width=bw, ndim=3),
    ]
    for name, pat in (("q", presets._Q), ("k", presets._K), ("v", presets._V)):
        kind = f"{name}_block"
        blocks += [Rule(pat + r"/kernel$", kind=kind, axis=(1, 2), width=bw, ndim=3),
                   Rule(pat + r"/kernel$", kind=kind, axis=1, width=bw, ndim=2),
                   Rule(pat + r"/bias$", kind=kind, axis=(0, 1), width=bw, ndim=2),
                   Rule(pat + r"/bias$", kind=kind, axis=0, width=bw, ndim=1)]
    blocks += [Rule(presets._O + r"/kernel$", kind="o_block", axis=(0, 1), width=bw, ndim=3),
               Rule(presets._O + r"/kernel$", kind="o_block", axis=0, width=bw, ndim=2)]
    blocks = tuple(blocks)
    # Keep embedding / norm rules first, then the block rules, then the rest of the preset.
    return rules[:2] + blocks + rules[2:]
