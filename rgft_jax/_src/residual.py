# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Residual-guided fine-tuning as optax transformations.

Two transformations share one tracker:

* :func:`residual_mask` scales *gradients*: chain it in front of any optimizer
  (``optax.chain(residual_mask(), optax.adamw(1e-4))``).
* :func:`residual_guided` wraps an optimizer and scales its *updates*; hard-masked components
  do not move at all and the inner optimizer's moments of those components stay frozen.

The tracker keeps, per component ``i`` of a :class:`~rgft_jax.components.Partition`, the EMA
of its share of the gradient norm (the *error map*), and every ``update_every`` steps turns it
into a mask and component learning-rate multipliers. Every per-step value lives in the state,
so changing masks never recompiles, and checkpointing the optimizer state saves the error map.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgft_jax._src import components as comp_lib

__all__ = [
    "ErrorMap",
    "ResidualGuidedState",
    "ResidualMaskState",
    "error_map",
    "find_error_maps",
    "residual_guided",
    "residual_mask",
    "threshold_mask",
    "update_ratio",
]

_THRESHOLDS = ("median", ("percentile", "p"), ("top_k", "k"), ("top_fraction", "f"), "callable")


class ResidualMaskState(NamedTuple):
    """State of :func:`residual_mask`."""

    count: jax.Array  # int32 []: finite steps seen
    residuals: jax.Array  # float32 [C]: EMA of normalised gradient-norm shares (the error map)
    mask: jax.Array  # float32 [C]: 1 for active components, gamma for masked ones
    lr_scale: jax.Array  # float32 [C]: component learning-rate multipliers eta_i / eta_0
    skipped: jax.Array  # int32 []: steps skipped because the gradient was not finite


class ResidualGuidedState(NamedTuple):
    """State of :func:`residual_guided`: the tracker's fields plus the inner state."""

    count: jax.Array  # int32 []: finite steps seen
    residuals: jax.Array  # float32 [C]
    mask: jax.Array  # float32 [C]
    lr_scale: jax.Array  # float32 [C]
    skipped: jax.Array  # int32 []
    inner_state: Any  # the wrapped optimizer's state


class ErrorMap(NamedTuple):
    """The error map read out of an optimizer state (see :func:`error_map`)."""

    residuals: jax.Array  # float32 [C]
    mask: jax.Array  # float32 [C]
    lr_scale: jax.Array  # float32 [C]
    step: jax.Array  # int32 []
    skipped: jax.Array  # int32 []


# ---------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class _Config:
    alpha: float
    threshold: Any  # ('percentile', p) | ('top_k', k) | ('top_fraction', f) | callable
    gamma: float
    beta: float
    update_every: int
    warmup_steps: int
    min_lr_scale: float


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_threshold(threshold: Any) -> Any:
    allowed = (
        "'median', ('percentile', p) with 0 < p < 100, ('top_k', k) with k >= 1, "
        "('top_fraction', f) with 0 < f <= 1, or a callable residuals -> threshold / bool mask"
    )
    if callable(threshold):
        return threshold
    if threshold == "median":
        return ("percentile", 50.0)
    if isinstance(threshold, (tuple, list)) and len(threshold) == 2:
        kind, v = threshold
        if kind == "percentile":
            if not _is_real(v) or not 0 < v < 100:
                raise ValueError(f"threshold=('percentile', {v!r}): p must be in (0, 100).")
            return ("percentile", float(v))
        if kind == "top_k":
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"threshold=('top_k', {v!r}): k must be an int >= 1.")
            return ("top_k", int(v))
        if kind == "top_fraction":
            if not _is_real(v) or not 0 < v <= 1:
                raise ValueError(f"threshold=('top_fraction', {v!r}): f must be in (0, 1].")
            return ("top_fraction", float(v))
    raise ValueError(f"threshold={threshold!r} is not a known threshold; allowed: {allowed}.")


