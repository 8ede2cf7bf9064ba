"""solve: exact ILP against brute force, greedy + 2-opt against both, LP bound, errors."""

import itertools
import math

import numpy as np
import pytest

from rgft_jax import search


def _brute_force(obj, loss, base_loss, loss_limit, cost=None, budget=None):
    """(best objective, choice) over all n**m configurations; None when none is feasible."""
    m, n = obj.shape
    rows = np.arange(m)
    best = None
    for c in itertools.product(range(n), repeat=m):
        c = np.array(c)
        if base_loss + math.fsum(loss[rows, c]) > loss_limit:
            continue
        if budget is not None and math.fsum(cost[rows, c]) > budget:
            continue
        v = math.fsum(obj[rows, c])
        if best is None or v > best[0]:
            best = (v, c)
    return best


def _instance(seed, with_budget):
    """Random small instance; the base (zero-delta) candidate sits at a random index per node,
    or nowhere (every third seed): solve must not assume candidate 0 is "off"."""
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    gain, loss = rng.normal(size=(m, n)), rng.normal(size=(m, n))
    if seed % 3:
        base = rng.integers(0, n, size=m)
        gain[np.arange(m), base] = 0.0
        loss[np.arange(m), base] = 0.0
    lo, hi = loss.min(1).sum(), loss.max(1).sum()
    base_loss = 1.0
    loss_limit = base_loss + lo + rng.uniform(0.05, 0.9) * (hi - lo)
    cost = budget = None
    if with_budget:
        cost = rng.uniform(0.0, 1.0, size=(m, n))
        c_lo, c_hi = cost.min(1).sum(), cost.max(1).sum()
        budget = c_lo + rng.uniform(0.3, 0.9) * (c_hi - c_lo)
    return gain, loss, base_loss, loss_limit, cost, budget


def _check_feasible(r, loss, base_loss, loss_limit, cost, budget):
    rows = np.arange(loss.shape[0])
    assert r.choice.shape == (loss.shape[0],) and r.choice.dtype == np.int64
    assert np.all((r.choice >= 0) & (r.choice < loss.shape[1]))
    assert r.predicted_loss == pytest.approx(base_loss + loss[rows, r.choice].sum(), abs=1e-12)
    assert r.predicted_loss <= loss_limit
    if budget is not None:
        assert r.cost == pytest.approx(cost[rows, r.choice].sum(), abs=1e-12)
        assert r.cost <= budget


