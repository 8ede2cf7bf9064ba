# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Residual-guided fine-tuning as optax transformations.

Two transformations share one tracker (:mod:`rgft_jax._src.tracker`):

* :func:`residual_mask` scales *gradients*: chain it in front of any optimizer
  (``optax.chain(residual_mask(), optax.adamw(1e-4))``).
* :func:`residual_guided` wraps an optimizer and scales its *updates*; hard-masked components
  do not move at all and the inner optimizer's moments of those components stay frozen.

Every per-step value lives in the state, so changing masks never recompiles, and
checkpointing the optimizer state saves the error map. The accessors (:func:`error_map`,
:func:`find_error_maps`, :func:`update_ratio`) live in :mod:`rgft_jax._src.accessors` and the
thresholds in :mod:`rgft_jax._src.thresholds`; both are re-exported here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgft_jax._src import components as comp_lib
from rgft_jax._src import tracker as tracker_lib
from rgft_jax._src.accessors import ErrorMap, error_map, find_error_maps, update_ratio
from rgft_jax._src.thresholds import threshold_mask
from rgft_jax._src.tracker import ResidualTrackerState, refreshes

__all__ = [
    "ErrorMap",
    "ResidualGuidedState",
    "ResidualMaskState",
    "ResidualTrackerState",
    "error_map",
    "find_error_maps",
    "refreshes",
    "residual_guided",
    "residual_mask",
    "threshold_mask",
    "update_ratio",
]

#: :func:`residual_mask`'s state is the tracker state itself (same fields and leaf paths as
#: before the tracker was shared).
ResidualMaskState = ResidualTrackerState


class ResidualGuidedState(NamedTuple):
    """State of :func:`residual_guided`: the tracker and the wrapped optimizer's state."""

    tracker: ResidualTrackerState  # the error map: count, residuals [C], mask [C], ...
    inner_state: Any  # the wrapped optimizer's state (dense, or over the compact tree)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


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


def _check_pattern(pattern: Any, part: comp_lib.Partition) -> tuple | None:
    """``rgft_trainable``: ``None`` or one bool/int per leaf (a static Python tuple)."""
    if pattern is None:
        return None
    if not isinstance(pattern, (tuple, list)) or len(pattern) != len(part.leaves) or not all(
            isinstance(t, (bool, int, np.integer)) for t in pattern):
        n = len(pattern) if isinstance(pattern, (tuple, list)) else type(pattern).__name__
        raise ValueError(
            f"rgft_trainable: expected None or a static tuple of {len(part.leaves)} bool/int "
            f"entries (one per leaf of the params tree, in tree_leaves order), got {n} "
            f"({str(pattern)[:80]}).")
    return tuple(pattern)


def _dead(part: comp_lib.Partition, pattern: tuple | None, i: int) -> bool:
    """Whether leaf ``i`` is statically not trained in this step: ``rgft_trainable[i] is
    False`` and it has components (masked, by the caller's contract) or is frozen."""
    if pattern is None or pattern[i] is not False:
        return False
    s = part.leaves[i]
    return bool(s.n_groups) or s.frozen


def _apply(part, updates, mask, lr_scale, pattern):
    """``u * mask * lr_scale`` per component in one pass per leaf; exact zeros where
    ``mask == 0`` and (statically) on dead leaves; frozen leaves zero, excluded ones as is."""
    values = mask * lr_scale
    active = mask > 0
    leaves = jax.tree_util.tree_leaves(updates)
    out = []
    for i, (s, x) in enumerate(zip(part.leaves, leaves)):
        if _dead(part, pattern, i) or s.frozen:
            out.append(jnp.zeros_like(x))
        elif not s.n_groups:
            out.append(x)
        else:
            out.append(part.leaf_scale_where(i, x, values, active))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(updates), out)


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


def _select_inner(part, inner, new_state, old_state, active, like, policy, pattern):
    """Entries of inactive components in every params-shaped leaf of the inner state follow
    ``policy``: ``'keep'`` (the old value), ``'reset'`` (zero) or ``('decay', rho)``
    (``rho`` times the old value); one select per leaf, against a per-group vector.

    Only leaves with their parameter's shape are frozen: factored or otherwise
    shape-changed statistics (Adafactor's ``v_row`` / ``v_col``) pass through. On dead
    leaves (``rgft_trainable``) the whole leaf follows ``policy`` statically, so XLA drops
    the inner optimizer's work on it.
    """
    # ``like``: the trees update() sees (nnx.Optimizer: arrays, not nnx.Param nodes).
    tags = _params_tags(inner, new_state, like)

    def off(old):
        if policy == "keep":
            return old
        if policy == "reset":
            return jnp.zeros_like(old)
        return old * jnp.asarray(policy[1], old.dtype)

    def select(new, old, i):
        if i < 0 or tuple(np.shape(new)) != part.leaves[i].shape:
            return new
        if _dead(part, pattern, i):
            return off(old) if part.leaves[i].n_groups else old
        if not part.leaves[i].n_groups:
            return new
        return part.leaf_where(i, active, new, off(old))

    masked = lambda x: isinstance(x, optax.MaskedNode)
    return jax.tree.map(select, new_state, old_state, tags, is_leaf=masked)


