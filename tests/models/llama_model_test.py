# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Llama: parity with HF PyTorch ``LlamaForCausalLM`` on tiny random configs, cache, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgft_jax.models import llama, path_str
from rgft_jax.models.llama import modeling
from rgft_jax.models.llama import params as llama_params
from rgft_jax.ops import GroupGrad, group_grads

HF_CONFIG = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention: 2 query heads per KV head
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_theta=500.0,  # not the default, so a theta that is not read fails the parity test
)


def _hf_model(tmp_path_factory, perturb, *, tie: bool, **overrides):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**HF_CONFIG, **overrides}, tie_word_embeddings=tie)
    model = perturb(transformers.LlamaForCausalLM(config)).eval()
    model.set_attn_implementation("eager")
    path = tmp_path_factory.mktemp("llama_tied" if tie else "llama_untied")
    model.save_pretrained(path, safe_serialization=True)
    return path, model


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def hf_llama(request, tmp_path_factory, perturb):
    """A tiny random HF LlamaForCausalLM saved as safetensors; returns (dir, model)."""
    return _hf_model(tmp_path_factory, perturb, tie=request.param)


def _torch_logits(model, ids, mask=None):
    import torch

    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.from_numpy(mask).long()}
        return model(input_ids=torch.from_numpy(ids).long(), **kwargs).logits.numpy()


def test_logits_match_torch(hf_llama, f32_matmul):
    path, model = hf_llama
    result = llama_params.load(path)
    tied = model.config.tie_word_embeddings
    assert ("lm_head/kernel" in result.loaded) == (not tied)
    ids = np.random.default_rng(0).integers(0, 99, size=(2, 13)).astype(np.int32)
    np.testing.assert_allclose(
        np.asarray(llama.forward(result.model, ids)), _torch_logits(model, ids), rtol=0, atol=1e-5
    )


