# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Llama-family causal LM (RMSNorm, rotary, SwiGLU, grouped-query attention) in Flax NNX.

Numerically matches HF ``LlamaForCausalLM`` (eager attention). Every weight matrix is a
:class:`~rgft_jax.models.Projection` with explicit head axes, so query heads, key/value heads
and MLP neuron groups are components and the group-sparse weight gradients of
:mod:`rgft_jax.ops` apply unchanged.

Parameter paths (``nnx.state(model, nnx.Param)``, '/'-joined)::

    embeddings/word/embedding [V, D]         # also the LM head when tied
    layers/{i}/attention_norm/scale [D]      # RMSNorm before attention (input_layernorm)
    layers/{i}/attention/query/kernel [D, H, Dh]
    layers/{i}/attention/{key,value}/kernel [D, K, Dh]   # K key/value heads (GQA)
    layers/{i}/attention/out/kernel [H, Dh, D]
    layers/{i}/mlp_norm/scale [D]            # RMSNorm before the MLP (post_attention_layernorm)
    layers/{i}/mlp/{gate,up}/kernel [D, F], layers/{i}/mlp/down/kernel [F, D]
    final_norm/scale [D]
    lm_head/kernel [D, V]                    # only with tie_word_embeddings=False

(plus ``.../bias`` leaves with ``attention_bias`` / ``mlp_bias``). Query head ``h`` reads
key/value head ``h // (H // K)``, as HF's ``repeat_kv``.

Masks: ``attention_mask`` ``[B, T]`` (0 = padding key) and/or ``segment_ids`` ``[B, T]``
(packed rows: a token attends only to earlier tokens of its own segment; 0 = padding). With
``segment_ids`` and no ``position_ids``, positions restart at 0 in every segment, so a packed
document sees exactly what it would see alone.

Precision: parameters and activations share ``param_dtype`` (``bfloat16`` halves parameter
memory); RMSNorm statistics, rotary angles and the attention softmax are computed in float32
(as HF does) and logits are returned in float32.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rgft_jax.models import _dropbp, _hf_config
from rgft_jax.models._layers import Projection, get_activation

Array = jax.Array

__all__ = [
    "KVCache",
    "LlamaAttention",
    "LlamaBlock",
    "LlamaConfig",
    "LlamaForCausalLM",
    "LlamaMlp",
    "RMSNorm",
    "apply_rotary",
    "forward",
    "generate",
    "rotary_inv_freq",
    "segment_positions",
    "token_log_likelihood",
]


