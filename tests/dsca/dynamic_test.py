"""The jitted dynamic DSCA update, its config, the module library and module masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _dsca_helpers import planted_sketches

from rgft_jax import dsca
from rgft_jax.components import Partition, Rule


def _run(cfg, xs):
    update = jax.jit(dsca.dsca_update, static_argnames=("config",))
    state = dsca.dsca_init(cfg.num_blocks, config=cfg)
    libs = []
    for x in xs:
        state, lib = update(state, jnp.asarray(x), config=cfg)
        libs.append(lib)
    return state, libs


@pytest.mark.parametrize(
    "kw",
    [
        dict(),  # dense kNN, cosine, eigh recomputes
        dict(kernel="gaussian", sparsify="top_p", top_p=0.5, eigh_max_blocks=16),
        dict(graph="sparse", knn=8),
        dict(graph="sparse", knn=12, sparsify="top_p", top_p=0.6),
    ],
    ids=["dense", "gaussian_top_p_lobpcg", "sparse_bcoo", "sparse_top_p"],
)
def test_planted_modules_recovered_and_stable(kw):
    truth = np.repeat(np.arange(4), 60)
    cfg = dsca.DSCAConfig(
        num_blocks=240, num_modules=4, embed_dim=4, sketch_dim=32, recompute_every=3, **kw
    )
    xs = [planted_sketches(truth, 32, 0.6, seed=t) for t in range(5)]
    state, libs = _run(cfg, xs)
    for lib in libs:
        assert float(dsca.adjusted_rand_index(truth, lib.labels)) >= 0.95
    assert np.isnan(float(libs[0].ari)) and np.isnan(float(libs[0].drift))
    for lib in libs[1:]:
        assert float(lib.ari) >= 0.95 and float(lib.nmi) >= 0.95
        # Matching keeps module ids: the same blocks keep the same module number.
        np.testing.assert_array_equal(np.asarray(lib.labels), np.asarray(libs[1].labels))
    assert [bool(lib.recomputed) for lib in libs] == [True, False, False, True, False]
    assert int(state.count) == 5
    lib = libs[-1]
    assert lib.members.shape == (4, 240) and lib.eigvals.shape == (4,)
    np.testing.assert_array_equal(np.asarray(lib.num_blocks), [60, 60, 60, 60])
    np.testing.assert_allclose(float(lib.energy_share.sum()), 1.0, rtol=1e-5)


def test_warm_updates_use_fewer_lobpcg_iterations_than_recomputes():
    truth = np.repeat(np.arange(4), 100)
    cfg = dsca.DSCAConfig(
        num_blocks=400,
        num_modules=4,
        embed_dim=4,
        sketch_dim=32,
        eigh_max_blocks=1,
        recompute_every=4,
        residual_tol=1e-5,
        recompute_iters=300,
    )
    xs = [planted_sketches(truth, 32, 0.8, seed=t) for t in range(4)]
    _, libs = _run(cfg, xs)
    cold = int(libs[0].lobpcg_iters)
    warm = [int(lib.lobpcg_iters) for lib in libs[1:]]
    assert max(warm) < cold, (cold, warm)


def test_no_recompilation_across_updates():
    traces = []

    def step(state, x):
        traces.append(1)
        return dsca.dsca_update(state, x, config=cfg)

    cfg = dsca.DSCAConfig(
        num_blocks=120,
        num_modules=3,
        embed_dim=3,
        sketch_dim=16,
        recompute_every=2,
        eigh_max_blocks=8,
    )
    truth = np.repeat(np.arange(3), 40)
    f = jax.jit(step)
    state = dsca.dsca_init(120, config=cfg)
    for t in range(5):  # covers first, warm and recompute updates
        state, _ = f(state, jnp.asarray(planted_sketches(truth, 16, 0.5, seed=t)))
    assert len(traces) == 1
    # The state keeps its types and shapes (the jit cache key) across updates.
    init = dsca.dsca_init(120, config=cfg)
    assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), init) == (
        jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), state)
    )


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(num_blocks=10, num_modules=11), "num_modules=11"),
        (dict(num_blocks=10, embed_dim=10), "embed_dim=10"),
        (dict(num_blocks=10, alpha=1.0), "alpha=1.0"),
        (dict(num_blocks=10, alpha=-0.1), "alpha=-0.1"),
        (dict(num_blocks=10, sketch_dim=0), "sketch_dim=0"),
        (dict(num_blocks=10, embed_dim=2, num_modules=2, kernel="rbf"), "kernel='rbf'"),
        (dict(num_blocks=10, embed_dim=2, num_modules=2, knn=10), "knn=10"),
        (dict(num_blocks=10, embed_dim=2, num_modules=2, graph="csr"), "graph='csr'"),
        (dict(num_blocks=10, embed_dim=2, num_modules=2, top_p=0.0), "top_p=0.0"),
        (dict(num_blocks=100, embed_dim=30, graph="sparse"), "embed_dim=30"),
        (dict(num_blocks=1, num_modules=1, embed_dim=1), "num_blocks=1"),
        (
            dict(num_blocks=10, embed_dim=2, num_modules=2, min_module_size=3, max_module_size=2),
            "max_module_size=2",
        ),
    ],
)
def test_config_rejects_malformed_values(kw, match):
    kw = dict(dict(num_modules=2, embed_dim=2), **kw)
    with pytest.raises(ValueError, match=match) as e:
        dsca.DSCAConfig(**kw)
    assert "allowed" in str(e.value)


def test_update_and_init_reject_mismatched_inputs():
    cfg = dsca.DSCAConfig(num_blocks=30, num_modules=3, embed_dim=3, sketch_dim=8)
    with pytest.raises(ValueError, match="config.num_blocks=30"):
        dsca.dsca_init(31, config=cfg)
    state = dsca.dsca_init(30, config=cfg)
    with pytest.raises(ValueError, match=r"\(30, 8\)"):
        dsca.dsca_update(state, jnp.ones((30, 9)), config=cfg)
    with pytest.raises(ValueError, match="sq_norms"):
        dsca.dsca_update(state, jnp.ones((30, 8)), jnp.ones(29), config=cfg)
    with pytest.raises(TypeError, match="DSCAConfig"):
        dsca.dsca_init(30, config=dict(num_blocks=30))


@pytest.mark.parametrize("width", [0, -16, 16.0, True])
def test_dsca_rules_reject_bad_block_width(width):
    with pytest.raises(ValueError, match=f"block_width must be an int >= 1, got {width!r}"):
        dsca.dsca_rules(2, block_width=width)


def _bert_like(seed=0, layers=2, d=16, heads=2, ffn=32):
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 64))

    def n(*shape):
        return jax.random.normal(next(keys), shape)

    tree = {"embeddings": {"word_embeddings": {"embedding": n(50, d)}}, "layers": []}
    for _ in range(layers):
        tree["layers"].append(
            {
                "attention": {
                    "query": {"kernel": n(d, heads * 8), "bias": n(heads * 8)},
                    "key": {"kernel": n(d, heads * 8), "bias": n(heads * 8)},
                    "value": {"kernel": n(d, heads * 8), "bias": n(heads * 8)},
                    "out": {"kernel": n(heads * 8, d)},
                },
                "mlp": {"up": {"kernel": n(d, ffn), "bias": n(ffn)}, "down": {"kernel": n(ffn, d)}},
                "norm": {"scale": n(d)},
            }
        )
    return tree


@pytest.mark.parametrize("attention", ["head", "block"])
def test_dsca_step_and_module_mask_round_trip_with_a_real_partition(attention):
    params = _bert_like()
    part = Partition.build(params, dsca.dsca_rules(2, block_width=8, attention=attention))
    cfg = dsca.DSCAConfig.for_partition(part, num_modules=3, embed_dim=2, sketch_dim=16)
    state = dsca.dsca_init(part, config=cfg)
    step = jax.jit(dsca.dsca_step, static_argnames=("partition", "config"))
    for t in range(2):
        state, lib = step(state, part, _bert_like(seed=t + 1), cfg)
    c = part.num_components
    assert lib.labels.shape == (c,)
    # Module sizes in parameters and energies come from the partition.
    sizes = np.asarray(part.sizes)
    for j in range(3):
        sel = np.asarray(lib.labels) == j
        np.testing.assert_allclose(float(lib.num_params[j]), sizes[sel].sum())
    grads = _bert_like(seed=2)
    np.testing.assert_allclose(
        float(lib.energy.sum()), float(part.sq_norms(grads).sum()), rtol=1e-4
    )
    # "Train only modules A and C" is one [C] mask, broadcast to the tree.
    chosen = [0, 2]
    mask = dsca.module_mask(lib, chosen)
    np.testing.assert_array_equal(np.asarray(mask), np.isin(np.asarray(lib.labels), chosen))
    tree_mask = part.broadcast(mask, fill=False)
    per_comp = part.reduce(
        jax.tree_util.tree_map(lambda m: m.astype(jnp.float32), tree_mask), fn=lambda x: x
    )
    np.testing.assert_allclose(np.asarray(per_comp), np.where(np.asarray(mask), sizes, 0))
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    masked = part.where(mask, ones, zeros)
    np.testing.assert_allclose(
        np.asarray(part.reduce(masked, fn=lambda x: x)), np.where(np.asarray(mask), sizes, 0)
    )
    described = dsca.describe_modules(lib, part)
    assert sum(d["num_blocks"] for d in described) == c
    assert {n for d in described for n in d["components"]} == set(part.names)


def test_module_mask_inputs():
    lab = jnp.array([0, 1, 2, 1], jnp.int32)
    assert dsca.module_mask(lab, []).tolist() == [False] * 4
    assert jax.jit(dsca.module_mask)(lab, jnp.array([1])).tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="1-D int"):
        dsca.module_mask(jnp.zeros((2, 2)), [0])


def test_diagnose_gives_the_seed_advice_when_out_of_range():
    truth = np.repeat(np.arange(3), 30)
    cfg = dsca.DSCAConfig(num_blocks=90, num_modules=3, embed_dim=3, sketch_dim=16,
                          kappa_rank=1, subspace_window=4)
    _, libs = _run(cfg, [planted_sketches(truth, 16, 0.1, seed=t) for t in range(2)])
    assert dsca.diagnose(libs[0], cfg) == ()  # one gradient: no kappa, no previous labels
    strict = dsca.DSCAConfig(
        num_blocks=90,
        num_modules=3,
        embed_dim=3,
        sketch_dim=16,
        kappa_rank=1,
        subspace_window=4,
        kappa_min=1.01,
        stability_min=1.01,
        drift_max=-1.0,
    )
    advice = dsca.diagnose(libs[1], strict)
    assert len(advice) == 2
    assert "increase r" in advice[0] and "LoRA" in advice[0]
    assert "increase alpha" in advice[1] and "ARI=" in advice[1] and "drift" in advice[1]


def test_state_is_orbax_checkpointable(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    truth = np.repeat(np.arange(3), 30)
    cfg = dsca.DSCAConfig(num_blocks=90, num_modules=3, embed_dim=3, sketch_dim=16)
    state, _ = _run(cfg, [planted_sketches(truth, 16, 0.3, seed=0)])
    assert all(isinstance(x, jax.Array) for x in state)
    with ocp.CheckpointManager(tmp_path) as mngr:
        mngr.save(0, args=ocp.args.StandardSave(state))
        mngr.wait_until_finished()
        abstract = jax.tree_util.tree_map(
            jax.ShapeDtypeStruct.from_value
            if hasattr(jax.ShapeDtypeStruct, "from_value")
            else (lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)),
            state,
        )
        restored = mngr.restore(0, args=ocp.args.StandardRestore(abstract))
    assert isinstance(restored, dsca.DSCAState)
    for a, b in zip(state, restored, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("m,k,lo,hi", [(96, 8, 3, 36), (16, 2, 2, None), (4096, 12, 85, 1024)])
def test_merge_small_split_large_on_by_default(m, k, lo, hi):
    cfg = dsca.DSCAConfig(num_blocks=m, num_modules=k, embed_dim=2)
    assert (cfg.min_module_size, cfg.max_module_size) == (lo, hi)
    off = dsca.DSCAConfig(num_blocks=m, num_modules=k, embed_dim=2, min_module_size=1,
                          max_module_size=None)
    assert (off.min_module_size, off.max_module_size) == (1, None)


def test_default_library_has_no_module_below_the_minimum():
    params = {"w": jnp.zeros((8, 256))}
    part = Partition.build(params, [Rule("w", kind="block", axis=1, width=4)])  # 64 blocks
    cfg = dsca.DSCAConfig.for_partition(part, num_modules=8, embed_dim=4, sketch_dim=16)
    assert cfg.min_module_size == 2
    state = dsca.dsca_init(part, config=cfg)
    step = jax.jit(dsca.dsca_step, static_argnames=("partition", "config"))
    for i in range(3):
        grads = {"w": jax.random.normal(jax.random.PRNGKey(i), (8, 256))}
        state, lib = step(state, part, grads, cfg)
    sizes = np.bincount(np.asarray(lib.labels), minlength=cfg.num_modules)
    assert np.all((sizes == 0) | (sizes >= cfg.min_module_size)), sizes


def test_top_p_thins_the_sparse_graph():
    truth = np.repeat(np.arange(4), 60)
    xs = [planted_sketches(truth, 32, 0.6, seed=t) for t in range(2)]
    kw = dict(num_blocks=240, num_modules=4, embed_dim=4, sketch_dim=32, graph="sparse", knn=12)
    knn, _ = _run(dsca.DSCAConfig(**kw), xs)
    top, _ = _run(dsca.DSCAConfig(sparsify="top_p", top_p=0.5, **kw), xs)
    nnz_knn = int(np.sum(np.asarray(knn.graph_w) > 0))
    nnz_top = int(np.sum(np.asarray(top.graph_w) > 0))
    assert 0 < nnz_top < nnz_knn
    # Every node keeps at least its strongest neighbour.
    assert np.all((np.asarray(top.graph_w) > 0).sum(axis=1) >= 1)
