# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""MFTC module search: one candidate per node, maximise predicted gain under a loss limit.

Host-side combinatorics on numpy arrays (no model, no jax): the inputs are the per-switch
coefficients of the linear predictor (:func:`rgft_jax.search.fit_predictor`, equation 7 of
the seed) or any other additive scores.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize, sparse

__all__ = ["SearchResult", "solve"]

_METHODS = ("greedy_2opt", "ilp")
# A move must raise the objective by more than this (times the objective's scale) to count
# as an improvement: float ties would otherwise let the local search cycle.
_IMPROVE_RTOL = 1e-12
# HiGHS works to a feasibility tolerance (~1e-6); its rounded choice is re-checked in exact
# arithmetic and, if it misses a constraint by that tolerance, re-solved with the right-hand
# side tightened. This many rounds at most.
_MAX_TIGHTEN = 8


class SearchResult(NamedTuple):
    """Result of :func:`solve`."""

    choice: np.ndarray  # int64 [m]: the chosen candidate index per node
    objective: float  # sum_i (gain - tau * sigma)[i, choice_i]
    predicted_loss: float  # base_loss + sum_i loss_delta[i, choice_i]
    cost: float | None  # sum_i cost[i, choice_i]; None when no cost was given
    bound: float  # optimum of the LP relaxation: an upper bound on every feasible objective
    gap: float  # bound - objective (>= 0 up to solver tolerance)
    method: str  # "greedy_2opt" or "ilp"
    evaluations: int  # greedy_2opt: configurations scored; ilp: branch-and-bound nodes
    gain: float  # sum_i gain[i, choice_i] (the objective without the confidence penalty)


def _matrix(name: str, value: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"solve: {name} must be a real [m, n] array, got {value!r}.") from e
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"solve: {name} must be a 2-D [m, n] array with m >= 1 nodes and "
                         f"n >= 1 candidates, got shape {a.shape}.")
    if shape is not None and a.shape != shape:
        raise ValueError(f"solve: {name} has shape {a.shape}; it must have the shape of gain, "
                         f"{shape}.")
    if not np.all(np.isfinite(a)):
        i, j = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"solve: {name}[{i}, {j}]={float(a[i, j])!r}; every entry must be finite.")
    return a


def _scalar(name: str, value: Any, *, nonneg: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"solve: {name} must be a real scalar, got {value!r}.") from e
    if not math.isfinite(v) or (nonneg and v < 0):
        allowed = "a finite number >= 0" if nonneg else "a finite number"
        raise ValueError(f"solve: {name}={value!r}; it must be {allowed}.")
    return v


def _pick(a: np.ndarray, choice: np.ndarray) -> np.ndarray:
    return a[np.arange(a.shape[0]), choice]


def _total(a: np.ndarray, choice: np.ndarray) -> float:
    # fsum: the reported totals (and the feasibility checks on them) do not depend on the
    # order of summation.
    return math.fsum(_pick(a, choice).tolist())


def _one_hot_milp(
    objective: np.ndarray, rows: list[tuple[np.ndarray, float]], *, integral: bool
) -> tuple[np.ndarray | None, Any]:
    """Maximise ``<objective, x>`` over one-hot ``x`` [m, n] with ``<row, x> <= ub`` rows."""
    m, n = objective.shape
    node_rows = sparse.kron(sparse.eye(m), np.ones((1, n)), format="csr")  # [m, m * n]
    cons = [optimize.LinearConstraint(node_rows, 1.0, 1.0)]
    for row, ub in rows:
        cons.append(optimize.LinearConstraint(row.reshape(1, -1), -np.inf, ub))
    res = optimize.milp(
        -objective.reshape(-1),
        integrality=np.full(m * n, 1 if integral else 0),
        bounds=optimize.Bounds(0.0, 1.0),
        constraints=cons,
        options={"mip_rel_gap": 0.0} if integral else {},
    )
    if res.status == 2:  # infeasible
        return None, res
    if res.x is None:
        raise RuntimeError(f"solve: HiGHS failed on the {'ILP' if integral else 'LP'}: "
                           f"{res.message}")
    return res.x.reshape(m, n), res


