# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The published answers to "where to train" as methods of the one loop (policy 'schedule').

Each anchor is a masked method (:class:`~rgft_jax.training._methods._Masked`) over
``'layers'`` or ``'leaves'`` components whose mask the *host* decides: before every step the
Trainer asks the method's :class:`Schedule` for the mask (and whether the step is a probe
step), installs it in the tracker's mask inside the optimizer state (:func:`install_mask`),
and runs the sparse step of that mask. The moment freeze of
:func:`rgft_jax.residual_guided` keeps unselected layers exactly still (no update, no
weight decay, moments per ``moments=``) and the sparse step patterns give the real FLOPs
savings (layers below the lowest active one are not backpropagated). The tracker itself
never refreshes the mask (its first refresh is set beyond any run).

* :func:`lisa` — LISA (Pan et al., NeurIPS 2024; LMFlow): embeddings and head always
  trained, ``n_layers`` layers sampled uniformly every ``interval`` steps.
* :func:`random_layers` — ``k`` layers sampled uniformly every ``interval`` steps
  (embeddings frozen): LISA without the always-trained embeddings.
* :func:`badam` — BAdam (Luo et al., 2024; ``Ledzy/BAdam``, LLaMA-Factory): block
  coordinate descent over the layers, one block for ``switch_every`` steps, in
  ``'ascending'``, ``'descending'`` or ``'random'`` order; moments reset on a switch.
* :func:`autofreeze` — AutoFreeze (Liu et al., 2021; ``YuhanLiu11/AutoFreeze``): freezes a
  growing prefix of layers whose accumulated-gradient L1 norm stops changing.
* :func:`green_trainer` — GreenTrainer (Huang et al., ICLR 2024; ``pittisl/GreenTrainer``):
  per-tensor importance ``-sum(g * dw)`` and a dynamic program under a FLOPs budget with the
  backprop-depth cost model ``(t_dy, t_dw)`` (here: :mod:`rgft_jax._src.budget`).

Everything a schedule decides is a function of the step and of host values it keeps in
:meth:`Schedule.state_dict` (saved with checkpoints), so resumed runs take the same masks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgft_jax._src import components as comp_lib
from rgft_jax._src import presets, residual
from rgft_jax._src.tracker import ResidualTrackerState
from rgft_jax.training import _components as parts
from rgft_jax.training import _methods as methods_lib

__all__ = [
    "AutoFreeze", "BAdam", "DropBP", "GreenTrainer", "LISA", "RandomLayers", "Schedule",
    "allocate_drop_rates", "autofreeze", "badam", "dropbp", "dropbp_sensitivities",
    "green_trainer", "install_mask", "lisa", "random_layers", "sample_drop_flags",
    "selection_dp", "selection_dp_brute_force",
]

#: The tracker's first refresh of schedule methods: beyond any run (the host sets the mask).
NEVER = 2**30
_EMBED = r"(?:^|/)(?:embeddings?|embed_tokens|embed_positions|wte|wpe|cls_token|token_embd)/"

_is_int = methods_lib._is_int
_is_real = methods_lib._is_real


# ---------------------------------------------------------------------------- engine side
def install_mask(opt_state: Any, mask: np.ndarray) -> Any:
    """``opt_state`` with the tracker's mask replaced by ``mask`` (host values, ``[C]``).

    Only the mask leaf is a new array (placed like the old one); every other leaf is the
    same buffer, so nothing is copied.
    """
    def put(t):
        new = np.asarray(mask, np.float32)
        if new.shape != t.mask.shape:
            raise ValueError(f"install_mask: mask has shape {new.shape}, the tracker's "
                             f"{t.mask.shape}.")
        sharding = getattr(t.mask, "sharding", None)
        return t._replace(mask=jax.device_put(new, sharding) if sharding is not None
                          else jnp.asarray(new))

    return jax.tree_util.tree_map(lambda x: put(x) if isinstance(x, ResidualTrackerState)
                                  else x, opt_state,
                                  is_leaf=lambda x: isinstance(x, ResidualTrackerState))


class AnchorStatsState(NamedTuple):
    """State of :func:`with_stats`: the wrapped optimizer's state and the statistic."""

    inner: Any
    stats: Any  # 'grad_sum': a params-shaped tree; 'importance': float32 [C]


