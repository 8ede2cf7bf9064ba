# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""GPT-2-family causal LM (pre-LN, learned positions, tied LM head) matching HF ``GPT2LMHeadModel``.

Parameter paths (``nnx.state(model, nnx.Param)``, '/'-joined)::

    embeddings/word/embedding [V, D]     # also the (tied) LM head
    embeddings/position/embedding [P, D]
    layers/{i}/attention_norm/{scale,bias}   # ln_1, before attention
    layers/{i}/attention/{query,key,value}/kernel [D, H, Dh], .../bias [H, Dh]
    layers/{i}/attention/out/kernel [H, Dh, D], .../bias [D]
    layers/{i}/mlp_norm/{scale,bias}         # ln_2, before the MLP
    layers/{i}/mlp/up/kernel [D, F], layers/{i}/mlp/down/kernel [F, D] (+ bias)
    final_norm/{scale,bias}                  # ln_f
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from rgft_jax.models import _dropbp, _hf_config
from rgft_jax.models._layers import (
    Mlp,
    MultiHeadAttention,
    causal_mask,
    layer_norm,
)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GPT2Config(_hf_config.HFConfig):
    """Hyper-parameters of a GPT-2 model (field names follow HF ``GPT2Config``).

    :meth:`from_hf` rejects ``model_type`` other than ``gpt2``, cross-attention, per-layer
    attention scaling, unscaled attention, untied embeddings and unknown activations.

    Attributes:
        vocab_size: vocabulary size ``V``.
        n_positions: number of learned positions ``P``.
        n_embd: model width ``D``.
        n_layer: number of blocks ``L``.
        n_head: number of heads ``H``.
        n_inner: MLP width ``F``; ``None`` means ``4 * D``.
        activation_function: MLP activation (GPT-2 uses ``gelu_new``).
        resid_pdrop: dropout on residual branches.
        embd_pdrop: dropout on the embeddings.
        attn_pdrop: dropout on attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: std of the normal initialiser for fresh weights.
    """

    HF_MODEL_TYPES = frozenset({"gpt2"})
    HF_REQUIRE = (
        ("add_cross_attention", {False}, False),
        ("scale_attn_weights", {True}, True),
        ("scale_attn_by_inverse_layer_idx", {False}, False),
        ("tie_word_embeddings", {True}, True),
    )
    ACTIVATION = "activation_function"
    POSITIVE = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
    OPTIONAL_POSITIVE = ("n_inner",)
    DIVIDES = (("n_head", "n_embd"),)
    PROBABILITIES = ("resid_pdrop", "embd_pdrop", "attn_pdrop")

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02

    @property
    def intermediate_size(self) -> int:
        """MLP width ``F``."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def gpt2_small(cls) -> GPT2Config:
        """GPT-2 small (124M): 12 layers, width 768, 12 heads."""
        return cls()

    @classmethod
    def tiny(cls) -> GPT2Config:
        """Tiny random model for tests: 2 layers, width 32, 4 heads, vocab 99."""
        return cls(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=37)


def _check_cut(cut: int, num_layers: int) -> int:
    """``cut`` as an int in ``[0, num_layers]`` (the split point of a split forward)."""
    if isinstance(cut, bool) or not isinstance(cut, int) or not 0 <= cut <= num_layers:
        raise ValueError(f"cut={cut!r}; allowed: an int in [0, {num_layers}] (layers below it "
                         "run in hidden_at, the rest in logits_from).")
    return cut


class GPT2Embeddings(nnx.Module):
    """Token + learned absolute position embeddings, then dropout."""

    def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs) -> None:
        """Initialises the embeddings; see :class:`GPT2Config`."""
        init = nnx.initializers.normal(config.initializer_range)
        self.word = nnx.Embed(config.vocab_size, config.n_embd, embedding_init=init, rngs=rngs)
        self.position = nnx.Embed(config.n_positions, config.n_embd, embedding_init=init, rngs=rngs)
        self.dropout = nnx.Dropout(config.embd_pdrop)

    def __call__(
        self,
        input_ids: Array,
        position_ids: Array,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Embeds ``[B, T]`` ids into ``[B, T, D]``."""
        x = self.word(input_ids) + self.position(position_ids)
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class GPT2Block(nnx.Module):
    """Pre-LN block: ``x += Attn(LN(x)); x += MLP(LN(x))``."""

    def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs) -> None:
        """Initialises the block; see :class:`GPT2Config`."""
        init = nnx.initializers.normal(config.initializer_range)
        # GPT-2 scales the init of residual output projections by 1/sqrt(2 L).
        out_init = nnx.initializers.normal(config.initializer_range / math.sqrt(2 * config.n_layer))
        d, eps = config.n_embd, config.layer_norm_epsilon
        self.attention_norm = layer_norm(d, epsilon=eps, rngs=rngs)
        self.attention = MultiHeadAttention(
            d,
            config.n_head,
            dropout_rate=config.attn_pdrop,
            kernel_init=init,
            out_kernel_init=out_init,
            rngs=rngs,
        )
        self.mlp_norm = layer_norm(d, epsilon=eps, rngs=rngs)
        self.mlp = Mlp(
            d,
            config.intermediate_size,
            activation=config.activation_function,
            kernel_init=init,
            down_kernel_init=out_init,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(config.resid_pdrop)

    def __call__(
        self,
        x: Array,
        mask: Array,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Applies the block to ``[B, T, D]``; ``mask`` is boolean ``[B|1, 1, T, T]``."""
        # DropBP (rgft_jax.models._dropbp): each residual branch may drop its backward.
        h = _dropbp.branch(_dropbp.ATTENTION, lambda y: self.attention(
            self.attention_norm(y), mask, deterministic=deterministic, rngs=rngs), x)
        x = x + self.dropout(h, deterministic=deterministic, rngs=rngs)
        h = _dropbp.branch(_dropbp.MLP, lambda y: self.mlp(self.mlp_norm(y)), x)
        return x + self.dropout(h, deterministic=deterministic, rngs=rngs)


class GPT2LMHeadModel(nnx.Module):
    """GPT-2 causal language model with the LM head tied to the word embedding."""

    def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs) -> None:
        """Initialises the model.

        Args:
            config: the model hyper-parameters.
            rngs: random streams (``params``) for initialisation.
        """
        self.config = config
        self.embeddings = GPT2Embeddings(config, rngs=rngs)
        self.layers = nnx.List([GPT2Block(config, rngs=rngs) for _ in range(config.n_layer)])
        self.final_norm = layer_norm(config.n_embd, epsilon=config.layer_norm_epsilon, rngs=rngs)

    def hidden_states(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Returns the final-norm hidden states ``[B, T, D]``; arguments as in ``__call__``."""
        x = self.hidden_at(0, input_ids, attention_mask, position_ids,
                           deterministic=deterministic, rngs=rngs)
        mask = causal_mask(input_ids.shape[-1], attention_mask)
        return self.final_norm(self._run_layers(x, mask, 0, len(self.layers), deterministic,
                                                rngs))

    def _run_layers(self, x, mask, start, stop, deterministic, rngs):
        """``layers[start:stop]`` on ``x`` (each in its DropBP scope)."""
        for i in range(start, stop):
            with _dropbp.layer(i):
                x = self.layers[i](x, mask, deterministic=deterministic, rngs=rngs)
        return x

    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Computes next-token logits.

        Args:
            input_ids: int ``[B, T]``.
            attention_mask: ``[B, T]`` 0/1 key mask combined with the causal mask; ``None``
                attends to every earlier token.
            position_ids: int ``[B, T]``; ``None`` = ``arange(T)`` (as HF, also with padding).
            deterministic: disables dropout when ``True`` (the default).
            rngs: streams with a ``dropout`` key, needed when ``deterministic=False``.

        Returns:
            Logits ``[B, T, V]``.
        """
        h = self.hidden_states(
            input_ids, attention_mask, position_ids, deterministic=deterministic, rngs=rngs
        )
        return self.embeddings.word.attend(h)

    def hidden_at(
        self,
        cut: int,
        input_ids: Array,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """The lower half of a split forward: embeddings and ``layers[:cut]``, ``[B, T, D]``.

        ``logits_from(cut, hidden_at(cut, ids, mask), mask)`` equals ``__call__`` (the
        frozen-prefix activation cache stores this output).
        """
        _check_cut(cut, len(self.layers))
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        x = self.embeddings(input_ids, position_ids, deterministic=deterministic, rngs=rngs)
        mask = causal_mask(input_ids.shape[-1], attention_mask)
        return self._run_layers(x, mask, 0, cut, deterministic, rngs)

    def logits_from(
        self,
        cut: int,
        hidden: Array,
        attention_mask: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Next-token logits from :meth:`hidden_at`'s output: ``layers[cut:]``, norm, head."""
        _check_cut(cut, len(self.layers))
        mask = causal_mask(hidden.shape[1], attention_mask)
        x = self._run_layers(hidden, mask, cut, len(self.layers), deterministic, rngs)
        return self.embeddings.word.attend(self.final_norm(x))


@nnx.jit
def forward(
    model: GPT2LMHeadModel,
    input_ids: Array,
    attention_mask: Array | None = None,
    position_ids: Array | None = None,
) -> Array:
    """Jitted deterministic forward pass returning logits ``[B, T, V]``."""
    return model(input_ids, attention_mask, position_ids)