def _exact_ilp(
    objective: np.ndarray, rows: list[tuple[np.ndarray, float, float]]
) -> tuple[np.ndarray | None, int]:
    """One-hot ILP whose rounded choice meets every ``(row, offset, limit)`` row exactly.

    The constraint is ``offset + sum_i row[i, choice_i] <= limit``.
    """
    margins = [0.0] * len(rows)
    nodes = 0
    for _ in range(_MAX_TIGHTEN):
        x, res = _one_hot_milp(
            objective, [(r, lim - off - mar) for (r, off, lim), mar in zip(rows, margins)],
            integral=True)
        nodes += int(getattr(res, "mip_node_count", 0) or 0)
        if x is None:
            return None, nodes
        choice = np.argmax(x, axis=1)
        misses = [off + _total(r, choice) - lim for r, off, lim in rows]
        if all(v <= 0 for v in misses):
            return choice, nodes
        margins = [mar + max(v, 0.0) * 2 + (abs(lim) + 1.0) * 1e-12 * (v > 0)
                   for mar, v, (_, _, lim) in zip(margins, misses, rows)]
    return None, nodes


def _infeasible_message(loss, base_loss, loss_limit, cost, budget) -> str:
    best = base_loss + math.fsum(loss.min(axis=1).tolist())
    head = f"solve: infeasible: loss_limit={loss_limit!r} cannot be met"
    if cost is None or budget is None:
        return (f"{head}: the smallest achievable predicted loss is {best!r} (base_loss "
                f"{base_loss!r} + sum_i min_j loss_delta[i, j]), {best - loss_limit!r} above "
                f"the limit. Raise loss_limit by at least that much.")
    min_cost = math.fsum(cost.min(axis=1).tolist())
    if min_cost > budget:
        return (f"solve: infeasible: budget={budget!r} is below the smallest achievable cost "
                f"{min_cost!r} (sum_i min_j cost[i, j]) by {min_cost - budget!r}; the budget "
                f"alone is infeasible" + (
                    f", and the loss limit is missed by {best - loss_limit!r} even without it."
                    if best > loss_limit else "."))
    if best > loss_limit:
        return (f"{head}: the smallest achievable predicted loss is {best!r} even without the "
                f"budget, {best - loss_limit!r} above the limit: the loss limit is binding.")
    # Within budget: min loss subject to the budget.
    choice, _ = _exact_ilp(-loss, [(cost, 0.0, budget)])
    if choice is None:  # only if HiGHS cannot meet the budget exactly
        return f"{head} within budget={budget!r} (no configuration within the budget found)."
    within = base_loss + _total(loss, choice)
    return (f"{head} within budget={budget!r}: the smallest predicted loss within the budget "
            f"is {within!r}, {within - loss_limit!r} above the limit; without the budget the "
            f"smallest is {best!r}, which meets it: the budget is binding.")


def _start(loss, objective, cost, budget, loss_limit, base_loss) -> np.ndarray:
    """The feasible minimum-loss configuration (ties: higher objective, then lower index)."""
    m, n = loss.shape
    # lexsort: last key is primary. Per node: min loss, then max objective, then lowest index.
    choice = np.array([np.lexsort((np.arange(n), -objective[i], loss[i]))[0] for i in range(m)])
    if cost is not None and budget is not None and _total(cost, choice) > budget:
        choice, _ = _exact_ilp(-loss, [(cost, 0.0, budget)])
        if choice is None:
            raise ValueError(_infeasible_message(loss, base_loss, loss_limit, cost, budget))
    if base_loss + _total(loss, choice) > loss_limit:
        raise ValueError(_infeasible_message(loss, base_loss, loss_limit, cost, budget))
    return choice


def _greedy(choice, objective, loss, cost, loss_slack, cost_slack, tol) -> tuple[np.ndarray, int]:
    """Best-first node-wise greedy: each node is switched at most once."""
    m, n = objective.shape
    choice = choice.copy()
    open_nodes = np.ones(m, bool)
    evals = 0
    while open_nodes.any():
        idx = np.flatnonzero(open_nodes)
        d_obj = objective[idx] - _pick(objective, choice)[idx, None]  # [k, n]
        ok = loss[idx] - _pick(loss, choice)[idx, None] <= loss_slack
        if cost is not None:
            ok &= cost[idx] - _pick(cost, choice)[idx, None] <= cost_slack
        evals += d_obj.size
        d_obj = np.where(ok, d_obj, -np.inf)
        flat = int(np.argmax(d_obj))  # first maximum: lowest node, then lowest candidate
        r, j = divmod(flat, n)
        if not d_obj[r, j] > tol:
            break
        i = idx[r]
        loss_slack -= loss[i, j] - loss[i, choice[i]]
        if cost is not None:
            cost_slack -= cost[i, j] - cost[i, choice[i]]
        choice[i] = j
        open_nodes[i] = False
    return choice, evals


