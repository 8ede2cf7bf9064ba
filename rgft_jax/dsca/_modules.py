# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The module library: clusters of blocks as trainable modules, with their diagnostics.

A *module* is a set of components (DSCA blocks). :func:`module_mask` turns a choice of
modules into one boolean ``[C]`` vector, usable with ``Partition.broadcast`` /
``Partition.where`` or as a residual mask ("train only modules 0 and 2").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rgft_jax._src.components import Partition

__all__ = ["ModuleLibrary", "describe_modules", "diagnose", "module_mask"]


class ModuleLibrary(NamedTuple):
    """The modules found by one DSCA update and their diagnostics (all arrays, jittable).

    ``k`` is the static number of module slots; slots left empty by merging have
    ``valid = False`` and size 0.
    """

    labels: jax.Array  # int32 [m]: module of every block (component)
    members: jax.Array  # bool [k, m]: members[j, i] = labels[i] == j
    valid: jax.Array  # bool [k]: the module has at least one block
    num_blocks: jax.Array  # int32 [k]: blocks per module
    num_params: jax.Array  # float32 [k]: parameter entries per module (float: > 2**31 ok)
    energy: jax.Array  # float32 [k]: sum over members of ||g_i||^2
    energy_share: jax.Array  # float32 [k]: energy / total energy
    mean_energy: jax.Array  # float32 [k]: energy per parameter entry (0 for empty modules)
    ari: jax.Array  # float32 []: adjusted Rand index vs the previous labels (NaN at step 0)
    nmi: jax.Array  # float32 []: normalised mutual information vs the previous labels
    # kappa(r): top-r energy share of the gradient covariance over the last W probe steps
    # (NaN until the window holds more than r gradients).
    kappa: jax.Array  # float32 []
    eigvals: jax.Array  # float32 [r]: top eigenvalues of D^-1/2 W D^-1/2 (1 - Laplacian's)
    drift: jax.Array  # float32 []: ||P(t) - P(t-1)||_F of the spectral embedding (NaN at 0)
    lobpcg_iters: jax.Array  # int32 []: LOBPCG iterations of this update (0 for eigh)
    recomputed: jax.Array  # bool []: this update recomputed the embedding from scratch
    inertia: jax.Array  # float32 []: k-means inertia on the row-normalised embedding
    step: jax.Array  # int32 []: index of this update (0 for the first)
    # ||sin Theta(Pi_r(t), Pi_r(t-1))||_2 of the gradient subspace (NaN until both full rank).
    grad_drift: jax.Array = jnp.nan  # float32 []
    # ||g - Pi_r g|| / ||g|| of this gradient against the previous Pi_r (out of sample).
    grad_residual: jax.Array = jnp.nan  # float32 []
    # ||dtheta - Pi_r dtheta|| / ||dtheta|| of this step's update (NaN when not given).
    update_residual: jax.Array = jnp.nan  # float32 []
    # Jaccard overlap of each module's blocks with its blocks at the previous update.
    module_stability: jax.Array = jnp.nan  # float32 [k]
    laplacian_change: jax.Array = jnp.nan  # float32 []: ||L_sym(t) - L_sym(t-1)||_2 (eq. 4)
    degree_min: jax.Array = jnp.nan  # float32 []: d_min of W(t) (floored)
    row_drift: jax.Array = jnp.nan  # float32 []: eps_u = max_j ||y_j(t) - y_j(t-1)||
    centroid_drift: jax.Array = jnp.nan  # float32 [k]: ||m_j(t) - m_j(t-1)|| (eq. 5)


def module_mask(labels: Any, modules: Sequence[int] | jax.Array) -> jax.Array:
    """``bool[C]``: the components that belong to any of ``modules``.

    Args:
      labels: ``int[C]`` module labels, or a :class:`ModuleLibrary`.
      modules: module ids (a Python sequence or an int array; may be traced).

    Returns:
      A boolean ``[C]`` vector; ``partition.broadcast(mask, fill=False)`` gives the
      per-entry mask tree, ``mask.astype(float)`` a residual/learning-rate mask.

    Examples:
      >>> import jax.numpy as jnp
      >>> module_mask(jnp.array([0, 2, 1, 2]), [2]).tolist()
      [False, True, False, True]
    """
    if isinstance(labels, ModuleLibrary):
        labels = labels.labels
    labels = jnp.asarray(labels)
    if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"module_mask: labels must be a 1-D int array, got dtype={labels.dtype} "
            f"shape={labels.shape}."
        )
    mods = jnp.asarray(modules, dtype=labels.dtype).reshape(-1)
    if mods.size == 0:
        return jnp.zeros(labels.shape, bool)
    return jnp.any(labels[:, None] == mods[None, :], axis=1)


