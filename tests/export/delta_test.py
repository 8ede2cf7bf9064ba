"""PEFT-style deltas: exact round trips, size proportional to the change, wrong bases refused."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from flax import nnx

import rgft_jax as rgft
from rgft_jax import adapters, components, export
from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification

HEADS, LAYERS = 4, 2


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=LAYERS,
                        num_attention_heads=HEADS, intermediate_size=64,
                        max_position_embeddings=16)
    return BertForSequenceClassification(config, 3, rngs=nnx.Rngs(seed))


def params_of(model) -> dict:
    return jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def bits(x) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x))
    return x.reshape(-1).view(np.uint8)


def assert_bitwise_equal(a, b) -> None:
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb
    for (path, x), (_, y) in zip(la, lb):
        assert np.asarray(x).dtype == np.asarray(y).dtype, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(bits(x), bits(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(autouse=True)
def _cheap_codegen(cheap_codegen):
    """Every test here compiles train steps: see ``cheap_codegen`` in tests/conftest.py."""


@pytest.fixture(scope="module")
def base():
    return params_of(tiny_bert())


@pytest.fixture(scope="module")
def partition(base):
    rules = (components.Rule(r"^classifier/", exclude=True),) + components.bert(HEADS)
    return rgft.Partition.build(base, rules)


def test_round_trip_exact_after_masked_update(base, partition, tmp_path):
    # Three steps of RGFT with a hard top-3 mask: most heads and neuron groups never move.
    opt = rgft.residual_guided(optax.adamw(1e-2), partition, threshold=("top_k", 3),
                               update_every=1, warmup_steps=1)
    params = jax.tree.map(jnp.asarray, base)
    state = opt.init(params)
    step = jax.jit(opt.update)
    for i in range(3):
        keys = jax.random.split(jax.random.key(i), len(jax.tree.leaves(params)))
        grads = jax.tree.unflatten(jax.tree.structure(params), [
            jax.random.normal(k, x.shape) for k, x in zip(keys, jax.tree.leaves(params))])
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
    f = tmp_path / "delta.safetensors"
    summary = export.save_delta(params, base, partition, f)
    restored = export.apply_delta(base, f)
    assert_bitwise_equal(restored, params)
    # Only a small part is stored: the masked components did not move.
    assert 0 < summary.stored_entries < 0.5 * summary.total_entries
    assert summary.file_bytes == os.path.getsize(f)
    # The classifier (excluded: always trained) is stored whole.
    assert "classifier/kernel" in summary.changed_leaves
    info = export.read_delta_info(f)
    assert info["leaves"]["classifier/kernel"]["stored"] == "leaf"


def changed_components(base, partition, names, delta=1.0):
    """``base`` with the entries of the components ``names`` moved by ``delta``."""
    active = np.isin(np.array(partition.names), names)
    where = partition.broadcast(jnp.asarray(active), fill=False)  # excluded leaves: unchanged
    out = jax.tree.map(lambda m, x: np.where(m, x + np.asarray(delta, x.dtype), x), where, base)
    return out, active


def test_file_size_scales_with_changed_components(base, partition, tmp_path):
    heads = [n for n in partition.names if "/head/" in n]
    sizes, entries = [], []
    for k in (1, 2, 4, 8):
        tuned, active = changed_components(base, partition, heads[:k])
        s = export.save_delta(tuned, base, partition, tmp_path / f"d{k}.safetensors")
        assert s.stored_entries == partition.sizes[active].sum()
        assert s.changed_groups == 7 * k  # a head: q/k/v kernels and biases, out kernel
        assert_bitwise_equal(export.apply_delta(base, s.path), tuned)
        sizes.append(s.file_bytes)
        entries.append(s.stored_entries)
    # The file is the float32 values plus a header (leaf table, base hashes) whose size
    # hardly depends on the change: indices and component names add a few bytes per group.
    overhead = np.array(sizes) - 4 * np.array(entries)
    assert overhead.max() - overhead.min() < 2_000, overhead
    assert np.all(np.diff(sizes) > 0.8 * 4 * np.diff(entries)), (sizes, entries)


def test_unchanged_params_store_nothing(base, partition, tmp_path):
    s = export.save_delta(base, base, partition, tmp_path / "none.safetensors")
    assert s.changed_leaves == () and s.stored_entries == 0
    assert_bitwise_equal(export.apply_delta(base, s.path), base)


def test_all_groups_changed_stores_the_whole_leaf(base, partition, tmp_path):
    tuned = jax.tree.map(lambda x: x * np.asarray(2, x.dtype) + np.asarray(1, x.dtype), base)
    s = export.save_delta(tuned, base, partition, tmp_path / "all.safetensors")
    info = export.read_delta_info(s.path)
    assert {m.get("stored") for m in info["leaves"].values()} == {"leaf"}
    assert s.stored_entries == s.total_entries
    assert_bitwise_equal(export.apply_delta(base, s.path), tuned)


def test_sign_of_zero_and_bfloat16_round_trip(tmp_path):
    base = {"w": np.zeros((2, 6), ml_dtypes.bfloat16), "b": np.zeros(3, np.float32)}
    tuned = {"w": base["w"].copy(), "b": base["b"].copy()}
    tuned["w"][:, 4] = np.asarray(0.1, ml_dtypes.bfloat16)
    tuned["b"][1] = -0.0  # equal as floats, different bits: still a change
    part = [components.Rule("w", kind="block", axis=1, width=2)]
    s = export.save_delta(tuned, base, part, tmp_path / "bf16.safetensors")
    assert s.changed_leaves == ("b", "w") and s.stored_entries == 3 + 4
    restored = export.apply_delta(base, s.path)
    assert_bitwise_equal(restored, tuned)
    assert restored["w"].dtype == ml_dtypes.bfloat16


def test_jax_leaves_come_back_as_jax_arrays(base, partition, tmp_path):
    tuned, _ = changed_components(base, partition, [partition.names[3]])
    f = tmp_path / "d.safetensors"
    export.save_delta(tuned, base, partition, f)
    restored = export.apply_delta(jax.tree.map(jnp.asarray, base), f)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored))
    assert_bitwise_equal(restored, tuned)


def test_wrong_base_is_refused_naming_the_leaf(base, partition, tmp_path):
    tuned, _ = changed_components(base, partition, [partition.names[0]])
    f = tmp_path / "d.safetensors"
    export.save_delta(tuned, base, partition, f)
    leaf = "encoder/layers/1/attention/key/kernel"
    other = jax.tree.map(np.copy, base)
    kernel = other["encoder"]["layers"][1]["attention"]["key"]["kernel"]
    kernel[0, 0, 0] += 1e-3
    with pytest.raises(ValueError, match=f"{leaf}: values differ from the delta's base"):
        export.apply_delta(other, f)
    # Another seed's model: every random leaf differs (biases and norms start equal), and
    # every one is listed.
    seed1 = params_of(tiny_bert(seed=1))
    with pytest.raises(ValueError, match="classifier/kernel") as e:
        export.apply_delta(seed1, f)
    differ = sum(not np.array_equal(bits(x), bits(y))
                 for x, y in zip(jax.tree.leaves(base), jax.tree.leaves(seed1)))
    assert differ > 10 and str(e.value).count("SHA-256 mismatch") == differ
    # verify_base=False skips the hashes (for huge bases), not the shapes.
    export.apply_delta(other, f, verify_base=False)


def test_wrong_structure_and_partition_are_refused(base, partition, tmp_path):
    tuned, _ = changed_components(base, partition, [partition.names[0]])
    f = tmp_path / "d.safetensors"
    export.save_delta(tuned, base, partition, f)
    fewer = {k: v for k, v in base.items() if k != "classifier"}
    with pytest.raises(ValueError, match=r"missing from base_params: \['classifier/bias'"):
        export.apply_delta(fewer, f)
    with pytest.raises(ValueError, match="partition has fingerprint"):
        export.apply_delta(base, f, partition=components.bert(HEADS, neuron_width=16))
    export.apply_delta(base, f, partition=partition)
    wide = jax.tree.map(lambda x: x.astype(np.float64), base)
    with pytest.raises(ValueError, match=r"classifier/bias: base_params float64\[3\]"):
        export.apply_delta(wide, f)
    with pytest.raises(ValueError, match=r"save_delta: params and base_params differ in shape"):
        export.save_delta(wide, base, partition, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="only in base_params: \\['classifier/bias'"):
        export.save_delta(fewer, base, None, tmp_path / "x.safetensors")


def test_a_plain_safetensors_file_is_not_a_delta(tmp_path):
    import safetensors.numpy

    f = str(tmp_path / "plain.safetensors")
    safetensors.numpy.save_file({"w": np.zeros(2, np.float32)}, f)
    with pytest.raises(ValueError, match="only files written by save_delta apply"):
        export.apply_delta({"w": np.zeros(2, np.float32)}, f)


def test_lora_delta_equals_merged_params(base, partition, tmp_path):
    model = tiny_bert()
    adapted = adapters.add_lora(model, rank=2, alpha=4.0)
    # Training moved B away from zero (at init the adapters are a no-op) and the head.
    for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if path[-1] == "lora_b" or path[0] == "classifier":
            leaf[...] = leaf[...] + 0.01 * jax.random.normal(jax.random.key(len(path)),
                                                             leaf[...].shape)
    expected = jax.tree.map(np.array, export.merged_lora_params(model))
    # The merge used a clone: the model still has its adapters.
    assert any(p[-1] == "lora_a" for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    merged_model = nnx.clone(model)
    assert adapters.merge_lora(merged_model) == len(adapted)
    assert_bitwise_equal(expected, params_of(merged_model))

    s = export.save_lora_delta(model, base, partition, tmp_path / "lora.safetensors")
    assert_bitwise_equal(export.apply_delta(base, s.path), expected)
    kernels = {f"{p}/kernel" for p in adapted}
    assert set(s.changed_leaves) == kernels | {"classifier/kernel", "classifier/bias"}
    with pytest.raises(ValueError, match="has no LoRAProjection"):
        export.merged_lora_params(tiny_bert())