def _make_config(
    alpha, threshold, gamma, beta, update_every, warmup_steps, min_lr_scale
) -> _Config:
    if not _is_real(alpha) or not 0 <= alpha < 1:
        raise ValueError(f"alpha={alpha!r}: the EMA decay must be a number in [0, 1).")
    if not _is_real(gamma) or not 0 <= gamma < 1:
        raise ValueError(
            f"gamma={gamma!r}: the masked-component scale must be in [0, 1) "
            "(0 = hard mask, > 0 = soft mask floor)."
        )
    if not _is_real(beta) or beta < 0 or not math.isfinite(beta):
        raise ValueError(f"beta={beta!r}: the LR-scaling strength must be a finite number >= 0.")
    if not isinstance(update_every, (int, np.integer)) or isinstance(update_every, bool) or (
        update_every <= 0
    ):
        raise ValueError(f"update_every={update_every!r}: must be an int >= 1.")
    if not isinstance(warmup_steps, (int, np.integer)) or isinstance(warmup_steps, bool) or (
        warmup_steps < 0
    ):
        raise ValueError(f"warmup_steps={warmup_steps!r}: must be an int >= 0.")
    if not _is_real(min_lr_scale) or not 0 < min_lr_scale <= 1:
        raise ValueError(
            f"min_lr_scale={min_lr_scale!r}: the floor of the component LR multipliers must "
            "be in (0, 1]."
        )
    return _Config(
        float(alpha), _check_threshold(threshold), float(gamma), float(beta), int(update_every),
        int(warmup_steps), float(min_lr_scale)
    )


# ---------------------------------------------------------------------------- pure functions
def threshold_mask(residuals: jax.Array, threshold: Any) -> jax.Array:
    """The boolean active set ``[C]`` selected by ``threshold`` from ``residuals``.

    ``median`` / ``('percentile', p)``: active iff ``r_i >= tau`` with ``tau`` the
    (linearly interpolated) percentile. ``('top_k', k)``: exactly ``k`` active, ties broken
    towards the lower index. ``('top_fraction', f)``: top ``ceil(f*C)``. A callable returns
    either a scalar ``tau`` or a boolean ``[C]`` active set.
    """
    residuals = jnp.asarray(residuals, jnp.float32)
    c = residuals.shape[0]
    if callable(threshold):
        out = jnp.asarray(threshold(residuals))
        if out.shape == ():
            return residuals >= out
        if out.shape != (c,):
            raise ValueError(
                f"threshold callable returned shape {out.shape}; expected () (a threshold) "
                f"or ({c},) (an active set)."
            )
        return out.astype(bool)
    threshold = _check_threshold(threshold)
    kind, v = threshold
    if kind == "percentile":
        return residuals >= jnp.percentile(residuals, v)
    # ceil(f * C) without float noise (0.28 * 25 = 7.000000000000001 must give 7).
    k = v if kind == "top_k" else max(1, math.ceil(round(v * c, 9)))
    if not 1 <= k <= c:
        raise ValueError(f"threshold=('top_k', {k}): k must be in [1, C={c}].")
    order = jnp.argsort(-residuals, stable=True)
    ranks = jnp.zeros((c,), jnp.int32).at[order].set(jnp.arange(c, dtype=jnp.int32))
    return ranks < k


def _lr_scale(residuals: jax.Array, beta: float, min_lr_scale: float) -> jax.Array:
    if beta == 0.0:
        return jnp.ones_like(residuals)
    mean = jnp.mean(residuals)
    std = jnp.std(residuals)
    z = jnp.where(std > 0, (residuals - mean) / jnp.where(std > 0, std, 1.0), 0.0)
    return jnp.maximum(1.0 + beta * z, min_lr_scale)


class _Tracked(NamedTuple):
    count: jax.Array
    residuals: jax.Array
    mask: jax.Array
    lr_scale: jax.Array
    skipped: jax.Array


def _init_tracker(part: comp_lib.Partition) -> _Tracked:
    c = part.num_components
    return _Tracked(
        count=jnp.zeros([], jnp.int32),
        residuals=jnp.full((c,), 1.0 / c, jnp.float32),
        mask=jnp.ones((c,), jnp.float32),
        lr_scale=jnp.ones((c,), jnp.float32),
        skipped=jnp.zeros([], jnp.int32),
    )


def refreshes(count: Any, update_every: int, warmup_steps: int) -> Any:
    """Whether the step that brings the tracker's count to ``count`` refreshes the mask.

    The first refresh is at ``warmup_steps`` (``update_every`` when it is 0), the next ones
    every ``update_every`` steps after it. Works on Python ints, numpy and traced ``jnp``
    values alike.
    """
    first = warmup_steps if warmup_steps > 0 else update_every
    return (count >= first) & ((count - first) % update_every == 0)


