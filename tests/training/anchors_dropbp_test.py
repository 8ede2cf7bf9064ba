# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""DropBP: dropped residual branches get no gradient, their backward is not computed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgft_jax.models import _dropbp
from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training import _anchors as anchors
from tests.training.conftest import NUM_CLASSES, NUM_HEADS, batches, bert, host

LAYERS = 2


def _grad_fn(model, batch):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    b = {k: jnp.asarray(v) for k, v in batch.items()}

    def loss(p, flags):
        with _dropbp.drop_backward(flags):
            logits = nnx.merge(graphdef, p, rest)(b["input_ids"], b["attention_mask"],
                                                  b["token_type_ids"])
        return jnp.sum(logits ** 2), logits

    return params, loss


def _branch_grads(grads, layer):
    lay = grads["encoder"]["layers"][layer]
    attn = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(lay["attention"])])
    mlp = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(lay["mlp"])])
    return float(jnp.abs(attn).sum()), float(jnp.abs(mlp).sum())


@pytest.mark.parametrize("dynamic", [False, True])
def test_dropped_branches_get_zero_gradient_and_the_forward_is_unchanged(dynamic):
    params, loss = _grad_fn(bert(LAYERS), batches(1)[0])
    flags = np.array([[True, False], [False, True]])
    f = jax.jit(jax.grad(loss, has_aux=True)) if dynamic else jax.jit(
        jax.grad(lambda p, _: loss(p, flags), has_aux=True))
    none = np.zeros((LAYERS, 2), bool)
    g_drop, out_drop = f(params, jnp.asarray(flags)) if dynamic else f(params, None)
    g_all, out_all = jax.jit(jax.grad(lambda p: loss(p, none), has_aux=True))(params)
    np.testing.assert_array_equal(np.asarray(out_drop), np.asarray(out_all))
    assert _branch_grads(g_drop, 0)[0] == 0.0 and _branch_grads(g_drop, 0)[1] > 0
    assert _branch_grads(g_drop, 1)[1] == 0.0 and _branch_grads(g_drop, 1)[0] > 0
    assert all(v > 0 for layer in range(LAYERS) for v in _branch_grads(g_all, layer))
    # Below a dropped branch the gradient still flows through the identity path.
    emb = g_drop["encoder"]["embeddings"]["word"]["embedding"]
    assert float(jnp.abs(emb).sum()) > 0


def test_static_drops_remove_the_backward_from_xlas_flops_count():
    params, loss = _grad_fn(bert(LAYERS), batches(1)[0])

    def flops(flags):
        lowered = jax.jit(jax.grad(lambda p: loss(p, flags)[0])).lower(params)
        cost = lowered.compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list) else cost)["flops"])

    none = flops(np.zeros((LAYERS, 2), bool))
    one = flops(np.array([[True, False], [False, False]]))
    every = flops(np.ones((LAYERS, 2), bool))
    assert every < one < none


def test_sample_drop_flags_tops_up_to_the_target():
    key = jax.random.key(0)
    # Rates 0 everywhere: nothing is drawn, the top-up drops ceil(0.5 * 6) = 3 branches,
    # the highest-rate ones first (ties: in order).
    flags = anchors.sample_drop_flags(key, np.zeros((3, 2)), 0.5)
    assert np.asarray(flags).tolist() == [[True, True], [True, False], [False, False]]
    rates = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    flags = np.asarray(anchors.sample_drop_flags(key, rates, 0.34))  # need 3 of 6
    assert flags[1, 1] and flags.sum() == 3
    many = [np.asarray(anchors.sample_drop_flags(jax.random.key(i), np.full((3, 2), 0.9), 0.1))
            for i in range(50)]
    assert 0.8 < np.mean(many) < 1.0  # rates above the target: drawn, not topped up


def test_allocate_drop_rates_raises_the_least_sensitive_branches_first():
    sens = np.array([[3.0, 1.0], [2.0, 4.0]])
    flops = np.ones((2, 2))
    # Target 0.5: remove half of 4 units of backward: 2.0 units at 0.1 per increment.
    rates = anchors.allocate_drop_rates(sens, flops, 0.5)
    # Least sensitive (1.0) goes to 0.9, then the next (2.0) takes the remaining 1.1.
    np.testing.assert_allclose(rates, [[0.2, 0.9], [0.9, 0.0]], atol=1e-9)
    assert anchors.allocate_drop_rates(sens, flops, 0.0).sum() == 0


def test_sensitivities_are_per_branch_and_positive():
    s = anchors.dropbp_sensitivities(bert(LAYERS), batches(1)[0], LAYERS)
    assert s.shape == (LAYERS, 2) and np.all(s > 0)


def test_dropbp_trains_in_the_trainer():
    m = methods.dropbp(drop_rate=0.5, learning_rate=1e-2)
    tr = Trainer(bert(LAYERS), m, TrainConfig(steps=3, progress=False, log_every=1),
                 num_heads=NUM_HEADS, num_layers=LAYERS, num_classes=NUM_CLASSES)
    p0 = host(tr.state.params)
    hist = tr.fit(iter(batches(3)))
    assert all(np.isfinite(h["loss"]) for h in hist[:-1])
    assert tr.compilations == 1  # one step for every drop pattern
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), p0, host(tr.state.params))
    assert moved["classifier"]["kernel"]
    with pytest.raises(ValueError, match="rates"):
        methods.dropbp(rates=[[0.5, 0.5]]).backward_drop_rates(LAYERS)
    with pytest.raises(ValueError, match="drop_rate"):
        methods.dropbp(drop_rate=1.0)


def _tiny_lm(kind: str):
    if kind == "gpt2":
        from rgft_jax.models import gpt2

        cfg = gpt2.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=LAYERS,
                              n_head=4, n_inner=64)
        return gpt2.GPT2LMHeadModel(cfg, rngs=nnx.Rngs(0))
    from rgft_jax.models import llama

    cfg = llama.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=LAYERS, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=16)
    return llama.LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_dropbp_switch_in_the_decoders(kind):
    model = _tiny_lm(kind)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 50, (2, 8)), jnp.int32)

    def loss(p, flags):
        with _dropbp.drop_backward(flags):
            out = nnx.merge(graphdef, p, rest)(ids, jnp.ones_like(ids))
        return jnp.sum(out.astype(jnp.float32) ** 2) * 1e-3, out

    flags = jnp.asarray([[False, True], [True, False]])
    g, out = jax.jit(jax.grad(loss, has_aux=True))(params, flags)
    _, out0 = jax.jit(jax.grad(loss, has_aux=True))(params, jnp.zeros((LAYERS, 2), bool))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(out0))
    a0, m0 = _decoder_branch_grads(g, 0)
    a1, m1 = _decoder_branch_grads(g, 1)
    assert m0 == 0.0 and a0 > 0 and a1 == 0.0 and m1 > 0


def _decoder_branch_grads(grads, layer):
    flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(grads))[0]
    attn = mlp = 0.0
    for path, x in flat:
        s = "/".join(str(getattr(k, "key", k)) for k in path)
        if f"layers/{layer}/" in s:
            v = float(jnp.abs(x.astype(jnp.float32)).sum())
            if "/attention/" in s or "attention_norm" in s:
                attn += v
            elif "/mlp" in s:
                mlp += v
    return attn, mlp
