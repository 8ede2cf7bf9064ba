"""Run with 8 fake CPU devices: a Trainer on a ('data', 'fsdp') mesh trains like one device."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import rgft_jax as rgft  # noqa: E402
from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification  # noqa: E402
from rgft_jax.training import TrainConfig, Trainer, methods  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")
# Tiny programs: LLVM optimisation costs more than it saves (see tests/training/conftest.py).
jax.config.update("jax_disable_most_optimizations", True)

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))
# vocab 8192 x width 32 = 2**18 entries: the word embedding is large enough for fsdp_spec to
# shard it over 'fsdp'; every other leaf is replicated.
cfg = BertConfig(vocab_size=8192, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=16)
rng = np.random.default_rng(0)
batches = []
for _ in range(3):
    ids = rng.integers(1, 64, size=(16, 8)).astype(np.int32)  # 16 rows: 2 per device
    batches.append({"input_ids": ids, "attention_mask": np.ones_like(ids),
                    "token_type_ids": np.zeros_like(ids),
                    "label": (ids[:, 0] % 3).astype(np.int32)})

METHODS = {
    "full": methods.full(learning_rate=1e-3),
    # update_every=2: steps 1-2 are probes (full gradient), step 3 a sparse step; a low
    # threshold leaves some heads active, so it takes group-sparse weight gradients too.
    "rgft": methods.rgft(learning_rate=1e-3, update_every=2, threshold=("percentile", 25)),
}
for kind, method in METHODS.items():
    trainers = {}
    for sharded in (False, True):
        tr = Trainer(BertForSequenceClassification(cfg, 3, rngs=nnx.Rngs(0)), method,
                     TrainConfig(steps=3, progress=False, log_every=1), num_heads=4,
                     num_layers=2, num_classes=3, mesh=mesh if sharded else None)
        if not sharded:
            init = jax.device_get(tr.state.params)
        tr.fit(iter(batches))
        assert int(tr.state.step) == 3
        trainers[sharded] = tr
    one, many = trainers[False], trainers[True]
    emb = many.state.params["encoder"]["embeddings"]["word"]["embedding"][...]
    fsdp = NamedSharding(mesh, P("fsdp", None))
    assert emb.sharding.is_equivalent_to(fsdp, emb.ndim), emb.sharding  # sharded, stays so
    assert len(emb.sharding.device_set) == 8
    assert len(emb.addressable_shards[0].data) == 8192 // 4
    # Adam's moments of the embedding are sharded like it.
    like = [x for x in jax.tree.leaves(many.state.opt_state) if x.shape == emb.shape]
    assert len(like) == 2 and all(x.sharding.is_equivalent_to(fsdp, 2) for x in like)
    if kind == "rgft":
        sparse = [p for p, obs, _ in one.accounting.pattern_steps if not obs]
        assert len(sparse) == 1, one.accounting.pattern_steps  # step 3
        assert any(not isinstance(t, bool) for t in sparse[0])  # group-sparse leaves
        assert one.accounting.pattern_steps == many.accounting.pattern_steps
        e1, e8 = rgft.error_map(one.state.opt_state), rgft.error_map(many.state.opt_state)
        np.testing.assert_array_equal(e1.mask, e8.mask)
        np.testing.assert_allclose(e1.residuals, e8.residuals, rtol=1e-5, atol=1e-7)
    # Same params after 3 steps (reduction orders differ across devices: not bit-exact).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5), one.state.params, many.state.params)
    moved = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(init), jax.tree.leaves(jax.device_get(many.state.params)))]
    assert sum(moved) > len(moved) // 2, "the sharded run should have trained"
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree.leaves(one.state.params), jax.tree.leaves(many.state.params)))
    print(f"{kind}: max |params(1 device) - params(mesh)| = {diff:.2e}")
print("TRAINING_SHARDED_OK")