def _track(
    cfg: _Config, part: comp_lib.Partition, grads: Any, s: _Tracked, observe: Any = True,
    admit: Any = None,
) -> _Tracked:
    """One tracker step: EMA of norm shares, then (maybe) a mask/LR refresh.

    ``observe=False`` (a sparse step whose gradient omits frozen components) keeps the
    residuals as they are; the step still counts and may refresh from the kept residuals.
    ``admit(residuals, active) -> active`` (the compact state's capacity) narrows the
    active set; with it the first step refreshes too (everything active does not fit).
    """
    sq = part.sq_norms(grads)
    finite = jnp.all(jnp.isfinite(sq))
    norms = jnp.sqrt(jnp.where(finite, sq, 0.0))
    total = jnp.sum(norms) * jnp.asarray(observe, jnp.float32)
    share = norms / jnp.where(total > 0, total, 1.0)
    residuals = jnp.where(
        total > 0, cfg.alpha * s.residuals + (1.0 - cfg.alpha) * share, s.residuals
    )
    count = optax.safe_increment(s.count)
    refresh = refreshes(count, cfg.update_every, cfg.warmup_steps)
    if admit is not None:
        refresh = refresh | (count == 1)

    def _refresh(r):
        active = threshold_mask(r, cfg.threshold)
        if admit is not None:
            active = admit(r, active)
        mask = jnp.where(active, 1.0, cfg.gamma).astype(jnp.float32)
        return mask, _lr_scale(r, cfg.beta, cfg.min_lr_scale).astype(jnp.float32)

    mask, lr_scale = jax.lax.cond(
        refresh & finite, _refresh, lambda r: (s.mask, s.lr_scale), residuals
    )
    return _Tracked(
        count=jnp.where(finite, count, s.count),
        residuals=jnp.where(finite, residuals, s.residuals),
        mask=mask,
        lr_scale=lr_scale,
        skipped=s.skipped + (~finite).astype(jnp.int32),
    )


def _check_state(part: comp_lib.Partition, state: Any) -> None:
    c = state.residuals.shape[0]
    if part.num_components != c:
        raise ValueError(
            f"update: the updates split into {part.num_components} components but the state "
            f"was initialised for {c}; was init called on another params tree? "
            f"(updates' leaves: {[s.path for s in part.leaves][:6]})")


def _apply(part: comp_lib.Partition, updates: Any, mask: jax.Array, lr_scale: jax.Array):
    """``u * mask * lr_scale`` per component; exact zeros where ``mask == 0``."""
    return part.scale_where(updates, mask * lr_scale, mask > 0)


def _params_tags(inner, state, like):
    """``state`` with every params-shaped leaf replaced by its leaf index in ``like``, others
    by ``-1``.

    ``optax.tree_utils.tree_map_params`` finds the params-shaped trees of an inner state
    (moments, momentum, ...) without any isinstance dispatch on state types.
    """
    index_tree = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(like), list(range(len(jax.tree_util.tree_leaves(like)))))
    # optax.multi_transform keeps MaskedNode placeholders for the leaves another label owns.
    masked = lambda x: isinstance(x, optax.MaskedNode)
    return optax.tree_utils.tree_map_params(
        inner, lambda x, i: -1 if masked(x) else i, state, index_tree,
        transform_non_params=lambda _: -1, is_leaf=masked)


def _freeze_masked(part, inner, new_state, old_state, active, like, policy):
    """Entries of inactive components in every params-shaped tree of the inner state follow
    ``policy``: ``'keep'`` (the old value), ``'reset'`` (zero) or ``('decay', rho)``
    (``rho`` times the old value).

    ``optax.tree_utils.tree_map_params`` finds the params-shaped trees of the inner state
    (moments, momentum, ...) without any isinstance dispatch on state types; each leaf there
    is tagged with its params-leaf index, so the select runs on a reshaped view of the leaf
    against a per-group vector (nothing leaf-sized is broadcast).
    """
    # ``like``: the trees update() sees (nnx.Optimizer: arrays, not nnx.Param nodes).
    tags = _params_tags(inner, new_state, like)

    def off(old):
        if policy == "keep":
            return old
        if policy == "reset":
            return jnp.zeros_like(old)
        return old * jnp.asarray(policy[1], old.dtype)

    masked = lambda x: isinstance(x, optax.MaskedNode)
    return jax.tree.map(
        lambda new, old, i: new if i < 0 else part.leaf_where(i, active, new, off(old)),
        new_state, old_state, tags, is_leaf=masked)


