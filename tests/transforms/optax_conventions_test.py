"""optax conventions: params placeholder, array-like hyperparameters, nested state, shapes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rgft_jax as rgft
from rgft_jax.components import Rule

RULES = (Rule(r"w$", kind="head", axis=1, groups=4),)


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"a": {"w": jax.random.normal(k1, (8, 16))},
            "b": {"w": jax.random.normal(k2, (4, 8)), "bias": jnp.zeros((3,))}}


def _grads(params, i):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(100 + i), len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) * (1 + j)
                                        for j, (k, x) in enumerate(zip(keys, leaves))])


# ---------------------------------------------------------------- 1. params placeholder
@pytest.mark.parametrize("make,copies", [
    (lambda: rgft.residual_guided(optax.adamw(1e-3), RULES), 2),
    (lambda: optax.chain(rgft.residual_mask(RULES), optax.adam(1e-3)), 2),
    # The compact state's inner trees are compact ones, not copies of the params.
    (lambda: rgft.residual_guided(optax.adamw(1e-3), RULES, capacity=0.5), 0),
], ids=["guided", "chain_mask", "guided_compact"])
def test_tree_map_params_maps_the_params_copies_only(make, copies):
    tx = make()
    params = _params()
    state = tx.init(params)
    specs = jax.tree.map(lambda x: f"spec{x.shape}", params)
    mapped = optax.tree_utils.tree_map_params(
        tx, lambda _, spec: spec, state, specs, transform_non_params=lambda _: None)
    n = sum(isinstance(x, str) for x in jax.tree.leaves(mapped))
    assert n == copies * len(jax.tree.leaves(params))


def test_tree_map_params_on_guided_adamw_counts_moment_copies():
    tx = rgft.residual_guided(optax.adamw(1e-3))
    params = _params()
    state = tx.init(params)
    mapped = optax.tree_utils.tree_map_params(
        tx, lambda _: "p", state, transform_non_params=lambda _: None)
    assert jax.tree.leaves(mapped).count("p") == 2 * len(jax.tree.leaves(params))
    assert mapped.tracker.residuals is None  # the tracker is not a params copy


def test_rgft_nested_inside_residual_guided_inner_optimizer():
    params = _params()
    inner = optax.chain(rgft.residual_mask(update_every=1), optax.adam(0.1))
    tx = rgft.residual_guided(inner, RULES, threshold=("top_k", 1), alpha=0.0, update_every=1)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for i in range(3):
        updates, state = step(_grads(params, i), state, params)
    maps = rgft.find_error_maps(state)
    assert [m.residuals.shape for m in maps] == [(9,), (3,)]  # outer first, then inner
    assert int(maps[0].step) == int(maps[1].step) == 3
    # Outer top-1: only one head of one leaf moves.
    moved = [float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(updates)]
    assert sum(moved) == 1


def test_partition_still_validated_against_the_real_tree():
    other = rgft.Partition.build({"x": jnp.ones(3)})
    with pytest.raises(ValueError, match="another tree"):
        rgft.residual_guided(optax.adam(1.0), other).init(_params())


# ---------------------------------------------------------------- 2. shape-changed moments
def test_adafactor_factored_moments_pass_through_and_masked_component_does_not_move():
    params = {"a": jnp.ones((8, 6)), "b": jnp.ones((16, 12)) * 0.5}
    tx = rgft.residual_guided(optax.adafactor(1e-2, min_dim_size_to_factor=4),
                              threshold=("top_k", 1), alpha=0.0, beta=0.0, update_every=1)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t in range(4):
        g = {"a": jnp.full((8, 6), 10.0 + t), "b": jnp.full((16, 12), 0.1)}
        updates, state = step(g, state, params)
        params = optax.apply_updates(params, updates)
        assert rgft.error_map(state).mask.tolist() == [1.0, 0.0]
        np.testing.assert_array_equal(updates["b"], np.zeros((16, 12), np.float32))
        assert float(jnp.abs(updates["a"]).max()) > 0
    np.testing.assert_array_equal(params["b"], np.full((16, 12), 0.5, np.float32))
    # The factored row/column statistics of 'b' are not params-shaped: they kept updating.
    fac = state.inner_state[0] if isinstance(state.inner_state, tuple) else state.inner_state
    rows = [x for x in jax.tree.leaves(fac) if x.shape == (16,)]
    assert rows and all(float(jnp.abs(x).max()) > 0 for x in rows)


# ---------------------------------------------------------------- 4. inject_hyperparams
@pytest.mark.parametrize("form", ["mask", "guided"])
def test_inject_hyperparams_with_schedules_and_state_overrides(form):
    params = _params()
    alpha = optax.linear_schedule(0.5, 0.9, 4)
    beta = optax.linear_schedule(0.0, 1.0, 4)
    if form == "mask":
        tx = optax.inject_hyperparams(rgft.residual_mask)(
            RULES, alpha=alpha, beta=beta, gamma=0.1, min_lr_scale=0.2, update_every=1)
    else:
        tx = optax.inject_hyperparams(rgft.residual_guided)(
            optax.adam(1e-2), RULES, alpha=alpha, beta=beta, gamma=0.1, min_lr_scale=0.2,
            update_every=1)
    state = tx.init(params)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(g, s):
        return tx.update(g, s, params)

    ref = (rgft.residual_mask(RULES, alpha=0.5, beta=0.0, gamma=0.1, min_lr_scale=0.2,
                              update_every=1) if form == "mask" else
           rgft.residual_guided(optax.adam(1e-2), RULES, alpha=0.5, beta=0.0, gamma=0.1,
                                min_lr_scale=0.2, update_every=1))
    rstate = ref.init(params)
    g0 = _grads(params, 0)
    _, state = step(g0, state)
    _, rstate = ref.update(g0, rstate, params)
    # Step 1 uses the schedules' first values: alpha 0.5, beta 0 (unit LR multipliers).
    np.testing.assert_allclose(rgft.error_map(state).residuals,
                               rgft.error_map(rstate).residuals, rtol=1e-6)
    np.testing.assert_array_equal(rgft.error_map(state).lr_scale, np.ones(9, np.float32))
    for i in range(1, 4):
        _, state = step(_grads(params, i), state)
    lr = np.asarray(rgft.error_map(state).lr_scale)
    assert len(set(np.round(lr, 5))) > 1  # beta > 0 now
    # A hyperparameter changed in the state takes effect without recompiling.
    state.hyperparams["gamma"] = jnp.asarray(0.3, state.hyperparams["gamma"].dtype)
    _, state = step(_grads(params, 5), state)
    mask = set(np.asarray(rgft.error_map(state).mask).tolist())
    assert mask == {1.0, float(np.float32(0.3))}


def test_array_hyperparameters_are_not_validated_but_numbers_are():
    rgft.residual_mask(alpha=jnp.asarray(0.9), gamma=jnp.asarray(0.0), beta=jnp.asarray(2.0),
                       min_lr_scale=jnp.asarray(0.5), update_every=jnp.asarray(3))
    rgft.residual_mask(alpha=np.float32(0.5), update_every=np.int64(2))
    with pytest.raises(ValueError, match=r"alpha=np.float64\(1.5\): the EMA decay"):
        rgft.residual_mask(alpha=np.float64(1.5))


def test_beta_zero_as_an_array_gives_unit_multipliers_under_jit():
    params = _params()

    @jax.jit
    def run(beta, g):
        tx = rgft.residual_mask(RULES, beta=beta, update_every=1)
        return tx.update(g, tx.init(params))[1].lr_scale

    np.testing.assert_array_equal(run(jnp.asarray(0.0), _grads(params, 0)), np.ones(9))
    assert len(set(np.asarray(run(jnp.asarray(1.0), _grads(params, 0))).tolist())) > 1


# ---------------------------------------------------------------- 6. nested state
def test_guided_state_nests_the_tracker_under_tracker():
    params = _params()
    state = rgft.residual_guided(optax.adam(1e-3), RULES).init(params)
    assert isinstance(state, rgft.ResidualGuidedState)
    assert state._fields == ("tracker", "inner_state")
    assert isinstance(state.tracker, rgft.ResidualTrackerState)
    assert state.tracker._fields == ("count", "residuals", "mask", "lr_scale", "skipped")
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
    assert ".tracker.residuals" in paths and ".tracker.count" in paths
    mstate = rgft.residual_mask(RULES).init(params)
    assert isinstance(mstate, rgft.ResidualMaskState)
    assert mstate._fields == rgft.ResidualTrackerState._fields


# ---------------------------------------------------------------- 10. static pattern
def _pattern_setup(make):
    """A tree whose leaf 'a' is fully masked (top-1 keeps a head of 'b'), and its pattern."""
    params = {"a": jnp.ones((8, 16)), "b": jnp.ones((8, 16)), "c": jnp.ones(4)}
    part = rgft.Partition.build(params, [Rule(r"^[ab]$", kind="head", axis=1, groups=4)])
    tx = make(part)
    pattern = (False, True, True)  # tree_leaves order: a, b, c
    return params, part, tx, pattern


@pytest.mark.parametrize("moments", ["keep", "reset", ("decay", 0.5)])
def test_rgft_trainable_is_bit_identical_when_dead_leaves_are_masked(moments):
    thr = lambda r: jnp.arange(r.shape[0]) >= 4  # 'a' (components 0-3) always masked
    params, part, tx, pattern = _pattern_setup(lambda part: rgft.residual_guided(
        optax.adamw(0.1, weight_decay=0.1), part, threshold=thr, warmup_steps=1,
        update_every=1, moments=moments))
    step = jax.jit(tx.update, static_argnames="rgft_trainable")
    s0 = s1 = tx.init(params)
    rng = np.random.default_rng(0)
    for _ in range(4):
        g = {k: jnp.asarray(rng.normal(size=x.shape), jnp.float32) for k, x in params.items()}
        g["a"] = jnp.zeros_like(g["a"])  # not differentiated in the pattern's step
        u0, s0 = step(g, s0, params)
        u1, s1 = step(g, s1, params, rgft_trainable=pattern)
        chex.assert_trees_all_equal(u0, u1)
        chex.assert_trees_all_equal(s0, s1)
    assert int(s1.inner_state[0].count) == 4  # Adam's count advanced as usual


def test_rgft_trainable_drops_the_inner_work_of_dead_leaves():
    params = {"a": jnp.ones((64, 64)), "b": jnp.ones((64, 64)), "c": jnp.ones(4)}
    tx = rgft.residual_guided(optax.adamw(0.1), [Rule(r"^[ab]$", axis=1, groups=4)])
    state = tx.init(params)

    def cost(pattern):
        fn = jax.jit(lambda g, s: tx.update(g, s, params, rgft_trainable=pattern))
        compiled = fn.lower(params, state).compile()
        ca = compiled.cost_analysis()
        ca = ca[0] if isinstance(ca, list) else ca
        return ca["flops"], len(compiled.as_text())

    flops_none, size_none = cost(None)
    flops_dead, size_dead = cost((False, True, True))
    assert flops_dead < 0.75 * flops_none
    assert size_dead < size_none


def test_rgft_trainable_of_the_wrong_length_is_an_error():
    tx = rgft.residual_guided(optax.sgd(0.1))
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="rgft_trainable: expected None or a static tuple of 2"):
        tx.update(params, tx.init(params), params, rgft_trainable=(True,))


def test_residual_mask_accepts_rgft_trainable():
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    tx = rgft.residual_mask(update_every=1, threshold=("top_k", 1))
    g = {"a": jnp.zeros(2), "b": jnp.ones(3)}
    u0, _ = tx.update(g, tx.init(params))
    u1, _ = tx.update(g, tx.init(params), rgft_trainable=(False, True))
    chex.assert_trees_all_equal(u0, u1)