@pytest.mark.parametrize("with_budget", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_ilp_equals_brute_force_and_lp_bounds_it(seed, with_budget):
    gain, loss, base_loss, loss_limit, cost, budget = _instance(seed, with_budget)
    kw = dict(base_loss=base_loss, loss_limit=loss_limit, cost=cost, budget=budget)
    ref = _brute_force(gain, loss, base_loss, loss_limit, cost, budget)
    if ref is None:
        with pytest.raises(ValueError, match="infeasible"):
            search.solve(gain, loss, method="ilp", **kw)
        return
    r = search.solve(gain, loss, method="ilp", **kw)
    _check_feasible(r, loss, base_loss, loss_limit, cost, budget)
    assert r.objective == pytest.approx(ref[0], abs=1e-9)
    assert r.method == "ilp"
    # LP relaxation >= integer optimum (up to HiGHS's ~1e-9 optimality tolerance).
    assert r.bound >= r.objective - 1e-7
    assert r.gap == pytest.approx(r.bound - r.objective)


@pytest.mark.parametrize("with_budget", [False, True])
def test_greedy_2opt_is_feasible_below_ilp_and_mostly_optimal(with_budget):
    hits = feasible = 0
    for seed in range(100, 300):
        gain, loss, base_loss, loss_limit, cost, budget = _instance(seed, with_budget)
        kw = dict(base_loss=base_loss, loss_limit=loss_limit, cost=cost, budget=budget)
        ref = _brute_force(gain, loss, base_loss, loss_limit, cost, budget)
        if ref is None:
            with pytest.raises(ValueError, match="infeasible"):
                search.solve(gain, loss, **kw)
            continue
        feasible += 1
        r = search.solve(gain, loss, **kw)
        ilp = search.solve(gain, loss, method="ilp", **kw)
        _check_feasible(r, loss, base_loss, loss_limit, cost, budget)
        assert r.objective <= ilp.objective + 1e-9, seed
        assert r.bound == pytest.approx(ilp.bound) and r.gap >= -1e-7
        assert r.evaluations > 0
        hits += r.objective >= ref[0] - 1e-9
        if feasible == 50:
            break
    assert feasible == 50
    rate = hits / feasible
    print(f"greedy_2opt == brute force on {hits}/{feasible} = {rate:.0%} (budget={with_budget})")
    assert rate >= 0.8


def test_two_opt_escapes_the_greedy_local_optimum():
    # Greedy takes node 0's best switch (+3) and spends the whole loss slack on it; the pair
    # move (node 0 -> candidate 2, node 1 -> candidate 1) reaches the optimum +3.5.
    gain = np.array([[0.0, 3.0, 1.0], [0.0, 2.5, 0.0]])
    loss = np.array([[0.0, 1.0, 0.5], [0.0, 0.5, 0.0]])
    r = search.solve(gain, loss, base_loss=0.0, loss_limit=1.0)
    assert r.choice.tolist() == [2, 1] and r.objective == 3.5


def test_two_opt_is_local_the_ilp_is_not():
    # Reaching the optimum from the greedy point needs three nodes to change at once: 2-opt
    # stops at +3, the ILP finds +4, and the LP bound shows the gap.
    gain = np.array([[0.0, 3.0], [0.0, 2.0], [0.0, 2.0]])
    loss = np.array([[0.0, 1.0], [0.0, 0.5], [0.0, 0.5]])
    kw = dict(base_loss=0.0, loss_limit=1.0)
    r = search.solve(gain, loss, **kw)
    assert r.choice.tolist() == [1, 0, 0] and r.objective == 3.0
    ilp = search.solve(gain, loss, method="ilp", **kw)
    assert ilp.choice.tolist() == [0, 1, 1] and ilp.objective == 4.0
    assert r.gap >= 1.0 - 1e-9 and r.bound == pytest.approx(ilp.bound)


@pytest.mark.parametrize("method", ["greedy_2opt", "ilp"])
def test_bound_is_the_lp_relaxation(method):
    # Switching costs loss 2 against a slack of 1: no integer switch, but the LP takes half of
    # it (gain 3 / 2 = 1.5); a second node adds its free +1 to both.
    gain, loss = np.array([[0.0, 3.0], [0.0, 1.0]]), np.array([[0.0, 2.0], [0.0, 0.0]])
    r = search.solve(gain, loss, base_loss=0.0, loss_limit=1.0, method=method)
    assert r.choice.tolist() == [0, 1] and r.objective == 1.0
    assert r.bound == pytest.approx(2.5, abs=1e-9) and r.gap == pytest.approx(1.5, abs=1e-9)


def test_confidence_penalty_changes_the_choice():
    # Candidate 1 has the larger mean gain but a noisy probe: with tau * sigma it loses to 2.
    gain = np.array([[0.0, 1.0, 0.8]])
    loss = np.zeros((1, 3))
    sigma = np.array([[0.0, 0.5, 0.05]])
    kw = dict(base_loss=0.0, loss_limit=0.0, sigma=sigma)
    for method in ("greedy_2opt", "ilp"):
        assert search.solve(gain, loss, tau=0.0, method=method, **kw).choice.tolist() == [1]
        r = search.solve(gain, loss, tau=1.0, method=method, **kw)
        assert r.choice.tolist() == [2]
        assert r.objective == pytest.approx(0.8 - 0.05) and r.gain == pytest.approx(0.8)


@pytest.mark.parametrize("method", ["greedy_2opt", "ilp"])
def test_loss_limit_at_the_minimum_is_met_exactly(method):
    rng = np.random.default_rng(3)
    gain, loss = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    best = 0.25 + math.fsum(loss.min(1))
    r = search.solve(gain, loss, base_loss=0.25, loss_limit=best, method=method)
    assert r.choice.tolist() == loss.argmin(1).tolist() and r.predicted_loss <= best


@pytest.mark.parametrize("method", ["greedy_2opt", "ilp"])
def test_infeasible_loss_limit_reports_the_shortfall(method):
    loss = np.array([[0.0, -0.25], [0.5, -0.25]])
    with pytest.raises(ValueError, match=r"smallest achievable predicted loss is 0\.5 .*, "
                                         r"0\.25 above the limit") as e:
        search.solve(np.ones((2, 2)), loss, base_loss=1.0, loss_limit=0.25, method=method)
    assert "loss_limit=0.25" in str(e.value)


@pytest.mark.parametrize("method", ["greedy_2opt", "ilp"])
def test_infeasible_with_budget_says_what_binds(method):
    loss = np.array([[0.0, -0.5], [0.0, -0.5]])
    cost = np.array([[0.0, 1.0], [0.0, 1.0]])
    kw = dict(base_loss=1.0, method=method)
    # The budget allows one switch: best loss 0.5 within it, 0.0 without: the budget binds.
    with pytest.raises(ValueError, match=r"within the budget is 0\.5, 0\.2.* above the limit.*"
                                         r"the budget is binding"):
        search.solve(np.ones((2, 2)), loss, loss_limit=0.3, cost=cost, budget=1.5, **kw)
    # Even both switches miss the limit: the loss limit binds.
    with pytest.raises(ValueError, match=r"0\.0 even without the budget, 0\.5 above the limit: "
                                         r"the loss limit is binding"):
        search.solve(np.ones((2, 2)), loss, loss_limit=-0.5, cost=cost, budget=1.5, **kw)
    # No configuration fits the budget at all.
    with pytest.raises(ValueError, match=r"budget=-1\.0 is below the smallest achievable cost "
                                         r"0\.0 .*by 1\.0"):
        search.solve(np.ones((2, 2)), loss, loss_limit=2.0, cost=cost, budget=-1.0, **kw)


def test_cost_without_budget_is_reported_not_constrained():
    gain = np.array([[0.0, 1.0], [0.0, 1.0]])
    cost = np.array([[0.0, 5.0], [0.0, 7.0]])
    r = search.solve(gain, np.zeros((2, 2)), base_loss=0.0, loss_limit=0.0, cost=cost)
    assert r.choice.tolist() == [1, 1] and r.cost == 12.0
    r = search.solve(gain, np.zeros((2, 2)), base_loss=0.0, loss_limit=0.0, cost=cost, budget=6)
    assert r.choice.tolist() == [1, 0] and r.cost == 5.0
    assert search.solve(gain, np.zeros((2, 2)), base_loss=0.0, loss_limit=0.0).cost is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(gain=np.ones(3)), r"gain must be a 2-D \[m, n\] array.*shape \(3,\)"),
    (dict(gain=np.ones((2, 0)), loss_delta=np.ones((2, 0))), r"n >= 1 candidates"),
    (dict(loss_delta=np.ones((2, 4))), r"loss_delta has shape \(2, 4\).*\(2, 3\)"),
    (dict(gain=np.array([[0.0, np.nan, 1.0]] * 2)), r"gain\[0, 1\]=nan; every entry must"),
    (dict(cost=np.ones((3, 3))), r"cost has shape \(3, 3\)"),
    (dict(budget=1.0), r"budget=1\.0 needs cost"),
    (dict(sigma=-np.ones((2, 3))), r"sigma\[0, 0\]=-1\.0; sigma must be >= 0"),
    (dict(tau=-1.0), r"tau=-1\.0; it must be a finite number >= 0"),
    (dict(tau=1.0), r"tau=1\.0 needs sigma"),
    (dict(loss_limit=np.inf), r"loss_limit=inf; it must be a finite number"),
    (dict(method="brute"), r"method='brute'; allowed: \('greedy_2opt', 'ilp'\)"),
])
def test_bad_inputs_are_named(kwargs, match):
    args = dict(gain=np.ones((2, 3)), loss_delta=np.zeros((2, 3)), base_loss=0.0,
                loss_limit=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        search.solve(args.pop("gain"), args.pop("loss_delta"), **args)


def test_public_surface():
    assert search.__all__ == sorted(search.__all__)
    for name in search.__all__:
        assert getattr(search, name).__doc__, name