@dataclasses.dataclass(frozen=True)
class LlamaConfig(_hf_config.HFConfig):
    """Hyper-parameters of a Llama-family decoder (field names follow HF ``LlamaConfig``).

    Attributes:
        vocab_size: vocabulary size ``V``.
        hidden_size: model width ``D``.
        intermediate_size: SwiGLU width ``F``.
        num_hidden_layers: number of blocks ``L``.
        num_attention_heads: query heads ``H``.
        num_key_value_heads: key/value heads ``K`` (grouped-query attention); ``None`` = ``H``.
        head_dim: per-head width ``Dh``; ``None`` = ``D // H``.
        hidden_act: MLP gate activation (Llama: ``silu``).
        max_position_embeddings: longest sequence the model was trained for (informative:
            rotary embeddings need no table).
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: rotary base.
        tie_word_embeddings: the LM head is the transposed word embedding.
        attention_bias: query/key/value/output projections carry biases.
        mlp_bias: gate/up/down projections carry biases.
        attention_dropout: dropout on attention probabilities.
        initializer_range: std of the normal initialiser for fresh weights.
    """

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    initializer_range: float = 0.02

    HF_MODEL_TYPES: ClassVar[frozenset[str]] = frozenset({"llama"})
    HF_REQUIRE: ClassVar[tuple] = (("pretraining_tp", {1}, 1),
                                   ("partial_rotary_factor", {1.0}, 1.0))
    ACTIVATION: ClassVar[str | None] = "hidden_act"
    POSITIVE: ClassVar[tuple[str, ...]] = (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "max_position_embeddings")
    OPTIONAL_POSITIVE: ClassVar[tuple[str, ...]] = ("num_key_value_heads", "head_dim")
    PROBABILITIES: ClassVar[tuple[str, ...]] = ("attention_dropout",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"LlamaConfig.num_key_value_heads={self.num_kv_heads} must divide "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"LlamaConfig.num_attention_heads={self.num_attention_heads} must divide "
                f"hidden_size={self.hidden_size} when head_dim is None"
            )
        if self.head_size % 2:
            raise ValueError(f"LlamaConfig: head_dim={self.head_size} must be even (rotary)")
        if not self.rms_norm_eps > 0 or not self.rope_theta > 0:
            raise ValueError(
                f"LlamaConfig: rms_norm_eps={self.rms_norm_eps!r} and "
                f"rope_theta={self.rope_theta!r} must be > 0"
            )

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads ``K``."""
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_size(self) -> int:
        """Per-head width ``Dh``."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(
        cls, path_or_dict: str | os.PathLike[str] | Mapping[str, Any]
    ) -> LlamaConfig:
        """Builds the config from a HF Llama ``config.json`` (directory, file, or dict).

        The checks of :class:`~rgft_jax.models._hf_config.HFConfig` plus the rotary settings:
        both the transformers v5 form (``rope_parameters={'rope_type': 'default',
        'rope_theta': ...}``) and the older one (``rope_theta`` + ``rope_scaling=None``).

        Args:
            path_or_dict: model directory, path to ``config.json``, or a parsed dict.

        Returns:
            The config.

        Raises:
            ValueError: if the config asks for something not implemented here (``model_type``
                other than ``llama``, rotary scaling, partial rotary, tensor-parallel
                ``pretraining_tp`` > 1, unknown activation); the message names the attribute,
                its value and the allowed set.
        """
        hf = _hf_config.read_config(path_or_dict)
        theta = hf.get("rope_theta")
        for key in ("rope_parameters", "rope_scaling"):
            rope = hf.get(key)
            if rope is None:
                continue
            rope_type = rope.get("rope_type", rope.get("type", "default"))
            _hf_config.require({key + ".rope_type": rope_type}, key + ".rope_type",
                               {"default"}, "default", owner=cls.__name__)
            theta = rope.get("rope_theta", theta)
        hf["rope_theta"] = float(theta if theta is not None else 10000.0)
        return super().from_hf(hf)

    @classmethod
    def smollm2_135m(cls) -> LlamaConfig:
        """SmolLM2-135M(-Instruct): 30 layers, width 576, 9 query / 3 KV heads, FFN 1536."""
        return cls(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            rope_theta=100000.0,
            tie_word_embeddings=True,
        )

    @classmethod
    def tiny(cls, *, tie_word_embeddings: bool = True) -> LlamaConfig:
        """Tiny random model for tests: 2 layers, width 32, 4 query / 2 KV heads, vocab 99."""
        return cls(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=40,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=tie_word_embeddings,
        )


# --------------------------------------------------------------------------- layers


class RMSNorm(nnx.Module):
    r"""Root-mean-square norm as HF ``LlamaRMSNorm``: statistics in float32.

    .. math::
        y = \gamma \odot \operatorname{cast}\!\left(x / \sqrt{\overline{x^2} + \epsilon}\right)

    Attributes:
        scale: ``nnx.Param`` ``[D]``, initialised to ones.
    """

    def __init__(
        self, features: int, *, epsilon: float, param_dtype: jnp.dtype = jnp.float32
    ) -> None:
        """Initialises the norm.

        Args:
            features: width ``D``.
            epsilon: added to the mean square.
            param_dtype: dtype of ``scale``.
        """
        self.epsilon = float(epsilon)
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))

    def __call__(self, x: Array) -> Array:
        """Normalises the last axis of ``x``; the result has ``x``'s dtype."""
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.epsilon)
        return self.scale[...] * h.astype(x.dtype)


