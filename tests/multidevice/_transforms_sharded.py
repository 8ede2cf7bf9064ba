"""Run with 8 fake CPU devices: sharded RGFT updates equal single-device ones."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import rgft_jax as rgft  # noqa: E402

assert jax.device_count() == 8, jax.devices()
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
