# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Rule presets for transformer parameter trees.

Each preset matches both the naming of :mod:`rgft_jax.models` (head axis explicit:
``layers/{i}/attention/query/kernel`` is ``[D, H, Dh]``) and Hugging Face Flax naming (fused
``encoder/layer/{i}/attention/self/query/kernel`` is ``[D, H*Dh]``): in both the head axis of
query/key/value kernels is axis 1, of their biases axis 0, and of the output projection's
kernel axis 0, so one rule serves both layouts.

GPT-2's fused ``attn/c_attn`` projection must carry its head axis explicitly (kernel
``[D, 3, H, Dh]``, bias ``[3, H, Dh]``): head ``h`` of layer ``l`` is then one component
with its query, key and value slices (``[:, :, h]``) and its rows of ``attn/c_proj``, like
a BERT head. A flat ``[D, 3·H·Dh]`` kernel cannot be split that way by a :class:`Rule`
(its groups ``q0..q(H-1), k0.., v0..`` are not contiguous per head), so it is rejected
("axis 2 out of range") rather than cut into ``3·H`` pieces that no output head matches;
reshape it first, ``kernel.reshape(D, 3, H, Dh)``.
"""

from __future__ import annotations

from typing import Literal

from rgft_jax._src.components import Rule

__all__ = ["bert", "by_layer", "gpt2", "llama", "transformer", "vit"]

_ATTN = r"(?:attention|attn|self_attn)/(?:self/|attention/)?"
_Q = _ATTN + r"(?:query|q_proj)"
_K = _ATTN + r"(?:key|k_proj)"
_V = _ATTN + r"(?:value|v_proj)"
_O = r"(?:attention/out|attention/output/dense|self_attn/o_proj|attn/c_proj)"
_UP = r"(?:mlp/up|mlp/gate|intermediate/dense|mlp/c_fc|mlp/up_proj|mlp/gate_proj)"
_DOWN = r"(?:mlp/down|(?<!attention/)output/dense|mlp/c_proj|mlp/down_proj)"
_NORM = r"(?:norm|LayerNorm|layernorm|ln_\w+|ln_f)/(?:scale|bias|weight)$"
_EMBED = r"(?:embeddings?|embed_tokens|wte|wpe|cls_token|token_embd)"


def transformer(
    num_heads: int,
    *,
    num_kv_heads: int | None = None,
    neuron_width: int | None = 32,
    norms: Literal["whole", "exclude", "freeze"] = "whole",
    embeddings: Literal["whole", "exclude", "freeze"] = "whole",
) -> tuple[Rule, ...]:
    """Rules for a pre- or post-LN transformer: heads, neuron groups, whole leaves.

    Args:
      num_heads: attention (query) heads per layer.
      num_kv_heads: key/value heads (grouped-query attention); ``None`` means
        ``num_heads``. When different, key/value heads are components of kind ``kv_head``.
      neuron_width: MLP neurons per ``neuron`` component (``d_b``); ``None`` makes each MLP
        matrix a whole-leaf component.
      norms: LayerNorm/RMSNorm parameters as whole-leaf components (``'whole'``), always
        trained (``'exclude'``) or never trained (``'freeze'``).
      embeddings: embedding tables likewise.

    Returns:
      The ordered rules; the leaves they do not match become whole-leaf components.
    """
    for name, v in (("num_heads", num_heads), ("num_kv_heads", num_kv_heads),
                    ("neuron_width", neuron_width)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"transformer preset: {name} must be an int >= 1, got {v!r}.")
    for name, v in (("norms", norms), ("embeddings", embeddings)):
        if v not in ("whole", "exclude", "freeze"):
            raise ValueError(f"transformer preset: {name}={v!r}; allowed: 'whole', 'exclude', "
                             "'freeze'.")
    kv = num_kv_heads or num_heads
    kv_kind = "head" if kv == num_heads else "kv_head"
    rules = [
        Rule(_EMBED + r"/", kind="embedding", exclude=embeddings == "exclude",
             freeze=embeddings == "freeze"),
        Rule(_NORM, kind="norm", exclude=norms == "exclude", freeze=norms == "freeze"),
        # Fused GPT-2 q/k/v, [D, 3, H, Dh] / [3, H, Dh]: split by head with the 3 folded in,
        # so each group joins the c_proj head of the same index (one component per head).
        Rule(r"attn/c_attn/kernel$", kind="head", axis=2, groups=num_heads),
        Rule(r"attn/c_attn/bias$", kind="head", axis=1, groups=num_heads),
        Rule(_Q + r"/kernel$", kind="head", axis=1, groups=num_heads),
        Rule(_Q + r"/bias$", kind="head", axis=0, groups=num_heads),
        Rule(_K + r"/kernel$", kind=kv_kind, axis=1, groups=kv),
        Rule(_K + r"/bias$", kind=kv_kind, axis=0, groups=kv),
        Rule(_V + r"/kernel$", kind=kv_kind, axis=1, groups=kv),
        Rule(_V + r"/bias$", kind=kv_kind, axis=0, groups=kv),
        Rule(_O + r"/kernel$", kind="head", axis=0, groups=num_heads),
    ]
    if neuron_width is not None:
        rules += [
            Rule(_UP + r"/kernel$", kind="neuron", axis=-1, width=neuron_width),
            Rule(_UP + r"/bias$", kind="neuron", axis=0, width=neuron_width),
            Rule(_DOWN + r"/kernel$", kind="neuron", axis=0, width=neuron_width),
        ]
    return tuple(rules)


def bert(num_heads: int = 12, *, neuron_width: int | None = 32, **kw) -> tuple[Rule, ...]:
    """BERT-family encoders (all-MiniLM-L6-v2: ``num_heads=12``, FFN 1536 → 48 groups)."""
    return transformer(num_heads, neuron_width=neuron_width, **kw)


def gpt2(num_heads: int = 12, *, neuron_width: int | None = 32, **kw) -> tuple[Rule, ...]:
    """GPT-2-family decoders: one ``head`` component per (layer, head), q/k/v/o slices.

    Fits :mod:`rgft_jax.models.gpt2` (separate query/key/value kernels ``[D, H, Dh]``) and
    trees with a fused ``attn/c_attn`` kernel ``[D, 3, H, Dh]`` (see the module docstring).
    """
    return transformer(num_heads, neuron_width=neuron_width, **kw)


def llama(
    num_heads: int = 9, num_kv_heads: int = 3, *, neuron_width: int | None = 32, **kw
) -> tuple[Rule, ...]:
    """Llama-family decoders with grouped-query attention (defaults: SmolLM2-135M)."""
    return transformer(num_heads, num_kv_heads=num_kv_heads, neuron_width=neuron_width, **kw)


def vit(num_heads: int = 12, *, neuron_width: int | None = 32, **kw) -> tuple[Rule, ...]:
    """Vision transformers (patch embedding and CLS token follow ``embeddings=``)."""
    return transformer(num_heads, neuron_width=neuron_width, **kw)


def by_layer(*, outside: Literal["whole", "exclude"] = "whole") -> tuple[Rule, ...]:
    """One component per transformer layer (every leaf under ``layers/{i}`` merged).

    Leaves outside layers (embeddings, heads) are whole-leaf components, or excluded with
    ``outside="exclude"``. This is the Layer Card's granularity.
    """
    if outside not in ("whole", "exclude"):
        raise ValueError(f"by_layer: outside={outside!r}; allowed: 'whole', 'exclude'.")
    rules = [Rule(r"(?:^|/)(?:layers?|h|blocks?|blk)/\d+/", kind="layer", axis=0, groups=1)]
    if outside == "exclude":
        rules.append(Rule(r".*", exclude=True))
    return tuple(rules)
