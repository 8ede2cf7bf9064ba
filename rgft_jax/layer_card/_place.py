# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Placements: which layers get adapters, read off a :class:`~rgft_jax.layer_card.LayerCard`.

Each layer's predicted gain is :math:`g_\ell = \tfrac12 \mathrm{Res}_\ell^2` (the loss a local
quadratic model says an adapter there removes; Theorem 3.3 of seed 002). Under coupling, the
joint gain of a set :math:`S` is not additive: with whitened blocks the quadratic model gives

.. math::

  \mathrm{gain}(S) = \tfrac12\, r_S^\top (I + P_S)^{-1} r_S,

with :math:`r_S` the residual norms of the set and :math:`P_S` the pairwise couplings
:math:`\rho_{\ell m}` between its layers (aligned residual directions: the pessimistic case).
Positive coupling lowers the joint gain, so spreading the adapted layers apart pays
(Theorem 5.2). Objectives:

* ``max_quality``: the set of ``k`` layers with the largest additive gain
  :math:`\sum_{\ell \in S} g_\ell` within ``budget`` (a FLOPs fraction of full fine-tuning);
  ``k=None``: of any size (the budget decides how many);
* ``min_cost``: the cheapest set of at most ``k`` layers whose additive gain reaches
  ``target`` of the best ``k``-layer gain (ties: higher gain);
* ``spread``: the set of ``k`` layers with the largest coupled gain
  :math:`\mathrm{gain}(S)` within ``budget``.

Sets are enumerated exactly while there are at most ``max_exact`` of them, else chosen
greedily and the result says which: the best of (a) one layer at a time by the best marginal
objective and (b) for every lowest layer, the layers above it added by marginal objective per
marginal cost while they fit (a set's cost is mostly its lowest layer's backprop).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import numpy as np

from rgft_jax.layer_card._card import LayerCard

__all__ = ["OBJECTIVES", "Placement", "coupled_gain", "place"]

#: The placement objectives :func:`place` accepts.
OBJECTIVES = ("max_quality", "min_cost", "spread")


class Placement(NamedTuple):
    """A chosen set of layers and what the card predicts for it."""

    layers: tuple[int, ...]  # chosen layer indices, ascending
    objective: str
    gain: float  # additive predicted gain sum(Res^2 / 2)
    coupled_gain: float  # 0.5 r^T (I + P)^{-1} r
    cost: float  # step FLOPs fraction of full fine-tuning (cost kind below)
    cost_kind: str  # 'lora' or 'train'
    exact: bool  # True: every candidate set was scored
    hit_rate: float = 0.0  # the activation-cache hit rate ``cost`` assumes


def coupled_gain(card: LayerCard, layers: Any) -> float:
    """``0.5 r_S^T (I + P_S)^{-1} r_S`` for the set ``layers`` (see the module docstring)."""
    idx = [card._index(layer) for layer in layers]
    if not idx:
        return 0.0
    r = card.res[idx]
    p = np.asarray(card.rho, np.float64)[np.ix_(idx, idx)].copy()
    np.fill_diagonal(p, 0.0)
    m = np.eye(len(idx)) + np.clip(p, 0.0, 0.999)
    return float(0.5 * r @ np.linalg.solve(m, r))