def rotary_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """Inverse rotary frequencies ``theta ** (-2i / Dh)``, ``i < Dh / 2``, float32."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    return (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)


def apply_rotary(x: Array, positions: Array, inv_freq: Array) -> Array:
    """Rotary embedding in HF's half-split layout (``rotate_half``), angles in float32.

    Args:
        x: ``[B, T, N, Dh]`` queries or keys.
        positions: int ``[B, T]``.
        inv_freq: ``[Dh / 2]``, see :func:`rotary_inv_freq`.

    Returns:
        The rotated ``x`` (same shape and dtype).
    """
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, Dh/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, Dh]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def segment_positions(segment_ids: Array) -> Array:
    """Positions that restart at 0 wherever the segment id changes: ``[B, T]`` int32."""
    t = jnp.arange(segment_ids.shape[-1], dtype=jnp.int32)
    change = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
        axis=-1,
    )
    starts = jax.lax.cummax(jnp.where(change, t, 0), axis=1)
    return t - starts


def attention_mask_for(
    length: int, attention_mask: Array | None = None, segment_ids: Array | None = None
) -> Array:
    """Boolean ``[B|1, 1, T, T]``: causal, key padding and same-segment constraints combined."""
    mask = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask.astype(bool)[:, None, None, :]
    if segment_ids is not None:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        mask = mask & (same & (segment_ids != 0)[:, None, :])[:, None]
    return mask


def _check_cut(cut: int, num_layers: int) -> int:
    """``cut`` as an int in ``[0, num_layers]`` (the split point of a split forward)."""
    if isinstance(cut, bool) or not isinstance(cut, int) or not 0 <= cut <= num_layers:
        raise ValueError(f"cut={cut!r}; allowed: an int in [0, {num_layers}] (layers below it "
                         "run in hidden_at, the rest in logits_from).")
    return cut


class LayerCache(NamedTuple):
    """Keys and values of one layer for incremental decoding."""

    key: Array  # [B, S, K, Dh], rotary already applied
    value: Array  # [B, S, K, Dh]


class KVCache(NamedTuple):
    """Per-layer key/value buffers of fixed length ``S`` and the number of filled positions."""

    layers: tuple[LayerCache, ...]
    index: Array  # int32 []: positions 0..index-1 are filled


class LlamaAttention(nnx.Module):
    """Grouped-query attention with rotary embeddings; every weight a :class:`Projection`."""

    def __init__(
        self, config: LlamaConfig, *, param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
    ) -> None:
        """Initialises the attention block; see :class:`LlamaConfig`."""
        d, h, k, dh = (config.hidden_size, config.num_attention_heads, config.num_kv_heads,
                       config.head_size)
        self.num_heads, self.num_kv_heads, self.head_dim = h, k, dh
        kw = dict(
            use_bias=config.attention_bias,
            kernel_init=nnx.initializers.normal(config.initializer_range),
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.query = Projection(d, (h, dh), **kw)  # [D, H, Dh]
        self.key = Projection(d, (k, dh), **kw)  # [D, K, Dh]
        self.value = Projection(d, (k, dh), **kw)  # [D, K, Dh]
        self.out = Projection((h, dh), d, **kw)  # [H, Dh, D]
        self.dropout = nnx.Dropout(config.attention_dropout)
        self.rope_theta = float(config.rope_theta)  # a static float, not a Variable

    def __call__(
        self,
        x: Array,
        positions: Array,
        mask: Array,
        *,
        cache: LayerCache | None = None,
        cache_index: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[Array, LayerCache | None]:
        """Attends ``x`` ``[B, T, D]``; ``mask`` is boolean ``[B|1, 1, T, S]``.

        With ``cache``, the new keys/values are written at ``cache_index`` and the queries
        attend over the whole buffer (``S`` = cache length); the updated cache is returned.
        """
        b, t, _ = x.shape
        inv_freq = rotary_inv_freq(self.head_dim, self.rope_theta)  # a compile-time constant
        q = apply_rotary(self.query(x), positions, inv_freq)  # [B, T, H, Dh]
        k = apply_rotary(self.key(x), positions, inv_freq)  # [B, T, K, Dh]
        v = self.value(x)  # [B, T, K, Dh]
        new_cache = None
        if cache is not None:
            start = (0, cache_index, 0, 0)
            k = jax.lax.dynamic_update_slice(cache.key, k.astype(cache.key.dtype), start)
            v = jax.lax.dynamic_update_slice(cache.value, v.astype(cache.value.dtype), start)
            new_cache = LayerCache(k, v)
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(b, t, self.num_kv_heads, groups, self.head_dim)  # h = kv * G + g
        logits = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32)
        logits = logits / math.sqrt(self.head_dim)
        logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, K, G, T, S]
        probs = self.dropout(probs, deterministic=deterministic, rngs=rngs)
        ctx = jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, self.num_heads, -1)
        return self.out(ctx), new_cache


class LlamaMlp(nnx.Module):
    """SwiGLU feed-forward block ``down(act(gate(x)) * up(x))``."""

    def __init__(
        self, config: LlamaConfig, *, param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
    ) -> None:
        """Initialises the MLP; see :class:`LlamaConfig`."""
        d, f = config.hidden_size, config.intermediate_size
        kw = dict(
            use_bias=config.mlp_bias,
            kernel_init=nnx.initializers.normal(config.initializer_range),
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self._act = get_activation(config.hidden_act)
        self.gate = Projection(d, f, **kw)  # [D, F]
        self.up = Projection(d, f, **kw)  # [D, F]
        self.down = Projection(f, d, **kw)  # [F, D]

    def __call__(self, x: Array) -> Array:
        """Applies the MLP to ``[..., D]`` inputs."""
        return self.down(self._act(self.gate(x)) * self.up(x))


class LlamaBlock(nnx.Module):
    """Pre-norm block: ``x += Attn(RMSNorm(x)); x += MLP(RMSNorm(x))``."""

    def __init__(
        self, config: LlamaConfig, *, param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
    ) -> None:
        """Initialises the block; see :class:`LlamaConfig`."""
        d, eps = config.hidden_size, config.rms_norm_eps
        self.attention_norm = RMSNorm(d, epsilon=eps, param_dtype=param_dtype)
        self.attention = LlamaAttention(config, param_dtype=param_dtype, rngs=rngs)
        self.mlp_norm = RMSNorm(d, epsilon=eps, param_dtype=param_dtype)
        self.mlp = LlamaMlp(config, param_dtype=param_dtype, rngs=rngs)

    def __call__(
        self,
        x: Array,
        positions: Array,
        mask: Array,
        *,
        cache: LayerCache | None = None,
        cache_index: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[Array, LayerCache | None]:
        """Applies the block to ``[B, T, D]``; see :meth:`LlamaAttention.__call__`."""
        if cache is None:  # training: DropBP (rgft_jax.models._dropbp) may drop the backward
            h = _dropbp.branch(_dropbp.ATTENTION, lambda y: self.attention(
                self.attention_norm(y), positions, mask, cache=None, cache_index=cache_index,
                deterministic=deterministic, rngs=rngs)[0], x)
        else:
            h, cache = self.attention(
                self.attention_norm(x), positions, mask, cache=cache, cache_index=cache_index,
                deterministic=deterministic, rngs=rngs,
            )
        x = x + h
        return x + _dropbp.branch(_dropbp.MLP, lambda y: self.mlp(self.mlp_norm(y)), x), cache


class _Embed(nnx.Module):
    """Word embedding table ``embedding [V, D]``."""

    def __init__(self, config: LlamaConfig, *, param_dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        init = nnx.initializers.normal(config.initializer_range)
        self.word = nnx.Embed(
            config.vocab_size, config.hidden_size, embedding_init=init, dtype=param_dtype,
            param_dtype=param_dtype, rngs=rngs,
        )


class LlamaForCausalLM(nnx.Module):
    """Llama-family causal language model (HF ``LlamaForCausalLM``)."""

    def __init__(
        self, config: LlamaConfig, *, param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
    ) -> None:
        """Initialises the model.

        Args:
            config: the model hyper-parameters.
            param_dtype: dtype of every parameter and of the activations (``float32`` or
                ``bfloat16``); norms, rotary angles, softmax and logits stay float32.
            rngs: random streams (``params``) for initialisation.
        """
        if jnp.dtype(param_dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
            raise ValueError(
                f"param_dtype={param_dtype!r} is not supported; allowed: float32, bfloat16")
        self.config = config
        self.param_dtype = jnp.dtype(param_dtype)
        self.embeddings = _Embed(config, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List(
            [LlamaBlock(config, param_dtype=param_dtype, rngs=rngs)
             for _ in range(config.num_hidden_layers)]
        )
        self.final_norm = RMSNorm(
            config.hidden_size, epsilon=config.rms_norm_eps, param_dtype=param_dtype)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Projection(
                config.hidden_size, config.vocab_size, use_bias=False,
                kernel_init=nnx.initializers.normal(config.initializer_range),
                param_dtype=param_dtype, rngs=rngs,
            )
        )

    def _logits(self, h: Array) -> Array:
        if self.lm_head is None:
            logits = jnp.einsum("btd,vd->btv", h, self.embeddings.word.embedding[...])
        else:
            logits = self.lm_head(h)
        return logits.astype(jnp.float32)

    def hidden_states(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Returns the final-norm hidden states ``[B, T, D]``; arguments as in ``__call__``."""
        if position_ids is None:
            if segment_ids is not None:
                position_ids = segment_positions(segment_ids)
            else:
                position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        x = self.embeddings.word(input_ids)
        mask = attention_mask_for(input_ids.shape[-1], attention_mask, segment_ids)
        for i, layer in enumerate(self.layers):
            with _dropbp.layer(i):
                x, _ = layer(x, position_ids, mask, deterministic=deterministic, rngs=rngs)
        return self.final_norm(x)

    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Computes next-token logits.

        Args:
            input_ids: int ``[B, T]``.
            attention_mask: ``[B, T]`` 0/1 key mask combined with the causal mask.
            position_ids: int ``[B, T]``; ``None`` = ``arange(T)`` (as HF, also with padding),
                or positions restarting per segment when ``segment_ids`` is given.
            segment_ids: int ``[B, T]`` of packed rows: attention stays within a segment;
                segment 0 is padding.
            deterministic: disables dropout when ``True`` (the default).
            rngs: streams with a ``dropout`` key, needed when ``deterministic=False``.

        Returns:
            Float32 logits ``[B, T, V]``.
        """
        h = self.hidden_states(
            input_ids, attention_mask, position_ids, segment_ids=segment_ids,
            deterministic=deterministic, rngs=rngs,
        )
        return self._logits(h)

    def hidden_at(
        self,
        cut: int,
        input_ids: Array,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """The lower half of a split forward: the embedding and ``layers[:cut]``, ``[B, T, D]``.

        ``logits_from(cut, hidden_at(cut, ids, mask, pos, segment_ids=s), mask, pos,
        segment_ids=s)`` equals ``__call__`` (the frozen-prefix activation cache stores this).
        """
        _check_cut(cut, len(self.layers))
        position_ids = self._positions(input_ids.shape, position_ids, segment_ids)
        x = self.embeddings.word(input_ids)
        mask = attention_mask_for(input_ids.shape[-1], attention_mask, segment_ids)
        for i in range(cut):
            x, _ = self.layers[i](x, position_ids, mask, deterministic=deterministic, rngs=rngs)
        return x

    def logits_from(
        self,
        cut: int,
        hidden: Array,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Float32 logits from :meth:`hidden_at`'s output: ``layers[cut:]``, norm, head."""
        _check_cut(cut, len(self.layers))
        position_ids = self._positions(hidden.shape[:2], position_ids, segment_ids)
        mask = attention_mask_for(hidden.shape[1], attention_mask, segment_ids)
        x = hidden
        for i in range(cut, len(self.layers)):
            x, _ = self.layers[i](x, position_ids, mask, deterministic=deterministic, rngs=rngs)
        return self._logits(self.final_norm(x))

    @staticmethod
    def _positions(shape, position_ids: Array | None, segment_ids: Array | None) -> Array:
        if position_ids is not None:
            return position_ids
        if segment_ids is not None:
            return segment_positions(segment_ids)
        return jnp.broadcast_to(jnp.arange(shape[-1]), tuple(shape))

    def init_cache(self, batch_size: int, max_length: int) -> KVCache:
        """Empty key/value buffers for ``batch_size`` sequences of up to ``max_length``."""
        c = self.config
        shape = (batch_size, max_length, c.num_kv_heads, c.head_size)
        zeros = jnp.zeros(shape, self.param_dtype)
        return KVCache(
            layers=tuple(LayerCache(zeros, zeros) for _ in range(c.num_hidden_layers)),
            index=jnp.zeros((), jnp.int32),
        )

    def decode(self, input_ids: Array, cache: KVCache) -> tuple[Array, KVCache]:
        """Runs ``[B, T]`` new tokens after the ``cache.index`` cached ones.

        Positions continue from ``cache.index``; each new token attends to every cached
        token and to the new ones before it. Batched sequences must share their length
        (no padding in the cache).

        Returns:
            ``(logits [B, T, V] float32, cache)`` with ``T`` more positions filled.
        """
        b, t = input_ids.shape
        s = cache.layers[0].key.shape[1]
        positions = jnp.broadcast_to(cache.index + jnp.arange(t, dtype=jnp.int32), (b, t))
        mask = (jnp.arange(s)[None, :] <= positions[0][:, None])[None, None]  # [1, 1, T, S]
        x = self.embeddings.word(input_ids)
        layers = []
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            x, layer_cache = layer(x, positions, mask, cache=layer_cache, cache_index=cache.index)
            layers.append(layer_cache)
        logits = self._logits(self.final_norm(x))
        return logits, KVCache(tuple(layers), cache.index + t)


