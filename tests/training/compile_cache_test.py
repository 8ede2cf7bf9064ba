"""The compiled-step cache: bounded LRU, keyed on the full abstract signature of the inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training._compile_cache import CompileCache, signature

from .conftest import NUM_CLASSES, NUM_HEADS, batches, bert


def test_lru_evicts_the_least_recently_used():
    built = []
    cache = CompileCache(2)

    def get(key):
        return cache.get(key, lambda: built.append(key) or key.upper())

    assert get("a") == ("A", True) and get("b") == ("B", True)
    assert get("a") == ("A", False)  # a is now the most recent
    assert get("c") == ("C", True)  # evicts b
    assert cache.keys() == ["a", "c"] and len(cache) == 2
    assert get("b") == ("B", True)  # rebuilt, evicts a
    assert built == ["a", "b", "c", "b"] and cache.compilations == 4
    assert "a" not in cache


@pytest.mark.parametrize("max_size", [0, -1, 1.5, True])
def test_bound_is_validated(max_size):
    with pytest.raises(ValueError, match=f"max_size={max_size!r}"):
        CompileCache(max_size)


def test_signature_sees_dtype_shape_structure_and_sharding():
    x = {"a": jnp.zeros((2, 3), jnp.float32), "b": jnp.zeros((2,), jnp.int32)}
    same = {"a": jnp.ones((2, 3), jnp.float32), "b": jnp.ones((2,), jnp.int32)}
    assert signature(x) == signature(same)  # values do not matter
    variants = [
        {**x, "a": x["a"].astype(jnp.bfloat16)},
        {**x, "b": x["b"].astype(jnp.float32)},
        {**x, "a": jnp.zeros((3, 2))},
        {"a": x["a"], "c": x["b"]},
        (x["a"], x["b"]),
    ]
    for v in variants:
        assert signature(v) != signature(x), v
    cpu = jax.devices()[0]
    placed = jax.device_put(x["a"], jax.sharding.SingleDeviceSharding(cpu))
    assert signature(placed) == signature(x["a"])  # the same placement
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("d",))
    named = jax.device_put(x["a"], jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    assert signature(named) != signature(x["a"])  # another sharding object: another program


def test_same_shapes_with_another_dtype_compile_again():
    # Fails before the fix: the key held batch shapes only, so the float32 attention mask
    # reached the int32 step's executable, which raised "Argument types differ".
    tr = Trainer(bert(1), methods.full(learning_rate=1e-2),
                 TrainConfig(steps=3, progress=False, log_every=0), num_heads=NUM_HEADS,
                 num_layers=1, num_classes=NUM_CLASSES)
    b = batches(2)
    first = tr.train_step(b[0])
    other = {**b[1], "attention_mask": b[1]["attention_mask"].astype(np.float32)}
    second = tr.train_step(other)
    assert tr.compilations == 2
    assert np.isfinite(first["loss"]) and np.isfinite(second["loss"])
    tr.train_step(b[1])  # back to int32: the first step is still cached
    assert tr.compilations == 2
    assert tr.summary()["steps"] == 3
