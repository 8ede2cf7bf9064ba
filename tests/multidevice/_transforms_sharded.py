"""Run with 8 fake CPU devices: sharded RGFT updates equal single-device ones."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import rgft_jax as rgft  # noqa: E402

assert jax.device_count() == 8, jax.devices()


def axis_name_case():
    """Per-replica gradients under shard_map: with axis_name= every replica picks the same
    residuals and mask (the norms are psum-ed first); without it they diverge."""
    mesh1 = Mesh(np.array(jax.devices()), ("data",))
    rng1 = np.random.default_rng(1)
    params = {"a": np.ones((4, 8), np.float32), "b": np.ones((6,), np.float32),
              "c": np.ones((3, 3), np.float32)}
    # Replica i sees its own gradient: which leaf dominates differs between replicas.
    local = [{k: (rng1.normal(size=v.shape) * rng1.uniform(0.1, 10.0)).astype(np.float32)
              for k, v in params.items()} for _ in range(8)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *local)
    rules = [rgft.Rule("^a$", kind="head", axis=1, groups=4)]
    results = {}
    for form in ("mask", "guided"):
        for axis in (None, "data"):
            kw = dict(threshold=("top_k", 2), update_every=1, alpha=0.5, axis_name=axis)
            tx = (rgft.residual_mask(rules, **kw) if form == "mask" else
                  rgft.residual_guided(optax.adam(0.1), rules, **kw))
            state = tx.init(params)

            def run(g, s, p, tx=tx):
                g = jax.tree.map(lambda x: x[0], g)
                for _ in range(3):
                    _, s = tx.update(g, s, p)
                em = rgft.error_map(s)
                return em.residuals[None], em.mask[None]

            f = jax.jit(jax.shard_map(run, mesh=mesh1, in_specs=(P("data"), P(), P()),
                                      out_specs=(P("data"), P("data")), check_vma=False))
            r, m = jax.device_get(f(stacked, state, params))
            results[form, axis] = (r, m)
            same_r = all(np.array_equal(r[0], r[i]) for i in range(8))
            same_m = all(np.array_equal(m[0], m[i]) for i in range(8))
            print(f"{form} axis_name={axis}: replicas agree on residuals {same_r}, mask {same_m}")
            if axis is None:
                assert not same_r and not same_m, (form, r, m)
            else:
                assert same_r and same_m, (form, r, m)
                # The shared residuals are those of the summed squared norms.
                part = rgft.Partition.build(params, rules)
                sq = sum(np.asarray(part.sq_norms(g)) for g in local)
                share = np.sqrt(sq) / np.sqrt(sq).sum()
                c = len(part)
                want = np.full(c, 1.0 / c)
                for _ in range(3):
                    want = 0.5 * want + 0.5 * share
                np.testing.assert_allclose(r[0], want, rtol=1e-5)
    print("AXIS_NAME_OK")


if sys.argv[1:] == ["axis_name"]:
    axis_name_case()
    sys.exit(0)
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))
rules = rgft.components.bert(num_heads=8, neuron_width=16)
rng = np.random.default_rng(0)


def tree():
    return {"layers": [{
        "attention": {"query": {"kernel": rng.normal(size=(32, 8, 4)).astype(np.float32)},
                      "out": {"kernel": rng.normal(size=(8, 4, 32)).astype(np.float32)}},
        "mlp": {"up": {"kernel": rng.normal(size=(32, 64)).astype(np.float32)}},
    } for _ in range(2)], "embed": {"embedding": rng.normal(size=(40, 32)).astype(np.float32)}}


specs = {"layers": [{
    "attention": {"query": {"kernel": P("fsdp", None, None)},
                  "out": {"kernel": P(None, None, "fsdp")}},
    "mlp": {"up": {"kernel": P(None, "fsdp")}},
}] * 2, "embed": {"embedding": P("fsdp", None)}}
shard = lambda t: jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), t, specs)

params = tree()
grads = [tree() for _ in range(5)]
for make in (
    lambda: optax.chain(rgft.residual_mask(rules, update_every=2), optax.adamw(1e-2)),
    lambda: rgft.residual_guided(optax.adamw(1e-2, weight_decay=0.1), rules,
                                 threshold=("top_k", 10), update_every=2),
):
    tx = make()
    results = []
    for sharded in (False, True):
        p = shard(params) if sharded else params
        state = jax.jit(tx.init)(p)
        step = jax.jit(tx.update)
        for g in grads:
            u, state = step(shard(g) if sharded else g, state, p)
            p = optax.apply_updates(p, u)
        results.append((p, rgft.error_map(state)))
    (p1, e1), (p8, e8) = results
    leaf = p8["layers"][0]["attention"]["query"]["kernel"]
    assert len(leaf.sharding.device_set) == 8, leaf.sharding  # stays sharded
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), p1, p8)
    np.testing.assert_allclose(e1.residuals, e8.residuals, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(e1.mask, e8.mask)
print("SHARDED_OK")
