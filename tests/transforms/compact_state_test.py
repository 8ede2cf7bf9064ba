"""Compact optimizer state, moment policies and frozen leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rgft_jax as rgft
from rgft_jax._src import compact

RULES = [
    rgft.Rule("^head", exclude=True),
    rgft.Rule("q$", kind="head", axis=1, groups=4),
    rgft.Rule("b$", kind="head", axis=0, groups=4),
]


def _params(seed=0, layers=3, head_dim=6):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    return {"layers": [{"q": f(8, 4, head_dim), "b": f(4, head_dim), "ln": f(64)}
                       for _ in range(layers)],
            "head": f(8, 3)}


def _grads(params, t):
    rng = np.random.default_rng(100 + t)
    # Per-step scales per leaf make the residual ranking (and so the mask) move.
    return jax.tree.map(
        lambda x: jnp.asarray(rng.normal(size=x.shape) * rng.uniform(0.1, 3.0), jnp.float32),
        params)


def _run(tx, params, steps):
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs, masks = [], []
    for t in range(steps):
        u, state = update(_grads(params, t), state, params)
        params = optax.apply_updates(params, u)
        outs.append(u)
        masks.append(np.asarray(state.tracker.mask))
    return outs, masks, state


KW = dict(threshold=("top_fraction", 0.4), update_every=1, beta=0.5)


@pytest.mark.parametrize("inner", [
    lambda: optax.adamw(0.1, weight_decay=0.1),
    lambda: optax.chain(optax.clip_by_global_norm(1e9), optax.sgd(0.1, momentum=0.9)),
])
def test_compact_equals_dense_reset_when_the_mask_fits(inner):
    params = _params()
    part = rgft.Partition.build(params, RULES)
    dense = rgft.residual_guided(inner(), part, moments="reset", **KW)
    comp = rgft.residual_guided(inner(), part, capacity=1.0, **KW)
    ud, md, _ = _run(dense, params, 10)
    uc, mc, _ = _run(comp, params, 10)
    changes = sum(not np.array_equal(a, b) for a, b in zip(md[1:], md[:-1]))
    assert changes >= 3, "the test needs masks that move"
    for t, (a, b) in enumerate(zip(ud, uc)):
        np.testing.assert_array_equal(md[t], mc[t])
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, atol=1e-6, err_msg=f"step {t}")


def test_compact_state_memory_scales_with_capacity_and_masked_entries_do_not_move():
    params = _params(layers=6, head_dim=32)  # rows of 32-multiples: no chunk padding
    part = rgft.Partition.build(params, RULES)
    dense_bytes = sum(x.nbytes for x in jax.tree.leaves(optax.adam(0.1).init(params)))
    tx = rgft.residual_guided(optax.adam(0.1), part, capacity=0.25, threshold="median",
                              update_every=2)
    updates, masks, state = _run(tx, params, 6)
    pool = compact.Pool(part, 0.25)
    mu = state.inner_state[0].mu
    assert mu["pool"].shape == (pool.slots, 32)
    assert pool.slots == int(np.ceil(0.25 * pool.num_chunks))
    comp_bytes = sum(x.nbytes for x in jax.tree.leaves(state.inner_state))
    head = params["head"].nbytes * 2  # excluded leaves keep full moments
    assert comp_bytes - head <= 0.26 * (dense_bytes - head)
    for u, m in zip(updates, masks):
        # Admitted components fit the pool; everything else gets exactly zero.
        assert int(pool.component_chunks[m > 0].sum()) <= pool.slots
        zero = part.broadcast(jnp.asarray(m == 0, jnp.float32), fill=0.0)
        for x, z in zip(jax.tree.leaves(u), jax.tree.leaves(zero)):
            assert np.all(np.asarray(x)[np.asarray(z) > 0] == 0)


def test_admit_takes_highest_residuals_that_fit():
    r = jnp.asarray([0.1, 0.5, 0.3, 0.9, 0.2])
    chunks = np.asarray([1, 2, 2, 3, 1])
    active = jnp.asarray([True, True, True, True, False])
    out = np.asarray(compact.admit(r, active, chunks, slots=5))
    # 3 (3 chunks) then 1 (2 chunks) = 5; 2 does not fit; 4 is not active.
    np.testing.assert_array_equal(out, [False, True, False, True, False])


def test_pool_gather_scatter_roundtrip():
    params = _params()
    part = rgft.Partition.build(params, RULES)
    pool = compact.Pool(part, 1.0)
    idx = pool.indices(jnp.ones(len(part)))
    back = pool.scatter(pool.gather(params, idx), idx, params)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("policy", ["keep", "reset", ("decay", 0.5)])
def test_moment_policies_of_masked_components(policy):
    params = {"a": jnp.ones(4), "b": jnp.ones(3)}
    tx = rgft.residual_guided(optax.adam(0.1), threshold=("top_k", 1), update_every=1,
                              moments=policy)
    state = tx.init(params)
    # Step 1: 'a' dominates ('b' masked); step 2: 'b' dominates ('a' masked).
    _, state = tx.update({"a": jnp.full(4, 10.0), "b": jnp.full(3, 0.1)}, state, params)
    mu_a = np.asarray(state.inner_state[0].mu["a"])
    _, state = tx.update({"a": jnp.full(4, 0.01), "b": jnp.full(3, 100.0)}, state, params)
    after = np.asarray(state.inner_state[0].mu["a"])
    expected = {"keep": mu_a, "reset": 0 * mu_a}.get(policy if isinstance(policy, str) else "",
                                                     0.5 * mu_a)
    np.testing.assert_allclose(after, expected, rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(capacity=0.0), "capacity=0.0"),
    (dict(capacity=1.5), "capacity=1.5"),
    (dict(capacity=0.5, moments="keep"), "moments='keep' with capacity"),
    (dict(capacity=0.5, moments=("decay", 0.5)), "compact state keeps no moments"),
    (dict(moments="forget"), "moments='forget'"),
    (dict(moments=("decay", 2.0)), "rho must be in"),
    (dict(capacity=0.5, gamma=0.1), "gamma=0.1"),
])
def test_bad_state_options_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rgft.residual_guided(optax.adam(0.1), **kwargs)


def test_frozen_leaves_get_zero_updates_and_no_compact_state():
    params = _params()
    rules = [rgft.Rule("ln$", freeze=True), *RULES]
    part = rgft.Partition.build(params, rules)
    assert all(s.frozen for s in part.leaves if s.path.endswith("ln"))
    assert part.excluded_size == params["head"].size
    for capacity in (None, 0.5):
        tx = rgft.residual_guided(optax.adamw(0.1, weight_decay=0.5), part, capacity=capacity,
                                  threshold="median", update_every=1)
        updates, _, state = _run(tx, params, 3)
        for u in updates:
            for layer in u["layers"]:
                assert np.all(np.asarray(layer["ln"]) == 0)
        if capacity is not None:
            pool = compact.Pool(part, capacity)
            assert len(state.inner_state[0].mu["excluded"]) == 1  # the head only
            as_components = compact.Pool(rgft.Partition.build(params, RULES), capacity)
            assert pool.num_chunks == as_components.num_chunks - 3 * 64 // 32
    with pytest.raises(ValueError, match="freeze=True takes no"):
        rgft.Rule("x", freeze=True, exclude=True)


def test_frozen_leaves_are_not_costed_by_the_budget_model():
    from rgft_jax._src.budget import analytic_costs

    params = {"emb": {"embedding": jnp.zeros((50, 8))},
              "layers": [{"attention": {"query": {"kernel": jnp.zeros((8, 2, 4))}}}
                         for _ in range(2)]}
    base = [rgft.Rule("query/kernel$", kind="head", axis=1, groups=2)]
    kw = dict(tokens=16, seq_len=4, batch=4, num_layers=2, hidden=8, num_heads=2)
    train = analytic_costs(rgft.Partition.build(params, [rgft.Rule("emb", exclude=True), *base]),
                           **kw)
    frozen = analytic_costs(rgft.Partition.build(params, [rgft.Rule("emb", freeze=True), *base]),
                            **kw)
    # Always-trained embeddings force backprop through every layer into the fixed cost.
    assert frozen.fixed < train.fixed
    assert float(np.sum(frozen.dx)) > 0
