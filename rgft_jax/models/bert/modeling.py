# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""BERT-family encoder (post-LN) in Flax NNX, numerically matching HF ``BertModel``.

Parameter paths (``nnx.state(model, nnx.Param)``, '/'-joined)::

    embeddings/{word,position,token_type}/embedding, embeddings/norm/{scale,bias}
    layers/{i}/attention/{query,key,value}/kernel [D, H, Dh], .../bias [H, Dh]
    layers/{i}/attention/out/kernel [H, Dh, D], .../bias [D]
    layers/{i}/attention_norm/{scale,bias}        # LayerNorm after the attention residual
    layers/{i}/mlp/up/kernel [D, F], layers/{i}/mlp/down/kernel [F, D] (+ bias)
    layers/{i}/mlp_norm/{scale,bias}              # LayerNorm after the MLP residual

:class:`BertForSequenceClassification` holds the encoder under ``encoder/`` plus
``pooler/{kernel,bias}`` (``pooling='cls'`` only) and ``classifier/{kernel,bias}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rgft_jax.models import _dropbp, _hf_config, _loading
from rgft_jax.models._layers import (
    Mlp,
    MultiHeadAttention,
    Projection,
    layer_norm,
    padding_mask,
)

Array = jax.Array

POOLING_MODES: frozenset[str] = frozenset({"mean", "cls"})


