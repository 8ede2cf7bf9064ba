# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""BERT-family encoder (HF ``BertModel`` parity) and sequence classifier."""

from rgft_jax.models.bert.modeling import BertConfig as BertConfig
from rgft_jax.models.bert.modeling import BertEncoder as BertEncoder
from rgft_jax.models.bert.modeling import (
    BertForSequenceClassification as BertForSequenceClassification,
)
from rgft_jax.models.bert.modeling import abstract_params as abstract_params
from rgft_jax.models.bert.modeling import embed as embed
from rgft_jax.models.bert.modeling import forward as forward
from rgft_jax.models.bert.modeling import mean_pool as mean_pool
from rgft_jax.models.bert.params import encoder_from_pretrained as encoder_from_pretrained
from rgft_jax.models.bert.params import from_pretrained as from_pretrained
from rgft_jax.models.bert.params import load_classifier as load_classifier
from rgft_jax.models.bert.params import load_encoder as load_encoder

__all__ = [
    "BertConfig",
    "BertEncoder",
    "BertForSequenceClassification",
    "abstract_params",
    "embed",
    "encoder_from_pretrained",
    "forward",
    "from_pretrained",
    "load_classifier",
    "load_encoder",
    "mean_pool",
]