def _check_moments(moments: Any, capacity: Any) -> Any:
    if capacity is not None and (not _is_real(capacity) or not 0 < capacity <= 1):
        raise ValueError(f"capacity={capacity!r}: the fraction of the partitioned entries the "
                         "compact optimizer state holds must be in (0, 1], or None (dense).")
    if moments is None:
        return "keep" if capacity is None else "reset"
    if moments in ("keep", "reset"):
        if capacity is not None and moments == "keep":
            raise ValueError(
                "moments='keep' with capacity=: the compact state drops the moments of "
                "components that leave the active set; use moments='reset' (or None).")
        return moments
    if isinstance(moments, (tuple, list)) and len(moments) == 2 and moments[0] == "decay":
        rho = moments[1]
        if not _is_real(rho) or not 0 <= rho <= 1:
            raise ValueError(f"moments=('decay', {rho!r}): rho must be in [0, 1].")
        if capacity is not None:
            raise ValueError("moments=('decay', rho) with capacity=: the compact state keeps "
                             "no moments of inactive components; use moments='reset'.")
        return ("decay", float(rho))
    raise ValueError(f"moments={moments!r}; allowed: 'keep', 'reset', ('decay', rho) with "
                     "0 <= rho <= 1, or None.")


# ---------------------------------------------------------------------------- transforms
_DOC_ARGS = """
    partition: how params split into components: ``None`` (every leaf one component), a
      :class:`~rgft_jax.components.Partition`, a rule list (e.g.
      ``rgft_jax.components.bert(12)``), or a callable ``params -> Partition``.
    alpha: EMA decay of the residuals, in ``[0, 1)``.
    threshold: ``'median'``, ``('percentile', p)``, ``('top_k', k)``,
      ``('top_fraction', f)`` or a callable ``residuals -> tau | bool[C]``.
    gamma: scale of masked components, in ``[0, 1)``: ``0`` is a hard mask, ``> 0`` a soft
      floor (the convergence argument needs ``gamma > 0``).
    beta: strength of the component learning rates ``1 + beta * z(r_i)``; ``0`` disables.
    update_every: steps between refreshes of the mask and LR multipliers.
    warmup_steps: the first refresh is at this step (everything active at full LR until
      then), the next ones every ``update_every`` steps after it; ``0``: the first refresh
      is at step ``update_every``. The uniform start ``r_i(0) = 1/C`` shifts every
      residual alike, so a mask taken after a single step ranks the components by that
      step's gradient shares: ``warmup_steps=1`` starts saving compute at once.
    min_lr_scale: floor of the LR multipliers, in ``(0, 1]``."""


