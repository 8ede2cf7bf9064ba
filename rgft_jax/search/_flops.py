# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""MFTC's search under a FLOPs budget that knows backprop depth.

A step's FLOPs are not additive over nodes (:class:`rgft_jax.ComponentCosts`): besides each
trained component's weight gradient :math:`\mathrm{dw}_i` it pays the backward through every
layer from the lowest trained one up, :math:`\mathrm{dx}_{\ge m}`, and that shared term is
what makes a low node expensive. :func:`solve_flops` is exact about it: for every possible
lowest layer :math:`d` it forbids every candidate that would train below :math:`d`, pays
:math:`\mathrm{fixed} + \mathrm{dx}_{\ge d}` up front and solves the remaining additive
problem with :func:`rgft_jax.search.solve`; the best of these is the answer (a configuration
whose lowest layer is :math:`d^*` is costed exactly in sub-problem :math:`d^*` and over-costed
in every lower one, so nothing feasible is lost and nothing infeasible is admitted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from rgft_jax._src import components as comp_lib
from rgft_jax._src.budget import ComponentCosts
from rgft_jax.search import _space
from rgft_jax.search._solve import SearchResult, solve

__all__ = ["NodeCosts", "node_costs", "solve_flops"]


class NodeCosts(NamedTuple):
    """FLOPs of one training step per (node, candidate), from :func:`node_costs`."""

    dw: np.ndarray  # float64 [m, n]: weight-gradient FLOPs of what candidate j trains at node i
    lowest: np.ndarray  # int64 [m, n]: the lowest layer it trains (L: none, e.g. 'off')
    tail: np.ndarray  # float64 [L + 1]: fixed + backprop FLOPs when layer d is the lowest
    full: float  # FLOPs of a full fine-tuning step

    def step_cost(self, choice: Any) -> float:
        """FLOPs of one step of configuration ``choice`` (a candidate index per node)."""
        c = np.asarray(choice, np.int64)
        rows = np.arange(self.dw.shape[0])
        lowest = int(self.lowest[rows, c].min()) if c.size else len(self.tail) - 1
        return float(self.tail[lowest] + self.dw[rows, c].sum())


def node_costs(part: comp_lib.Partition, costs: ComponentCosts,
               nodes: Sequence[_space.Node], candidates: Sequence[str], *,
               lora_rank: int | None = None) -> NodeCosts:
    """Per (node, candidate) FLOPs from a model's :class:`~rgft_jax.ComponentCosts`.

    Args:
      part: the partition ``costs`` is over. With LoRA candidates: of the model carrying
        rank-``lora_rank`` adapters on every node's matrices (a rank-``r`` candidate's
        adapter FLOPs are ``r / lora_rank`` of those; the adapters' forward pass, in
        ``costs.fixed``, is counted for every node: a slight over-estimate).
      costs: the step's costs (e.g. ``costs.with_cache(hit_rate)`` for the expected cost
        with the activation cache).
      nodes: the search space's nodes (built on a partition with the same component names).
      candidates: candidate names, ``'off'`` first.
      lora_rank: the adapters' rank in ``part`` (needed with LoRA candidates).

    Returns:
      A :class:`NodeCosts`.
    """
    cands = _space.check_candidates(candidates)
    if not isinstance(costs, ComponentCosts):
        raise TypeError(f"node_costs: costs must be ComponentCosts, got {type(costs).__name__}.")
    if costs.num_components != len(part):
        raise ValueError(f"node_costs: costs has {costs.num_components} components, part has "
                         f"{len(part)}; pass the costs of that partition.")
    kinds = [_space.candidate_kind(c) for c in cands]
    if any(k == "lora" for k, _ in kinds) and not (
            isinstance(lora_rank, int) and not isinstance(lora_rank, bool) and lora_rank > 0):
        raise ValueError(f"node_costs: lora_rank={lora_rank!r}; allowed: the adapters' rank in "
                         "part (an int > 0) when candidates include LoRA.")
    n_layers = costs.num_layers
    nodes = tuple(nodes)
    dw = np.zeros((len(nodes), len(cands)))
    lowest = np.full((len(nodes), len(cands)), n_layers, np.int64)
    for i, node in enumerate(nodes):
        for j, (kind, r) in enumerate(kinds):
            if kind == "off":
                continue
            if kind == "sparse":
                ids = _space.component_indices(part, node.components, "node_costs")
                scale = 1.0
            else:
                ids = _space.lora_component_indices(part, node.matrices)
                if not ids:
                    raise ValueError(f"node_costs: node {node.name!r} has no adapters in part; "
                                     "pass the partition of the model carrying them.")
                scale = r / lora_rank
            ids = np.asarray(ids, np.int64)
            dw[i, j] = scale * float(costs.dw[ids].sum())
            lowest[i, j] = max(int(costs.layer[ids].min()), 0)
    tail = np.array([costs.fixed + costs.dx_tail(d) for d in range(n_layers + 1)])
    return NodeCosts(dw, lowest, tail, costs.full)


def solve_flops(
    gain: Any,
    loss_delta: Any,
    *,
    costs: NodeCosts,
    budget: float,
    base_loss: float = 0.0,
    loss_limit: float | None = None,
    sigma: Any = None,
    tau: float = 0.0,
    method: str = "greedy_2opt",
) -> SearchResult:
    r"""The most predicted gain whose *step* FLOPs (depth included) fit ``budget``.

    Solves :func:`rgft_jax.search.solve` once per possible lowest trained layer (see the
    module docstring) and returns the best; ``cost`` of the result is the chosen
    configuration's step FLOPs as a fraction of a full step, ``bound`` the largest LP bound
    of the feasible sub-problems (an upper bound on every feasible objective).

    Args:
      gain, loss_delta, base_loss, loss_limit, sigma, tau, method: as in
        :func:`rgft_jax.search.solve` (``loss_limit=None``: no limit on the predicted
        loss).
      costs: :func:`node_costs` of the same nodes and candidates.
      budget: step FLOPs as a fraction of a full fine-tuning step, in ``(0, 1]``.

    Raises:
      ValueError: a bad ``budget`` or shapes, or no configuration fits (the message gives the
        cheapest step).

    Examples:
      >>> import numpy as np
      >>> from rgft_jax import search
      >>> # two layers; training layer 0 also pays the backward through layer 1 (tail[0])
      >>> c = search.NodeCosts(dw=np.array([[0., 2.], [0., 2.]]),
      ...                      lowest=np.array([[2, 0], [2, 1]]),
      ...                      tail=np.array([10., 6., 2.]), full=14.0)
      >>> gain = np.array([[0., 5.], [0., 3.]])
      >>> r = search.solve_flops(gain, -gain, costs=c, budget=8 / 14)
      >>> r.choice.tolist(), round(r.cost * 14, 6)   # layer 0 alone costs 10 + 2 > 8
      ([0, 1], 8.0)
    """
    if not isinstance(costs, NodeCosts):
        raise TypeError(f"solve_flops: costs must be NodeCosts (search.node_costs), got "
                        f"{type(costs).__name__}.")
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.floating)) or not (
            0 < budget <= 1):
        raise ValueError(f"solve_flops: budget={budget!r}; allowed: a fraction of a full step "
                         "in (0, 1].")
    g = np.asarray(gain, np.float64)
    if g.shape != costs.dw.shape:
        raise ValueError(f"solve_flops: gain has shape {g.shape}; costs are for "
                         f"{costs.dw.shape} (nodes x candidates).")
    if loss_limit is None:  # a limit no configuration reaches
        worst = np.asarray(loss_delta, np.float64).max(axis=1)
        loss_limit = float(base_loss) + float(np.maximum(worst, 0.0).sum()) + 1.0
    limit = budget * costs.full
    n_layers = len(costs.tail) - 1
    best, bound = None, -math.inf
    for d in sorted({*costs.lowest.ravel().tolist(), n_layers}):
        room = limit - float(costs.tail[d])
        allowed = costs.lowest >= d
        if room < 0 or not allowed.any(axis=1).all():
            continue
        # A forbidden candidate alone exceeds the room: the sub-problem never picks it.
        cost = np.where(allowed, costs.dw, room + 1.0 + float(costs.dw.max()))
        try:
            r = solve(g, loss_delta, base_loss=base_loss, loss_limit=loss_limit, cost=cost,
                      budget=room, sigma=sigma, tau=tau, method=method)
        except ValueError:  # nothing fits this depth
            continue
        bound = max(bound, r.bound)
        if best is None or r.objective > best.objective or (
                r.objective == best.objective
                and costs.step_cost(r.choice) < costs.step_cost(best.choice)):
            best = r
    if best is None:
        cheapest = float(costs.tail[n_layers])
        raise ValueError(f"solve_flops: budget={budget:.6g} ({limit:.4g} FLOPs) fits no "
                         f"configuration; the cheapest step (every node off) costs "
                         f"{cheapest:.4g} = {cheapest / costs.full:.4g} of a full step.")
    return best._replace(cost=costs.step_cost(best.choice) / costs.full, bound=bound,
                         gap=bound - best.objective)