# ---------------------------------------------------------------------------- transforms
def residual_mask(
    partition: Any = None,
    *,
    alpha: Any = 0.9,
    threshold: Any = "median",
    gamma: Any = 0.0,
    beta: Any = 0.5,
    update_every: Any = 100,
    warmup_steps: Any = 0,
    min_lr_scale: Any = 0.1,
    axis_name: Any = None,
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
    residuals unchanged for that step; ``rgft_trainable`` (see :func:`residual_guided`)
    statically zeroes the leaves marked ``False``.

    Args:
      partition: how params split into components: ``None`` (every leaf one component), a
        :class:`~rgft_jax.components.Partition`, a rule list (e.g.
        ``rgft_jax.components.bert(12)``), or a callable ``params -> Partition``.
      alpha: EMA decay of the residuals, in ``[0, 1)``.
      threshold: a :mod:`rgft_jax.thresholds` callable (``median()``, ``percentile(p)``,
        ``top_k(k)``, ``top_fraction(f)``, ``budget(costs, f)``), its shorthand
        ``'median'``, ``('percentile', p)``, ``('top_k', k)``, ``('top_fraction', f)``, or
        any callable ``residuals -> tau | bool[C]``.
      gamma: scale of masked components, in ``[0, 1)``: ``0`` is a hard mask, ``> 0`` a soft
        floor (the convergence argument needs ``gamma > 0``).
      beta: strength of the component learning rates ``1 + beta * z(r_i)``; ``0`` disables.
      update_every: steps between refreshes of the mask and LR multipliers.
      warmup_steps: the first refresh is at this step (everything active at full LR until
        then), the next ones every ``update_every`` steps after it; ``0``: the first refresh
        is at step ``update_every``. The uniform start ``r_i(0) = 1/C`` shifts every
        residual alike, so a mask taken after a single step ranks the components by that
        step's gradient shares: ``warmup_steps=1`` starts saving compute at once.
      min_lr_scale: floor of the LR multipliers, in ``(0, 1]``.
      axis_name: ``None``, or the mapped axis (``shard_map`` / ``pmap``) over which
        per-replica gradients are split: the squared component norms are summed over it
        before the EMA, so every replica picks the same mask.

    ``alpha``, ``gamma``, ``beta``, ``min_lr_scale``, ``update_every`` and ``warmup_steps``
    may be arrays (``optax.inject_hyperparams(residual_mask)(alpha=schedule, ...)``); they
    are validated here only when they are Python / NumPy numbers. A callable ``threshold``
    must then be named in ``static_args`` (``inject_hyperparams`` takes callables for
    schedules).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`ResidualMaskState` (the tracker state itself).

    Raises:
      ValueError: on an out-of-range hyperparameter or an unknown threshold (here), or a
        partition / threshold that does not fit the params (at ``init``).

    Examples:
      >>> import jax.numpy as jnp, optax, rgft_jax as rgft
      >>> params = {'a': jnp.ones(3), 'b': jnp.ones(2)}
      >>> opt = optax.chain(rgft.residual_mask(update_every=1), optax.sgd(0.1))
      >>> state = opt.init(params)
      >>> grads = {'a': jnp.full(3, 2.0), 'b': jnp.full(2, 0.1)}
      >>> updates, state = opt.update(grads, state, params)
      >>> bool((updates['b'] == 0).all())  # 'b' has the smaller residual: hard-masked
      True

    .. warning::
      Adam-type optimizers normalise the gradient per entry, so scaling gradients in front of
      them is largely undone (a soft mask ``gamma`` or an LR multiplier changes the step
      little), and their momentum and weight decay keep moving hard-masked components. Use
      :func:`residual_guided` to freeze components and scale steps under Adam.
    """
    tracker = tracker_lib.make_tracker(
        partition, alpha=alpha, threshold=threshold, gamma=gamma, beta=beta,
        update_every=update_every, warmup_steps=warmup_steps, min_lr_scale=min_lr_scale,
        axis_name=axis_name)

    def init_fn(params):
        if tracker_lib.is_placeholder(params):  # optax.tree_utils.tree_map_params
            return tracker_lib.placeholder_tracker()
        return tracker.init(params)[1]

    def update_fn(updates, state, params=None, *, rgft_observe=True, rgft_trainable=None,
                  **extra_args):
        del params, extra_args
        part, t = tracker.step(updates, state, rgft_observe)
        pattern = _check_pattern(rgft_trainable, part)
        return _apply(part, updates, t.mask, t.lr_scale, pattern), t

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def residual_guided(
    inner: optax.GradientTransformation,
    partition: Any = None,
    *,
    alpha: Any = 0.9,
    threshold: Any = "median",
    gamma: Any = 0.0,
    beta: Any = 0.5,
    update_every: Any = 100,
    warmup_steps: Any = 0,
    min_lr_scale: Any = 0.1,
    axis_name: Any = None,
    moments: Any = None,
    capacity: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Wraps an optimizer: mask and component learning rates act on its *updates*.

    The error map is tracked from the raw gradients exactly as in :func:`residual_mask`.
    The inner optimizer sees the full gradient; its updates are multiplied by
    ``M_i * eta_i / eta_0``. For hard-masked components (``M_i = 0``) the update is exactly
    zero (decoupled weight decay included), and every params-shaped leaf inside the inner
    state (Adam's moments, momentum, ...) keeps its previous value for those entries, so
    they resume from the preserved moments when the component is unmasked. Only leaves with
    their parameter's shape are frozen: factored or otherwise shape-changed statistics
    (Adafactor's ``v_row`` / ``v_col``) are not frozen and keep updating. Soft-masked
    components (``gamma > 0``) keep updating their moments and take a ``gamma``-scaled step.

    **Moments of masked components** (``moments=``): ``'keep'`` (default) freezes them and
    resumes from them; ``'reset'`` zeroes them, so a re-entering component starts afresh;
    ``('decay', rho)`` multiplies them by ``rho`` at every masked step (a middle ground).

    **Static pattern** (extra argument ``rgft_trainable``): a Python tuple with one entry
    per leaf of the params tree (``jax.tree_util.tree_leaves`` order), as the training loop's
    compiled step uses: ``False`` means the leaf is not differentiated in this step (its
    gradient is zeros). Such leaves get zero updates and their params-shaped inner-state
    leaves follow ``moments`` statically, so XLA drops the inner optimizer's work on them;
    the inner optimizer's other bookkeeping (its step count) advances as usual. The result
    is bit-identical to ``rgft_trainable=None`` when every component of those leaves is
    hard-masked (or the leaf is frozen), which is the caller's contract; ``True`` and int
    entries change nothing.

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
      inner: the optimizer to wrap (any ``optax.GradientTransformation``).
      partition: how params split into components: ``None`` (every leaf one component), a
        :class:`~rgft_jax.components.Partition`, a rule list (e.g.
        ``rgft_jax.components.bert(12)``), or a callable ``params -> Partition``.
      alpha: EMA decay of the residuals, in ``[0, 1)``.
      threshold: a :mod:`rgft_jax.thresholds` callable (``median()``, ``percentile(p)``,
        ``top_k(k)``, ``top_fraction(f)``, ``budget(costs, f)``), its shorthand
        ``'median'``, ``('percentile', p)``, ``('top_k', k)``, ``('top_fraction', f)``, or
        any callable ``residuals -> tau | bool[C]``.
      gamma: scale of masked components, in ``[0, 1)``: ``0`` is a hard mask, ``> 0`` a soft
        floor (the convergence argument needs ``gamma > 0``).
      beta: strength of the component learning rates ``1 + beta * z(r_i)``; ``0`` disables.
      update_every: steps between refreshes of the mask and LR multipliers.
      warmup_steps: the first refresh is at this step (everything active at full LR until
        then), the next ones every ``update_every`` steps after it; ``0``: the first refresh
        is at step ``update_every``. The uniform start ``r_i(0) = 1/C`` shifts every
        residual alike, so a mask taken after a single step ranks the components by that
        step's gradient shares: ``warmup_steps=1`` starts saving compute at once.
      min_lr_scale: floor of the LR multipliers, in ``(0, 1]``.
      axis_name: ``None``, or the mapped axis (``shard_map`` / ``pmap``) over which
        per-replica gradients are split: the squared component norms are summed over it
        before the EMA, so every replica picks the same mask.
      moments: ``None`` (``'keep'``; ``'reset'`` with ``capacity``), ``'keep'``, ``'reset'`` or
        ``('decay', rho)`` with ``0 <= rho <= 1``.
      capacity: ``None`` (dense state) or the compact state's fraction in ``(0, 1]``.

    ``alpha``, ``gamma``, ``beta``, ``min_lr_scale``, ``update_every`` and ``warmup_steps``
    may be arrays (``optax.inject_hyperparams(residual_guided)(optax.adam(1e-3),
    alpha=schedule)``); they are validated here only when they are Python / NumPy numbers.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`ResidualGuidedState`
      ``(tracker, inner_state)``.

    Raises:
      TypeError: when ``inner`` is not a GradientTransformation.
      ValueError: on an out-of-range hyperparameter, an unknown threshold or moment policy
        (here), or a partition / threshold that does not fit the params (at ``init``).

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
    tracker = tracker_lib.make_tracker(
        partition, alpha=alpha, threshold=threshold, gamma=gamma, beta=beta,
        update_every=update_every, warmup_steps=warmup_steps, min_lr_scale=min_lr_scale,
        axis_name=axis_name)
    if not (hasattr(inner, "init") and hasattr(inner, "update")):
        raise TypeError(
            f"residual_guided: inner must be an optax GradientTransformation, got {inner!r}."
        )
    inner = optax.with_extra_args_support(inner)
    policy = _check_moments(moments, capacity)
    if capacity is not None:
        if isinstance(gamma, jax.Array) or gamma != 0.0:
            raise ValueError(f"capacity={capacity!r} with gamma={gamma!r}: the compact state "
                             "holds no moments for soft-masked components; use a static "
                             "gamma=0.")
        return _compact_guided(inner, tracker, float(capacity))

    def init_fn(params):
        if tracker_lib.is_placeholder(params):  # optax.tree_utils.tree_map_params
            return ResidualGuidedState(tracker_lib.placeholder_tracker(), inner.init(params))
        _, t = tracker.init(params)
        return ResidualGuidedState(tracker=t, inner_state=inner.init(params))

    def update_fn(updates, state, params=None, *, rgft_observe=True, rgft_trainable=None,
                  **extra_args):
        part, t = tracker.step(updates, state.tracker, rgft_observe)
        pattern = _check_pattern(rgft_trainable, part)
        inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        inner_state = _select_inner(part, inner, inner_state, state.inner_state, t.mask > 0,
                                    updates, policy, pattern)
        out = _apply(part, inner_updates, t.mask, t.lr_scale, pattern)
        return out, ResidualGuidedState(tracker=t, inner_state=inner_state)

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


def _compact_guided(inner, tracker: tracker_lib.Tracker, capacity: float):
    """:func:`residual_guided` with the compact state (see its docstring)."""
    from rgft_jax._src.compact import admit as admit_fn

    def admitter(pool):
        return lambda r, active: admit_fn(r, active, pool.component_chunks, pool.slots)

    def init_fn(params):
        if tracker_lib.is_placeholder(params):
            # The inner state holds compact trees, not params-shaped ones: nothing in it is
            # a copy of the params for optax.tree_utils.tree_map_params.
            inner_like = jax.tree.map(lambda _: np.zeros((), np.int32), inner.init(params),
                                      is_leaf=tracker_lib.is_placeholder)
            return ResidualGuidedState(tracker_lib.placeholder_tracker(), inner_like)
        part, t = tracker.init(params)
        pool = _pool(part, capacity)
        mask = admitter(pool)(t.residuals, t.mask > 0).astype(jnp.float32)
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(params)) if pool.rows else (
            jnp.float32)
        return ResidualGuidedState(t._replace(mask=mask),
                                   inner.init(pool.abstract(params, dtype)))

    def update_fn(updates, state, params=None, *, rgft_observe=True, rgft_trainable=None,
                  **extra_args):
        del rgft_trainable  # the compact state already holds admitted components only
        pool = _pool(tracker.resolve(updates, "updates"), capacity)
        _, t = tracker.step(updates, state.tracker, rgft_observe, admitter(pool), pool.part)
        old_mask = state.tracker.mask
        old_idx, new_idx = pool.indices(old_mask), pool.indices(t.mask)
        like = pool.abstract(updates)
        tags = _params_tags(inner, state.inner_state, like)
        npool = len(pool.excluded)  # dict keys flatten sorted: 'excluded' leaves, then 'pool'

        def remap(inner_state):
            return jax.tree.map(lambda x, i: pool.remap(x, old_idx, new_idx) if i == npool else x,
                                inner_state, tags)

        changed = jnp.any((old_mask > 0) != (t.mask > 0))
        inner_state = jax.lax.cond(changed, remap, lambda s: s, state.inner_state)
        compact_params = None if params is None else pool.gather(params, new_idx)
        inner_updates, inner_state = inner.update(
            pool.gather(updates, new_idx), inner_state, compact_params, **extra_args)
        scaled = dict(inner_updates, pool=inner_updates["pool"] * pool.slot_values(
            t.lr_scale, new_idx).astype(inner_updates["pool"].dtype))
        out = pool.scatter(scaled, new_idx, updates)
        return out, ResidualGuidedState(tracker=t, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
