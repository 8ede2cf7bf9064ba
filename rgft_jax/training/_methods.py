# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Fine-tuning methods as configurations of one training loop.

A :class:`Method` says which leaves are differentiated (a static regex), which optimizer
runs on the params tree, and whether it uses RGFT's probe/sparse steps. Full fine-tuning,
RGFT (wrapper and chain forms), LoRA, BitFit, random and magnitude masks at a matched update
ratio, and the "train the top-k layers" heuristic are all instances, so every comparison
runs the same step, data order, evaluation and FLOPs counter.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgft_jax._src import components as comp_lib
from rgft_jax._src import presets, residual
from rgft_jax._src.budget import ComponentCosts, analytic_costs, budget_threshold

__all__ = ["METHOD_KINDS", "Method", "build_optimizer", "component_rules", "trainable_regex"]

METHOD_KINDS = (
    "full", "rgft", "rgft_chain", "lora", "bitfit", "random_mask", "magnitude_mask", "top_layers",
    "modules",
)
#: Kinds whose component mask is fixed for the whole run.
FIXED_MASK_KINDS = ("random_mask", "magnitude_mask", "modules")
#: Task heads are trained by every method and never masked: they start from scratch.
HEAD_REGEX = r"^(?:classifier|head|pooler)/"
_COMPONENTS = ("heads", "leaves", "layers")
#: Method.embeddings -> the ``embeddings=`` of :func:`rgft_jax.components.transformer`.
EMBEDDING_POLICIES = {"component": "whole", "train": "exclude", "freeze": "freeze"}