def _two_opt(choice, objective, loss, cost, loss_slack, cost_slack, tol) -> tuple[np.ndarray, int]:
    """Pairwise local search: nodes (i, k) change candidates jointly while that improves."""
    m, n = objective.shape
    choice = choice.copy()
    evals = 0
    improved = True
    while improved:
        improved = False
        for i in range(m):
            # Moves anchored at node i: i alone, or i together with any other node k.
            cur_o, cur_l = _pick(objective, choice), _pick(loss, choice)
            di_o = objective[i] - cur_o[i]  # [n]
            di_l = loss[i] - cur_l[i]
            dk_o = objective - cur_o[:, None]  # [m, n]
            dk_l = loss - cur_l[:, None]
            d_o = di_o[None, :, None] + dk_o[:, None, :]  # [m, n_i, n_k]
            ok = di_l[None, :, None] + dk_l[:, None, :] <= loss_slack
            if cost is not None:
                cur_c = _pick(cost, choice)
                di_c, dk_c = cost[i] - cur_c[i], cost - cur_c[:, None]
                ok &= di_c[None, :, None] + dk_c[:, None, :] <= cost_slack
            # Partner k == i is the single move of i (its k-candidate must stay put).
            ok[i] = False
            ok[i, :, choice[i]] = (di_l <= loss_slack) & (
                True if cost is None else di_c <= cost_slack)
            d_o[i, :, choice[i]] = di_o
            evals += m * n * n - n * (n - 1)
            d_o = np.where(ok, d_o, -np.inf)
            flat = int(np.argmax(d_o))
            k, rest = divmod(flat, n * n)
            a, b = divmod(rest, n)
            if not d_o[k, a, b] > tol:
                continue
            new = choice.copy()
            new[i], new[k] = a, (b if k != i else a)
            loss_slack -= _total(loss, new) - _total(loss, choice)
            if cost is not None:
                cost_slack -= _total(cost, new) - _total(cost, choice)
            choice = new
            improved = True
    return choice, evals


