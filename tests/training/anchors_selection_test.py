# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The anchors' selection rules against hand-computed cases (host code, no training)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgft_jax.training import _anchors as anchors
from rgft_jax.training import methods
from tests.training.conftest import NUM_HEADS, bert


def _params(layers: int):
    from flax import nnx

    _, params, _ = nnx.split(bert(layers), nnx.Param, ...)
    return nnx.to_pure_dict(params)


def _schedule(method, layers: int = 4, total_steps: int = 100):
    params = _params(layers)
    part = method.partition(params, NUM_HEADS)
    return method.make_schedule(part, params, total_steps=total_steps, num_heads=NUM_HEADS,
                                num_layers=layers, batch_shape=(8, 8))


def _active_layers(sched, mask) -> list[int]:
    return [i for i, ids in enumerate(sched.layer_ids) if mask[ids].all()]


# ------------------------------------------------------------------ AutoFreeze
def test_autofreeze_decision_on_scripted_gradient_norm_history():
    sched = _schedule(methods.autofreeze(percentile=50), layers=4)
    # Interval 1: the reference norms, nothing frozen.
    sched.decide([10.0, 20.0, 40.0, 80.0])
    assert sched.frozen_prefix == 0
    # Interval 2: changes |p - c| / p = [0.1, 0.05, 0.5, 0.25]; median of all four = 0.175;
    # the first layer at or above it is layer 2: layers 0 and 1 freeze.
    sched.decide([9.0, 19.0, 20.0, 60.0])
    assert sched.frozen_prefix == 2
    mask = sched.mask()
    assert _active_layers(sched, mask) == [2, 3]
    assert not mask[sched.embed_ids].any()  # the embeddings freeze with layer 0
    # Interval 3: frozen layers have no gradient (0 -> ratio 0); changes of layers 2, 3 are
    # [0.5, 0.0]; their median 0.25; the first layer >= 0.25 is 2: nothing new freezes.
    sched.decide([0.0, 0.0, 10.0, 60.0])
    assert sched.frozen_prefix == 2
    # Interval 4: changes [0, 0, 0.1, 0.5] -> median of layers 2, 3 = 0.3 -> layer 3.
    sched.decide([0.0, 0.0, 9.0, 30.0])
    assert sched.frozen_prefix == 3
    # A threshold that points below the prefix never unfreezes (progressive freezing), and
    # the top layer is never frozen.
    sched.decide([0.0, 0.0, 0.0, 30.0])
    assert sched.frozen_prefix == 3
    assert _active_layers(sched, sched.mask()) == [3]


def test_autofreeze_state_round_trips():
    a = _schedule(methods.autofreeze(), layers=3)
    a.decide([1.0, 2.0, 3.0])
    a.decide([0.5, 2.0, 3.3])
    b = _schedule(methods.autofreeze(), layers=3)
    b.load_state_dict(a.state_dict())
    assert (b.frozen_prefix, b.prev) == (a.frozen_prefix, a.prev)


def test_autofreeze_interval_defaults_to_a_tenth_of_the_run():
    assert _schedule(methods.autofreeze(), total_steps=250).eval_every == 25
    assert _schedule(methods.autofreeze(eval_every=7), total_steps=250).eval_every == 7


# ------------------------------------------------------------------ GreenTrainer
def test_selection_dp_on_greentrainers_own_example():
    # pittisl/GreenTrainer tensor_selector.simple_test: rho=0.6 of T=24 -> limit 14.
    # Deepest tensor 2 costs dy 0+2+1 + dw 7 = 10; tensor 1 (dw 1, I 3) fits above it: 13.
    value, sel = anchors.selection_dp([0, 2, 1, 4, 0], [5, 1, 7, 3, 1], [1., 3., 10., 5., 3.],
                                      14)
    assert value == pytest.approx(13.0)
    assert sel.tolist() == [0, 1, 1, 0, 0]


@pytest.mark.parametrize("seed", range(40))
def test_selection_dp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    dy = rng.integers(0, 6, n)
    dw = rng.integers(0, 6, n)
    imp = rng.normal(size=n)
    limit = int(rng.integers(0, int((dy + dw).sum()) + 2))
    value, sel = anchors.selection_dp(dy, dw, imp, limit)
    ref, _ = anchors.selection_dp_brute_force(dy, dw, imp, limit)
    assert value == pytest.approx(ref, abs=1e-9)
    chosen = sel.astype(bool)
    assert imp[chosen].sum() == pytest.approx(value, abs=1e-9)
    if chosen.any():
        d = int(np.flatnonzero(chosen).max())
        assert dy[:d + 1].sum() + dw[chosen].sum() <= limit


def test_tensor_costs_reproduce_the_library_cost_model():
    params = _params(3)
    m = methods.green_trainer()
    part = m.partition(params, NUM_HEADS)
    from rgft_jax.training import _components as parts

    costs = parts.costs_for(part, params, NUM_HEADS, 3, (8, 8), "test")
    t_fp, dy, dw, order = anchors.tensor_costs(costs)
    rng = np.random.default_rng(0)
    for _ in range(50):
        sel = rng.random(len(part)) < 0.2
        m_in_order = sel[order].astype(np.float64)
        green = t_fp + np.sum(np.maximum.accumulate(m_in_order) * dy + m_in_order * dw)
        assert green == pytest.approx(costs.step_cost(sel), rel=1e-12)