@dataclasses.dataclass(frozen=True)
class Method:
    """One fine-tuning method; validated when built.

    Args:
      kind: one of :data:`METHOD_KINDS`.
      name: label in reports (default: ``kind``).
      learning_rate: peak learning rate of AdamW (linear warm-up, cosine decay).
      weight_decay: AdamW's decoupled weight decay.
      warmup_ratio: fraction of the steps with linear LR warm-up.
      components: RGFT / mask granularity: ``'heads'`` (heads + 32-neuron groups + whole
        leaves), ``'leaves'`` (every matrix one component), ``'layers'`` or a rule tuple.
      threshold, gamma, beta, alpha, update_every, warmup_steps: RGFT knobs (see
        :func:`rgft_jax.residual_guided`). ``threshold=('budget', f)`` picks, at every
        refresh, the mask that captures the most residual mass within ``f`` of the full
        step's FLOPs (:func:`rgft_jax.budget_threshold` over :func:`rgft_jax.analytic_costs`
        of the model and batch shape; the step's real FLOPs are measured, not assumed).
      sparse: RGFT and masks: probe steps (full gradient) on every mask refresh (the first
        at ``warmup_steps``, then every ``update_every`` steps) and while every component is
        active, and sparse steps that differentiate only leaves holding an active component.
      update_ratio: random / magnitude masks: fraction of the maskable parameters to train.
      lora_rank, lora_alpha, lora_targets: LoRA adapters (module-path regexes).
      top_layers: ``top_layers`` heuristic: how many of the highest layers to train.
      mask: ``modules``: the components to train (a bool per component of ``components``),
        e.g. ``rgft_jax.dsca.module_mask(library, [0, 2])`` to train DSCA modules 0 and 2.
      seed: seed of the random mask and LoRA initialisation.
      embeddings: with ``components='heads'``: embedding tables as whole-leaf components
        (``'component'``: trained when the mask picks them), always trained (``'train'``) or
        never trained (``'freeze'``: not differentiated, no optimizer state in compact mode).
      moments: RGFT / masks: Adam moments of masked components: ``'keep'`` (default),
        ``'reset'`` or ``('decay', rho)`` (see :func:`rgft_jax.residual_guided`).
      capacity: RGFT / masks: compact optimizer state holding this fraction of the
        partitioned entries (``None``: dense state).
    """

    kind: str
    name: str | None = None
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    components: Any = "heads"
    threshold: Any = "median"
    gamma: float = 0.0
    beta: float = 0.5
    alpha: float = 0.9
    update_every: int = 25
    warmup_steps: int = 0
    sparse: bool = True
    update_ratio: float = 0.5
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = (r"attention/query$", r"attention/value$")
    top_layers: int = 2
    mask: tuple[bool, ...] | None = None
    seed: int = 0
    embeddings: str = "component"
    moments: Any = None
    capacity: float | None = None

    def __post_init__(self):
        if self.kind not in METHOD_KINDS:
            raise ValueError(f"Method: kind={self.kind!r}; allowed: {', '.join(METHOD_KINDS)}.")
        if not (isinstance(self.learning_rate, (int, float)) and not isinstance(
                self.learning_rate, bool) and self.learning_rate > 0):
            raise ValueError(f"Method: learning_rate={self.learning_rate!r} must be > 0.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"Method: weight_decay={self.weight_decay!r} must be >= 0.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"Method: warmup_ratio={self.warmup_ratio!r} must be in [0, 1).")
        if isinstance(self.components, str):
            if self.components not in _COMPONENTS:
                raise ValueError(
                    f"Method: components={self.components!r}; allowed: {_COMPONENTS} or rules.")
        elif not (isinstance(self.components, (tuple, list)) and self.components and all(
                isinstance(r, comp_lib.Rule) for r in self.components)):
            raise ValueError(f"Method: components={self.components!r}; allowed: {_COMPONENTS} "
                             "or a non-empty tuple of rgft_jax.Rule.")
        if self.mask is not None and self.kind != "modules":
            raise ValueError(f"Method(kind={self.kind!r}): mask= is only for kind='modules'.")
        if not isinstance(self.update_every, int) or isinstance(self.update_every, bool) or (
                self.update_every < 1):
            raise ValueError(f"Method: update_every={self.update_every!r} must be an int >= 1.")
        if not 0 < self.update_ratio <= 1:
            raise ValueError(f"Method: update_ratio={self.update_ratio!r} must be in (0, 1].")
        if not isinstance(self.top_layers, int) or self.top_layers < 1:
            raise ValueError(f"Method: top_layers={self.top_layers!r} must be an int >= 1.")
        if self.kind == "modules" and (self.mask is None or not any(self.mask)):
            raise ValueError(
                f"Method(kind='modules'): mask={self.mask!r} must select at least one component.")
        if self.mask is not None:
            object.__setattr__(self, "mask", tuple(bool(m) for m in self.mask))
        if self.embeddings not in EMBEDDING_POLICIES:
            raise ValueError(f"Method: embeddings={self.embeddings!r}; allowed: "
                             f"{', '.join(EMBEDDING_POLICIES)}.")
        if (self.moments is not None or self.capacity is not None) and self.kind not in (
                "rgft", *FIXED_MASK_KINDS):
            raise ValueError(f"Method(kind={self.kind!r}): moments= and capacity= are for "
                             f"kinds rgft, {', '.join(FIXED_MASK_KINDS)}.")
        residual._check_moments(self.moments, self.capacity)
        if self.kind in ("rgft", "rgft_chain"):
            # Validate the RGFT knobs now, not at the first step.
            budget = self.budget
            if budget is not None and not (
                    isinstance(budget, (int, float)) and not isinstance(budget, bool)
                    and 0 < budget <= 1):
                raise ValueError(f"Method: threshold=('budget', {budget!r}): the fraction of the "
                                 "full step's FLOPs must be in (0, 1].")
            residual.residual_mask(
                alpha=self.alpha, threshold="median" if budget is not None else self.threshold,
                gamma=self.gamma, beta=self.beta, update_every=self.update_every,
                warmup_steps=self.warmup_steps)

    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def budget(self) -> float | None:
        """The FLOPs fraction of a ``threshold=('budget', f)`` (``None`` otherwise)."""
        th = self.threshold
        if isinstance(th, (tuple, list)) and len(th) == 2 and th[0] == "budget":
            return th[1]
        return None

    @property
    def uses_mask(self) -> bool:
        return self.kind in ("rgft", "rgft_chain", *FIXED_MASK_KINDS)

    @property
    def uses_sparse_steps(self) -> bool:
        return self.sparse and self.kind in ("rgft", *FIXED_MASK_KINDS)


def neuron_width(params: Any, preferred: int = 32) -> int | None:
    """The largest width <= ``preferred`` that divides the MLP width found in ``params``."""
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if re.search(r"mlp/(?:up|gate)(?:_proj)?/kernel$|intermediate/dense/kernel$",
                     comp_lib.key_path_to_str(path)):
            f = x.shape[-1]
            return max(w for w in range(1, preferred + 1) if f % w == 0)
    return None