def place(
    card: LayerCard,
    objective: str = "max_quality",
    *,
    k: int | None = 1,
    budget: float | None = None,
    cost: str = "lora",
    target: float = 0.9,
    max_exact: int = 200_000,
    hit_rate: float = 0.0,
) -> Placement:
    """Chooses the layers to adapt.

    Args:
      card: the :class:`LayerCard`.
      objective: one of :data:`OBJECTIVES`.
      k: number of layers (``min_cost``: at most ``k``); ``None``: any number (with a
        ``budget``, the best set that fits, e.g. which layers to train at 0.4 of full FT).
      budget: optional cap on the step's FLOPs fraction (``card.set_cost(S, cost)``).
      cost: ``'lora'`` (adapters on the layer) or ``'train'`` (train the layer's weights).
      target: ``min_cost``: fraction of the best ``k``-layer additive gain to reach.
      max_exact: enumerate every set while there are at most this many.
      hit_rate: expected activation-cache hit rate the costs assume (``set_cost``'s): steps
        that read the frozen prefix below the set from the cache do not run its forward.

    Returns:
      A :class:`Placement`.

    Raises:
      ValueError: on bad arguments, or when no set of the size fits the budget (the message
        gives the cheapest set's cost).
    """
    n = len(card.layers)
    if objective not in OBJECTIVES:
        raise ValueError(f"place: objective={objective!r}; allowed: {', '.join(OBJECTIVES)}.")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n):
        raise ValueError(f"place: k={k!r} must be an int in [1, {n}] or None (the card has "
                         f"{n} layers).")
    if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget):
        raise ValueError(f"place: budget={budget!r} must be a FLOPs fraction > 0, or None.")
    if cost not in ("lora", "train"):
        raise ValueError(f"place: cost={cost!r}; allowed: 'lora', 'train'.")
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ValueError(f"place: target={target!r} must be in (0, 1].")
    if objective == "spread" and not card.has_coupling:
        raise ValueError("place: objective='spread' needs the card's coupling rho, which this "
                         "card did not measure (layer_card.compute(..., coupling=False)); "
                         "allowed: 'max_quality' or 'min_cost', or a card computed with "
                         "coupling=True.")
    card.set_cost((), cost, hit_rate=hit_rate)  # validates hit_rate against the card
    any_size = k is None
    k = n if any_size else k
    layers = card.layers
    gain = card.gain

    def set_cost(s):
        return card.set_cost(s, cost, hit_rate=hit_rate)

    def fits(s):
        return budget is None or set_cost(s) <= budget + 1e-12

    def additive(s):
        return float(sum(gain[card._index(layer)] for layer in s))

    sizes = range(1, k + 1) if objective == "min_cost" or any_size else [k]
    exact = sum(math.comb(n, size) for size in sizes) <= max_exact

    def candidates():
        if exact:
            for size in sizes:
                yield from itertools.combinations(layers, size)
            return
        # Greedy: grow one layer at a time by the best marginal score, yield each prefix.
        chosen: list[int] = []
        for _ in range(k):
            rest = [layer for layer in layers if layer not in chosen]
            scored = [(score(tuple(sorted(chosen + [layer]))), layer) for layer in rest
                      if fits(tuple(sorted(chosen + [layer])))]
            if not scored:
                break
            chosen.append(max(scored)[1])
            yield tuple(sorted(chosen))
        # By score alone the greedy takes the one layer of largest Res that fits, which on a
        # deep model can be a low layer that spends the whole budget on its backprop (SmolLM2
        # at 0.4: layer 21 alone, gain 125, against 386 for the top eight). A set's cost is
        # set by its lowest layer (the backprop and the cached forward) plus each layer's
        # weight gradients, so also grow a set from every lowest layer, adding the layers
        # above it by marginal score per marginal cost while they fit.
        for low in layers:
            chosen = [low]
            if not fits(tuple(chosen)):
                continue
            yield (low,)
            while len(chosen) < k:
                base_s, base_c = score(tuple(sorted(chosen))), set_cost(tuple(sorted(chosen)))
                scored = []
                for layer in layers:
                    s = tuple(sorted(chosen + [layer]))
                    if layer > low and layer not in chosen and fits(s):
                        scored.append(((score(s) - base_s) / max(set_cost(s) - base_c, 1e-12),
                                       layer))
                if not scored:
                    break
                chosen.append(max(scored)[1])
                yield tuple(sorted(chosen))

    def score(s):
        return coupled_gain(card, s) if objective == "spread" else additive(s)

    feasible = [s for s in candidates() if fits(s)]
    if objective != "min_cost" and not any_size:
        feasible = [s for s in feasible if len(s) == k]
    if not feasible:
        size = 1 if any_size else k
        cheapest = min(itertools.combinations(layers, size) if math.comb(n, size) <= max_exact
                       else [tuple(layers[-size:])], key=set_cost)
        raise ValueError(
            f"place: no set of {'any number of' if any_size else k} layer(s) fits "
            f"budget={budget}; the cheapest {list(cheapest)} costs {set_cost(cheapest):.3f} "
            "of a full step.")
    if objective == "min_cost":
        best_k = max(additive(s) for s in itertools.combinations(layers, k)) if (
            math.comb(n, k) <= max_exact) else max(additive(s) for s in feasible)
        good = [s for s in feasible if additive(s) >= target * best_k - 1e-12]
        if not good:
            raise ValueError(f"place: no set within budget={budget} reaches target={target} of "
                             f"the best {k}-layer gain {best_k:.4g}.")
        chosen = min(good, key=lambda s: (set_cost(s), -additive(s)))
    else:
        chosen = max(feasible, key=lambda s: (score(s), -set_cost(s)))
    chosen = tuple(sorted(int(c) for c in chosen))
    return Placement(chosen, objective, additive(chosen), coupled_gain(card, chosen),
                     set_cost(chosen), cost, exact, float(hit_rate))
