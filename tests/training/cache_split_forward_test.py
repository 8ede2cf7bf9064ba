# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The split forward of every model family (``hidden_at`` then ``logits_from``) equals the
full forward at every cut: what the frozen-prefix activation cache relies on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification
from rgft_jax.models.gpt2.modeling import GPT2Config, GPT2LMHeadModel
from rgft_jax.models.llama.modeling import LlamaConfig, LlamaForCausalLM
from rgft_jax.models.vit.modeling import ViTConfig, ViTForImageClassification

B, T = 3, 7


def _ids(vocab):
    return jax.random.randint(jax.random.key(1), (B, T), 1, vocab)


def _mask():
    return jnp.asarray(np.arange(T)[None] < np.array([[T], [T - 2], [3]]), jnp.int32)


def _bert(pooling):
    model = BertForSequenceClassification(BertConfig.tiny(), 3, pooling, rngs=nnx.Rngs(0))
    ids, mask = _ids(99), _mask()
    types = jnp.asarray(np.arange(T)[None] >= 4, jnp.int32).repeat(B, 0)
    full = model(ids, mask, types)
    return model, full, lambda c: model.logits_from(c, model.hidden_at(c, ids, mask, types), mask)


def _gpt2():
    model = GPT2LMHeadModel(GPT2Config.tiny(), rngs=nnx.Rngs(0))
    ids, mask = _ids(99), _mask()
    return model, model(ids, mask), lambda c: model.logits_from(
        c, model.hidden_at(c, ids, mask), mask)


def _llama(segments):
    model = LlamaForCausalLM(LlamaConfig.tiny(), rngs=nnx.Rngs(0))
    ids, mask = _ids(model.config.vocab_size), _mask()
    seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 0]] * B) if segments else None
    full = model(ids, mask, segment_ids=seg)
    return model, full, lambda c: model.logits_from(
        c, model.hidden_at(c, ids, mask, segment_ids=seg), mask, segment_ids=seg)


def _vit():
    model = ViTForImageClassification(ViTConfig.tiny(), 4, rngs=nnx.Rngs(0))
    cfg = model.config
    images = jax.random.normal(jax.random.key(2), (B, cfg.image_size, cfg.image_size,
                                                   cfg.num_channels))
    return model, model(images), lambda c: model.logits_from(c, model.hidden_at(c, images))


CASES = {"bert_mean": lambda: _bert("mean"), "bert_cls": lambda: _bert("cls"), "gpt2": _gpt2,
         "llama": lambda: _llama(False), "llama_segments": lambda: _llama(True), "vit": _vit}


@pytest.mark.parametrize("family", sorted(CASES))
def test_split_forward_equals_full_forward_at_every_cut(family):
    model, full, split = CASES[family]()
    for cut in range(len(model.layers if hasattr(model, "layers") else model.encoder.layers) + 1):
        np.testing.assert_allclose(np.asarray(split(cut)), np.asarray(full), rtol=0, atol=1e-6,
                                   err_msg=f"{family} cut={cut}")


@pytest.mark.parametrize("cut", [-1, 3, True, 1.0])
def test_cut_out_of_range_is_rejected_naming_it(cut):
    model = GPT2LMHeadModel(GPT2Config.tiny(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="cut="):
        model.hidden_at(cut, _ids(99))