def residual_mask(
    partition: Any = None,
    *,
    alpha: float = 0.9,
    threshold: Any = "median",
    gamma: float = 0.0,
    beta: float = 0.5,
    update_every: int = 100,
    warmup_steps: int = 0,
    min_lr_scale: float = 0.1,
) -> optax.GradientTransformationExtraArgs:
    r"""Tracks the error map and scales gradients by mask and component learning rate.

    .. math::

      r_i \leftarrow \alpha r_i + (1-\alpha) \frac{\|g_i\|}{\sum_j \|g_j\|}, \quad
      M_i = \begin{cases} 1 & r_i \ge \tau \\ \gamma & \text{else} \end{cases}, \quad
      \frac{\eta_i}{\eta_0} = \max(1 + \beta z(r_i), \eta_{\min}), \quad
      \tilde g_i = M_i \frac{\eta_i}{\eta_0} g_i

    ``r(0) = 1/C``; an all-zero gradient leaves ``r`` unchanged; a non-finite gradient leaves
    the state unchanged and counts in ``skipped`` (its updates pass through scaled; use
    ``optax.apply_if_finite`` to drop them). The mask and multipliers refreshed at a step are
    applied to that step's gradient. The extra argument ``rgft_observe=False`` (passed by
    the training loop on *sparse* steps, whose gradients omit frozen components) keeps the
    residuals unchanged for that step.

    Args:""" + _DOC_ARGS + r"""

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`ResidualMaskState`.

    Examples:
      >>> import jax.numpy as jnp, optax, rgft_jax as rgft
      >>> params = {'a': jnp.ones(3), 'b': jnp.ones(2)}
      >>> opt = optax.chain(rgft.residual_mask(update_every=1), optax.sgd(0.1))
      >>> state = opt.init(params)
      >>> grads = {'a': jnp.full(3, 2.0), 'b': jnp.full(2, 0.1)}
      >>> updates, state = opt.update(grads, state, params)
      >>> updates['b'].tolist()  # 'b' has the smaller residual: hard-masked
      [0.0, 0.0]

    .. warning::
      Adam-type optimizers normalise the gradient per entry, so scaling gradients in front of
      them is largely undone (a soft mask ``gamma`` or an LR multiplier changes the step
      little), and their momentum and weight decay keep moving hard-masked components. Use
      :func:`residual_guided` to freeze components and scale steps under Adam.
    """
    cfg = _make_config(alpha, threshold, gamma, beta, update_every, warmup_steps, min_lr_scale)
    comp_lib.check_partition_arg(partition)

    def init_fn(params):
        part = comp_lib.resolve(partition, params)
        _check_k(cfg, part)
        return ResidualMaskState(*_init_tracker(part))

    def update_fn(updates, state, params=None, *, rgft_observe=True, **extra_args):
        del params, extra_args
        part = comp_lib.resolve(partition, updates, tree_name="updates")
        _check_state(part, state)
        t = _track(cfg, part, updates, _Tracked(*state), rgft_observe)
        return _apply(part, updates, t.mask, t.lr_scale), ResidualMaskState(*t)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def residual_guided(
    inner: optax.GradientTransformation,
    partition: Any = None,
    *,
    alpha: float = 0.9,
    threshold: Any = "median",
    gamma: float = 0.0,
    beta: float = 0.5,
    update_every: int = 100,
    warmup_steps: int = 0,
    min_lr_scale: float = 0.1,
    moments: Any = None,
    capacity: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Wraps an optimizer: mask and component learning rates act on its *updates*.

    The error map is tracked from the raw gradients exactly as in :func:`residual_mask`.
    The inner optimizer sees the full gradient; its updates are multiplied by
    ``M_i * eta_i / eta_0``. For hard-masked components (``M_i = 0``) the update is exactly
    zero (decoupled weight decay included), and every params-shaped tree inside the inner
    state (Adam's moments, momentum, ...) keeps its previous value for those entries, so
    they resume from the preserved moments when the component is unmasked. Soft-masked
    components (``gamma > 0``) keep updating their moments and take a ``gamma``-scaled step.

    **Moments of masked components** (``moments=``): ``'keep'`` (default) freezes them and
    resumes from them; ``'reset'`` zeroes them, so a re-entering component starts afresh;
    ``('decay', rho)`` multiplies them by ``rho`` at every masked step (a middle ground).

    **Compact state** (``capacity=f``): the inner optimizer is initialised on a compact tree
    ``{'pool': [slots, 32], 'excluded': (...)}`` that holds only the entries of *admitted*
    components (``slots`` = ``f`` of the partitioned entries, in 32-entry chunks) plus the
    excluded leaves, so its params-shaped state costs ``f`` of the dense one whatever the
    mask. The active set of every refresh is narrowed to the highest-residual components
    that fit (the mask in the state is the admitted set), the first step refreshes too (the
    all-active start does not fit), and the policy is ``'reset'``: moments of a component
    that leaves are dropped. Updates equal those of ``moments='reset'`` whenever the mask
    fits. The inner optimizer sees flat chunks, so it must act entry-wise (Adam, AdamW, Lion,
    SGD with momentum, global-norm clipping); shape-aware ones (Adafactor's factored moments,
    Shampoo) and ``params``-structured masks inside ``inner`` do not carry over. Needs
    ``gamma == 0``.

    Args:
      inner: the optimizer to wrap (any ``optax.GradientTransformation``)."""+ _DOC_ARGS + r"""
    moments: ``None`` (``'keep'``; ``'reset'`` with ``capacity``), ``'keep'``, ``'reset'`` or
      ``('decay', rho)`` with ``0 <= rho <= 1``.
    capacity: ``None`` (dense state) or the compact state's fraction in ``(0, 1]``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`ResidualGuidedState`.

    Examples:
      >>> import jax.numpy as jnp, optax, rgft_jax as rgft
      >>> params = {'a': jnp.ones(3), 'b': jnp.ones(2)}
      >>> opt = rgft.residual_guided(optax.adamw(0.1, weight_decay=0.1), update_every=1)
      >>> state = opt.init(params)
      >>> grads = {'a': jnp.full(3, 2.0), 'b': jnp.full(2, 0.1)}
      >>> updates, state = opt.update(grads, state, params)
      >>> updates['b'].tolist(), state.inner_state[0].mu['b'].tolist()
      ([0.0, 0.0], [0.0, 0.0])

    .. note::
      Step counters inside the inner state (Adam's bias correction) keep counting while a
      component is frozen: on resumption its bias correction is that of the global step.
    """
    cfg = _make_config(alpha, threshold, gamma, beta, update_every, warmup_steps, min_lr_scale)
    comp_lib.check_partition_arg(partition)
    if not (hasattr(inner, "init") and hasattr(inner, "update")):
        raise TypeError(
            f"residual_guided: inner must be an optax GradientTransformation, got {inner!r}."
        )
    inner = optax.with_extra_args_support(inner)
    policy = _check_moments(moments, capacity)
    if capacity is not None:
        if gamma != 0.0:
            raise ValueError(f"capacity={capacity!r} with gamma={gamma!r}: the compact state "
                             "holds no moments for soft-masked components; use gamma=0.")
        return _compact_guided(inner, partition, cfg, float(capacity))

    def init_fn(params):
        part = comp_lib.resolve(partition, params)
        _check_k(cfg, part)
        return ResidualGuidedState(*_init_tracker(part), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, *, rgft_observe=True, **extra_args):
        part = comp_lib.resolve(partition, updates, tree_name="updates")
        _check_state(part, state)
        t = _track(cfg, part, updates, _Tracked(*state[:5]), rgft_observe)
        inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        # Entries of hard-masked components: moments kept, reset or decayed (``policy``).
        inner_state = _freeze_masked(part, inner, inner_state, state.inner_state, t.mask > 0,
                                     updates, policy)
        out = _apply(part, inner_updates, t.mask, t.lr_scale)
        return out, ResidualGuidedState(*t, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


_POOLS: dict[tuple[int, float], tuple[comp_lib.Partition, Any]] = {}


def _pool(part: comp_lib.Partition, capacity: float):
    from rgft_jax._src.compact import Pool

    key = (id(part), capacity)
    hit = _POOLS.get(key)
    if hit is None or hit[0] is not part:
        if len(_POOLS) > 64:
            _POOLS.clear()
        hit = _POOLS[key] = (part, Pool(part, capacity))
    return hit[1]


def _compact_guided(inner, partition, cfg: _Config, capacity: float):
    """:func:`residual_guided` with the compact state (see its docstring)."""
    from rgft_jax._src.compact import admit as admit_fn

    def admitter(pool):
        return lambda r, active: admit_fn(r, active, pool.component_chunks, pool.slots)

    def init_fn(params):
        part = comp_lib.resolve(partition, params)
        _check_k(cfg, part)
        pool = _pool(part, capacity)
        t = _init_tracker(part)
        mask = admitter(pool)(t.residuals, t.mask > 0).astype(jnp.float32)
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(params)) if pool.rows else (
            jnp.float32)
        return ResidualGuidedState(*t._replace(mask=mask),
                                   inner_state=inner.init(pool.abstract(params, dtype)))

    def update_fn(updates, state, params=None, *, rgft_observe=True, **extra_args):
        part = comp_lib.resolve(partition, updates, tree_name="updates")
        _check_state(part, state)
        pool = _pool(part, capacity)
        t = _track(cfg, part, updates, _Tracked(*state[:5]), rgft_observe, admitter(pool))
        old_idx, new_idx = pool.indices(state.mask), pool.indices(t.mask)
        like = pool.abstract(updates)
        tags = _params_tags(inner, state.inner_state, like)
        npool = len(pool.excluded)  # dict keys flatten sorted: 'excluded' leaves, then 'pool'

        def remap(inner_state):
            return jax.tree.map(lambda x, i: pool.remap(x, old_idx, new_idx) if i == npool else x,
                                inner_state, tags)

        changed = jnp.any((state.mask > 0) != (t.mask > 0))
        inner_state = jax.lax.cond(changed, remap, lambda s: s, state.inner_state)
        compact_params = None if params is None else pool.gather(params, new_idx)
        inner_updates, inner_state = inner.update(
            pool.gather(updates, new_idx), inner_state, compact_params, **extra_args)
        scaled = dict(inner_updates, pool=inner_updates["pool"] * pool.slot_values(
            t.lr_scale, new_idx).astype(inner_updates["pool"].dtype))
        out = pool.scatter(scaled, new_idx, updates)
        return out, ResidualGuidedState(*t, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_k(cfg: _Config, part: comp_lib.Partition) -> None:
    th = cfg.threshold
    if isinstance(th, tuple) and th[0] == "top_k" and th[1] > part.num_components:
        raise ValueError(
            f"threshold=('top_k', {th[1]}): k must be in [1, C] and the partition has "
            f"C={part.num_components} components."
        )


# ---------------------------------------------------------------------------- accessors
_STATES = (ResidualMaskState, ResidualGuidedState)


def _array(x: Any) -> Any:
    """The array inside an ``nnx.Variable`` (``nnx.Optimizer`` wraps its state), else ``x``."""
    if hasattr(x, "get_value"):
        return x.get_value()
    return x


def find_error_maps(opt_state: Any) -> list[ErrorMap]:
    """All error maps inside ``opt_state`` (chained, wrapped, injected: any depth)."""
    found = []

    def visit(x):
        if isinstance(x, _STATES):
            found.append(ErrorMap(*(_array(v) for v in (
                x.residuals, x.mask, x.lr_scale, x.count, x.skipped))))
            if isinstance(x, ResidualGuidedState):
                jax.tree_util.tree_map(
                    visit, x.inner_state, is_leaf=lambda y: isinstance(y, _STATES))
        return x

    jax.tree_util.tree_map(visit, opt_state, is_leaf=lambda y: isinstance(y, _STATES))
    return found


def error_map(opt_state: Any) -> ErrorMap:
    """The error map (residuals, mask, LR multipliers, step, skipped) inside ``opt_state``.

    Raises:
      ValueError: when ``opt_state`` holds no RGFT state, or more than one (then use
        :func:`find_error_maps`).
    """
    maps = find_error_maps(opt_state)
    if not maps:
        raise ValueError(
            "error_map: no residual_mask / residual_guided state found in opt_state "
            f"(a {type(opt_state).__name__}); was the optimizer built with one?"
        )
    if len(maps) > 1:
        raise ValueError(
            f"error_map: opt_state holds {len(maps)} RGFT states; use find_error_maps()."
        )
    return maps[0]


def update_ratio(
    state_or_map: Any, partition: comp_lib.Partition
) -> tuple[jax.Array, jax.Array]:
    """``(sum_i M_i |Theta_i| / |Theta|, hard-active fraction)`` of the current mask.

    Excluded leaves count as fully updated (the transforms pass them through).

    Args:
      state_or_map: an :class:`ErrorMap`, a mask ``[C]``, or an optimizer state holding one.
      partition: the partition the mask refers to.
    """
    if isinstance(state_or_map, ErrorMap):
        mask = state_or_map.mask
    elif hasattr(state_or_map, "shape") and hasattr(state_or_map, "dtype"):
        mask = state_or_map
    else:
        mask = error_map(state_or_map).mask
    mask = jnp.asarray(mask, jnp.float32)
    if mask.shape != (len(partition),):
        raise ValueError(
            f"update_ratio: mask has shape {mask.shape} but the partition has "
            f"{len(partition)} components."
        )
    sizes = jnp.asarray(partition.sizes, jnp.float32)
    total = float(partition.total_size)
    excl = float(partition.excluded_size)
    ratio = (jnp.sum(mask * sizes) + excl) / total
    hard = (jnp.sum(jnp.where(mask >= 1.0, sizes, 0.0)) + excl) / total
    return ratio, hard
