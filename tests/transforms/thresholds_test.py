"""rgft_jax.thresholds: validated callables, one code path with the shorthand forms."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rgft_jax as rgft
from rgft_jax import thresholds
from rgft_jax._src.budget import analytic_costs

R = jnp.asarray([0.05, 0.3, 0.1, 0.3, 0.25])


@pytest.mark.parametrize("short,callable_", [
    ("median", thresholds.median()),
    (("percentile", 30), thresholds.percentile(30)),
    (("top_k", 2), thresholds.top_k(2)),
    (("top_fraction", 0.4), thresholds.top_fraction(0.4)),
])
def test_shorthand_maps_onto_the_same_callable(short, callable_):
    np.testing.assert_array_equal(rgft.threshold_mask(R, short), callable_(R))
    np.testing.assert_array_equal(rgft.threshold_mask(R, callable_), callable_(R))


def test_exact_semantics():
    assert thresholds.top_k(2)(R).tolist() == [False, True, False, True, False]  # ties: lower
    assert thresholds.top_fraction(0.28)(jnp.linspace(0, 1, 25)).sum() == 7  # not 8
    assert thresholds.percentile(50)(R).tolist() == (np.asarray(R) >= np.percentile(R, 50)).tolist()


@pytest.mark.parametrize("build,match", [
    (lambda: thresholds.percentile(0), r"percentile\(0\): p must be a number in \(0, 100\)"),
    (lambda: thresholds.percentile("50"), r"percentile\('50'\)"),
    (lambda: thresholds.top_k(0), r"top_k\(0\): k must be an int >= 1, got 0"),
    (lambda: thresholds.top_k(1.5), r"top_k\(1.5\)"),
    (lambda: thresholds.top_fraction(0.0), r"top_fraction\(0.0\): f must be a number in \(0, 1\]"),
    (lambda: thresholds.top_fraction(True), r"top_fraction\(True\)"),
])
def test_construction_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_checked_against_the_partition_at_init():
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"top_k\(3\): k must be in \[1, C\].*C=2"):
        rgft.residual_guided(optax.sgd(1.0), threshold=thresholds.top_k(3)).init(params)


def _budget_setup():
    params = {"layers": [{"q": jnp.ones((8, 2, 4))} for _ in range(2)]}
    part = rgft.Partition.build(params, [rgft.Rule("q$", kind="head", axis=1, groups=2)])
    costs = analytic_costs(part, tokens=16, seq_len=4, batch=4, num_layers=2, hidden=8,
                           num_heads=2)
    return params, part, costs


def test_budget_wraps_budget_threshold_and_checks_components():
    params, part, costs = _budget_setup()
    th = thresholds.budget(costs, 0.9)
    r = jnp.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(th(r), rgft.budget_threshold(costs, 0.9)(r))
    tx = rgft.residual_guided(optax.sgd(1.0), part, threshold=th, update_every=1)
    tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match=r"budget\(costs, 0.9\): the costs are for C=4"):
        rgft.residual_mask(threshold=th).init({"a": jnp.ones(2)})
    with pytest.raises(ValueError, match="budget=1.5"):
        thresholds.budget(costs, 1.5)
    with pytest.raises(TypeError, match="costs must be ComponentCosts"):
        thresholds.budget("costs", 0.5)


@pytest.mark.parametrize("form", ["mask", "guided"])
def test_callables_usable_as_threshold_on_both_transforms(form):
    params = {"a": jnp.ones(3), "b": jnp.ones(2), "c": jnp.ones(1)}
    g = {"a": jnp.full(3, 2.0), "b": jnp.full(2, 1.0), "c": jnp.full(1, 0.1)}
    outs = []
    for th in (thresholds.top_k(2), ("top_k", 2)):
        tx = (rgft.residual_mask(threshold=th, update_every=1) if form == "mask" else
              rgft.residual_guided(optax.sgd(1.0), threshold=th, update_every=1))
        _, s = tx.update(g, tx.init(params), params)
        outs.append(rgft.error_map(s).mask.tolist())
    assert outs[0] == outs[1] == [1.0, 1.0, 0.0]