def solve(
    gain: Any,
    loss_delta: Any,
    *,
    base_loss: float,
    loss_limit: float,
    cost: Any = None,
    budget: float | None = None,
    sigma: Any = None,
    tau: float = 0.0,
    method: str = "greedy_2opt",
) -> SearchResult:
    r"""Picks one candidate module per node: most predicted gain within a loss limit.

    The search of MFTC (equation 8 of the seed, read as a maximisation of the predicted
    accuracy gain) with the confidence-penalised objective of its appendix C.3 and, beyond the
    seed, an optional additive cost budget (parameters per candidate, or the weight-gradient
    FLOPs ``dw`` of the components a candidate trains, from
    :class:`rgft_jax._src.budget.ComponentCosts`; that model's shared backprop term ``dx``
    depends on the lowest trained layer and is not additive, so it is not modelled here):

    .. math::

      \max_{c \in [n]^m} \sum_i (g_{i c_i} - \tau \sigma_{i c_i})
      \quad \text{s.t.} \quad L_e + \sum_i \Delta L_{i c_i} \le \hat L, \qquad
      \sum_i C_{i c_i} \le B.

    No candidate is assumed to be "off": the base network is whichever choice has zero
    deltas (conventionally candidate ``0`` of every node, but nothing here relies on it).
    All inputs are host arrays; nothing is traced.

    ``method="greedy_2opt"`` (the seed's heuristic):

    1. *Start* from the feasible minimum-loss configuration: per node the candidate with the
       smallest ``loss_delta`` (ties: larger objective, then lower index); if that breaks the
       budget, the minimum-loss configuration within the budget (a small ILP).
    2. *Sequential node-wise greedy*, best-first ("iteratively selects the current optimal
       node", C.3): every round switches, among the nodes not switched yet, the one whose best
       feasible switch raises the objective most (ties: lowest node, lowest candidate), and
       closes that node; it stops when no open node has an improving feasible switch.
    3. *Global 2-opt*: for each node ``i`` in index order, the best feasible joint change of
       ``(i, k)`` over every other node ``k`` and every candidate pair (single switches
       included) is applied if it improves the objective; passes repeat until none does.

    ``method="ilp"`` solves the exact one-hot integer program with HiGHS
    (``scipy.optimize.milp``, relative gap 0). Both report the LP relaxation's optimum as
    ``bound`` and ``gap = bound - objective``.

    Args:
      gain: ``[m, n]`` predicted accuracy gain of candidate ``j`` at node ``i`` (the probe
        coefficient :math:`b^A_{ij}`).
      loss_delta: ``[m, n]`` predicted loss change (:math:`b^L_{ij}`).
      base_loss: loss of the base network :math:`L_e`.
      loss_limit: the threshold :math:`\hat L`; predicted loss
        ``base_loss + sum_i loss_delta[i, choice_i]`` must be ``<= loss_limit``.
      cost: optional ``[m, n]`` additive cost of each candidate; without ``budget`` it is only
        reported.
      budget: optional bound on ``sum_i cost[i, choice_i]``; needs ``cost``.
      sigma: optional ``[m, n]`` (``>= 0``) uncertainty of ``gain`` (the probes' standard
        error); the objective uses ``gain - tau * sigma``.
      tau: confidence coefficient ``>= 0`` (``0``: no penalty); non-zero needs ``sigma``.
      method: ``"greedy_2opt"`` or ``"ilp"``.

    Returns:
      A :class:`SearchResult`.

    Raises:
      ValueError: on malformed inputs (naming the argument, the value and what is allowed),
        or when no configuration is feasible: the message gives the smallest achievable
        predicted loss, by how much it misses ``loss_limit`` and, with a budget, whether the
        budget or the loss limit is binding.

    Examples:
      >>> import numpy as np
      >>> from rgft_jax import search
      >>> gain = np.array([[0.0, 2.0, 3.0], [0.0, 1.0, 4.0]])
      >>> loss = np.array([[0.0, 0.1, 0.5], [0.0, 0.2, 0.6]])
      >>> r = search.solve(gain, loss, base_loss=1.0, loss_limit=1.75)
      >>> r.choice.tolist(), r.objective, round(r.predicted_loss, 6)
      ([1, 2], 6.0, 1.7)
      >>> search.solve(gain, loss, base_loss=1.0, loss_limit=1.75, method="ilp").choice.tolist()
      [1, 2]
      >>> r.bound >= r.objective
      True
    """
    if method not in _METHODS:
        raise ValueError(f"solve: method={method!r}; allowed: {_METHODS}.")
    g = _matrix("gain", gain, None)
    loss = _matrix("loss_delta", loss_delta, g.shape)
    base_loss = _scalar("base_loss", base_loss)
    loss_limit = _scalar("loss_limit", loss_limit)
    tau = _scalar("tau", tau, nonneg=True)
    c = None if cost is None else _matrix("cost", cost, g.shape)
    if budget is not None:
        if c is None:
            raise ValueError(f"solve: budget={budget!r} needs cost (an [m, n] array); got "
                             "cost=None.")
        budget = _scalar("budget", budget)
    if sigma is None and tau != 0:
        raise ValueError(f"solve: tau={tau!r} needs sigma (an [m, n] array >= 0); got "
                         "sigma=None.")
    objective = g
    if sigma is not None:
        s = _matrix("sigma", sigma, g.shape)
        if np.any(s < 0):
            i, j = np.argwhere(s < 0)[0]
            raise ValueError(f"solve: sigma[{i}, {j}]={float(s[i, j])!r}; sigma must be >= 0.")
        objective = g - tau * s

    rows = [(loss, base_loss, loss_limit)]
    if budget is not None:
        rows.append((c, 0.0, budget))
    lp_rows = [(r.reshape(-1), lim - off) for r, off, lim in rows]

    if method == "ilp":
        choice, evals = _exact_ilp(objective, rows)
        if choice is None:
            raise ValueError(_infeasible_message(loss, base_loss, loss_limit, c, budget))
    else:
        choice = _start(loss, objective, c, budget, loss_limit, base_loss)
        tol = _IMPROVE_RTOL * (1.0 + float(np.abs(objective).max()))
        loss_slack = loss_limit - base_loss - _total(loss, choice)
        cost_slack = np.inf if budget is None else budget - _total(c, choice)
        cost_arg = None if budget is None else c
        choice, e1 = _greedy(choice, objective, loss, cost_arg, loss_slack, cost_slack, tol)
        loss_slack = loss_limit - base_loss - _total(loss, choice)
        cost_slack = np.inf if budget is None else budget - _total(c, choice)
        choice, e2 = _two_opt(choice, objective, loss, cost_arg, loss_slack, cost_slack, tol)
        evals = e1 + e2

    x_lp, res_lp = _one_hot_milp(objective, lp_rows, integral=False)
    obj = _total(objective, choice)
    # The LP is feasible whenever an integer choice is (HiGHS's tolerance aside: then NaN).
    # Its optimum is reported as is; it can sit ~1e-9 below an integer optimum by tolerance.
    bound = -float(res_lp.fun) if x_lp is not None else math.nan
    return SearchResult(
        choice=choice.astype(np.int64),
        objective=obj,
        predicted_loss=base_loss + _total(loss, choice),
        cost=None if c is None else _total(c, choice),
        bound=bound,
        gap=bound - obj,
        method=method,
        evaluations=int(evals),
        gain=_total(g, choice),
    )
