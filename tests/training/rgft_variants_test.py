"""The RGFT variants: the adaptive depth cut and the front-loaded budget."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgft_jax._src.budget import ComponentCosts, budget_threshold, depth_cut_threshold
from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training._rgft_variants import front_loaded_budget
from tests.training.conftest import BATCH, NUM_CLASSES, NUM_HEADS, SEQ, batches, bert

# Two layers of two components, a head above them; every dW and dX costs 1, fixed 1:
# full = 1 + 2 + 5 = 8.
COSTS = ComponentCosts(dw=[1.0] * 5, layer=[0, 0, 1, 1, 2], dx=[1.0, 1.0], fixed=1.0)


@pytest.mark.parametrize("r, depth, plain", [
    # Top layer + head hold 0.65 of the mass over 5 FLOPs (0.13/FLOP) > 1.0 over 8: cut at
    # layer 1, which fits whole; the plain budget spreads over both layers for 0.7.
    ([0.2, 0.15, 0.3, 0.15, 0.2], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]),
    # Mass low: the cut goes to layer 0, then the budget picks inside (same as plain).
    ([0.3, 0.3, 0.1, 0.1, 0.2], [1, 1, 0, 0, 1], [1, 1, 0, 0, 1]),
])
def test_depth_cut_against_hand_computed_masks(r, depth, plain):
    r = jnp.array(r)
    assert depth_cut_threshold(COSTS, 0.75)(r).astype(int).tolist() == depth
    assert budget_threshold(COSTS, 0.75)(r).astype(int).tolist() == plain


def test_depth_cut_stays_within_budget_and_traces():
    costs = ComponentCosts(dw=[1.0, 2.0, 1.0, 3.0, 1.0, 2.0, 0.5], layer=[-1, 0, 0, 1, 1, 2, 3],
                           dx=[2.0, 1.0, 1.0], fixed=2.0)
    rng = np.random.default_rng(0)
    for budget in (0.4, 0.6, 0.9):
        th = jax.jit(depth_cut_threshold(costs, budget))
        for _ in range(20):
            mask = np.asarray(th(jnp.asarray(rng.dirichlet(np.ones(7)), jnp.float32)))
            assert mask.any()
            assert costs.step_cost(mask) <= budget * costs.full + 1e-9


def test_depth_cut_with_no_layer_affordable_trains_only_the_top():
    costs = ComponentCosts(dw=[1.0, 1.0], layer=[0, 1], dx=[10.0], fixed=1.0)  # full 13
    mask = depth_cut_threshold(costs, 2 / 13)(jnp.array([0.9, 0.1]))
    assert mask.tolist() == [False, True]


def test_depth_cut_rejects_bad_budgets_naming_the_function():
    with pytest.raises(ValueError, match="depth_cut_threshold: budget=1.5"):
        depth_cut_threshold(COSTS, 1.5)
    with pytest.raises(ValueError, match="shape"):
        depth_cut_threshold(COSTS, 0.75)(jnp.ones(3))


def test_front_loaded_budget_keeps_the_mean():
    late = front_loaded_budget(0.45, 10, 100)
    assert late == pytest.approx(0.35 / 0.9)
    assert (10 * 1.0 + 90 * late) / 100 == pytest.approx(0.45)
    assert front_loaded_budget(0.45, 0, 100) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="front_steps=100"):
        front_loaded_budget(0.45, 100, 100)
    with pytest.raises(ValueError, match="front_steps=50 full steps already spend"):
        front_loaded_budget(0.45, 50, 100)


def test_variants_are_registered_rgft_methods():
    m = methods.get("rgft_front")(0.45, front_steps=10, total_steps=100, learning_rate=1e-3)
    assert isinstance(m, methods.RGFT) and m.label == "rgft_front"
    assert m.warmup_steps == 10 and m.budget == pytest.approx(0.35 / 0.9)
    d = methods.get("rgft_depth")(budget=0.45)
    assert d.kind == d.label == "rgft_depth" and d.policy == "refresh" and d.uses_sparse_steps
    with pytest.raises(ValueError, match="rgft_depth: budget=None"):
        methods.get("rgft_depth")(budget=None)
    m = methods.get("rgft_layers")(0.45, cache_hits=0.5, learning_rate=1e-3)
    assert isinstance(m, methods.RGFT) and m.label == "rgft_layers"
    assert (m.components, m.budget, m.cache_hits) == ("layers", 0.45, 0.5)


def _fit_at_budget(name, budget=0.8):
    """A 4-step run of the RGFT variant ``name`` on a 2-layer model, refreshed every 2 steps."""
    method = methods.get(name)(budget=budget, learning_rate=1e-2, update_every=2,
                               warmup_steps=1)
    tr = Trainer(bert(2), method, TrainConfig(steps=4, progress=False, log_every=1),
                 num_heads=NUM_HEADS, num_layers=2, num_classes=NUM_CLASSES,
                 batch_shape=(BATCH, SEQ))
    tr.fit(itertools.cycle(batches(2)))
    return tr


def test_rgft_layers_masks_whole_layers_within_its_budget():
    # Budget 0.8 of a 2-layer model: the top layer fits, both do not; the mask is per layer.
    tr = _fit_at_budget("rgft_layers")
    layers = [c.layer for c in tr.partition.components]
    assert sorted(set(layers)) == [-1, 0, 1]  # embeddings, two layers: one component each
    assert [layers.count(i) for i in (0, 1)] == [1, 1]
    mask = tr.error_history[-1][2]
    assert 0 < mask.sum() < len(mask)
    assert tr.summary()["update_ratio"] < 1.0
    tr.close()


def test_rgft_depth_trains_within_its_budget():
    tr = _fit_at_budget("rgft_depth")
    s = tr.summary()
    assert s["steps"] == 4 and np.isfinite(tr.history[-1]["loss"])
    assert tr.error_history and not tr.error_history[-1][2].all()  # a real mask
    assert s["update_ratio"] < 1.0
    tr.close()
