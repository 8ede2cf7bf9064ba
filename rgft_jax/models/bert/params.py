# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""HF PyTorch BERT checkpoint names -> NNX parameter paths, and ``from_pretrained``.

Accepts checkpoints saved from ``BertModel`` (``embeddings.*``, ``encoder.layer.*``,
``pooler.*``) and from task models that prefix them with ``bert.``; old ``LayerNorm.gamma`` /
``beta`` names are accepted too. PyTorch ``Linear`` weights are ``[out, in]`` and are
transposed and reshaped so that attention kernels keep the head axis (``[D, H, Dh]``).
"""

from __future__ import annotations

import os

from flax import nnx

from rgft_jax.models._loading import (
    LoadResult,
    Rule,
    ShardingSpec,
    TorchLinear,
    Unflatten,
    load_pretrained,
    log_loaded,
)
from rgft_jax.models.bert.modeling import (
    BertConfig,
    BertEncoder,
    BertForSequenceClassification,
)

_P = r"(?:bert\.)?"
_L = _P + r"encoder\.layer\.(\d+)\."
_W = r"(?:weight|gamma)"
_B = r"(?:bias|beta)"

#: Checkpoint keys that are never parameters of our models.
IGNORED_BUFFERS: tuple[str, ...] = (_P + r"embeddings\.position_ids",)
#: Heads of other tasks found in BERT checkpoints (MLM/NSP, foreign classifiers).
IGNORED_HEADS: tuple[str, ...] = (r"cls\..*", r"classifier\..*", r"qa_outputs\..*")
_POOLER: tuple[str, ...] = (_P + r"pooler\..*",)


def encoder_rules(prefix: str = "") -> list[Rule]:
    """Rules for the encoder parameters.

    Args:
        prefix: NNX path prefix of the encoder (``"encoder/"`` inside the classifier).

    Returns:
        The rule table.
    """
    p, layer = prefix + "embeddings/", prefix + "layers/{0}/"
    rules = [
        Rule(_P + r"embeddings\.word_embeddings\.weight", p + "word/embedding"),
        Rule(_P + r"embeddings\.position_embeddings\.weight", p + "position/embedding"),
        Rule(_P + r"embeddings\.token_type_embeddings\.weight", p + "token_type/embedding"),
        Rule(_P + rf"embeddings\.LayerNorm\.{_W}", p + "norm/scale"),
        Rule(_P + rf"embeddings\.LayerNorm\.{_B}", p + "norm/bias"),
    ]
    for hf, ours in (("query", "query"), ("key", "key"), ("value", "value")):
        rules += [
            Rule(
                _L + rf"attention\.self\.{hf}\.weight",
                layer + f"attention/{ours}/kernel",
                TorchLinear(),
            ),
            Rule(
                _L + rf"attention\.self\.{hf}\.bias", layer + f"attention/{ours}/bias", Unflatten()
            ),
        ]
    rules += [
        Rule(
            _L + r"attention\.output\.dense\.weight", layer + "attention/out/kernel", TorchLinear(2)
        ),
        Rule(_L + r"attention\.output\.dense\.bias", layer + "attention/out/bias"),
        Rule(_L + rf"attention\.output\.LayerNorm\.{_W}", layer + "attention_norm/scale"),
        Rule(_L + rf"attention\.output\.LayerNorm\.{_B}", layer + "attention_norm/bias"),
        Rule(_L + r"intermediate\.dense\.weight", layer + "mlp/up/kernel", TorchLinear()),
        Rule(_L + r"intermediate\.dense\.bias", layer + "mlp/up/bias"),
        Rule(_L + r"output\.dense\.weight", layer + "mlp/down/kernel", TorchLinear()),
        Rule(_L + r"output\.dense\.bias", layer + "mlp/down/bias"),
        Rule(_L + rf"output\.LayerNorm\.{_W}", layer + "mlp_norm/scale"),
        Rule(_L + rf"output\.LayerNorm\.{_B}", layer + "mlp_norm/bias"),
    ]
    return rules


def pooler_rules() -> list[Rule]:
    """Rules for HF's ``pooler.dense`` -> ``pooler/{kernel,bias}``."""
    return [
        Rule(_P + r"pooler\.dense\.weight", "pooler/kernel", TorchLinear()),
        Rule(_P + r"pooler\.dense\.bias", "pooler/bias"),
    ]


def load_encoder(
    local_dir: str | os.PathLike[str], *, shardings: ShardingSpec = None
) -> LoadResult[BertEncoder]:
    """Loads a :class:`BertEncoder` from a local HF directory (``config.json`` + safetensors).

    Args:
        local_dir: model directory.
        shardings: optional target shardings, see :func:`~rgft_jax.models._loading.load_checkpoint`.

    Returns:
        The load result; ``result.model`` is the encoder, ``result.ignored`` lists the
        pooler / buffers / foreign heads that were skipped.
    """
    config = BertConfig.from_hf(local_dir)
    return load_pretrained(
        local_dir,
        lambda: BertEncoder(config, rngs=nnx.Rngs(0)),
        encoder_rules(),
        ignore=IGNORED_BUFFERS + IGNORED_HEADS + _POOLER,
        shardings=shardings,
    )


def load_classifier(
    local_dir: str | os.PathLike[str],
    *,
    num_labels: int,
    pooling: str = "mean",
    seed: int = 0,
    shardings: ShardingSpec = None,
) -> LoadResult[BertForSequenceClassification]:
    """Loads a :class:`BertForSequenceClassification` with a fresh classifier head.

    Args:
        local_dir: model directory.
        num_labels: number of classes.
        pooling: ``'mean'`` (pooler weights ignored) or ``'cls'`` (pooler loaded).
        seed: seed of ``nnx.Rngs`` used for the fresh ``classifier/{kernel,bias}``.
        shardings: optional target shardings.

    Returns:
        The load result.
    """
    config = BertConfig.from_hf(local_dir)

    def build() -> BertForSequenceClassification:
        return BertForSequenceClassification(config, num_labels, pooling, rngs=nnx.Rngs(seed))

    rules = encoder_rules("encoder/")
    ignore = IGNORED_BUFFERS + IGNORED_HEADS
    if pooling == "cls":
        rules += pooler_rules()
    else:
        ignore += _POOLER
    return load_pretrained(
        local_dir,
        build,
        rules,
        ignore=ignore,
        allow_missing=(r"classifier/.*",),
        shardings=shardings,
    )


def from_pretrained(
    local_dir: str | os.PathLike[str],
    *,
    num_labels: int,
    pooling: str = "mean",
    seed: int = 0,
    shardings: ShardingSpec = None,
) -> BertForSequenceClassification:
    """Builds a sequence classifier from a local HF BERT directory.

    The encoder (and, for ``pooling='cls'``, the pooler) come from the checkpoint; the
    classifier is freshly initialised from ``seed``. Network access is never attempted.

    Args:
        local_dir: directory with ``config.json`` and ``model.safetensors``.
        num_labels: number of classes.
        pooling: ``'mean'`` or ``'cls'``.
        seed: seed for the classifier head.
        shardings: optional target shardings.

    Returns:
        The model.
    """
    result = load_classifier(
        local_dir, num_labels=num_labels, pooling=pooling, seed=seed, shardings=shardings
    )
    return log_loaded(local_dir, result)


def encoder_from_pretrained(
    local_dir: str | os.PathLike[str], *, shardings: ShardingSpec = None
) -> BertEncoder:
    """Builds a :class:`BertEncoder` from a local HF BERT directory (see :func:`load_encoder`)."""
    return log_loaded(local_dir, load_encoder(local_dir, shardings=shardings))