def build_library(
    labels: jax.Array,
    k: int,
    *,
    block_sizes: jax.Array,
    block_energy: jax.Array,
    ari: jax.Array,
    nmi: jax.Array,
    kappa: jax.Array,
    eigvals: jax.Array,
    drift: jax.Array,
    lobpcg_iters: jax.Array,
    recomputed: jax.Array,
    inertia: jax.Array,
    step: jax.Array,
    **diagnostics: jax.Array,
) -> ModuleLibrary:
    """Assembles a :class:`ModuleLibrary` from labels and per-block sizes / energies."""
    members = labels[None, :] == jnp.arange(k, dtype=labels.dtype)[:, None]
    num_blocks = jax.ops.segment_sum(jnp.ones(labels.shape, jnp.int32), labels, num_segments=k)
    num_params = jax.ops.segment_sum(block_sizes.astype(jnp.float32), labels, num_segments=k)
    energy = jax.ops.segment_sum(block_energy.astype(jnp.float32), labels, num_segments=k)
    total = jnp.maximum(jnp.sum(energy), 1e-30)
    return ModuleLibrary(
        labels=labels,
        members=members,
        valid=num_blocks > 0,
        num_blocks=num_blocks,
        num_params=num_params,
        energy=energy,
        energy_share=energy / total,
        mean_energy=jnp.where(num_params > 0, energy / jnp.maximum(num_params, 1.0), 0.0),
        ari=ari,
        nmi=nmi,
        kappa=kappa,
        eigvals=eigvals,
        drift=drift,
        lobpcg_iters=lobpcg_iters,
        recomputed=recomputed,
        inertia=inertia,
        step=step,
        **diagnostics,
    )


_ADVICE_KAPPA = (
    "kappa(r)={kappa:.3f} < {kappa_min}: gradient energy is not concentrated in r={r} "
    "directions; increase r (embed_dim), change the block granularity (block width d_b / "
    "head vs column blocks), or fall back to a PEFT method such as LoRA."
)
_ADVICE_STABILITY = (
    "modules are unstable ({what}); strengthen smoothing: increase alpha (now {alpha}), "
    "extend the window of gradient statistics (probe more often / accumulate sketches), or "
    "denoise the gradients (EMA / gradient smoothing) before sketching."
)


def diagnose(library: ModuleLibrary, config: Any) -> tuple[str, ...]:
    """Host-side advice when a diagnostic is out of its range (MFTC appendix D.3).

    Checks ``kappa >= config.kappa_min``, ``ari, nmi`` and every module's
    ``module_stability >= config.stability_min``, ``drift / sqrt(2 r)`` (the embedding's)
    and ``grad_drift`` (the gradient subspace's sin-theta) ``<= config.drift_max``; NaN
    values (first updates) are skipped.

    Args:
      library: a :class:`ModuleLibrary` (concrete arrays).
      config: the :class:`~rgft_jax.dsca.DSCAConfig` of the run.

    Returns:
      A tuple of advice strings; empty when all diagnostics are in range.
    """
    out = []
    kappa = float(library.kappa)
    if np.isfinite(kappa) and kappa < config.kappa_min:
        out.append(
            _ADVICE_KAPPA.format(kappa=kappa, kappa_min=config.kappa_min, r=config.rank)
        )
    bad = _instability(library, config)
    if bad:
        out.append(_ADVICE_STABILITY.format(what="; ".join(bad), alpha=config.alpha))
    return tuple(out)


def _instability(library: ModuleLibrary, config: Any) -> list[str]:
    """What is out of range among the stability diagnostics (empty: nothing)."""
    bad = []
    for name in ("ari", "nmi"):
        v = float(getattr(library, name))
        if np.isfinite(v) and v < config.stability_min:
            bad.append(f"{name.upper()}={v:.3f} < {config.stability_min}")
    stab = np.asarray(library.module_stability, np.float64).reshape(-1)
    low = [(j, v) for j, v in enumerate(stab)
           if np.isfinite(v) and v < config.stability_min and bool(np.asarray(library.valid)[j])]
    if low:
        bad.append("module stability below " f"{config.stability_min}: " + ", ".join(
            f"module {j} {v:.2f}" for j, v in low))
    drift = float(library.drift)
    rel = drift / math.sqrt(2 * config.embed_dim)
    if np.isfinite(rel) and rel > config.drift_max:
        bad.append(f"subspace drift {drift:.3f} = {rel:.3f}*sqrt(2r) > {config.drift_max}*sqrt(2r)")
    gd = float(library.grad_drift)
    if np.isfinite(gd) and gd > config.drift_max:
        bad.append(f"gradient-subspace drift sin-theta {gd:.3f} > {config.drift_max}")
    return bad


