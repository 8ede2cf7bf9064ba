"""Hypothesis properties over random pytrees and partitions."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rgft_jax as rgft
from rgft_jax.components import Partition, Rule


@st.composite
def trees_and_rules(draw):
    n_layers = draw(st.integers(1, 3))
    heads = draw(st.sampled_from([1, 2, 4]))
    width = draw(st.sampled_from([1, 2, 3]))
    d = draw(st.integers(1, 3))
    tree = {"layers": [], "extra": np.zeros((draw(st.integers(1, 4)),), np.float32)}
    for _ in range(n_layers):
        tree["layers"].append({
            "q": np.zeros((d, heads, 2), np.float32),
            "up": np.zeros((d, width * draw(st.integers(1, 3))), np.float32),
        })
    rules = [Rule(r"/q$", kind="head", axis=1, groups=heads),
             Rule(r"/up$", kind="neuron", axis=1, width=width)]
    seed = draw(st.integers(0, 2**16))
    return tree, rules, seed


def _random_like(tree, rng, scale=1.0):
    return jax.tree.map(
        lambda x: (rng.normal(size=x.shape) * rng.uniform(0, 3) * scale).astype(np.float32), tree)


THRESHOLDS = st.one_of(
    st.just("median"),
    st.tuples(st.just("percentile"), st.floats(1, 99)),
    st.tuples(st.just("top_fraction"), st.floats(0.05, 1.0)),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees_and_rules(), THRESHOLDS, st.sampled_from([0.0, 0.3]), st.integers(1, 4))
def test_residuals_sum_to_one_and_masks_in_gamma_or_one(tr, threshold, gamma, steps):
    tree, rules, seed = tr
    rng = np.random.default_rng(seed)
    tx = rgft.residual_mask(rules, threshold=threshold, gamma=gamma, update_every=1)
    state = tx.init(tree)
    for _ in range(steps):
        _, state = tx.update(_random_like(tree, rng), state)
        r = np.asarray(state.residuals)
        assert (r >= 0).all()
        np.testing.assert_allclose(r.sum(), 1.0, rtol=1e-5)
        assert set(np.unique(np.asarray(state.mask))) <= {np.float32(gamma), np.float32(1.0)}
        assert (np.asarray(state.lr_scale) > 0).all()


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=40), st.data())
def test_top_k_keeps_exactly_k_with_ties(values, data):
    r = jnp.asarray(np.round(np.array(values, np.float32), 1))  # rounding forces ties
    k = data.draw(st.integers(1, len(values)))
    active = np.asarray(rgft.threshold_mask(r, ("top_k", k)))
    assert active.sum() == k
    # Every kept value is >= every dropped value; among ties the lower indices are kept.
    if k < len(values):
        kept, dropped = np.asarray(r)[active], np.asarray(r)[~active]
        assert kept.min() >= dropped.max()
        tie = kept.min()
        idx_kept = np.where(active & (np.asarray(r) == tie))[0]
        idx_drop = np.where(~active & (np.asarray(r) == tie))[0]
        if len(idx_drop):
            assert idx_kept.max() < idx_drop.min()


@settings(max_examples=20, deadline=None)
@given(trees_and_rules())
def test_norms_and_broadcast_are_inverse_views(tr):
    tree, rules, seed = tr
    rng = np.random.default_rng(seed)
    part = Partition.build(tree, rules)
    g = _random_like(tree, rng)
    # Sum of squared component norms = squared global norm.
    np.testing.assert_allclose(
        float(jnp.sum(part.sq_norms(g))),
        sum(float(np.sum(x.astype(np.float64) ** 2)) for x in jax.tree.leaves(g)), rtol=1e-5)
    # Broadcasting component ids and reducing the indicator gives component sizes.
    ids = part.broadcast(jnp.arange(len(part), dtype=jnp.float32))
    for c in part.components:
        count = sum(int(np.sum(np.asarray(x) == c.index)) for x in jax.tree.leaves(ids))
        assert count == c.size
    ones = jax.tree.map(np.ones_like, tree)
    np.testing.assert_allclose(part.sq_norms(ones), part.sizes.astype(np.float32))


def test_top_fraction_has_no_float_rounding_error():
    # 0.28 * 25 = 7.000000000000001 in floating point: the top 28 % of 25 is 7 components.
    r = jnp.linspace(0.0, 1.0, 25)
    assert int(np.sum(np.asarray(rgft.threshold_mask(r, ("top_fraction", 0.28))))) == 7
