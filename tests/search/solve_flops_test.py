"""search.solve_flops: exact about backprop depth (against brute force), and its errors."""

import itertools

import numpy as np
import pytest

from rgft_jax import search


def _instance(rng, m=4, layers=4):
    """Nodes = layers; candidates off / sparse / a cheap adapter on the same layer."""
    dw = np.zeros((m, 3))
    dw[:, 1] = rng.uniform(1, 3, m)
    dw[:, 2] = rng.uniform(0.05, 0.3, m)
    lowest = np.stack([np.full(m, layers), np.arange(m), np.arange(m)], axis=1)
    dx = rng.uniform(1, 2, layers)
    fixed = 3.0
    tail = np.array([fixed + dx[d:].sum() for d in range(layers + 1)])
    costs = search.NodeCosts(dw, lowest, tail, float(fixed + dx.sum() + dw[:, 1].sum()))
    gain = np.zeros((m, 3))
    gain[:, 1] = rng.uniform(0, 1, m)
    gain[:, 2] = rng.uniform(0, 0.4, m)
    return gain, costs


def _brute(gain, costs, budget):
    best = -np.inf
    for c in itertools.product(range(gain.shape[1]), repeat=gain.shape[0]):
        if costs.step_cost(c) <= budget * costs.full + 1e-12:
            best = max(best, gain[np.arange(len(c)), c].sum())
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("budget", [0.35, 0.5, 0.7])
def test_exact_against_brute_force(seed, budget):
    gain, costs = _instance(np.random.default_rng(seed))
    want = _brute(gain, costs, budget)
    r = search.solve_flops(gain, -gain, costs=costs, budget=budget, method="ilp")
    np.testing.assert_allclose(r.objective, want, rtol=1e-9)
    assert r.cost <= budget + 1e-12
    np.testing.assert_allclose(r.cost, costs.step_cost(r.choice) / costs.full)
    assert r.bound >= r.objective - 1e-9
    g = search.solve_flops(gain, -gain, costs=costs, budget=budget)  # the heuristic
    assert g.cost <= budget + 1e-12 and g.objective <= want + 1e-9


def test_depth_matters_where_additive_costs_would_mislead():
    """Layer 0 has the largest gain and a small weight gradient, but training it pays the
    backward through every layer: within 0.5 of a full step only the top layer fits."""
    costs = search.NodeCosts(dw=np.array([[0.0, 0.5], [0.0, 0.5], [0.0, 0.5]]),
                             lowest=np.array([[3, 0], [3, 1], [3, 2]]),
                             tail=np.array([10.0, 7.0, 4.0, 1.0]), full=11.5)
    gain = np.array([[0.0, 9.0], [0.0, 1.0], [0.0, 1.0]])
    r = search.solve_flops(gain, -gain, costs=costs, budget=5.0 / 11.5)
    assert r.choice.tolist() == [0, 0, 1]
    additive = search.solve(gain, -gain, base_loss=0.0, loss_limit=1.0, cost=costs.dw,
                            budget=5.0 - 1.0)
    assert additive.choice[0] == 1  # what a parameter-style budget would pick


def test_errors_name_the_argument():
    gain, costs = _instance(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"budget=1\.5"):
        search.solve_flops(gain, -gain, costs=costs, budget=1.5)
    with pytest.raises(ValueError, match=r"fits no configuration; the cheapest step"):
        search.solve_flops(gain, -gain, costs=costs, budget=0.01)
    with pytest.raises(ValueError, match="gain has shape"):
        search.solve_flops(gain[:2], -gain[:2], costs=costs, budget=0.5)
    with pytest.raises(TypeError, match="NodeCosts"):
        search.solve_flops(gain, -gain, costs=costs.dw, budget=0.5)