# --------------------------------------------------------------------------- functions


@nnx.jit
def forward(
    model: LlamaForCausalLM,
    input_ids: Array,
    attention_mask: Array | None = None,
    position_ids: Array | None = None,
    segment_ids: Array | None = None,
) -> Array:
    """Jitted deterministic forward pass returning float32 logits ``[B, T, V]``."""
    return model(input_ids, attention_mask, position_ids, segment_ids=segment_ids)


def token_log_likelihood(logits: Array, targets: Array, loss_mask: Array) -> Array:
    """Sum of ``log p(target)`` over the masked positions of each row: ``[B, T] -> [B]``.

    ``targets[b, t]`` is the token that ``logits[b, t]`` predicts (inputs shifted by one);
    ``loss_mask`` is 1 where the target counts. The causal-LM loss is
    ``-sum(token_log_likelihood) / sum(loss_mask)``.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.sum(picked * loss_mask.astype(jnp.float32), axis=-1)


@nnx.jit
def _decode(model: LlamaForCausalLM, ids: Array, cache: KVCache) -> tuple[Array, KVCache]:
    logits, cache = model.decode(ids, cache)
    return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), cache


@nnx.jit
def _argmax_at(model: LlamaForCausalLM, ids: Array, index: Array) -> Array:
    logits = model(ids)
    return jnp.argmax(jax.lax.dynamic_index_in_dim(logits, index, 1, False), -1).astype(
        jnp.int32)


def generate(
    model: LlamaForCausalLM,
    input_ids: Array,
    max_new_tokens: int,
    *,
    use_cache: bool = True,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> np.ndarray:
    """Greedy decoding of ``max_new_tokens`` tokens after equal-length prompts.

    Args:
        model: the model.
        input_ids: int ``[B, P]`` prompts (no padding).
        max_new_tokens: tokens to generate.
        use_cache: decode incrementally with a :class:`KVCache` (one compilation for the
            prompt, one for the steps); ``False`` reruns the full forward pass over a fixed
            ``[B, P + max_new_tokens]`` buffer at every step (reference behaviour).
        eos_id: after a sequence emits it, the sequence continues with ``pad_id`` (as HF).
        pad_id: filler after ``eos_id``; defaults to ``eos_id``.

    Returns:
        int32 ``[B, max_new_tokens]`` generated tokens.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or (
            max_new_tokens < 1):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive int")
    ids = jnp.asarray(input_ids, jnp.int32)
    b, p = ids.shape
    fill = eos_id if pad_id is None else pad_id
    done = np.zeros((b,), bool)
    out = []
    if use_cache:
        cache = model.init_cache(b, p + max_new_tokens)
        nxt, cache = _decode(model, ids, cache)
    else:
        buf = jnp.zeros((b, p + max_new_tokens), jnp.int32).at[:, :p].set(ids)
        nxt = _argmax_at(model, buf, jnp.asarray(p - 1))
    for i in range(max_new_tokens):
        tok = np.asarray(nxt)
        if eos_id is not None:
            tok = np.where(done, fill, tok)
            done |= tok == eos_id
        out.append(tok)
        if i + 1 == max_new_tokens:
            break
        if use_cache:
            nxt, cache = _decode(model, jnp.asarray(tok)[:, None], cache)
        else:
            buf = buf.at[:, p + i].set(jnp.asarray(tok))
            nxt = _argmax_at(model, buf, jnp.asarray(p + i))
    return np.stack(out, axis=1).astype(np.int32)
