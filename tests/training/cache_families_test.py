# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The activation cache in the loop for the other tasks: causal LMs (GPT-2, Llama, padded
rows) and image classification (ViT). Same params as without it; hit steps ran."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from rgft_jax import data as rdata
from rgft_jax.models.gpt2.modeling import GPT2Config, GPT2LMHeadModel
from rgft_jax.models.llama.modeling import LlamaConfig, LlamaForCausalLM
from rgft_jax.models.vit.modeling import ViTConfig, ViTForImageClassification
from rgft_jax.training import TrainConfig, Trainer, methods

N, BATCH = 8, 4  # 2 batches per epoch, every example in every epoch


def _lm_examples(vocab):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(N):
        mask = np.ones(8, np.int32)
        mask[rng.integers(5, 9):] = 0
        out.append({"input_ids": rng.integers(1, vocab, size=8).astype(np.int32),
                    "attention_mask": mask})
    return out


def _image_examples(cfg):
    rng = np.random.default_rng(0)
    return [{"image": rng.normal(size=(cfg.image_size, cfg.image_size, cfg.num_channels))
             .astype(np.float32), "label": np.int32(i % 3)} for i in range(N)]


def _case(family):
    if family == "gpt2":
        cfg = GPT2Config.tiny()
        return (lambda: GPT2LMHeadModel(cfg, rngs=nnx.Rngs(0))), _lm_examples(cfg.vocab_size), \
            "lm", cfg.n_head, cfg.n_layer, None
    if family == "llama":
        cfg = LlamaConfig.tiny()
        return (lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))), \
            _lm_examples(cfg.vocab_size), "lm", cfg.num_attention_heads, \
            cfg.num_hidden_layers, None
    cfg = ViTConfig.tiny()
    return (lambda: ViTForImageClassification(cfg, 3, rngs=nnx.Rngs(0))), _image_examples(cfg), \
        "image_classification", cfg.num_attention_heads, cfg.num_hidden_layers, 3


@pytest.mark.parametrize("family", ["gpt2", "llama", "vit"])
def test_cached_run_equals_uncached_run(family):
    make, examples, task, heads, layers, classes = _case(family)
    out = {}
    for cache in (True, False):
        tr = Trainer(make(), methods.top_layers(k=1, learning_rate=1e-2),
                     TrainConfig(steps=4, task=task, progress=False, log_every=1,
                                 activation_cache=cache),
                     num_heads=heads, num_layers=layers, num_classes=classes)
        tr.fit(rdata.TrainIterator(examples, batch_size=BATCH, seed=0, num_threads=0))
        out[cache] = tr
    s = out[True].summary()
    assert (s["cache_fill_steps"], s["cache_hit_steps"]) == (2, 2), family
    on, off = (jax.tree.leaves(out[c].state.params) for c in (True, False))
    for a, b in zip(on, off):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
