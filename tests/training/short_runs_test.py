# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Runs of one or two steps are valid runs (the schedule once had a zero-length decay)."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification
from rgft_jax.training import TrainConfig, Trainer, methods


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_runs_of_a_few_steps_train(steps):
    cfg = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=8)
    tr = Trainer(BertForSequenceClassification(cfg, 2, rngs=nnx.Rngs(0)), methods.full(),
                 TrainConfig(steps=steps, progress=False, log_every=0), num_heads=2,
                 num_layers=2, num_classes=2)
    batch = {"input_ids": np.ones((2, 8), np.int32), "attention_mask": np.ones((2, 8), np.int32),
             "label": np.array([0, 1], np.int32)}
    before = np.asarray(tr.state.params["classifier"]["kernel"])
    for _ in range(steps):
        m = tr.train_step(batch)
    assert np.isfinite(m["loss"])
    # Warmup starts at a learning rate of 0 (optax's and Hugging Face's convention): the
    # first step does not move the params, the second does.
    moved = not np.array_equal(before, np.asarray(tr.state.params["classifier"]["kernel"]))
    assert moved == (steps > 1)