def component_rules(
    method: Method, num_heads: int, params: Any = None
) -> tuple[comp_lib.Rule, ...]:
    """The component rules of ``method``; task heads are always excluded (always trained).

    ``'heads'`` uses 32-neuron groups, or the largest smaller width that divides the MLP.
    """
    head = (comp_lib.Rule(HEAD_REGEX, exclude=True),)
    if not isinstance(method.components, str):
        return head + tuple(method.components)
    if method.components == "heads":
        width = 32 if params is None else neuron_width(params)
        return head + presets.transformer(
            num_heads, neuron_width=width, embeddings=EMBEDDING_POLICIES[method.embeddings])
    if method.components == "layers":
        return head + presets.by_layer()
    return head


def trainable_regex(method: Method, num_layers: int) -> str | None:
    """Regex of the differentiated leaves (``None``: all of them)."""
    from rgft_jax.adapters import BITFIT_TRAINABLE, LORA_TRAINABLE

    if method.kind == "lora":
        return LORA_TRAINABLE
    if method.kind == "bitfit":
        return BITFIT_TRAINABLE
    if method.kind == "top_layers":
        k = min(method.top_layers, num_layers)
        top = "|".join(str(i) for i in range(num_layers - k, num_layers))
        return rf"(?:(?:^|/)layers/(?:{top})/|final_norm/|{HEAD_REGEX[1:]})"
    return None


def schedule(method: Method, total_steps: int) -> optax.Schedule:
    warmup = int(round(method.warmup_ratio * total_steps))
    return optax.schedules.warmup_cosine_decay_schedule(
        0.0, method.learning_rate, max(warmup, 1), max(total_steps, warmup + 1),
        end_value=0.1 * method.learning_rate)


def fixed_mask(method: Method, part: comp_lib.Partition, params: Any,
               target_ratio: float | None = None) -> np.ndarray:
    """Boolean ``[C]`` mask of a random / magnitude baseline at ``update_ratio`` of params.

    Components are taken in a random order (``random_mask``) or by decreasing mean absolute
    weight (``magnitude_mask``) until their parameters reach the target fraction of all
    maskable parameters.
    """
    if method.kind == "modules":
        if len(method.mask) != len(part):
            raise ValueError(
                f"Method(kind='modules'): mask has {len(method.mask)} entries but the "
                f"partition has {len(part)} components.")
        return np.asarray(method.mask, bool)
    ratio = method.update_ratio if target_ratio is None else target_ratio
    sizes = part.sizes.astype(np.float64)
    if method.kind == "random_mask":
        order = np.random.default_rng(method.seed).permutation(len(part))
    else:
        mean_abs = np.asarray(part.reduce(params, jnp.abs)) / np.maximum(sizes, 1)
        order = np.argsort(-mean_abs, kind="stable")
    budget = ratio * sizes.sum()
    mask = np.zeros(len(part), bool)
    used = 0.0
    for i in order:
        if used >= budget:
            break
        mask[i] = True
        used += sizes[i]
    return mask


def build_optimizer(
    method: Method,
    params: Any,
    *,
    total_steps: int,
    num_heads: int,
    num_layers: int,
    target_ratio: float | None = None,
    batch_shape: tuple[int, int] | None = None,
) -> tuple[optax.GradientTransformationExtraArgs, comp_lib.Partition | None, str | None]:
    """The optimizer of ``method`` over the whole params tree.

    Returns:
      ``(tx, partition, trainable)``: the transformation, the component partition (``None``
      for methods without a mask) and the trainable-leaf regex (``None``: all leaves).
    """
    base = optax.adamw(schedule(method, total_steps), weight_decay=method.weight_decay)
    trainable = trainable_regex(method, num_layers)
    if trainable is not None:
        rx = re.compile(trainable)
        flat, _ = jax.tree_util.tree_flatten_with_path(params)
        labels_flat = [
            "train" if rx.search(comp_lib.key_path_to_str(p)) else "frozen" for p, _ in flat
        ]
        if "train" not in labels_flat:
            raise ValueError(
                f"Method {method.label!r}: its trainable regex {trainable!r} matches no leaf."
            )
        labels = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), labels_flat)
        tx = optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)
        return optax.with_extra_args_support(tx), None, trainable
    if not method.uses_mask:
        return optax.with_extra_args_support(base), None, None
    part = comp_lib.Partition.build(params, component_rules(method, num_heads, params))
    threshold = method.threshold
    if method.budget is not None:
        threshold = budget_threshold(
            costs_for(part, params, num_heads, num_layers, batch_shape, method), method.budget)
    knobs = dict(alpha=method.alpha, threshold=threshold, gamma=method.gamma,
                 beta=method.beta, update_every=method.update_every,
                 warmup_steps=method.warmup_steps)
    state = dict(moments=method.moments, capacity=method.capacity)
    if method.kind == "rgft":
        return residual.residual_guided(base, part, **knobs, **state), part, None
    if method.kind == "rgft_chain":
        return optax.chain(residual.residual_mask(part, **knobs), base), part, None
    mask = jnp.asarray(fixed_mask(method, part, params, target_ratio))
    tx = residual.residual_guided(
        base, part, threshold=lambda r: mask, gamma=0.0, beta=0.0, update_every=1, **state)
    return tx, part, None