class Adjustment(NamedTuple):
    """What :func:`adjust` did (MFTC appendix D.3, acted on instead of advised)."""

    config: Any  # the DSCAConfig to use from now on (the same object when nothing changed)
    actions: tuple[str, ...]  # e.g. ('embed_dim 16 -> 32', 'alpha 0.9 -> 0.95')
    fallback: bool  # kappa stays low at the largest r: train LoRA instead of modules


def adjust(library: ModuleLibrary, config: Any, *, max_embed_dim: int = 64,
           max_alpha: float = 0.98, alpha_step: float = 0.05) -> Adjustment:
    """The closed loop of MFTC appendix D.3: acts on :func:`diagnose`'s findings.

    * ``kappa < kappa_min``: double ``embed_dim`` (``r``), up to ``max_embed_dim`` and below
      ``num_blocks / 5`` on sparse graphs; when ``r`` cannot grow, ``fallback=True`` (the
      gradient energy is not low-rank at any affordable ``r``: fine-tune with LoRA).
    * ARI/NMI below ``stability_min`` or the drift above ``drift_max``: raise the smoothing
      ``alpha`` by ``alpha_step`` (up to ``max_alpha``), which lengthens the effective window
      of the graph's gradient statistics (``1 / (1 - alpha)`` updates).

    A changed ``embed_dim`` changes the state's shapes: re-initialise the DSCA state
    (:func:`~rgft_jax.dsca.dsca_init`) with the new config.

    Args:
      library: the latest :class:`ModuleLibrary` (concrete arrays).
      config: the run's :class:`~rgft_jax.dsca.DSCAConfig`.
      max_embed_dim: the largest ``r`` to try.
      max_alpha: the largest smoothing factor to use.
      alpha_step: increment of ``alpha``.

    Returns:
      An :class:`Adjustment`.
    """
    import dataclasses

    changes: dict[str, Any] = {}
    actions: list[str] = []
    fallback = False
    kappa = float(library.kappa)
    if np.isfinite(kappa) and kappa < config.kappa_min:
        cap = min(max_embed_dim, config.num_blocks - 1)
        if config.graph_kind == "sparse":
            cap = min(cap, -(-config.num_blocks // 5) - 1)
        r = min(2 * config.embed_dim, cap)
        if r > config.embed_dim:
            changes["embed_dim"] = r
            actions.append(f"embed_dim {config.embed_dim} -> {r}")
            if config.kappa_rank is not None:
                rk = min(2 * config.kappa_rank, r)
                changes["kappa_rank"] = rk
                actions.append(f"kappa_rank {config.kappa_rank} -> {rk}")
            rank = changes.get("kappa_rank", r if config.kappa_rank is None else config.kappa_rank)
            if rank >= config.subspace_window:
                changes["subspace_window"] = 2 * rank
                actions.append(f"subspace_window {config.subspace_window} -> {2 * rank}")
        else:
            fallback = True
            actions.append(f"kappa {kappa:.3f} < {config.kappa_min} at r={config.rank}: "
                           "fall back to LoRA")
    if _instability(library, config):
        alpha = min(max_alpha, round(config.alpha + alpha_step, 6))
        if alpha > config.alpha:
            changes["alpha"] = alpha
            actions.append(f"alpha {config.alpha} -> {alpha}")
    new = dataclasses.replace(config, **changes) if changes else config
    return Adjustment(new, tuple(actions), fallback)


def describe_modules(library: ModuleLibrary, partition: Partition) -> list[dict[str, Any]]:
    """Host-side summary: per valid module its id, size, energy share and component names."""
    labels = np.asarray(library.labels)
    if labels.shape != (partition.num_components,):
        raise ValueError(
            f"describe_modules: library has {labels.shape[0]} blocks, partition has "
            f"{partition.num_components} components."
        )
    names = partition.names
    out = []
    for j in np.flatnonzero(np.asarray(library.valid)):
        idx = np.flatnonzero(labels == j)
        out.append(
            dict(
                module=int(j),
                num_blocks=int(idx.size),
                num_params=int(partition.sizes[idx].sum()),
                energy_share=float(library.energy_share[j]),
                components=[names[i] for i in idx],
            )
        )
    return out