@dataclasses.dataclass(frozen=True)
class BertConfig(_hf_config.HFConfig):
    """Hyper-parameters of a BERT encoder (field names follow HF ``BertConfig``).

    :meth:`from_hf` rejects ``model_type`` other than ``bert``, relative position
    embeddings, decoder or cross-attention mode and unknown activations.

    Attributes:
        vocab_size: word-piece vocabulary size ``V``.
        hidden_size: model width ``D``.
        num_hidden_layers: number of transformer layers ``L``.
        num_attention_heads: number of heads ``H``; ``Dh = D // H``.
        intermediate_size: MLP width ``F``.
        hidden_act: MLP activation, see ``rgft_jax.models._layers.SUPPORTED_ACTIVATIONS``.
        hidden_dropout_prob: dropout on embeddings and residual branches.
        attention_probs_dropout_prob: dropout on attention probabilities.
        max_position_embeddings: number of learned absolute positions.
        type_vocab_size: number of token types (segments).
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: std of the normal initialiser for fresh weights.
    """

    HF_MODEL_TYPES = frozenset({"bert"})
    HF_REQUIRE = (
        ("position_embedding_type", {"absolute"}, "absolute"),
        ("is_decoder", {False}, False),
        ("add_cross_attention", {False}, False),
    )
    ACTIVATION = "hidden_act"
    POSITIVE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size")
    DIVIDES = (("num_attention_heads", "hidden_size"),)
    PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    @property
    def head_dim(self) -> int:
        """Per-head width ``Dh``."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def bert_base(cls) -> BertConfig:
        """``bert-base-uncased``: 12 layers, width 768, 12 heads."""
        return cls()

    @classmethod
    def minilm_l6_h384(cls) -> BertConfig:
        """``all-MiniLM-L6-v2``: 6 layers, width 384, 12 heads of 32, MLP 1536."""
        return cls(hidden_size=384, num_hidden_layers=6, intermediate_size=1536)

    @classmethod
    def tiny(cls) -> BertConfig:
        """Tiny random model for tests: 2 layers, width 32, 4 heads, vocab 99."""
        return cls(
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
        )


def _normal(config: BertConfig) -> nnx.Initializer:
    return nnx.initializers.normal(config.initializer_range)


def _check_cut(cut: int, num_layers: int) -> int:
    """``cut`` as an int in ``[0, num_layers]`` (the split point of a split forward)."""
    if isinstance(cut, bool) or not isinstance(cut, int) or not 0 <= cut <= num_layers:
        raise ValueError(f"cut={cut!r}; allowed: an int in [0, {num_layers}] (layers below it "
                         "run in hidden_at, the rest in logits_from).")
    return cut


class BertEmbeddings(nnx.Module):
    """Word + absolute position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs) -> None:
        """Initialises the embeddings; see :class:`BertConfig`."""
        init = _normal(config)
        d = config.hidden_size
        self.word = nnx.Embed(config.vocab_size, d, embedding_init=init, rngs=rngs)
        self.position = nnx.Embed(config.max_position_embeddings, d, embedding_init=init, rngs=rngs)
        self.token_type = nnx.Embed(config.type_vocab_size, d, embedding_init=init, rngs=rngs)
        self.norm = layer_norm(d, epsilon=config.layer_norm_eps, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        position_ids: Array,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Embeds ``[B, T]`` ids into ``[B, T, D]``."""
        x = self.word(input_ids) + self.position(position_ids) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x), deterministic=deterministic, rngs=rngs)


class BertLayer(nnx.Module):
    """One post-LN transformer layer: ``x = LN(x + Attn(x)); x = LN(x + MLP(x))``."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs) -> None:
        """Initialises the layer; see :class:`BertConfig`."""
        init = _normal(config)
        d = config.hidden_size
        self.attention = MultiHeadAttention(
            d,
            config.num_attention_heads,
            dropout_rate=config.attention_probs_dropout_prob,
            kernel_init=init,
            rngs=rngs,
        )
        self.attention_norm = layer_norm(d, epsilon=config.layer_norm_eps, rngs=rngs)
        self.mlp = Mlp(
            d, config.intermediate_size, activation=config.hidden_act, kernel_init=init, rngs=rngs
        )
        self.mlp_norm = layer_norm(d, epsilon=config.layer_norm_eps, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)

    def __call__(
        self,
        x: Array,
        mask: Array | None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Applies the layer to ``[B, T, D]``; ``mask`` is boolean ``[B, 1, 1, T]``."""
        # DropBP (rgft_jax.models._dropbp): each residual branch may drop its backward.
        h = _dropbp.branch(_dropbp.ATTENTION, lambda y: self.attention(
            y, mask, deterministic=deterministic, rngs=rngs), x)
        x = self.attention_norm(x + self.dropout(h, deterministic=deterministic, rngs=rngs))
        h = _dropbp.branch(_dropbp.MLP, self.mlp, x)
        return self.mlp_norm(x + self.dropout(h, deterministic=deterministic, rngs=rngs))


class BertEncoder(nnx.Module):
    """BERT encoder (HF ``BertModel`` without pooler) returning the last hidden states."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs) -> None:
        """Initialises the encoder.

        Args:
            config: the model hyper-parameters.
            rngs: random streams (``params``) for initialisation.
        """
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.layers = nnx.List(
            [BertLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )

    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Encodes a batch of token ids.

        Args:
            input_ids: int ``[B, T]``.
            attention_mask: ``[B, T]``, 1 for real tokens and 0 for padding; ``None`` = all 1.
            token_type_ids: int ``[B, T]``; ``None`` = all 0.
            position_ids: int ``[B, T]``; ``None`` = ``arange(T)``.
            deterministic: disables dropout when ``True`` (the default).
            rngs: streams with a ``dropout`` key, needed when ``deterministic=False``.

        Returns:
            Last hidden states ``[B, T, D]``.
        """
        x = self.hidden_at(0, input_ids, attention_mask, token_type_ids, position_ids,
                           deterministic=deterministic, rngs=rngs)
        return self.encode_from(0, x, attention_mask, deterministic=deterministic, rngs=rngs)

    def _run_layers(self, x, mask, start, stop, deterministic, rngs):
        """``layers[start:stop]`` on ``x`` (each in its DropBP scope)."""
        for i in range(start, stop):
            with _dropbp.layer(i):
                x = self.layers[i](x, mask, deterministic=deterministic, rngs=rngs)
        return x

    def hidden_at(
        self,
        cut: int,
        input_ids: Array,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """The lower half of a split forward: embeddings and ``layers[:cut]``, ``[B, T, D]``.

        ``encode_from(cut, hidden_at(cut, ...), attention_mask)`` equals ``__call__``; the
        frozen-prefix activation cache (``rgft_jax.training._cache``) stores this output.
        """
        _check_cut(cut, len(self.layers))
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        x = self.embeddings(
            input_ids, token_type_ids, position_ids, deterministic=deterministic, rngs=rngs
        )
        return self._run_layers(x, padding_mask(attention_mask), 0, cut, deterministic, rngs)

    def encode_from(
        self,
        cut: int,
        hidden: Array,
        attention_mask: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """The upper half of a split forward: ``layers[cut:]`` on ``hidden`` ``[B, T, D]``."""
        _check_cut(cut, len(self.layers))
        return self._run_layers(hidden, padding_mask(attention_mask), cut, len(self.layers),
                                deterministic, rngs)


def mean_pool(hidden: Array, attention_mask: Array | None) -> Array:
    """Attention-masked mean over tokens, as in sentence-transformers.

    Args:
        hidden: ``[B, T, D]`` hidden states.
        attention_mask: ``[B, T]`` 0/1 mask; ``None`` averages over all tokens.

    Returns:
        ``[B, D]`` mean of the unmasked token states.
    """
    if attention_mask is None:
        return hidden.mean(axis=1)
    m = attention_mask.astype(hidden.dtype)[..., None]  # [B, T, 1]
    return (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1e-9)


class BertForSequenceClassification(nnx.Module):
    """BERT encoder + pooling + dropout + linear classifier.

    ``pooling='mean'`` averages the last hidden states over real tokens;
    ``pooling='cls'`` applies HF's pooler (``tanh(dense([CLS]))``).
    """

    def __init__(
        self,
        config: BertConfig,
        num_labels: int,
        pooling: str = "mean",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        """Initialises the classifier.

        Args:
            config: encoder hyper-parameters.
            num_labels: number of output classes.
            pooling: ``'mean'`` or ``'cls'``.
            rngs: random streams (``params``) for initialisation.

        Raises:
            ValueError: on a non-positive ``num_labels`` or unknown ``pooling``.
        """
        if not isinstance(num_labels, int) or num_labels <= 0:
            raise ValueError(f"num_labels={num_labels!r} must be a positive int")
        if pooling not in POOLING_MODES:
            raise ValueError(
                f"pooling={pooling!r} is not supported; allowed: {sorted(POOLING_MODES)}"
            )
        self.config = config
        self.num_labels = num_labels
        self.pooling = pooling
        init = _normal(config)
        d = config.hidden_size
        self.encoder = BertEncoder(config, rngs=rngs)
        self.pooler = Projection(d, d, kernel_init=init, rngs=rngs) if pooling == "cls" else None
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.classifier = Projection(d, num_labels, kernel_init=init, rngs=rngs)

    def pool(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Returns the pooled sentence features ``[B, D]`` (before dropout and classifier)."""
        h = self.encoder(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        if self.pooler is None:
            return mean_pool(h, attention_mask)
        return jnp.tanh(self.pooler(h[:, 0]))

    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Returns class logits ``[B, num_labels]``; arguments as in :class:`BertEncoder`."""
        pooled = self.pool(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        return self.classifier(self.dropout(pooled, deterministic=deterministic, rngs=rngs))

    def hidden_at(
        self,
        cut: int,
        input_ids: Array,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Hidden states after the embeddings and ``layers[:cut]`` (see
        :meth:`BertEncoder.hidden_at`)."""
        return self.encoder.hidden_at(cut, input_ids, attention_mask, token_type_ids,
                                      deterministic=deterministic, rngs=rngs)

    def logits_from(
        self,
        cut: int,
        hidden: Array,
        attention_mask: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Class logits from :meth:`hidden_at`'s output: ``layers[cut:]``, pooling, head.

        ``logits_from(cut, hidden_at(cut, ids, mask, types), mask)`` equals ``__call__``.
        """
        h = self.encoder.encode_from(cut, hidden, attention_mask, deterministic=deterministic,
                                     rngs=rngs)
        pooled = mean_pool(h, attention_mask) if self.pooler is None else jnp.tanh(
            self.pooler(h[:, 0]))
        return self.classifier(self.dropout(pooled, deterministic=deterministic, rngs=rngs))


def abstract_params(
    config: BertConfig, num_labels: int | None = None, pooling: str = "mean"
) -> nnx.State:
    """The ``nnx.Param`` state of a model as ``jax.ShapeDtypeStruct`` s (nothing allocated).

    ``num_labels=None`` gives the encoder's tree, an int the classifier's. Use it to build
    component partitions, cost models or shardings before any weights are loaded.
    """
    if num_labels is None:
        return _loading.abstract_params(lambda: BertEncoder(config, rngs=nnx.Rngs(0)))
    return _loading.abstract_params(
        lambda: BertForSequenceClassification(config, num_labels, pooling, rngs=nnx.Rngs(0)))


@nnx.jit
def forward(
    model: BertEncoder | BertForSequenceClassification,
    input_ids: Array,
    attention_mask: Array | None = None,
    token_type_ids: Array | None = None,
) -> Array:
    """Jitted deterministic forward pass: hidden states for an encoder, logits for a classifier."""
    return model(input_ids, attention_mask, token_type_ids)


@nnx.jit
def embed(
    model: BertEncoder | BertForSequenceClassification,
    input_ids: Array,
    attention_mask: Array,
    token_type_ids: Array | None = None,
) -> Array:
    """Sentence embedding: attention-masked mean of the last hidden state, L2-normalised.

    This is the all-MiniLM-L6-v2 / sentence-transformers embedding.

    Args:
        model: a :class:`BertEncoder`, or a classifier whose ``encoder`` is used.
        input_ids: int ``[B, T]``.
        attention_mask: ``[B, T]`` 0/1 mask.
        token_type_ids: int ``[B, T]`` or ``None``.

    Returns:
        ``[B, D]`` unit-norm embeddings.
    """
    encoder = model.encoder if isinstance(model, BertForSequenceClassification) else model
    pooled = mean_pool(encoder(input_ids, attention_mask, token_type_ids), attention_mask)
    norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
    return pooled / jnp.maximum(norm, 1e-12)
