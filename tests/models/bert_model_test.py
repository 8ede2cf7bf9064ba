# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""BERT: parity with HF PyTorch ``BertModel`` on tiny random configs, naming, loading errors."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgft_jax.models import bert, path_str
from rgft_jax.models._loading import load_checkpoint, read_safetensors
from rgft_jax.models.bert import params as bert_params

# Two shapes, so a different depth/width loads with no code change.
HF_CONFIGS = {
    "l2_h32": dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
    ),
    "l3_h48": dict(
        vocab_size=71,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=6,
        intermediate_size=64,
        max_position_embeddings=32,
        type_vocab_size=3,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
    ),
}


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def hf_bert(request, tmp_path_factory, perturb):
    """A tiny random HF BertModel (with pooler) saved as safetensors; returns (dir, model)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(**HF_CONFIGS[request.param])
    torch.manual_seed(0)
    model = perturb(transformers.BertModel(config)).eval()
    model.set_attn_implementation("eager")
    path = tmp_path_factory.mktemp(f"bert_{request.param}")
    model.save_pretrained(path, safe_serialization=True)
    return path, model


def _batch(vocab_size: int, type_vocab_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(3, 11)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    mask[2, 4:] = 0
    types = rng.integers(0, type_vocab_size, size=ids.shape).astype(np.int32)
    return ids, mask, types


def _torch_out(model, ids, mask, types):
    import torch

    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
            token_type_ids=torch.from_numpy(types).long(),
        )


def test_config_from_hf_matches(hf_bert):
    path, model = hf_bert
    config = bert.BertConfig.from_hf(path)
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        assert getattr(config, name) == getattr(model.config, name)
    assert bert.BertConfig.from_hf(model.config.to_dict()) == config


def test_encoder_matches_torch(hf_bert, f32_matmul):
    path, model = hf_bert
    result = bert.load_encoder(path)
    ids, mask, types = _batch(model.config.vocab_size, model.config.type_vocab_size)
    ours = bert.forward(result.model, ids, mask, types)
    ref = _torch_out(model, ids, mask, types).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=1e-5)
    assert set(result.ignored) == {"pooler.dense.weight", "pooler.dense.bias"}


def test_cls_pooler_matches_torch(hf_bert, f32_matmul):
    path, model = hf_bert
    clf = bert.from_pretrained(path, num_labels=3, pooling="cls", seed=1)
    ids, mask, types = _batch(model.config.vocab_size, model.config.type_vocab_size, seed=1)
    ref = _torch_out(model, ids, mask, types).pooler_output.numpy()
    np.testing.assert_allclose(np.asarray(clf.pool(ids, mask, types)), ref, rtol=0, atol=1e-5)
    logits = clf(ids, mask, types)
    expected = ref @ np.asarray(clf.classifier.kernel[...]) + np.asarray(clf.classifier.bias[...])
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=0, atol=1e-5)


def test_mean_pooling_and_embed_match_torch(hf_bert, f32_matmul):
    path, model = hf_bert
    clf = bert.from_pretrained(path, num_labels=2, pooling="mean")
    ids, mask, types = _batch(model.config.vocab_size, model.config.type_vocab_size, seed=2)
    import torch

    hidden = _torch_out(model, ids, mask, types).last_hidden_state
    m = torch.from_numpy(mask).float()[..., None]
    pooled = ((hidden * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_allclose(np.asarray(clf.pool(ids, mask, types)), pooled, rtol=0, atol=1e-5)
    emb = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(bert.embed(clf, ids, mask, types)), emb, atol=1e-5)
    assert clf(ids, mask, types).shape == (3, 2)


def test_fresh_classifier_is_seeded(hf_bert):
    path, _ = hf_bert
    a = bert.from_pretrained(path, num_labels=4, seed=7)
    b = bert.from_pretrained(path, num_labels=4, seed=7)
    c = bert.from_pretrained(path, num_labels=4, seed=8)
    np.testing.assert_array_equal(a.classifier.kernel[...], b.classifier.kernel[...])
    assert not np.allclose(a.classifier.kernel[...], c.classifier.kernel[...])
    # Same values as the eager constructor (the jitted partial init drops nothing else).
    eager = bert.BertForSequenceClassification(bert.BertConfig.from_hf(path), 4, rngs=nnx.Rngs(7))
    np.testing.assert_allclose(a.classifier.kernel[...], eager.classifier.kernel[...], atol=1e-7)


def test_param_paths_follow_naming_contract():
    config = bert.BertConfig.tiny()
    model = nnx.eval_shape(
        lambda: bert.BertForSequenceClassification(config, 5, pooling="cls", rngs=nnx.Rngs(0))
    )
    shapes = {
        path_str(p): tuple(v.get_value().shape)
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    d, h, dh, f = 32, 4, 8, 37
    expected = {
        "encoder/embeddings/word/embedding": (99, d),
        "encoder/embeddings/position/embedding": (64, d),
        "encoder/embeddings/token_type/embedding": (2, d),
        "encoder/embeddings/norm/scale": (d,),
        "encoder/embeddings/norm/bias": (d,),
        "pooler/kernel": (d, d),
        "pooler/bias": (d,),
        "classifier/kernel": (d, 5),
        "classifier/bias": (5,),
    }
    for i in range(2):
        layer = f"encoder/layers/{i}/"
        for name in ("query", "key", "value"):
            expected[layer + f"attention/{name}/kernel"] = (d, h, dh)
            expected[layer + f"attention/{name}/bias"] = (h, dh)
        expected[layer + "attention/out/kernel"] = (h, dh, d)
        expected[layer + "attention/out/bias"] = (d,)
        expected[layer + "mlp/up/kernel"] = (d, f)
        expected[layer + "mlp/up/bias"] = (f,)
        expected[layer + "mlp/down/kernel"] = (f, d)
        expected[layer + "mlp/down/bias"] = (d,)
        for norm in ("attention_norm", "mlp_norm"):
            expected[layer + f"{norm}/scale"] = (d,)
            expected[layer + f"{norm}/bias"] = (d,)
    assert shapes == expected
    # The whole model state is parameters (dropout keys come at call time).
    assert len(nnx.to_flat_state(nnx.state(model))) == len(expected)


def test_corrupted_checkpoint_reports_every_problem(hf_bert):
    path, _ = hf_bert
    tensors = read_safetensors(os.path.join(path, "model.safetensors"))
    del tensors["encoder.layer.1.output.dense.bias"]
    tensors["encoder.layer.0.attention.self.query.weight"] = np.zeros((3, 3), np.float32)
    tensors["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((2,), np.float32)
    tensors["embeddings.word_embeddings.weight"] = tensors[
        "embeddings.word_embeddings.weight"
    ].astype(np.int64)
    config = bert.BertConfig.from_hf(path)
    abstract = nnx.eval_shape(lambda: bert.BertEncoder(config, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError) as err:
        load_checkpoint(
            abstract,
            tensors,
            bert_params.encoder_rules(),
            ignore=bert_params.IGNORED_BUFFERS + (r"pooler\..*",),
        )
    msg = str(err.value)
    assert "4 problem(s)" in msg
    assert "'layers/1/mlp/down/bias'" in msg and "not in checkpoint" in msg
    assert "shape mismatch for 'encoder.layer.0.attention.self.query.weight'" in msg
    assert "unexpected checkpoint key 'encoder.layer.0.attention.self.rotary.weight'" in msg
    assert "dtype mismatch for 'embeddings.word_embeddings.weight'" in msg


def test_missing_pooler_for_cls_pooling_is_an_error(hf_bert, tmp_path):
    path, model = hf_bert
    tensors = read_safetensors(os.path.join(path, "model.safetensors"))
    tensors = {k: v for k, v in tensors.items() if not k.startswith("pooler.")}
    from safetensors.numpy import save_file

    save_file(tensors, os.path.join(tmp_path, "model.safetensors"))
    model.config.to_json_file(os.path.join(tmp_path, "config.json"))
    assert bert.from_pretrained(tmp_path, num_labels=2, pooling="mean").pooler is None
    with pytest.raises(ValueError, match=r"'pooler/kernel'.*not in checkpoint"):
        bert.from_pretrained(tmp_path, num_labels=2, pooling="cls")


def test_dropout_is_off_by_default_and_seeded_when_on():
    config = bert.BertConfig.tiny()
    model = bert.BertForSequenceClassification(config, 2, rngs=nnx.Rngs(0))
    ids = jnp.ones((2, 5), jnp.int32)

    @nnx.jit(static_argnames="deterministic")
    def run(model, rngs=None, deterministic=True):
        return model(ids, deterministic=deterministic, rngs=rngs)

    a, b = run(model), run(model)
    np.testing.assert_array_equal(a, b)
    d1 = run(model, nnx.Rngs(dropout=1), deterministic=False)
    d2 = run(model, nnx.Rngs(dropout=1), deterministic=False)
    d3 = run(model, nnx.Rngs(dropout=2), deterministic=False)
    np.testing.assert_array_equal(d1, d2)
    assert not np.allclose(d1, a) and not np.allclose(d1, d3)


def test_gradients_flow_to_all_params():
    config = bert.BertConfig.tiny()
    model = bert.BertForSequenceClassification(config, 3, pooling="cls", rngs=nnx.Rngs(0))
    ids = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])

    @nnx.jit
    def loss_grad(model):
        def loss_fn(model):
            return jnp.sum(model(ids, mask) ** 2)

        return nnx.grad(loss_fn)(model)

    grads = loss_grad(model)
    norms = {path_str(p): float(jnp.abs(v.get_value()).sum()) for p, v in nnx.to_flat_state(grads)}
    # Position rows >= 5 and unused token types get no gradient; everything else does.
    zero = [p for p, n in norms.items() if n == 0.0]
    assert zero == [], zero


@pytest.mark.parametrize(
    ("update", "attribute", "value"),
    [
        ({"position_embedding_type": "relative_key"}, "position_embedding_type", "relative_key"),
        ({"is_decoder": True}, "is_decoder", "True"),
        ({"add_cross_attention": True}, "add_cross_attention", "True"),
        ({"hidden_act": "mish"}, "hidden_act", "mish"),
        ({"model_type": "roberta"}, "model_type", "roberta"),
    ],
)
def test_unsupported_hf_config_values_are_rejected(update, attribute, value):
    hf = {"model_type": "bert", **HF_CONFIGS["l2_h32"], **update}
    with pytest.raises(ValueError, match=rf"{attribute}=.*{value}.*allowed"):
        bert.BertConfig.from_hf(hf)


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match=r"pooling='max'.*allowed: \['cls', 'mean'\]"):
        bert.BertForSequenceClassification(bert.BertConfig.tiny(), 2, "max", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_labels=0"):
        bert.BertForSequenceClassification(bert.BertConfig.tiny(), 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_attention_heads=5 must divide hidden_size=32"):
        bert.BertConfig(hidden_size=32, num_attention_heads=5)


def test_shardings_are_applied(hf_bert):
    path, _ = hf_bert
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    model = bert.encoder_from_pretrained(path, shardings=sharding)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(leaf.sharding == sharding for leaf in leaves)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)


class _ScaledProjection(nnx.Module):
    """Stand-in for a LoRA-style wrapper: keeps the base projection, adds a parameter."""

    def __init__(self, base, *, rngs: nnx.Rngs) -> None:
        self.base = base
        self.scale = nnx.Param(jnp.full(base.out_features, 2.0))

    def __call__(self, x):
        return self.base(x) * self.scale[...]


def test_projections_can_be_swapped_in_place():
    model = bert.BertEncoder(bert.BertConfig.tiny(), rngs=nnx.Rngs(0))
    ids = jnp.arange(6, dtype=jnp.int32)[None]
    before = bert.forward(model, ids)
    attention = model.layers[0].attention
    attention.value = _ScaledProjection(attention.value, rngs=nnx.Rngs(1))
    paths = {path_str(p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert {"layers/0/attention/value/base/kernel", "layers/0/attention/value/scale"} <= paths
    after = bert.forward(model, ids)
    assert after.shape == before.shape and not np.allclose(after, before)