def test_logits_with_right_padding_match_torch(hf_llama, f32_matmul):
    path, model = hf_llama
    ours = llama.from_pretrained(path)
    ids = np.random.default_rng(1).integers(0, 99, size=(2, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    got = np.asarray(llama.forward(ours, ids, mask))
    valid = mask.astype(bool)  # Padded positions are don't-care in both implementations.
    np.testing.assert_allclose(got[valid], _torch_logits(model, ids, mask)[valid], atol=1e-5)


def test_biases_and_wider_heads_match_torch(tmp_path_factory, perturb, f32_matmul):
    """attention_bias / mlp_bias and head_dim != D / H (as some Llama variants use)."""
    path, model = _hf_model(tmp_path_factory, perturb, tie=False, attention_bias=True,
                            mlp_bias=True, head_dim=12)
    ours = llama.from_pretrained(path)
    assert ours.layers[0].attention.query.kernel.shape == (32, 4, 12)
    ids = np.random.default_rng(2).integers(0, 99, size=(1, 11)).astype(np.int32)
    np.testing.assert_allclose(
        np.asarray(llama.forward(ours, ids)), _torch_logits(model, ids), rtol=0, atol=1e-5)


def test_greedy_generation_matches_torch(hf_llama, f32_matmul):
    path, model = hf_llama
    ours = llama.from_pretrained(path)
    prompt = np.array([[5, 17, 42, 8, 3]], np.int32)
    import torch

    with torch.no_grad():
        ref = model.generate(torch.from_numpy(prompt).long(), max_new_tokens=12, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(llama.generate(ours, prompt, 12), ref.numpy()[:, 5:])


def test_cache_generation_equals_full_recompute(f32_matmul):
    model = llama.LlamaForCausalLM(llama.LlamaConfig.tiny(), rngs=nnx.Rngs(3))
    prompt = np.random.default_rng(3).integers(0, 99, size=(3, 6)).astype(np.int32)
    with_cache = llama.generate(model, prompt, 10, use_cache=True)
    without = llama.generate(model, prompt, 10, use_cache=False)
    np.testing.assert_array_equal(with_cache, without)
    assert len(np.unique(with_cache)) > 1  # not a degenerate constant sequence


def test_decode_logits_equal_full_forward(f32_matmul):
    model = llama.LlamaForCausalLM(llama.LlamaConfig.tiny(tie_word_embeddings=False),
                                   rngs=nnx.Rngs(4))
    ids = np.random.default_rng(4).integers(0, 99, size=(2, 9)).astype(np.int32)
    full = np.asarray(llama.forward(model, ids))
    cache = model.init_cache(2, 12)
    first, cache = model.decode(jnp.asarray(ids[:, :5]), cache)
    parts = [np.asarray(first)]
    for t in range(5, 9):
        step, cache = model.decode(jnp.asarray(ids[:, t:t + 1]), cache)
        parts.append(np.asarray(step))
    assert int(cache.index) == 9
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=0, atol=1e-5)


def test_eos_stops_sequences():
    model = llama.LlamaForCausalLM(llama.LlamaConfig.tiny(), rngs=nnx.Rngs(3))
    prompt = np.random.default_rng(3).integers(0, 99, size=(3, 6)).astype(np.int32)
    free = llama.generate(model, prompt, 10)
    eos = int(free[0, 2])
    out = llama.generate(model, prompt, 10, eos_id=eos, pad_id=0)
    first = int(np.argmax(free[0] == eos))
    np.testing.assert_array_equal(out[0, : first + 1], free[0, : first + 1])
    assert (out[0, first + 1 :] == 0).all()


def test_packed_segments_equal_separate_documents(f32_matmul):
    model = llama.LlamaForCausalLM(llama.LlamaConfig.tiny(), rngs=nnx.Rngs(5))
    rng = np.random.default_rng(5)
    a, b = rng.integers(1, 99, size=7), rng.integers(1, 99, size=4)
    packed = np.concatenate([a, b, [0, 0]])[None].astype(np.int32)
    segments = np.array([[1] * 7 + [2] * 4 + [0, 0]], np.int32)
    got = np.asarray(llama.forward(model, packed, segment_ids=segments))[0]
    alone_a = np.asarray(llama.forward(model, a[None].astype(np.int32)))[0]
    alone_b = np.asarray(llama.forward(model, b[None].astype(np.int32)))[0]
    np.testing.assert_allclose(got[:7], alone_a, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[7:11], alone_b, rtol=0, atol=1e-5)
    assert np.isfinite(got).all()  # padding rows attend to nothing, without NaNs


def test_segment_positions_restart_per_segment():
    seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(modeling.segment_positions(seg), [[0, 1, 2, 0, 1, 0, 0, 1]])


def test_causality():
    model = llama.LlamaForCausalLM(llama.LlamaConfig.tiny(), rngs=nnx.Rngs(0))
    ids = np.arange(1, 9, dtype=np.int32)[None]
    changed = ids.copy()
    changed[0, 5] = 42
    a, b = np.asarray(model(ids)), np.asarray(model(changed))
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_param_paths_follow_naming_contract():
    config = llama.LlamaConfig.tiny(tie_word_embeddings=False)
    model = nnx.eval_shape(lambda: llama.LlamaForCausalLM(config, rngs=nnx.Rngs(0)))
    shapes = {
        path_str(p): tuple(v.get_value().shape)
        for p, v in nnx.to_flat_state(nnx.state(model))
    }
    d, h, k, dh, f, v = 32, 4, 2, 8, 40, 99
    expected = {
        "embeddings/word/embedding": (v, d),
        "final_norm/scale": (d,),
        "lm_head/kernel": (d, v),
    }
    for i in range(2):
        layer = f"layers/{i}/"
        expected[layer + "attention/query/kernel"] = (d, h, dh)
        expected[layer + "attention/key/kernel"] = (d, k, dh)
        expected[layer + "attention/value/kernel"] = (d, k, dh)
        expected[layer + "attention/out/kernel"] = (h, dh, d)
        expected[layer + "mlp/gate/kernel"] = (d, f)
        expected[layer + "mlp/up/kernel"] = (d, f)
        expected[layer + "mlp/down/kernel"] = (f, d)
        expected[layer + "attention_norm/scale"] = (d,)
        expected[layer + "mlp_norm/scale"] = (d,)
    assert shapes == expected  # every variable is a parameter: nothing else to checkpoint


def test_llama_preset_splits_query_and_kv_heads():
    from rgft_jax import components

    config = llama.LlamaConfig.tiny()
    model = nnx.eval_shape(lambda: llama.LlamaForCausalLM(config, rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    part = components.Partition.build(params, components.llama(4, 2, neuron_width=8))
    kinds = {}
    for c in part.components:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    # Per layer: 4 query heads (query + out), 2 KV heads (key + value), 40 / 8 = 5 groups.
    assert kinds["head"] == 2 * 4 and kinds["kv_head"] == 2 * 2 and kinds["neuron"] == 2 * 5


def test_group_sparse_gradients_on_kv_heads(f32_matmul):
    model = llama.LlamaForCausalLM(llama.LlamaConfig.tiny(), rngs=nnx.Rngs(6))
    ids = jnp.asarray(np.random.default_rng(6).integers(0, 99, size=(2, 7)), jnp.int32)

    def loss(m, active):
        # nnx.grad rebuilds the modules: register the projection seen inside the trace.
        spec = {} if active is None else {
            id(m.layers[1].attention.key): GroupGrad(jnp.array(active), 1, 2)}
        with group_grads(spec):
            return jnp.mean(m(ids) ** 2)

    dense = nnx.grad(loss)(model, None)
    sparse = nnx.grad(loss)(model, [1])
    d, s = dense.layers[1].attention.key.kernel[...], sparse.layers[1].attention.key.kernel[...]
    np.testing.assert_allclose(s[:, 1], d[:, 1], rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(s[:, 0]).max()) == 0.0 and float(jnp.abs(d[:, 0]).max()) > 0.0
    np.testing.assert_allclose(  # input gradients (hence everything below) stay exact
        sparse.layers[0].attention.query.kernel[...], dense.layers[0].attention.query.kernel[...],
        rtol=1e-5, atol=1e-7)


def test_bfloat16_parameters_halve_memory_and_stay_close(f32_matmul):
    config = llama.LlamaConfig.tiny()
    f32 = llama.LlamaForCausalLM(config, rngs=nnx.Rngs(7))
    bf16 = llama.LlamaForCausalLM(config, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    # The same weights, rounded to bfloat16 (initialisers draw differently per dtype).
    nnx.update(bf16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(f32, nnx.Param)))
    leaves32 = jax.tree.leaves(nnx.state(f32, nnx.Param))
    leaves16 = jax.tree.leaves(nnx.state(bf16, nnx.Param))
    assert {x.dtype for x in leaves16} == {jnp.dtype(jnp.bfloat16)}
    assert sum(x.nbytes for x in leaves16) * 2 == sum(x.nbytes for x in leaves32)
    ids = np.random.default_rng(7).integers(0, 99, size=(2, 9)).astype(np.int32)
    a, b = np.asarray(llama.forward(f32, ids)), np.asarray(llama.forward(bf16, ids))
    assert b.dtype == np.float32
    p, q = jax.nn.softmax(a), jax.nn.softmax(b)
    kl = float(jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=-1).max())
    assert kl < 1e-3, kl


def test_token_log_likelihood_masks_positions():
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    targets = jnp.array([[0, 1, 2]])
    got = modeling.token_log_likelihood(logits, targets, jnp.array([[0, 1, 1]]))
    np.testing.assert_allclose(got, [np.log(0.8) + np.log(0.6)], rtol=1e-6)


@pytest.mark.parametrize(
    ("update", "attribute"),
    [
        ({"model_type": "mistral"}, "model_type"),
        ({"pretraining_tp": 2}, "pretraining_tp"),
        ({"hidden_act": "mish"}, "hidden_act"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}},
         r"rope_parameters\.rope_type"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, r"rope_scaling\.rope_type"),
    ],
)
def test_unsupported_hf_config_values_are_rejected(update, attribute):
    hf = {"model_type": "llama", **HF_CONFIG, **update}
    with pytest.raises(ValueError, match=rf"LlamaConfig: unsupported HF config value {attribute}="):
        llama.LlamaConfig.from_hf(hf)


def test_rope_theta_read_from_both_config_forms():
    old = llama.LlamaConfig.from_hf({"model_type": "llama", **HF_CONFIG})
    new = llama.LlamaConfig.from_hf(
        {"model_type": "llama", **{k: v for k, v in HF_CONFIG.items() if k != "rope_theta"},
         "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}})
    assert old.rope_theta == new.rope_theta == 500.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_key_value_heads": 3}, "num_key_value_heads=3 must divide"),
        ({"hidden_act": "nope"}, "hidden_act='nope'"),
        ({"head_dim": 7}, "head_dim=7 must be even"),
    ],
)
def test_invalid_configs_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        llama.LlamaConfig(**{**dict(hidden_size=32, num_attention_heads=4), **kwargs})
