# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""ViT image classifier (pre-LN, CLS token) matching HF ``ViTForImageClassification``.

Images are NHWC (``[B, H, W, C]``, the JAX convention); HF takes NCHW ``pixel_values``, so
transpose with ``x.transpose(0, 2, 3, 1)`` when feeding the same batch.

Parameter paths (``nnx.state(model, nnx.Param)``, '/'-joined)::

    embeddings/patch/kernel [p, p, C, D], embeddings/patch/bias [D]
    embeddings/cls_token [1, 1, D], embeddings/position [1, N + 1, D]
    layers/{i}/attention_norm/{scale,bias}   # layernorm_before
    layers/{i}/attention/{query,key,value}/kernel [D, H, Dh], .../bias [H, Dh]
    layers/{i}/attention/out/kernel [H, Dh, D], .../bias [D]
    layers/{i}/mlp_norm/{scale,bias}         # layernorm_after
    layers/{i}/mlp/up/kernel [D, F], layers/{i}/mlp/down/kernel [F, D] (+ bias)
    final_norm/{scale,bias}
    head/kernel [D, num_labels], head/bias [num_labels]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rgft_jax.models import _hf_config
from rgft_jax.models._layers import (
    Mlp,
    MultiHeadAttention,
    Projection,
    layer_norm,
)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ViTConfig(_hf_config.HFConfig):
    """Hyper-parameters of a ViT (field names follow HF ``ViTConfig``).

    :meth:`from_hf` rejects ``model_type`` other than ``vit`` and unknown activations.

    Attributes:
        hidden_size: model width ``D``.
        num_hidden_layers: number of blocks ``L``.
        num_attention_heads: number of heads ``H``.
        intermediate_size: MLP width ``F``.
        hidden_act: MLP activation.
        hidden_dropout_prob: dropout on embeddings and residual branches.
        attention_probs_dropout_prob: dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: std of the normal initialiser for fresh weights.
        image_size: input height and width (square images).
        patch_size: patch height and width ``p``; must divide ``image_size``.
        num_channels: input channels ``C``.
        qkv_bias: whether query/key/value projections carry a bias.
    """

    HF_MODEL_TYPES = frozenset({"vit"})
    ACTIVATION = "hidden_act"
    POSITIVE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "image_size", "patch_size", "num_channels")
    DIVIDES = (("num_attention_heads", "hidden_size"), ("patch_size", "image_size"))
    PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True

    @property
    def num_patches(self) -> int:
        """Number of patches ``N = (image_size / patch_size) ** 2``."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def vit_base_patch16_224(cls) -> ViTConfig:
        """ViT-B/16 at 224 px."""
        return cls()

    @classmethod
    def tiny(cls) -> ViTConfig:
        """Tiny random model for tests: 2 layers, width 32, 4 heads, 16 px images, 4 px patches."""
        return cls(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=16,
            patch_size=4,
        )


def num_labels_from_hf(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> int:
    """Number of classes recorded in a HF config (``id2label`` or ``num_labels``; default 2)."""
    hf = _hf_config.read_config(path_or_dict)
    if hf.get("id2label"):
        return len(hf["id2label"])
    return int(hf.get("num_labels", 2))


def _check_cut(cut: int, num_layers: int) -> int:
    """``cut`` as an int in ``[0, num_layers]`` (the split point of a split forward)."""
    if isinstance(cut, bool) or not isinstance(cut, int) or not 0 <= cut <= num_layers:
        raise ValueError(f"cut={cut!r}; allowed: an int in [0, {num_layers}] (layers below it "
                         "run in hidden_at, the rest in logits_from).")
    return cut


class ViTEmbeddings(nnx.Module):
    """Patch convolution, prepended CLS token and learned position embeddings."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs) -> None:
        """Initialises the embeddings; see :class:`ViTConfig`."""
        d, p = config.hidden_size, config.patch_size
        init = nnx.initializers.normal(config.initializer_range)
        self.patch = nnx.Conv(
            config.num_channels,
            d,
            kernel_size=(p, p),
            strides=(p, p),
            padding="VALID",
            kernel_init=init,
            rngs=rngs,
        )
        self.cls_token = nnx.Param(init(rngs.params(), (1, 1, d)))
        self.position = nnx.Param(init(rngs.params(), (1, config.num_patches + 1, d)))
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)

    def __call__(
        self, images: Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> Array:
        """Embeds NHWC images ``[B, H, W, C]`` into tokens ``[B, N + 1, D]``."""
        x = self.patch(images)  # [B, H/p, W/p, D]
        b, _, _, d = x.shape
        x = x.reshape(b, -1, d)  # [B, N, D], row-major patches as in HF's flatten(2)
        cls = jnp.broadcast_to(self.cls_token[...], (b, 1, d))
        x = jnp.concatenate([cls, x], axis=1) + self.position[...]
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class ViTBlock(nnx.Module):
    """Pre-LN block: ``x += Attn(LN(x)); x += MLP(LN(x))``."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs) -> None:
        """Initialises the block; see :class:`ViTConfig`."""
        init = nnx.initializers.normal(config.initializer_range)
        d, eps = config.hidden_size, config.layer_norm_eps
        self.attention_norm = layer_norm(d, epsilon=eps, rngs=rngs)
        self.attention = MultiHeadAttention(
            d,
            config.num_attention_heads,
            use_bias=config.qkv_bias,
            dropout_rate=config.attention_probs_dropout_prob,
            kernel_init=init,
            rngs=rngs,
        )
        self.mlp_norm = layer_norm(d, epsilon=eps, rngs=rngs)
        self.mlp = Mlp(
            d, config.intermediate_size, activation=config.hidden_act, kernel_init=init, rngs=rngs
        )
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)

    def __call__(
        self, x: Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> Array:
        """Applies the block to ``[B, N + 1, D]``."""
        h = self.attention(self.attention_norm(x), deterministic=deterministic, rngs=rngs)
        x = x + self.dropout(h, deterministic=deterministic, rngs=rngs)
        h = self.mlp(self.mlp_norm(x))
        return x + self.dropout(h, deterministic=deterministic, rngs=rngs)


class ViTForImageClassification(nnx.Module):
    """ViT encoder + final LayerNorm + linear head on the CLS token."""

    def __init__(self, config: ViTConfig, num_labels: int, *, rngs: nnx.Rngs) -> None:
        """Initialises the classifier.

        Args:
            config: the model hyper-parameters.
            num_labels: number of classes.
            rngs: random streams (``params``) for initialisation.

        Raises:
            ValueError: on a non-positive ``num_labels``.
        """
        if not isinstance(num_labels, int) or num_labels <= 0:
            raise ValueError(f"num_labels={num_labels!r} must be a positive int")
        self.config = config
        self.num_labels = num_labels
        self.embeddings = ViTEmbeddings(config, rngs=rngs)
        self.layers = nnx.List(
            [ViTBlock(config, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )
        self.final_norm = layer_norm(config.hidden_size, epsilon=config.layer_norm_eps, rngs=rngs)
        self.head = Projection(
            config.hidden_size,
            num_labels,
            kernel_init=nnx.initializers.normal(config.initializer_range),
            rngs=rngs,
        )

    def features(
        self, images: Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> Array:
        """Returns the final-norm token states ``[B, N + 1, D]`` for NHWC images."""
        x = self.embeddings(images, deterministic=deterministic, rngs=rngs)
        for layer in self.layers:
            x = layer(x, deterministic=deterministic, rngs=rngs)
        return self.final_norm(x)

    def __call__(
        self, images: Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> Array:
        """Classifies images.

        Args:
            images: float ``[B, H, W, C]`` (NHWC), ``H = W = config.image_size``.
            deterministic: disables dropout when ``True`` (the default).
            rngs: streams with a ``dropout`` key, needed when ``deterministic=False``.

        Returns:
            Logits ``[B, num_labels]``.
        """
        return self.head(self.features(images, deterministic=deterministic, rngs=rngs)[:, 0])

    def hidden_at(
        self, cut: int, images: Array, *, deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """The lower half of a split forward: embeddings and ``layers[:cut]``, ``[B, N+1, D]``.

        ``logits_from(cut, hidden_at(cut, images))`` equals ``__call__``.
        """
        _check_cut(cut, len(self.layers))
        x = self.embeddings(images, deterministic=deterministic, rngs=rngs)
        for i in range(cut):
            x = self.layers[i](x, deterministic=deterministic, rngs=rngs)
        return x

    def logits_from(
        self, cut: int, hidden: Array, *, deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Logits from :meth:`hidden_at`'s output: ``layers[cut:]``, final norm, CLS head."""
        _check_cut(cut, len(self.layers))
        x = hidden
        for i in range(cut, len(self.layers)):
            x = self.layers[i](x, deterministic=deterministic, rngs=rngs)
        return self.head(self.final_norm(x)[:, 0])


@nnx.jit
def forward(model: ViTForImageClassification, images: Array) -> Array:
    """Jitted deterministic forward pass returning logits ``[B, num_labels]``."""
    return model(images)
