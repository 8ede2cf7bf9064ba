# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The budget cost model knows a cached step: the cut layers' forward is not paid."""

from __future__ import annotations

import numpy as np
import pytest

from rgft_jax._src.budget import ComponentCosts, calibrate


def _costs(layer_forward=(3.0, 5.0, 7.0)):
    # components: one in each of layers 0, 1, 2 and the head (layer 3)
    return ComponentCosts(dw=[1.0, 2.0, 4.0, 8.0], layer=np.array([0, 1, 2, 3]),
                          dx=[10.0, 20.0, 30.0], fixed=100.0, forward=15.0,
                          layer_forward=layer_forward)


def test_cached_step_cost_by_hand():
    c = _costs()
    top = [False, False, True, True]  # lowest active layer 2
    assert c.step_cost(top) == 100 + 30 + 4 + 8
    assert c.step_cost(top, cut=1) == 142 - 3
    assert c.step_cost(top, cut=2) == 142 - 3 - 5
    # the cut never passes the lowest active layer
    assert c.step_cost(top, cut=3) == c.step_cost(top, cut=2)
    assert c.step_cost([True, False, False, True], cut=2) == c.step_cost([True, False, False,
                                                                          True])
    assert _costs(None).step_cost(top, cut=2) == 142  # no per-layer forward: no saving


def test_calibrate_scales_the_layer_forward_with_the_forward():
    c = calibrate(_costs(), full_flops=400.0, forward_flops=30.0)
    np.testing.assert_allclose(c.layer_forward, [6.0, 10.0, 14.0])


@pytest.mark.parametrize("bad", [(1.0, 2.0), (1.0, -1.0, 2.0), (np.nan, 1.0, 1.0)])
def test_layer_forward_is_validated_naming_it(bad):
    with pytest.raises(ValueError, match="layer_forward="):
        _costs(bad)


@pytest.mark.parametrize("cut", [-1, 4, True, 1.5])
def test_cut_is_validated_naming_it(cut):
    with pytest.raises(ValueError, match="cut="):
        _costs().step_cost([True] * 4, cut=cut)


def test_with_cache_is_the_expected_cost_of_every_mask():
    """E[cost] = (1 - h) * uncached + h * cached at the lowest active layer, for every mask
    (embeddings, head only, empty included); ``full`` is unchanged."""
    c = ComponentCosts(dw=[0.5, 1.0, 2.0, 4.0, 8.0], layer=np.array([-1, 0, 1, 2, 3]),
                       dx=[10.0, 20.0, 30.0], fixed=100.0, forward=15.0,
                       layer_forward=(3.0, 5.0, 7.0))
    for h in (0.0, 0.25, 2 / 3, 1.0):
        e = c.with_cache(h)
        assert e.full == pytest.approx(c.full)
        for bits in range(32):
            mask = np.array([(bits >> i) & 1 for i in range(5)], bool)
            want = (1 - h) * c.step_cost(mask) + h * c.step_cost(mask, cut=3)
            assert e.step_cost(mask) == pytest.approx(want), (h, mask)
    # by hand, h = 1/2: the top layer and head (lowest 2) skip layers 0, 1 half the time
    assert c.with_cache(0.5).step_cost([0, 0, 0, 1, 1]) == pytest.approx(
        100 + 30 + 4 + 8 - 0.5 * (3 + 5))
    plain = _costs(None)
    assert plain.with_cache(0.5) is plain  # no per-layer forward: no saving


@pytest.mark.parametrize("bad", [-0.1, 1.5, np.nan, "half", None])
def test_with_cache_hit_rate_is_validated_naming_it(bad):
    with pytest.raises(ValueError, match="hit_rate="):
        _costs().with_cache(bad)


def test_rgft_cache_hits_let_the_budget_reach_deeper():
    """With a cached prefix the same budget buys a deeper cut (more of the layers)."""
    from rgft_jax._src.budget import budget_threshold
    from rgft_jax.models import bert
    from rgft_jax.training import methods
    from tests.training.conftest import NUM_HEADS, bert_config

    params = bert.abstract_params(bert_config(4), num_labels=3)
    m0 = methods.rgft(budget=0.5)
    part = m0.partition(params, NUM_HEADS)
    r = np.ones(len(part), np.float32)
    layers = np.array([c.layer for c in part.components])
    low = {}
    for h in (0.0, 0.75):
        m = methods.rgft(budget=0.5, cache_hits=h)
        costs = m.budget_costs(part, params, NUM_HEADS, 4, (8, 16))
        mask = np.asarray(budget_threshold(costs, 0.5)(r))
        assert costs.step_cost(mask) <= 0.5 * costs.full + 1e-6
        low[h] = layers[mask].min()
    assert low[0.75] < low[0.0]


@pytest.mark.parametrize("kw, match", [
    (dict(budget=0.5, cache_hits=1.5), "cache_hits=1.5"),
    (dict(cache_hits=0.5), "cache_hits=0.5"),  # without a budget it means nothing
])
def test_rgft_cache_hits_is_validated_naming_it(kw, match):
    from rgft_jax.training import methods

    with pytest.raises(ValueError, match=match):
        methods.rgft(**kw)
