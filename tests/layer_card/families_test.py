# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Layer Card on every model family (BERT is in card_test.py), and its costs against the
FLOPs XLA counts for the compiled training step."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import rgft_jax.layer_card as lc
from rgft_jax.models import gpt2, llama
from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification
from rgft_jax.training import TrainConfig, Trainer, methods

B, T = 4, 16


def _lm_batches(vocab, n=2, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(1, vocab, size=(B, T)).astype(np.int32)
        mask = np.ones((B, T), np.int32)
        mask[0, -3:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _lm_loss(model, batch):
    logits = model(batch["input_ids"], batch["attention_mask"])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1],
                                                          batch["input_ids"][:, 1:])
    w = batch["attention_mask"][:, 1:]
    return (nll * w).sum() / w.sum()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_card_on_decoder_families(family):
    if family == "gpt2":
        cfg = gpt2.GPT2Config.tiny()
        model = gpt2.GPT2LMHeadModel(cfg, rngs=nnx.Rngs(0))
        heads, layers, per_layer = cfg.n_head, cfg.n_layer, 6  # q, k, v, out, up, down
    else:
        cfg = llama.LlamaConfig.tiny()
        model = llama.LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
        heads, layers, per_layer = cfg.num_attention_heads, cfg.num_hidden_layers, 7
    before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    card = lc.compute(model, _lm_batches(cfg.vocab_size), _lm_loss, num_heads=heads,
                      batch_shape=(B, T), micro_batch=2, lora_rank=2, name=family)
    jax.tree.map(np.testing.assert_array_equal, before,
                 nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert card.layers == tuple(range(layers))
    assert len(card.matrices) == per_layer * layers
    for name in ("res", "grad_norm", "energy", "train_cost", "lora_cost"):
        v = getattr(card, name)
        assert np.all(np.isfinite(v)) and np.all(v > 0), name
    # Padding rows are not inputs: the first target saw 2 batches of B*T tokens minus 3 pads.
    assert card.meta["tokens"] == 2 * (B * T - 3)
    assert np.all(np.diff(card.train_cost) < 0)
    place = lc.place(card, "spread", k=1)
    assert len(place.layers) == 1


def test_train_costs_match_the_flops_xla_counts():
    """card.train_cost[l] predicts the compiled step that trains layer l (+ head) alone."""
    L, H, D, S, BATCH = 4, 4, 64, 32, 8
    cfg = BertConfig(vocab_size=64, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                     intermediate_size=4 * D, max_position_embeddings=S)
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(1, 64, size=(BATCH, S)).astype(np.int32),
             "attention_mask": np.ones((BATCH, S), np.int32),
             "token_type_ids": np.zeros((BATCH, S), np.int32),
             "label": rng.integers(0, 3, size=BATCH).astype(np.int32)}

    def loss(model, b):
        logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["label"]).mean()

    card = lc.compute(BertForSequenceClassification(cfg, 3, rngs=nnx.Rngs(0)), [batch], loss,
                      num_heads=H, batch_shape=(BATCH, S))

    def gflops(method):
        tr = Trainer(BertForSequenceClassification(cfg, 3, rngs=nnx.Rngs(0)), method,
                     TrainConfig(steps=1, progress=False, log_every=0), num_heads=H,
                     num_layers=L, num_classes=3)
        tr.train_step(batch)
        return tr.summary()["gflops_per_step"]

    full = gflops(methods.full())
    measured = np.asarray([gflops(methods.layers((layer,))) / full for layer in range(L)])
    # The analytic model counts matmuls only (norms, softmax, the optimizer are left out).
    np.testing.assert_allclose(card.train_cost, measured, rtol=0.08)
    assert np.all(np.diff(measured) < 0)


def test_decoder_costs_count_the_lm_head():
    """On a causal LM whose tied head is most of the step, card.train_cost[l] still predicts
    the compiled step that trains layer l alone, and the probe costs about a step: the
    card's full step counts the output matmul as the Trainer's cost model does."""
    import dataclasses

    cfg = dataclasses.replace(llama.LlamaConfig.tiny(), vocab_size=3000)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, cfg.vocab_size, size=(B, T + 1)).astype(np.int32)
    batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:],
             "loss_mask": np.ones((B, T), np.int32), "segment_ids": np.ones((B, T), np.int32),
             "attention_mask": np.ones((B, T), np.int32)}

    def loss(model, b):
        logits = model(b["input_ids"], segment_ids=b["segment_ids"])
        return -llama.token_log_likelihood(logits, b["targets"], b["loss_mask"]).mean()

    make = lambda: llama.LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    card = lc.compute(make(), [batch], loss, num_heads=cfg.num_attention_heads,
                      batch_shape=(B, T), coupling=False, spectrum=False)

    def gflops(method):
        tr = Trainer(make(), method, TrainConfig(steps=1, task="lm", progress=False,
                                                 log_every=0),
                     num_heads=cfg.num_attention_heads, num_layers=cfg.num_hidden_layers,
                     batch_shape=(B, T))
        tr.train_step({k: v for k, v in batch.items() if k != "attention_mask"})
        return tr.summary()["gflops_per_step"]

    full = gflops(methods.full())
    # Matmuls only: the softmax over the vocabulary and AdamW are left out (~10 % here).
    assert card.meta["full_step_flops"] / 1e9 == pytest.approx(full, rel=0.15)
    measured = [gflops(methods.layers((layer,))) / full for layer in range(2)]
    np.testing.assert_allclose(card.train_cost, measured, rtol=0.1)
    assert 0.5 < card.meta["probe_flops"] / card.meta["full_step_flops"] < 3