def with_stats(tx: optax.GradientTransformationExtraArgs, kind: str,
               part: comp_lib.Partition) -> optax.GradientTransformationExtraArgs:
    """Wraps ``tx`` to keep one host-read statistic in the optimizer state.

    * ``'grad_sum'`` (AutoFreeze): the sum of the gradients since the host last reset it;
      leaves a step does not differentiate (``rgft_trainable``) are statically left alone.
    * ``'importance'`` (GreenTrainer): on probe steps (``rgft_observe``), per component
      ``sum(g * u)`` with ``u`` the update ``tx`` applies (the weight change of the step).
    """
    if kind not in ("grad_sum", "importance"):
        raise ValueError(f"with_stats: kind={kind!r}; allowed: 'grad_sum', 'importance'.")

    def init_fn(params):
        inner = tx.init(params)
        if kind == "grad_sum":
            return AnchorStatsState(inner, jax.tree.map(jnp.zeros_like, params))
        return AnchorStatsState(inner, jnp.zeros((len(part),), jnp.float32))

    def update_fn(updates, state, params=None, *, rgft_observe=True, rgft_trainable=None,
                  **extra):
        out, inner = tx.update(updates, state.inner, params, rgft_observe=rgft_observe,
                               rgft_trainable=rgft_trainable, **extra)
        if kind == "grad_sum":
            leaves, treedef = jax.tree_util.tree_flatten(state.stats)
            grads = jax.tree_util.tree_leaves(updates)
            pattern = rgft_trainable or (True,) * len(leaves)
            stats = jax.tree_util.tree_unflatten(treedef, [
                a + g.astype(a.dtype) if t is not False else a
                for a, g, t in zip(leaves, grads, pattern)])
        else:
            prod = jax.tree.map(lambda g, u: g.astype(jnp.float32) * u.astype(jnp.float32),
                                updates, out)
            stats = jnp.where(jnp.asarray(rgft_observe), part.reduce(prod, lambda x: x),
                              state.stats)
        return out, AnchorStatsState(inner, stats)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _stats_state(opt_state: Any) -> AnchorStatsState:
    found = []
    jax.tree_util.tree_map(lambda x: found.append(x) if isinstance(x, AnchorStatsState) else x,
                           opt_state, is_leaf=lambda x: isinstance(x, AnchorStatsState))
    if len(found) != 1:
        raise ValueError(f"schedule: expected one AnchorStatsState in the optimizer state, "
                         f"found {len(found)}.")
    return found[0]


def _replace_stats(opt_state: Any, stats: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: x._replace(stats=stats) if isinstance(x, AnchorStatsState) else x,
        opt_state, is_leaf=lambda x: isinstance(x, AnchorStatsState))


