# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""GPT-2: parity with HF PyTorch ``GPT2LMHeadModel`` on a tiny random config, naming."""

from __future__ import annotations

import os

import numpy as np
import pytest
from flax import nnx

import rgft_jax as rgft
from rgft_jax.models import gpt2, path_str
from rgft_jax.models._loading import load_checkpoint, read_safetensors
from rgft_jax.models.gpt2 import params as gpt2_params

HF_CONFIG = dict(
    vocab_size=99,
    n_positions=64,
    n_embd=32,
    n_layer=2,
    n_head=4,
    n_inner=None,
    activation_function="gelu_new",
    bos_token_id=0,
    eos_token_id=0,
)


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory, perturb):
    """A tiny random HF GPT2LMHeadModel saved as safetensors; returns (dir, model)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_CONFIG))
    model = perturb(model).eval()
    model.set_attn_implementation("eager")
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path, safe_serialization=True)
    return path, model


def _torch_logits(model, ids, mask=None):
    import torch

    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.from_numpy(mask).long()}
        return model(input_ids=torch.from_numpy(ids).long(), **kwargs).logits.numpy()


def test_logits_match_torch(hf_gpt2, f32_matmul):
    path, model = hf_gpt2
    result = gpt2.load(path)
    ids = np.random.default_rng(0).integers(0, 99, size=(2, 13)).astype(np.int32)
    np.testing.assert_allclose(
        np.asarray(gpt2.forward(result.model, ids)), _torch_logits(model, ids), rtol=0, atol=1e-5
    )


def test_logits_with_right_padding_match_torch(hf_gpt2, f32_matmul):
    path, model = hf_gpt2
    ours = gpt2.from_pretrained(path)
    ids = np.random.default_rng(1).integers(0, 99, size=(2, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    got = np.asarray(gpt2.forward(ours, ids, mask))
    ref = _torch_logits(model, ids, mask)
    valid = mask.astype(bool)  # Padded positions are don't-care in both implementations.
    np.testing.assert_allclose(got[valid], ref[valid], rtol=0, atol=1e-5)


def test_unprefixed_checkpoint_names_load(hf_gpt2, f32_matmul):
    """Original GPT-2 checkpoints have no ``transformer.`` prefix and carry mask buffers."""
    path, model = hf_gpt2
    tensors = read_safetensors(os.path.join(path, "model.safetensors"))
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    config = gpt2.GPT2Config.from_hf(path)
    abstract = nnx.eval_shape(lambda: gpt2.GPT2LMHeadModel(config, rngs=nnx.Rngs(0)))
    result = load_checkpoint(abstract, tensors, gpt2_params.rules(), ignore=gpt2_params.IGNORED)
    assert result.ignored == ("h.0.attn.bias",)
    assert result.loaded["layers/1/attention/value/kernel"] == "h.1.attn.c_attn.weight"
    ids = np.arange(7, dtype=np.int32)[None]
    np.testing.assert_allclose(
        np.asarray(gpt2.forward(result.model, ids)), _torch_logits(model, ids), rtol=0, atol=1e-5
    )


def test_param_paths_follow_naming_contract():
    config = gpt2.GPT2Config.tiny()
    model = nnx.eval_shape(lambda: gpt2.GPT2LMHeadModel(config, rngs=nnx.Rngs(0)))
    shapes = {
        path_str(p): tuple(v.get_value().shape)
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    d, h, dh, f = 32, 4, 8, 37
    expected = {
        "embeddings/word/embedding": (99, d),
        "embeddings/position/embedding": (64, d),
        "final_norm/scale": (d,),
        "final_norm/bias": (d,),
    }
    for i in range(2):
        layer = f"layers/{i}/"
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


def test_causality():
    model = gpt2.GPT2LMHeadModel(gpt2.GPT2Config.tiny(), rngs=nnx.Rngs(0))
    ids = np.arange(1, 9, dtype=np.int32)[None]
    changed = ids.copy()
    changed[0, 5] = 42
    a, b = np.asarray(model(ids)), np.asarray(model(changed))
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert not np.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize(
    ("update", "attribute"),
    [
        ({"model_type": "gpt_neox"}, "model_type"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"add_cross_attention": True}, "add_cross_attention"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"activation_function": "mish"}, "activation_function"),
    ],
)
def test_unsupported_hf_config_values_are_rejected(update, attribute):
    hf = {"model_type": "gpt2", **HF_CONFIG, **update}
    with pytest.raises(ValueError, match=rf"GPT2Config: unsupported HF config value {attribute}="):
        gpt2.GPT2Config.from_hf(hf)


# ------------------------------------------------------------------ components (error map)
_L, _H, _D = 2, 4, 32
_DH = _D // _H


def _fused_gpt2_tree(rng: np.random.Generator, qkv_shape: tuple[int, ...]) -> dict:
    """A GPT-2 tree in HF naming with a fused ``c_attn`` whose kernel has ``qkv_shape``."""
    def arr(*shape):
        return rng.normal(size=shape).astype(np.float32)

    bias_shape = qkv_shape[1:]
    layer = {"ln_1": {"scale": arr(_D), "bias": arr(_D)},
             "attn": {"c_attn": {"kernel": arr(*qkv_shape), "bias": arr(*bias_shape)},
                      "c_proj": {"kernel": arr(_H * _DH, _D), "bias": arr(_D)}},
             "mlp": {"c_fc": {"kernel": arr(_D, 64)}, "c_proj": {"kernel": arr(64, _D)}}}
    return {"wte": {"embedding": arr(99, _D)}, "h": [layer, dict(layer)]}


def _bert_head_count() -> int:
    from rgft_jax.models import bert

    config = bert.BertConfig(vocab_size=99, hidden_size=_D, num_hidden_layers=_L,
                             num_attention_heads=_H, intermediate_size=64)
    part = rgft.components.Partition.build(bert.abstract_params(config), rgft.components.bert(_H))
    return sum(c.kind == "head" for c in part.components)


def test_fused_c_attn_heads_are_whole_heads_like_bert():
    """One component per (layer, head): its q, k, v slices of ``c_attn`` and ``c_proj`` rows.

    Before the fix the preset cut ``c_attn`` into ``3 H`` ``qkv_head`` components per layer
    that no ``c_proj`` head joined, so GPT-2's error map had 4 H cells per layer to BERT's H.
    """
    rng = np.random.default_rng(0)
    tree = _fused_gpt2_tree(rng, (_D, 3, _H, _DH))
    part = rgft.components.Partition.build(tree, rgft.components.gpt2(_H, neuron_width=None))
    heads = [c for c in part.components if c.kind == "head"]
    assert not [c for c in part.components if c.kind == "qkv_head"]
    assert len(heads) == _L * _H == _bert_head_count()
    # q, k, v kernel slices + q, k, v bias slices + the head's c_proj rows.
    assert {c.size for c in heads} == {3 * _D * _DH + 3 * _DH + _DH * _D}
    assert {c.name for c in heads} == {f"h/{i}/head/{h}" for i in range(_L) for h in range(_H)}
    for c in heads:
        assert sorted(c.paths) == [f"h/{c.layer}/attn/c_attn/bias",
                                   f"h/{c.layer}/attn/c_attn/kernel",
                                   f"h/{c.layer}/attn/c_proj/kernel"]
    # The values: head h's norm is that of [:, :, h] of c_attn plus rows h*Dh.. of c_proj.
    norms = np.asarray(part.norms(tree))
    for c in heads:
        attn = tree["h"][c.layer]["attn"]
        want = np.concatenate([attn["c_attn"]["kernel"][:, :, c.group].ravel(),
                               attn["c_attn"]["bias"][:, c.group].ravel(),
                               attn["c_proj"]["kernel"][c.group * _DH:(c.group + 1) * _DH].ravel()])
        np.testing.assert_allclose(norms[c.index], np.linalg.norm(want), rtol=1e-5)


def test_flat_fused_c_attn_is_rejected_not_cut_into_thirds():
    tree = _fused_gpt2_tree(np.random.default_rng(0), (_D, 3 * _H * _DH))
    with pytest.raises(ValueError, match=r"c_attn/kernel: axis=2 out of range"):
        rgft.components.Partition.build(tree, rgft.components.gpt2(_H, neuron_width=None))


def test_our_gpt2_partition_has_one_component_per_head():
    config = gpt2.GPT2Config(vocab_size=99, n_positions=64, n_embd=_D, n_layer=_L, n_head=_H,
                             n_inner=64)
    model = nnx.eval_shape(lambda: gpt2.GPT2LMHeadModel(config, rngs=nnx.Rngs(0)))
    part = rgft.components.Partition.build(nnx.state(model, nnx.Param),
                                           rgft.components.gpt2(_H))
    heads = [c for c in part.components if c.kind == "head"]
    assert len(heads) == _L * _H == _bert_head_count()
    assert {c.size for c in heads} == {3 * _D * _DH + 3 * _DH + _DH * _D}
