"""Freezing and scaling semantics under sgd, adam and adamw (the README's claims)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rgft_jax as rgft

INNERS = {
    "sgd": lambda: optax.sgd(0.1),
    "sgd_momentum": lambda: optax.sgd(0.1, momentum=0.9),
    "adam": lambda: optax.adam(0.1),
    "adamw_wd": lambda: optax.adamw(0.1, weight_decay=0.5),
    # multi_transform keeps MaskedNode placeholders in each label's state.
    "multi_transform": lambda: optax.multi_transform(
        {"x": optax.adam(0.1), "y": optax.sgd(0.1, momentum=0.9)}, {"a": "x", "b": "y"}),
}


def _params():
    return {"a": jnp.linspace(-1.0, 1.0, 6), "b": jnp.linspace(0.5, 2.0, 4)}


def _grads(big: str, t: int):
    rng = np.random.default_rng(t)
    g = {"a": rng.normal(size=6).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    g[big] = g[big] * 100.0
    return g


def _moments(inner_state, key):
    """The arrays stored for param ``key`` in every params-shaped dict of an inner state."""
    out = []

    def visit(x):
        if isinstance(x, dict) and set(x) == {"a", "b"}:
            if not isinstance(x[key], optax.MaskedNode):
                out.append(np.asarray(x[key]))
        elif isinstance(x, dict):
            for y in x.values():
                visit(y)
        elif isinstance(x, (tuple, list)):  # NamedTuples included
            for y in x:
                visit(y)

    visit(inner_state)
    return out


@pytest.mark.parametrize("name", list(INNERS))
def test_hard_masked_component_does_not_move_and_moments_freeze(name):
    inner = INNERS[name]()
    tx = rgft.residual_guided(
        inner, alpha=0.0, threshold=("top_k", 1), beta=0.0, update_every=1)
    params = _params()
    state = tx.init(params)
    step = jax.jit(tx.update)
    # Phase 0: 'b' dominates for two steps, so its moments become non-zero.
    for t in range(2):
        updates, state = step(_grads("b", 50 + t), state, params)
        params = optax.apply_updates(params, updates)
    assert rgft.error_map(state).mask.tolist() == [0.0, 1.0]
    # Phase 1: 'a' dominates, so 'b' is hard-masked.
    for t in range(4):
        b_before = np.asarray(params["b"])
        moments_before = _moments(state.inner_state, "b")
        updates, state = step(_grads("a", t), state, params)
        params = optax.apply_updates(params, updates)
        assert rgft.error_map(state).mask.tolist() == [1.0, 0.0]
        np.testing.assert_array_equal(np.asarray(params["b"]), b_before)  # bit-identical
        for before, m in zip(moments_before, _moments(state.inner_state, "b"), strict=True):
            np.testing.assert_array_equal(m, before)
    if name != "sgd":  # both have non-trivial moments: 'b' preserved ones from phase 0
        for k in "ab":
            assert _moments(state.inner_state, k)
            assert all(np.abs(m).max() > 0 for m in _moments(state.inner_state, k))
    # Phase 2: 'b' dominates: it is unmasked and resumes from its preserved moments,
    # exactly as the plain inner optimizer would step from that state.
    g = _grads("b", 99)
    updates, state2 = step(g, state, params)
    assert rgft.error_map(state2).mask.tolist() == [0.0, 1.0]
    ref_updates, _ = inner.update(g, state.inner_state, params)
    # rtol 1e-5: jitted vs eager evaluation order of the same float32 formula.
    np.testing.assert_allclose(updates["b"], ref_updates["b"], rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(updates["a"], np.zeros(6, np.float32))


def test_gradient_side_hard_mask_leaks_under_adamw():
    """Documented failure mode: chain(residual_mask, adamw) keeps moving masked params."""
    tx = optax.chain(
        rgft.residual_mask(alpha=0.0, threshold=("top_k", 1), update_every=3),
        optax.adamw(0.1, weight_decay=0.5),
    )
    params = _params()
    state = tx.init(params)
    b_at_mask = None
    for t in range(8):
        updates, state = tx.update(_grads("a", t), state, params)
        params = optax.apply_updates(params, updates)
        if t == 2:  # first refresh at step 3 masks 'b'
            b_at_mask = np.asarray(params["b"])
    assert rgft.error_map(state).mask.tolist() == [1.0, 0.0]
    # Momentum from steps 1-2 and decoupled weight decay keep moving it.
    assert np.abs(np.asarray(params["b"]) - b_at_mask).max() > 1e-2


def _step_sizes(tx, params, steps=5):
    state = tx.init(params)
    start = params
    for _ in range(steps):
        g = {"a": jnp.full(6, 1.0), "b": jnp.full(4, 1.0)}
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return float(jnp.abs(params["a"] - start["a"]).mean()), float(
        jnp.abs(params["b"] - start["b"]).mean()), state


def test_soft_mask_is_undone_by_adam_on_gradients_but_not_on_updates():
    """gamma=0.1 on component 'b': a 10x smaller step only when applied to updates."""
    thr = lambda r: jnp.array([True, False])  # 'b' always masked (soft)
    kw = dict(threshold=thr, gamma=0.1, beta=0.0, update_every=1)
    params = _params()
    a1, b1, _ = _step_sizes(optax.chain(rgft.residual_mask(**kw), optax.adam(0.01)), params)
    a2, b2, _ = _step_sizes(rgft.residual_guided(optax.adam(0.01), **kw), params)
    assert b1 / a1 == pytest.approx(1.0, rel=1e-3)  # Adam's normalisation undoes the mask
    assert b2 / a2 == pytest.approx(0.1, rel=1e-3)


def test_component_lr_changes_step_under_guided_adamw():
    params = {"a": jnp.zeros(6), "b": jnp.zeros(4), "c": jnp.zeros(5)}
    tx = rgft.residual_guided(
        optax.adamw(0.01, weight_decay=0.0), alpha=0.0, threshold=lambda r: jnp.ones(3, bool),
        beta=1.0, update_every=1,
    )
    state = tx.init(params)
    g = {"a": jnp.full(6, 3.0), "b": jnp.full(4, 1.0), "c": jnp.full(5, 0.5)}
    updates, state = tx.update(g, state, params)
    lr = np.asarray(rgft.error_map(state).lr_scale)
    assert lr[0] > 1.0 > lr[2] and len(set(np.round(lr, 4))) == 3
    step = np.array([float(jnp.abs(updates[k]).mean()) for k in "abc"])
    # Adam's first step is lr * sign(g): the component multipliers are all that differs.
    np.testing.assert_allclose(step / step[1], lr / lr[1], rtol=1e-5)
    plain, _ = optax.chain(rgft.residual_mask(
        alpha=0.0, threshold=lambda r: jnp.ones(3, bool), beta=1.0, update_every=1),
        optax.adamw(0.01, weight_decay=0.0)).update(g, optax.chain(rgft.residual_mask(
            alpha=0.0, threshold=lambda r: jnp.ones(3, bool), beta=1.0, update_every=1),
            optax.adamw(0.01, weight_decay=0.0)).init(params), params)
    grad_side = np.array([float(jnp.abs(plain[k]).mean()) for k in "abc"])
    np.testing.assert_allclose(grad_side / grad_side[1], 1.0, rtol=1e-4)  # undone by Adam


def test_guided_under_nnx_optimizer_with_prebuilt_partition():
    """nnx.Optimizer inits on nnx.Param nodes and updates with plain arrays: one partition."""
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self):
            self.a = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
            self.b = nnx.Linear(4, 2, rngs=nnx.Rngs(1))

    model = Net()
    part = rgft.Partition.build(nnx.state(model, nnx.Param))
    opt = nnx.Optimizer(model, rgft.residual_guided(
        optax.adamw(0.1, weight_decay=0.5), part, threshold=("top_k", 1), alpha=0.0,
        update_every=1), wrt=nnx.Param)
    grads = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.ones_like(x) * (100.0 if "kernel" in str(p) and "'a'" in str(p) else 1.0),
        nnx.state(model, nnx.Param))
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    opt.update(model, grads)
    em = rgft.error_map(opt.opt_state)
    assert isinstance(em.mask, jax.Array)  # unwrapped from nnx's OptArray
    assert em.mask.tolist() == [0.0, 1.0, 0.0, 0.0]  # a/bias, a/kernel, b/bias, b/kernel
    after = nnx.state(model, nnx.Param)
    np.testing.assert_array_equal(after["b"]["kernel"][...], before["b"]["kernel"])
    assert not np.array_equal(after["a"]["kernel"][...], before["a"]["kernel"])


def test_update_on_another_tree_than_init_is_an_error():
    tx = rgft.residual_mask(update_every=1)
    state = tx.init({"a": jnp.ones(2), "b": jnp.ones(2), "c": jnp.ones(1)})
    with pytest.raises(ValueError, match="split into 1 components but the state was "
                                         "initialised for 3"):
        tx.update({"a": jnp.ones(2)}, state)