# ---------------------------------------------------------------------------- schedules
class Schedule:
    """Host side of a schedule method: the mask of every step (one instance per run).

    Args:
      part: the method's partition.
      layer_ids: per transformer layer, the component indices of that layer.
      embed_ids: component indices of the embeddings (empty unless they are components).
      total_steps: the run's steps.
    """

    #: Statistic the method needs in the optimizer state (see :func:`with_stats`).
    stats: ClassVar[str | None] = None

    def __init__(self, method: Any, part: comp_lib.Partition, *, total_steps: int,
                 costs: Any = None):
        self.method, self.part, self.total_steps, self.costs = method, part, total_steps, costs
        layers = part.layers
        kinds = [c.kind for c in part.components]
        self.num_layers = int(layers.max()) + 1 if (layers >= 0).any() else 0
        self.layer_ids = [np.flatnonzero((layers == i) & (np.asarray(kinds) == "layer"))
                          for i in range(self.num_layers)]
        self.embed_ids = np.flatnonzero(np.asarray(kinds) == "embedding")

    def layer_mask(self, active_layers: Any, embeddings: bool = False) -> np.ndarray:
        """The component mask that trains ``active_layers`` (and the embeddings)."""
        mask = np.zeros(len(self.part), np.float32)
        for i in active_layers:
            mask[self.layer_ids[int(i)]] = 1.0
        if embeddings:
            mask[self.embed_ids] = 1.0
        return mask

    def plan(self, step: int, opt_state: Any) -> tuple[np.ndarray, bool, Any]:
        """``(mask, probe, opt_state)`` of the step that starts at ``step`` (0-based).

        ``probe``: the step differentiates every trainable leaf; ``opt_state``: a changed
        optimizer state (statistics reset), else ``None``. Reading statistics waits for the
        device, so schedules do it only at their decision points. Asking twice for one step
        decides once (the second answer has ``opt_state=None``).
        """
        last = getattr(self, "_last", None)
        if last is not None and last[0] == step:
            return last[1], last[2], None
        mask, probe, new_state = self._plan(step, opt_state)
        self._last = (step, mask, probe)
        return mask, probe, new_state

    def _plan(self, step: int, opt_state: Any) -> tuple[np.ndarray, bool, Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    @property
    def frozen_prefix(self) -> int:
        """Number of lowest layers frozen for the rest of the run (0: none; AutoFreeze)."""
        return 0


class _Sampled(Schedule):
    """``n`` layers sampled without replacement every ``interval`` steps (pure in step)."""

    def active_layers(self, step: int) -> np.ndarray:
        m = self.method
        rng = np.random.default_rng([m.seed, step // m.interval])
        n = min(m.n_layers, self.num_layers)
        return np.sort(rng.choice(self.num_layers, n, replace=False))

    def _plan(self, step, opt_state):
        return self.layer_mask(self.active_layers(step)), False, None


class _Rotation(Schedule):
    """BAdam's block order: one layer for ``switch_every`` steps (pure in step)."""

    def block(self, step: int) -> int:
        m, n = self.method, self.num_layers
        j = step // m.switch_every  # blocks trained so far
        if m.order == "ascending":
            return ((m.start_block or 0) + j) % n
        if m.order == "descending":
            start = n - 1 if m.start_block is None else m.start_block
            return (start - j) % n
        perm = np.random.default_rng([m.seed, j // n]).permutation(n)  # one per block epoch
        return int(perm[j % n])

    def _plan(self, step, opt_state):
        return self.layer_mask([self.block(step) % self.num_layers]), False, None


class _AutoFreezeSchedule(Schedule):
    stats = "grad_sum"

    def __init__(self, method, part, *, total_steps, costs=None):
        super().__init__(method, part, total_steps=total_steps, costs=costs)
        m = method
        self.eval_every = m.eval_every or max(1, total_steps // m.num_intervals)
        self.start_layer = 0
        self.prev: list[float] | None = None
        self._l1 = jax.jit(lambda acc: part.reduce(acc, jnp.abs))

    @property
    def frozen_prefix(self) -> int:
        return self.start_layer

    def decide(self, current: np.ndarray) -> None:
        """One evaluation of AutoFreeze on the interval's per-layer L1 gradient norms."""
        current = [float(x) for x in current]
        if self.prev is None:
            self.prev = current
            return
        ratio = [abs(p - c) / p if c > 0 and p > 0 else 0.0
                 for p, c in zip(self.prev, current)]
        threshold = np.percentile(ratio[self.start_layer:], self.method.percentile)
        first = next((k for k, r in enumerate(ratio) if r >= threshold), self.start_layer)
        # Frozen layers stay frozen (the paper's progressive freezing).
        self.start_layer = min(max(self.start_layer, first), self.num_layers - 1)
        self.prev = current

    def mask(self) -> np.ndarray:
        return self.layer_mask(range(self.start_layer, self.num_layers),
                               embeddings=self.start_layer == 0)

    def _plan(self, step, opt_state):
        if step == 0 or step % self.eval_every:
            return self.mask(), False, None
        stats = _stats_state(opt_state).stats
        per_comp = np.asarray(jax.device_get(self._l1(stats)))
        self.decide([per_comp[ids].sum() for ids in self.layer_ids])
        zeros = jax.tree.map(jnp.zeros_like, stats)
        return self.mask(), False, _replace_stats(opt_state, zeros)

    def state_dict(self):
        return {"start_layer": self.start_layer, "prev": self.prev}

    def load_state_dict(self, state):
        self.start_layer, self.prev = int(state["start_layer"]), state["prev"]


class _GreenSchedule(Schedule):
    stats = "importance"

    def __init__(self, method, part, *, total_steps, costs=None):
        super().__init__(method, part, total_steps=total_steps, costs=costs)
        self.t_fp, self.t_dy, self.t_dw, self.order = tensor_costs(costs)
        self.current = np.ones(len(part), np.float32)
        self.selections: list[dict[str, Any]] = []

    def select(self, importance: np.ndarray) -> np.ndarray:
        """GreenTrainer's selection from per-component ``sum(g * dw)``."""
        m = self.method
        imp = -np.asarray(importance, np.float64)[self.order]
        peak = np.max(np.abs(imp))
        imp = imp / peak if peak > 0 else imp
        rho_bp = to_backward_rho(m.rho, self.t_fp, self.t_dy, self.t_dw)
        dy_q, dw_q = quantize(self.t_dy, self.t_dw, m.tq)
        # Output first (GreenTrainer flips the input-to-output order).
        limit = int(rho_bp * np.sum(dy_q + dw_q))
        _, sel = selection_dp(dy_q[::-1], dw_q[::-1], imp[::-1], limit)
        chosen = np.zeros(len(self.part), np.float32)
        chosen[self.order[sel[::-1].astype(bool)]] = 1.0
        return chosen

    def is_probe(self, step: int) -> bool:
        """Selection probes run at step 1 (step 0 has the warm-up's zero learning rate, so
        no weight change to measure), then every ``select_every`` steps."""
        every = self.method.select_every
        return step >= 1 and ((step - 1) % every == 0 if every else step == 1)

    def _plan(self, step, opt_state):
        if self.is_probe(step):  # every tensor takes this step: its weight change counts
            return np.ones(len(self.part), np.float32), True, None
        if self.is_probe(step - 1):
            imp = np.asarray(jax.device_get(_stats_state(opt_state).stats))
            self.current = self.select(imp)
            self.selections.append({"step": step, "mask": self.current.tolist()})
        return self.current, False, None

    def state_dict(self):
        return {"current": self.current.tolist()}

    def load_state_dict(self, state):
        self.current = np.asarray(state["current"], np.float32)


# ---------------------------------------------------------------------------- GreenTrainer DP
def tensor_costs(costs: Any) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """GreenTrainer's per-tensor ``(t_fp, t_dy, t_dw)`` from a :class:`ComponentCosts`.

    Components are ordered input to output (by layer, then index). ``t_dw`` is the
    component's weight-gradient cost; a layer's activation backprop ``dx_l`` is put on the
    *last* component of layer ``l``, so GreenTrainer's cost
    ``sum(maxaccum(m) * t_dy + m * t_dw)`` equals the library's
    ``sum_{l >= lowest active layer} dx_l + sum dw`` for every selection ``m``.

    Returns:
      ``(t_fp, t_dy, t_dw, order)``: the forward (everything every step pays), the costs in
      input-to-output order and that order (component indices).
    """
    layer = np.asarray(costs.layer)
    order = np.lexsort((np.arange(len(layer)), layer))
    t_dw = np.asarray(costs.dw, np.float64)[order]
    t_dy = np.zeros(len(order))
    lay = layer[order]
    for l_idx in range(len(costs.dx)):
        where = np.flatnonzero(lay == l_idx)
        if where.size:
            t_dy[where[-1]] = costs.dx[l_idx]
    return float(costs.fixed), t_dy, t_dw, order


def to_backward_rho(rho: float, t_fp: float, t_dy: np.ndarray, t_dw: np.ndarray) -> float:
    """GreenTrainer's conversion of a budget over the whole step to one over the backward
    (``rho_bp = rho (1 + t_fp / t_bp) - t_fp / t_bp``; ``0.05`` when that is <= 0)."""
    t_bp = float(np.sum(t_dy + t_dw))
    r = rho * (1 + t_fp / t_bp) - t_fp / t_bp
    return r if r > 0 else 0.05


def quantize(t_dy: np.ndarray, t_dw: np.ndarray, tq: int) -> tuple[np.ndarray, np.ndarray]:
    """GreenTrainer's downscaling: costs to integers summing to about ``tq`` (floor)."""
    scale = tq / float(np.sum(t_dy + t_dw))
    return (np.floor(np.asarray(t_dy) * scale).astype(np.int64),
            np.floor(np.asarray(t_dw) * scale).astype(np.int64))


def selection_dp(t_dy: Any, t_dw: Any, importance: Any, limit: int) -> tuple[float, np.ndarray]:
    """GreenTrainer's tensor selection, solved exactly by dynamic programming.

    Tensors are ordered *output first* (as GreenTrainer flips them). Selecting a set ``S``
    with deepest tensor ``d = max(S)`` costs ``sum(t_dy[:d + 1]) + sum(t_dw[S])`` (backprop
    reaches ``d``; weight gradients of ``S``); maximise ``sum(importance[S])`` with cost
    ``<= limit``. For each deepest tensor ``d`` the rest is a 0/1 knapsack over the tensors
    above it (weights ``t_dw``), so one prefix-knapsack table serves every ``d``:
    ``O(N * limit)``. GreenTrainer's ``selection_DP`` uses the same recurrence over
    ``(k, t)`` subproblems; this form is exact (tested against brute force). The empty set
    (value 0) is allowed.

    Args:
      t_dy, t_dw: non-negative integer costs (see :func:`quantize`), one per tensor.
      importance: one value per tensor.
      limit: the integer budget.

    Returns:
      ``(best_value, selection)`` with ``selection`` a ``uint8`` vector.
    """
    dy = np.asarray(t_dy, np.int64)
    dw = np.asarray(t_dw, np.int64)
    imp = np.asarray(importance, np.float64)
    n, limit = len(dw), int(limit)
    if limit < 0:
        return 0.0, np.zeros(n, np.uint8)
    # table[i, t]: best value of a subset of tensors 0..i-1 with sum(t_dw) <= t.
    table = np.zeros((n + 1, limit + 1))
    for i in range(n):
        table[i + 1] = table[i]
        if dw[i] <= limit and imp[i] > 0:
            cand = np.full(limit + 1, -np.inf)
            cand[dw[i]:] = table[i, :limit + 1 - dw[i]] + imp[i]
            table[i + 1] = np.maximum(table[i], cand)
    best, best_d = 0.0, -1
    cum_dy = np.cumsum(dy)
    for d in range(n):
        base = cum_dy[d] + dw[d]
        if base <= limit:
            val = imp[d] + table[d, limit - base]
            if val > best + 1e-12:
                best, best_d = val, d
    sel = np.zeros(n, np.uint8)
    if best_d >= 0:
        sel[best_d] = 1
        t = limit - int(cum_dy[best_d] + dw[best_d])
        for i in range(best_d - 1, -1, -1):  # backtrack the knapsack
            if table[i + 1, t] != table[i, t]:
                sel[i] = 1
                t -= int(dw[i])
    return float(best), sel


def selection_dp_brute_force(t_dy: Any, t_dw: Any, importance: Any,
                             limit: int) -> tuple[float, np.ndarray]:
    """The same problem as :func:`selection_dp` by enumeration (small ``N``; for tests)."""
    dy, dw = np.asarray(t_dy, np.int64), np.asarray(t_dw, np.int64)
    imp = np.asarray(importance, np.float64)
    n = len(dw)
    best, best_sel = 0.0, np.zeros(n, np.uint8)
    for bits in range(1, 2**n):
        sel = np.array([(bits >> i) & 1 for i in range(n)], np.uint8)
        d = int(np.flatnonzero(sel).max())
        cost = dy[:d + 1].sum() + dw[sel.astype(bool)].sum()
        val = imp[sel.astype(bool)].sum()
        if cost <= limit and val > best + 1e-12:
            best, best_sel = float(val), sel
    return best, best_sel


# ---------------------------------------------------------------------------- methods
@dataclasses.dataclass(frozen=True, kw_only=True)
class _Scheduled(methods_lib._Masked):
    """Settings of the schedule methods: a masked method whose mask the host decides.

    Args:
      embeddings: ``'train'`` (always trained), ``'freeze'`` (never) or ``'component'``
        (scheduled with the layers, where the method says how).
      moments: Adam moments of layers that are not selected: ``'keep'`` (frozen, resumed),
        ``'reset'`` (zeroed, as BAdam's state reset on a switch) or ``('decay', rho)``.
    """

    policy: ClassVar[str] = "schedule"
    schedule_class: ClassVar[type[Schedule]] = Schedule

    components: Any = "layers"
    embeddings: str = "freeze"

    def rules(self, num_heads: int, params: Any = None) -> tuple[comp_lib.Rule, ...]:
        head = comp_lib.Rule(parts.HEAD_REGEX, exclude=True)
        emb = {"train": comp_lib.Rule(_EMBED, exclude=True),
               "freeze": comp_lib.Rule(_EMBED, freeze=True),
               "component": comp_lib.Rule(_EMBED, kind="embedding")}[self.embeddings]
        if self.components == "leaves":
            return (head, emb, comp_lib.Rule(r".*"))
        layer = presets.by_layer()[0]
        return (head, emb, layer, comp_lib.Rule(r".*", exclude=True))

    def make_schedule(self, part: comp_lib.Partition, params: Any, *, total_steps: int,
                      num_heads: int, num_layers: int,
                      batch_shape: tuple[int, int] | None) -> Schedule:
        """The host schedule of one run (see :class:`Schedule`)."""
        del params, num_heads, num_layers, batch_shape
        return self.schedule_class(self, part, total_steps=total_steps)

    def build(self, params: Any, *, total_steps: int, num_heads: int, num_layers: int,
              target_ratio: float | None = None,
              batch_shape: tuple[int, int] | None = None) -> methods_lib.Plan:
        """``residual_guided`` whose tracker never refreshes: the host installs the mask."""
        del num_layers, target_ratio, batch_shape
        part = self.partition(params, num_heads)
        if not any(c.kind == "layer" for c in part.components) and self.components == "layers":
            raise ValueError(f"{self.kind} {self.label!r}: the model has no leaves under "
                             "layers/<i>/ to schedule.")
        tx = residual.residual_guided(
            self.base_optimizer(total_steps), part, threshold="median", gamma=0.0, beta=0.0,
            update_every=1, warmup_steps=NEVER, moments=self.moments)
        if self.schedule_class.stats is not None:
            tx = with_stats(tx, self.schedule_class.stats, part)
        return methods_lib.Plan(tx, part, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LISA(_Scheduled):
    """LISA: layerwise importance sampling (Pan et al., NeurIPS 2024; LMFlow's
    ``DynamicLayerActivationCallback``): embeddings and head always trained, ``n_layers``
    layers sampled uniformly without replacement every ``interval`` steps.

    Inactive layers keep their Adam moments (``moments='keep'``: PyTorch's AdamW skips
    parameters without a gradient, state untouched, no weight decay). Adam's bias
    correction here counts global steps, PyTorch's counts the parameter's own updates.

    Args:
      n_layers: layers trained at a time (LMFlow ``lisa_activated_layers``, default 1).
      interval: steps between resamplings (LMFlow ``lisa_interval_steps``, default 20).
    """

    kind: ClassVar[str] = "lisa"
    schedule_class: ClassVar[type[Schedule]] = _Sampled

    embeddings: str = "train"
    n_layers: int = 1
    interval: int = 20

    def __post_init__(self):
        super().__post_init__()
        self._check(_is_int(self.n_layers) and self.n_layers >= 1, "n_layers", "an int >= 1")
        self._check(_is_int(self.interval) and self.interval >= 1, "interval", "an int >= 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomLayers(LISA):
    """``n_layers`` random layers resampled every ``interval`` steps, embeddings frozen
    (the random-k baseline of the layer-selection papers; LISA without its embeddings).

    Args:
      n_layers: layers trained at a time (default 2).
      interval: steps between resamplings (default 20).
    """

    kind: ClassVar[str] = "random_layers"

    embeddings: str = "freeze"
    n_layers: int = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class BAdam(_Scheduled):
    """BAdam: block coordinate descent with Adam (Luo et al., 2024; ``Ledzy/BAdam``
    ``BlockOptimizer``, in LLaMA-Factory): each transformer layer is a block; one block
    trains for ``switch_every`` steps, then the next in ``order``. The embeddings and the
    LM head are not blocks (``include_embedding=False``, ``include_lm_head=False``); a task
    head always trains.

    On a switch BAdam clears the base optimizer's state: ``moments='reset'`` zeroes the
    moments of blocks that are not trained (Adam's bias correction here counts global
    steps, BAdam's restarts at 1).

    Args:
      switch_every: steps per block (BAdam ``switch_block_every``, default 50).
      order: ``'ascending'`` (input layers first), ``'descending'`` (BAdam's default) or
        ``'random'`` (a fresh permutation every pass over the blocks).
      start_block: the first block (``None``: 0 ascending, the top one descending).
    """

    kind: ClassVar[str] = "badam"
    schedule_class: ClassVar[type[Schedule]] = _Rotation

    moments: Any = "reset"
    switch_every: int = 50
    order: str = "descending"
    start_block: int | None = None

    def __post_init__(self):
        super().__post_init__()
        self._check(_is_int(self.switch_every) and self.switch_every >= 1, "switch_every",
                    "an int >= 1")
        self._check(self.order in ("ascending", "descending", "random"), "order",
                    "'ascending', 'descending' or 'random'")
        self._check(self.start_block is None or (_is_int(self.start_block)
                                                 and self.start_block >= 0),
                    "start_block", "None or an int >= 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoFreeze(_Scheduled):
    """AutoFreeze (Liu et al., 2021; ``YuhanLiu11/AutoFreeze``): freezes a growing prefix
    of layers whose gradients stop changing.

    Every ``eval_every`` steps (AutoFreeze: ``num_intervals`` evaluations per run) the
    gradients accumulated over the interval give one L1 norm per layer; from the second
    evaluation on, each layer's relative change ``|prev - cur| / prev`` (0 for frozen
    layers) is compared with the ``percentile`` of the changes of the layers not yet
    frozen, and every layer below the first one at or above it is frozen for good (with
    the embeddings once layer 0 is). The frozen prefix (:attr:`Schedule.frozen_prefix`) is
    what frozen-prefix activation caching reuses. AutoFreeze rebuilds its optimizer when it
    freezes; here the remaining layers keep their moments.

    Args:
      num_intervals: evaluations per run (AutoFreeze ``--num_intervals``, default 10).
      eval_every: steps per interval (``None``: ``total_steps // num_intervals``).
      percentile: percentile of the changes (AutoFreeze ``--percentile``, default 50).
    """

    kind: ClassVar[str] = "autofreeze"
    schedule_class: ClassVar[type[Schedule]] = _AutoFreezeSchedule

    embeddings: str = "component"
    num_intervals: int = 10
    eval_every: int | None = None
    percentile: float = 50.0

    def __post_init__(self):
        super().__post_init__()
        self._check(_is_int(self.num_intervals) and self.num_intervals >= 1, "num_intervals",
                    "an int >= 1")
        self._check(self.eval_every is None or (_is_int(self.eval_every)
                                                and self.eval_every >= 1),
                    "eval_every", "None or an int >= 1")
        self._check(_is_real(self.percentile) and 0 <= self.percentile <= 100, "percentile",
                    "a number in [0, 100]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GreenTrainer(_Scheduled):
    """GreenTrainer (Huang et al., ICLR 2024; ``pittisl/GreenTrainer``): trains the tensors
    worth most loss reduction within ``rho`` of a full step's FLOPs.

    On a selection step every tensor takes one AdamW step (a probe step) and its importance
    is ``-sum(g * dw)`` (gradient times the step's weight change; GreenTrainer takes the
    gradient after the step at restored weights, one extra forward/backward); then
    :func:`selection_dp` picks the tensors under the backprop-depth cost model ``(t_dy,
    t_dw)``, here the library's analytic costs (:func:`rgft_jax.analytic_costs`, needs the
    Trainer's ``batch_shape=``), quantised to ``tq`` units. Every leaf is one component
    (``components='leaves'``), embeddings included.

    Args:
      rho: FLOPs budget as a fraction of a full step (forward included; GreenTrainer's
        ``rho``, 0.5 in most of its experiments).
      select_every: steps between selections (GreenTrainer: every ``interval`` = 2 epochs;
        ``None``: one selection, after the probe at step 1; step 0 trains everything).
      tq: integer resolution of the DP's costs (GreenTrainer ``Tq``, default 1000).
    """

    kind: ClassVar[str] = "green_trainer"
    schedule_class: ClassVar[type[Schedule]] = _GreenSchedule

    components: Any = "leaves"
    embeddings: str = "component"
    rho: float = 0.5
    select_every: int | None = None
    tq: int = 1000

    def __post_init__(self):
        super().__post_init__()
        self._check(self.components == "leaves", "components", "'leaves' (GreenTrainer "
                    "selects tensors)")
        self._check(_is_real(self.rho) and 0 < self.rho <= 1, "rho", "a number in (0, 1]")
        self._check(self.select_every is None or (_is_int(self.select_every)
                                                  and self.select_every >= 2),
                    "select_every", "None or an int >= 2 (a probe step, then a selection)")
        self._check(_is_int(self.tq) and self.tq >= 10, "tq", "an int >= 10")

    def rules(self, num_heads: int, params: Any = None) -> tuple[comp_lib.Rule, ...]:
        head = comp_lib.Rule(parts.HEAD_REGEX, exclude=True)
        return (head, comp_lib.Rule(r".*"))

    def make_schedule(self, part, params, *, total_steps, num_heads, num_layers, batch_shape):
        costs = parts.costs_for(part, params, num_heads, num_layers, batch_shape,
                                f"{self.kind} {self.label!r}")
        return _GreenSchedule(self, part, total_steps=total_steps, costs=costs)


# ---------------------------------------------------------------------------- constructors
def lisa(n_layers: int = 1, interval: int = 20, **kwargs: Any) -> LISA:
    """LISA: embeddings + head + ``n_layers`` layers resampled every ``interval`` steps."""
    return LISA(n_layers=n_layers, interval=interval, **kwargs)


def random_layers(n_layers: int = 2, interval: int = 20, **kwargs: Any) -> RandomLayers:
    """``n_layers`` random layers resampled every ``interval`` steps (embeddings frozen)."""
    return RandomLayers(n_layers=n_layers, interval=interval, **kwargs)


def badam(switch_every: int = 50, order: str = "descending", **kwargs: Any) -> BAdam:
    """BAdam: one layer at a time for ``switch_every`` steps, in ``order``."""
    return BAdam(switch_every=switch_every, order=order, **kwargs)


def autofreeze(percentile: float = 50.0, num_intervals: int = 10, **kwargs: Any) -> AutoFreeze:
    """AutoFreeze: freeze the prefix of layers whose gradient norms stop changing."""
    return AutoFreeze(percentile=percentile, num_intervals=num_intervals, **kwargs)


def green_trainer(rho: float = 0.5, **kwargs: Any) -> GreenTrainer:
    """GreenTrainer: the most important tensors within ``rho`` of a full step's FLOPs."""
    return GreenTrainer(rho=rho, **kwargs)


#: Constructors registered by :mod:`rgft_jax.training._methods` (name -> constructor).
CONSTRUCTORS: dict[str, Callable[..., methods_lib.Method]] = {
    f.__name__: f for f in (lisa, random_layers, badam, autofreeze, green_trainer)}


# ---------------------------------------------------------------------------- DropBP
def sample_drop_flags(key: jax.Array, rates: np.ndarray, target: float) -> jax.Array:
    """One step's dropped branches: each with its rate, then (DropBP's
    ``set_dropped_layers``) the highest-rate kept branches are dropped too until the
    fraction dropped reaches ``target``. ``rates``: ``float[L, 2]``; returns ``bool[L, 2]``."""
    rates = np.asarray(rates, np.float32)
    flat = rates.reshape(-1)
    drop = jax.random.uniform(key, flat.shape) < flat
    need = int(math.ceil(target * flat.size - 1e-9))
    order = np.argsort(-flat, kind="stable")
    kept = ~drop[order]
    missing = jnp.maximum(need - jnp.sum(drop), 0)
    add = kept & (jnp.cumsum(kept) <= missing)
    out = drop[order] | add
    return out[np.argsort(order)].reshape(rates.shape)


def allocate_drop_rates(sensitivities: Any, flops: Any, target: float,
                        min_rate: float = 0.0) -> np.ndarray:
    """DropBP's sensitivity-based drop rates: start every branch at ``min_rate`` and raise
    the least sensitive branch's rate by 0.1 (up to 0.9) until the expected backward FLOPs
    ``sum((1 - p) * flops)`` reach ``(1 - target) * sum(flops)``."""
    c = np.asarray(sensitivities, np.float64).reshape(-1)
    f = np.asarray(flops, np.float64).reshape(-1)
    p = np.full(c.shape, float(min_rate))
    goal = (1.0 - target) * f.sum()
    spent = ((1.0 - p) * f).sum()
    order = list(np.argsort(c, kind="stable"))
    while spent > goal + 1e-9 and order:
        i = order[0]
        step = min(0.1, 0.9 - p[i])
        p[i] += step
        spent -= f[i] * step
        if p[i] >= 0.9 - 1e-12:
            order.pop(0)
    return np.round(p, 6).reshape(np.shape(sensitivities))


def dropbp_sensitivities(model: Any, batch: dict[str, Any], num_layers: int,
                         task: str = "classification") -> np.ndarray:
    """DropBP's per-branch sensitivity on one batch: ``sum over tensors of
    (|g| - |g_j|)^2`` with ``g`` the gradient and ``g_j`` the gradient with branch ``j``'s
    backward dropped (gradient norms per tensor, DropBP's ``gradnorm=True``); ``[L, 2]``."""
    from flax import nnx

    from rgft_jax.models import _dropbp
    from rgft_jax.training._step import forward, loss_and_stats

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch = {k: jnp.asarray(v) for k, v in batch.items()}

    @jax.jit
    def norms(p, flags):
        def loss(p):
            with _dropbp.drop_backward(flags):
                logits = forward(nnx.merge(graphdef, p, rest), batch, task, True, None)
            return loss_and_stats(logits, batch, task)[0]

        return jnp.stack([jnp.linalg.norm(g) for g in jax.tree.leaves(jax.grad(loss)(p))])

    base = norms(params, jnp.zeros((num_layers, 2), bool))
    out = np.zeros((num_layers, 2))
    for i in range(num_layers):
        for b in range(2):
            flags = jnp.zeros((num_layers, 2), bool).at[i, b].set(True)
            out[i, b] = float(jnp.sum((base - norms(params, flags)) ** 2))
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class DropBP(methods_lib.Method):
    """DropBP (Woo et al., NeurIPS 2024): every step drops the *backward* pass of random
    residual branches (attention and MLP of each layer; the forward is unchanged), so their
    weights get no gradient and their backward is not computed.

    Each step draws the dropped branches on the device from ``rates`` (one per layer and
    branch) and tops them up to ``drop_rate`` of all branches (DropBP's
    ``set_dropped_layers``); the choice is a ``lax.cond`` per branch, so one compiled step
    serves every pattern. The saving is at run time (step time): XLA's static FLOPs count of
    a conditional does not show it. The paper's sensitivity-based rates come from
    :func:`dropbp_sensitivities` on one batch and :func:`allocate_drop_rates`; pass them as
    ``rates=`` (default: ``drop_rate`` everywhere). Needs a model whose layers call
    :func:`rgft_jax.models._dropbp.branch` (BERT, GPT-2, Llama).

    Args:
      drop_rate: target fraction of dropped branches (DropBP's ``p``, 0.5 in its paper).
      rates: per-branch rates, ``[L][2]`` nested sequences (attention, MLP), or ``None``.
    """

    kind: ClassVar[str] = "dropbp"

    drop_rate: float = 0.5
    rates: Any = None

    def __post_init__(self):
        super().__post_init__()
        self._check(_is_real(self.drop_rate) and 0 <= self.drop_rate < 1, "drop_rate",
                    "a number in [0, 1)")
        if self.rates is not None:
            r = np.asarray(self.rates, np.float64)
            self._check(r.ndim == 2 and r.shape[1] == 2 and bool(np.all((r >= 0) & (r <= 1))),
                        "rates", "None or [num_layers][2] numbers in [0, 1]")
            object.__setattr__(self, "rates", tuple(tuple(float(x) for x in row) for row in r))

    def backward_drop_rates(self, num_layers: int) -> np.ndarray:
        """``float32[L, 2]``: each branch's drop rate."""
        if self.rates is None:
            return np.full((num_layers, 2), self.drop_rate, np.float32)
        r = np.asarray(self.rates, np.float32)
        if r.shape[0] != num_layers:
            raise ValueError(f"{self.kind} {self.label!r}: rates has {r.shape[0]} layers, the "
                             f"model {num_layers}.")
        return r


def dropbp(drop_rate: float = 0.5, **kwargs: Any) -> DropBP:
    """DropBP: drop the backward of random residual branches (``drop_rate`` of them)."""
    return DropBP(drop_rate=drop_rate, **kwargs)


CONSTRUCTORS["dropbp"] = dropbp
for _name, _ctor in CONSTRUCTORS.items():
    if _name not in methods_lib.names():
        methods_lib.register(_name, _ctor)
del _name, _ctor
