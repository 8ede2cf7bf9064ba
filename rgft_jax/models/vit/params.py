# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""HF ViT checkpoint names -> NNX parameter paths, and ``from_pretrained``."""

from __future__ import annotations

import os

from flax import nnx

from rgft_jax.models._loading import (
    ConvOIHW,
    LoadResult,
    Rule,
    ShardingSpec,
    TorchLinear,
    Unflatten,
    load_pretrained,
    log_loaded,
)
from rgft_jax.models.vit.modeling import (
    ViTConfig,
    ViTForImageClassification,
    num_labels_from_hf,
)

_P = r"(?:vit\.)?"
_L = _P + r"encoder\.layer\.(\d+)\."

#: Keys of ViT checkpoints that are not parameters of the classifier.
IGNORED: tuple[str, ...] = (_P + r"pooler\..*", _P + r"embeddings\.mask_token")
_HEAD: tuple[str, ...] = (r"classifier\..*",)


def encoder_rules() -> list[Rule]:
    """Rules for everything except the classification head."""
    layer = "layers/{0}/"
    rules = [
        Rule(_P + r"embeddings\.cls_token", "embeddings/cls_token"),
        Rule(_P + r"embeddings\.position_embeddings", "embeddings/position"),
        Rule(
            _P + r"embeddings\.patch_embeddings\.projection\.weight",
            "embeddings/patch/kernel",
            ConvOIHW(),
        ),
        Rule(_P + r"embeddings\.patch_embeddings\.projection\.bias", "embeddings/patch/bias"),
        Rule(_L + r"layernorm_before\.weight", layer + "attention_norm/scale"),
        Rule(_L + r"layernorm_before\.bias", layer + "attention_norm/bias"),
    ]
    for name in ("query", "key", "value"):
        rules += [
            Rule(
                _L + rf"attention\.attention\.{name}\.weight",
                layer + f"attention/{name}/kernel",
                TorchLinear(),
            ),
            Rule(
                _L + rf"attention\.attention\.{name}\.bias",
                layer + f"attention/{name}/bias",
                Unflatten(),
            ),
        ]
    rules += [
        Rule(
            _L + r"attention\.output\.dense\.weight", layer + "attention/out/kernel", TorchLinear(2)
        ),
        Rule(_L + r"attention\.output\.dense\.bias", layer + "attention/out/bias"),
        Rule(_L + r"layernorm_after\.weight", layer + "mlp_norm/scale"),
        Rule(_L + r"layernorm_after\.bias", layer + "mlp_norm/bias"),
        Rule(_L + r"intermediate\.dense\.weight", layer + "mlp/up/kernel", TorchLinear()),
        Rule(_L + r"intermediate\.dense\.bias", layer + "mlp/up/bias"),
        Rule(_L + r"output\.dense\.weight", layer + "mlp/down/kernel", TorchLinear()),
        Rule(_L + r"output\.dense\.bias", layer + "mlp/down/bias"),
        Rule(_P + r"layernorm\.weight", "final_norm/scale"),
        Rule(_P + r"layernorm\.bias", "final_norm/bias"),
    ]
    return rules


def head_rules() -> list[Rule]:
    """Rules for HF's ``classifier`` -> ``head/{kernel,bias}``."""
    return [
        Rule(r"classifier\.weight", "head/kernel", TorchLinear()),
        Rule(r"classifier\.bias", "head/bias"),
    ]


def load(
    local_dir: str | os.PathLike[str],
    *,
    num_labels: int | None = None,
    seed: int = 0,
    shardings: ShardingSpec = None,
) -> LoadResult[ViTForImageClassification]:
    """Loads a :class:`ViTForImageClassification` from a local HF directory.

    Args:
        local_dir: directory with ``config.json`` and safetensors weights.
        num_labels: ``None`` loads the checkpoint's own classifier; an int builds a fresh
            head of that size from ``seed`` and ignores the checkpoint's classifier.
        seed: seed for a fresh head.
        shardings: optional target shardings.

    Returns:
        The load result.
    """
    config = ViTConfig.from_hf(local_dir)
    fresh_head = num_labels is not None
    labels = num_labels if fresh_head else num_labels_from_hf(local_dir)

    def build() -> ViTForImageClassification:
        return ViTForImageClassification(config, labels, rngs=nnx.Rngs(seed))

    return load_pretrained(
        local_dir,
        build,
        encoder_rules() + ([] if fresh_head else head_rules()),
        ignore=IGNORED + (_HEAD if fresh_head else ()),
        allow_missing=(r"head/.*",) if fresh_head else (),
        shardings=shardings,
    )


def from_pretrained(
    local_dir: str | os.PathLike[str],
    *,
    num_labels: int | None = None,
    seed: int = 0,
    shardings: ShardingSpec = None,
) -> ViTForImageClassification:
    """Builds a :class:`ViTForImageClassification` from a local HF directory; see :func:`load`."""
    return log_loaded(
        local_dir, load(local_dir, num_labels=num_labels, seed=seed, shardings=shardings))