def costs_for(
    part: comp_lib.Partition, params: Any, num_heads: int, num_layers: int,
    batch_shape: tuple[int, int] | None, method: Method,
) -> ComponentCosts:
    """Analytic per-component FLOPs of ``part`` for batches of ``batch_shape`` tokens."""
    if batch_shape is None:
        raise ValueError(
            f"Method {method.label!r}: threshold=('budget', {method.budget}) needs the batch "
            "shape for its cost model: pass batch_shape=(batch, seq_len) to the Trainer.")
    hidden = None
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if re.search(r"attention/(?:self/)?query/kernel$", comp_lib.key_path_to_str(path)):
            hidden = x.shape[0]
            break
    if hidden is None:
        raise ValueError(f"Method {method.label!r}: no attention/query/kernel leaf to read the "
                         "hidden size from; budget thresholds need a transformer.")
    batch, seq_len = batch_shape
    return analytic_costs(part, tokens=batch * seq_len, seq_len=seq_len, batch=batch,
                          num_layers=num_layers, hidden=hidden, num_heads=num_heads)


def trainable_pattern(params: Any, trainable: str | None) -> tuple[bool, ...]:
    """Per-leaf flags of the leaves matching ``trainable`` (all when ``None``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    if trainable is None:
        return (True,) * len(flat)
    rx = re.compile(trainable)
    return tuple(bool(rx.search(comp_lib.key_path_to_str(p))) for p, _ in flat)


def sparse_pattern(
    part: comp_lib.Partition, mask: np.ndarray, params: Any | None = None,
    group_grads: bool = True, levels: int = 4,
) -> tuple[bool | int, ...]:
    """What a sparse step differentiates, per leaf.

    ``False``: no active component (the leaf is frozen, XLA skips its weight gradient and,
    below the lowest differentiated leaf, all backprop). ``True``: dense gradient. An int
    ``K``: a matrix split into ``G`` groups of which at most ``K`` are active: weight
    gradients for ``K`` groups only (see
    :func:`rgft_jax.ops.group_sparse_tensordot`). ``K`` is the active count
    rounded up to a multiple of ``ceil(G / levels)``, so masks that differ a little share one
    compiled step; the rounding's extra groups are computed and then masked, and XLA's FLOPs
    count them (nothing masked-but-computed is counted as saved). Excluded leaves (task
    heads) are always ``True``.
    """
    mask = np.asarray(mask)
    shapes = None if params is None else [x.shape for x in jax.tree_util.tree_leaves(params)]
    out: list[bool | int] = []
    for i, s in enumerate(part.leaves):
        if s.n_groups == 0:
            out.append(not s.frozen)
            continue
        k = int(np.sum(mask[list(s.component_ids)] > 0))
        ndim = len(s.shape if shapes is None else shapes[i])
        if k == 0:
            out.append(False)
        elif group_grads and s.axis is not None and 0 < k < s.n_groups and ndim >= 2:
            q = -(-s.n_groups // levels)
            k = min(s.n_groups, -(-k // q) * q)
            out.append(k if k < s.n_groups else True)
        else:
            out.append(True)
    return tuple(out)


def count_params(
    params: Any, pattern: tuple[bool | int, ...] | None = None,
    part: comp_lib.Partition | None = None,
) -> float:
    """Parameters a step differentiates (an int entry ``K`` counts ``K / G`` of its leaf)."""
    leaves = jax.tree_util.tree_leaves(params)
    if pattern is None:
        pattern = (True,) * len(leaves)
    total = 0.0
    for i, (x, t) in enumerate(zip(leaves, pattern)):
        if t is False:
            continue
        size = math.prod(x.shape)
        if not isinstance(t, bool) and part is not None:
            size = size * t / part.leaves[i].n_groups
        total += size
    return total
