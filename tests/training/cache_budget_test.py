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