def test_green_trainer_selection_respects_the_budget():
    sched = _schedule(methods.green_trainer(rho=0.5), layers=3)
    imp = -np.abs(np.random.default_rng(1).normal(size=len(sched.part)))  # all useful
    mask = sched.select(imp)
    assert mask.any()
    assert sched.costs.step_cost(mask > 0) <= 0.5 * sched.costs.full + 1e-6 * sched.costs.full


# ------------------------------------------------------------------ LISA / random-k / BAdam
def test_lisa_samples_n_distinct_layers_constant_within_an_interval():
    sched = _schedule(methods.lisa(n_layers=2, interval=5), layers=4)
    seen = []
    for step in range(0, 400):
        mask, probe, new = sched.plan(step, None)
        assert not probe and new is None
        active = _active_layers(sched, mask)
        assert len(active) == 2
        assert mask[sched.embed_ids].sum() == 0  # embeddings are excluded: always trained
        if step % 5:
            assert active == seen[-1]
        seen.append(active)
    counts = np.bincount(np.concatenate(seen[::5]), minlength=4)
    assert counts.min() > 0.6 * counts.mean()  # uniform over layers (80 draws of 2)
    # Deterministic in (seed, step): a resumed run draws the same layers.
    again = _schedule(methods.lisa(n_layers=2, interval=5), layers=4)
    assert _active_layers(again, again.plan(123, None)[0]) == seen[123]


def test_lisa_trains_embeddings_and_random_layers_freezes_them():
    params = _params(2)
    frozen = {s.path for s in methods.random_layers().partition(params, NUM_HEADS).leaves
              if s.frozen}
    assert any("embeddings" in p for p in frozen)
    lisa_part = methods.lisa().partition(params, NUM_HEADS)
    assert not any(s.frozen for s in lisa_part.leaves)
    assert all(s.n_groups == 0 for s in lisa_part.leaves if "embeddings" in s.path)


@pytest.mark.parametrize("order,expected", [
    ("ascending", [0, 0, 1, 1, 2, 2, 0, 0]),
    ("descending", [2, 2, 1, 1, 0, 0, 2, 2]),
])
def test_badam_rotation(order, expected):
    sched = _schedule(methods.badam(switch_every=2, order=order), layers=3)
    got = [_active_layers(sched, sched.plan(s, None)[0]) for s in range(8)]
    assert got == [[b] for b in expected]


def test_badam_random_order_is_a_permutation_per_pass():
    sched = _schedule(methods.badam(switch_every=1, order="random"), layers=4)
    blocks = [_active_layers(sched, sched.plan(s, None)[0])[0] for s in range(12)]
    for p in range(3):
        assert sorted(blocks[4 * p:4 * p + 4]) == [0, 1, 2, 3]
    assert blocks[:4] != blocks[4:8] or blocks[4:8] != blocks[8:]


def test_badam_resets_moments_by_default():
    assert methods.badam().moments == "reset"
    assert methods.lisa().moments is None  # 'keep'


# ------------------------------------------------------------------ engine pieces
def test_install_mask_replaces_only_the_mask():
    import optax

    from rgft_jax._src import residual

    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = residual.residual_guided(optax.adam(0.1), update_every=1,
                                  warmup_steps=anchors.NEVER)
    state = tx.init(params)
    new = anchors.install_mask(state, np.array([0.0, 1.0]))
    assert residual.error_map(new).mask.tolist() == [0.0, 1.0]
    same = [x is y for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(new))]
    assert same.count(False) == 1
    with pytest.raises(ValueError, match="shape"):
        anchors.install_mask(state, np.ones(3))


@pytest.mark.parametrize("kw,match", [
    (dict(n_layers=0), "n_layers"), (dict(interval=0), "interval"),
])
def test_lisa_rejects_bad_knobs(kw, match):
    with pytest.raises(ValueError, match=match):
        methods.lisa(**kw)


@pytest.mark.parametrize("ctor,kw,match", [
    (methods.badam, dict(order="sideways"), "order"),
    (methods.autofreeze, dict(percentile=120), "percentile"),
    (methods.green_trainer, dict(rho=0.0), "rho"),
    (methods.green_trainer, dict(select_every=1), "select_every"),
])
def test_anchors_reject_bad_knobs(ctor, kw, match):
    with pytest.raises(ValueError, match=match):
        ctor(**kw)


def test_every_anchor_is_registered_with_a_one_line_description():
    for name in ("lisa", "random_layers", "badam", "autofreeze", "green_trainer"):
        ctor = methods.get(name)
        assert ctor.__doc__ and ctor.__doc__.strip().splitlines()[0]
        assert ctor().policy == "schedule"

