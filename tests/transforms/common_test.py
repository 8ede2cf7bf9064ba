"""Contract tests every RGFT transform passes (registry x dtype)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rgft_jax as rgft
from rgft_jax.components import Rule

RULES = (Rule(r"w$", kind="head", axis=1, groups=4),)

REGISTRY = [
    dict(name="mask_default", make=lambda: rgft.residual_mask(update_every=2)),
    dict(name="mask_topk_rules", make=lambda: rgft.residual_mask(
        RULES, threshold=("top_k", 3), update_every=2, beta=1.0)),
    dict(name="mask_soft_pct", make=lambda: rgft.residual_mask(
        RULES, threshold=("percentile", 30), gamma=0.2, update_every=1, warmup_steps=2)),
    dict(name="chain_mask_adamw", make=lambda: optax.chain(
        rgft.residual_mask(RULES, update_every=2), optax.adamw(1e-2, weight_decay=0.1))),
    dict(name="guided_adamw", make=lambda: rgft.residual_guided(
        optax.adamw(1e-2, weight_decay=0.1), RULES, update_every=2)),
    dict(name="guided_sgd_momentum", make=lambda: rgft.residual_guided(
        optax.sgd(0.1, momentum=0.9), RULES, threshold=("top_fraction", 0.5), update_every=1)),
    dict(name="guided_callable", make=lambda: rgft.residual_guided(
        optax.adam(1e-2), RULES, threshold=lambda r: r > jnp.mean(r), update_every=3)),
]
IDS = [r["name"] for r in REGISTRY]
DTYPES = [jnp.float32, jnp.bfloat16]


def _params(dtype):
    k1, k2 = jax.random.split(jax.random.key(0))
    return {
        "a": {"w": jax.random.normal(k1, (8, 16), dtype)},
        "b": {"w": jax.random.normal(k2, (4, 8), dtype), "bias": jnp.zeros((3,), dtype)},
    }


def _grads(params, i):
    keys = jax.random.split(jax.random.key(100 + i), 3)
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [
        (jax.random.normal(k, x.shape, jnp.float32) * (1 + j)).astype(x.dtype)
        for j, (k, x) in enumerate(zip(keys, leaves))])


def _typeof(tree):
    return jax.tree.map(jax.typeof, tree)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("entry", REGISTRY, ids=IDS)
def test_jit_no_recompile_dtype_and_state_type(entry, dtype):
    chex.clear_trace_counter()
    tx = entry["make"]()
    params = _params(dtype)
    state = jax.jit(tx.init)(params)
    type0 = _typeof(state)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(g, s, p):
        # Unknown extra arguments must be accepted (GradientTransformationExtraArgs).
        return tx.update(g, s, p, some_unrelated_arg=jnp.ones(()))

    for i in range(6):  # covers several mask refreshes
        updates, state = step(_grads(params, i), state, params)
        jax.tree.map(lambda u, p: chex.assert_type(u, p.dtype), updates, params)
        chex.assert_trees_all_equal_shapes(updates, params)
        assert _typeof(state) == type0
    assert int(rgft.error_map(state).step) == 6


@pytest.mark.parametrize("entry", REGISTRY, ids=IDS)
def test_init_on_shape_dtype_structs(entry):
    tx = entry["make"]()
    params = _params(jnp.float32)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    abstract_state = jax.eval_shape(tx.init, abstract)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), abstract_state) == jax.tree.map(
        lambda x: (x.shape, x.dtype), tx.init(params))


def test_residual_mask_init_directly_on_shape_dtype_structs():
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _params(jnp.float32))
    state = rgft.residual_mask(RULES).init(params)
    assert state.residuals.shape == (4 + 4 + 1,)  # a heads, b heads, b/bias
    np.testing.assert_allclose(np.sum(state.residuals), 1.0, rtol=1e-6)


@pytest.mark.parametrize("entry", REGISTRY, ids=IDS)
def test_inside_multisteps(entry):
    tx = optax.MultiSteps(entry["make"](), every_k_schedule=2)
    params = _params(jnp.float32)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for i in range(4):
        updates, state = step(_grads(params, i), state, params)
        if i % 2 == 0:  # accumulation step: no update
            assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates))
    # The inner transform saw 2 (averaged) gradients.
    assert int(rgft.error_map(state).step) == 2


def test_error_map_found_at_any_depth():
    params = _params(jnp.float32)
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3),
        optax.MultiSteps(optax.chain(rgft.residual_mask(RULES)), every_k_schedule=1),
    )
    em = rgft.error_map(tx.init(params))
    assert em.residuals.shape == (9,)
    two = optax.chain(rgft.residual_mask(), rgft.residual_guided(optax.sgd(1.0)))
    assert len(rgft.find_error_maps(two.init(params))) == 2
    with pytest.raises(ValueError, match="find_error_maps"):
        rgft.error_map(two.init(params))
    with pytest.raises(ValueError, match="no residual_mask"):
        rgft.error_map(optax.adam(1.0).init(params))


def test_update_ratio():
    params = _params(jnp.float32)
    part = rgft.Partition.build(params, RULES)
    mask = jnp.zeros(len(part)).at[part.index("a/w/head/0")].set(1.0)
    ratio, hard = rgft.update_ratio(mask, part)
    np.testing.assert_allclose(ratio, 32 / (128 + 32 + 3), rtol=1e-6)
    np.testing.assert_allclose(hard, ratio)
    ratio, hard = rgft.update_ratio(jnp.where(mask > 0, 1.0, 0.5), part)
    np.testing.assert_allclose(ratio, (32 + 0.5 * (163 - 32)) / 163, rtol=1e-6)
    np.testing.assert_allclose(hard, 32 / 163, rtol=1e-6)
    state = rgft.residual_mask(part).init(params)
    np.testing.assert_allclose(rgft.update_ratio(state, part)[0], 1.0)
