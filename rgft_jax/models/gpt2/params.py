# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""HF GPT-2 checkpoint names -> NNX parameter paths, and ``from_pretrained``.

GPT-2 stores its projections as ``Conv1D`` weights ``[in, out]``; the fused
``h.{i}.attn.c_attn.weight`` ``[D, 3 D]`` is split into query/key/value kernels
``[D, H, Dh]``. Keys may carry the ``transformer.`` prefix of ``GPT2LMHeadModel``.
"""

from __future__ import annotations

import os

from flax import nnx

from rgft_jax.models._loading import (
    Concat,
    Conv1D,
    LoadResult,
    Rule,
    ShardingSpec,
    load_pretrained,
    log_loaded,
)
from rgft_jax.models.gpt2.modeling import GPT2Config, GPT2LMHeadModel

_P = r"(?:transformer\.)?"
_L = _P + r"h\.(\d+)\."

#: Causal-mask buffers of old checkpoints, and the LM head (tied to ``wte``).
IGNORED: tuple[str, ...] = (
    _L + r"attn\.(?:bias|masked_bias)",
    r"lm_head\.weight",
)


def rules() -> list[Rule]:
    """Returns the GPT-2 rule table."""
    layer = "layers/{0}/"
    attn = layer + "attention/"
    return [
        Rule(_P + r"wte\.weight", "embeddings/word/embedding"),
        Rule(_P + r"wpe\.weight", "embeddings/position/embedding"),
        Rule(_L + r"ln_1\.weight", layer + "attention_norm/scale"),
        Rule(_L + r"ln_1\.bias", layer + "attention_norm/bias"),
        Rule(
            _L + r"attn\.c_attn\.weight",
            (attn + "query/kernel", attn + "key/kernel", attn + "value/kernel"),
            Concat(in_ndim=1),
        ),
        Rule(
            _L + r"attn\.c_attn\.bias",
            (attn + "query/bias", attn + "key/bias", attn + "value/bias"),
            Concat(in_ndim=0),
        ),
        Rule(_L + r"attn\.c_proj\.weight", attn + "out/kernel", Conv1D(in_ndim=2)),
        Rule(_L + r"attn\.c_proj\.bias", attn + "out/bias"),
        Rule(_L + r"ln_2\.weight", layer + "mlp_norm/scale"),
        Rule(_L + r"ln_2\.bias", layer + "mlp_norm/bias"),
        Rule(_L + r"mlp\.c_fc\.weight", layer + "mlp/up/kernel", Conv1D()),
        Rule(_L + r"mlp\.c_fc\.bias", layer + "mlp/up/bias"),
        Rule(_L + r"mlp\.c_proj\.weight", layer + "mlp/down/kernel", Conv1D()),
        Rule(_L + r"mlp\.c_proj\.bias", layer + "mlp/down/bias"),
        Rule(_P + r"ln_f\.weight", "final_norm/scale"),
        Rule(_P + r"ln_f\.bias", "final_norm/bias"),
    ]


def load(
    local_dir: str | os.PathLike[str], *, shardings: ShardingSpec = None
) -> LoadResult[GPT2LMHeadModel]:
    """Loads a :class:`GPT2LMHeadModel` from a local HF directory.

    Args:
        local_dir: directory with ``config.json`` and safetensors weights.
        shardings: optional target shardings, see :func:`~rgft_jax.models._loading.load_checkpoint`.

    Returns:
        The load result.
    """
    config = GPT2Config.from_hf(local_dir)
    return load_pretrained(
        local_dir,
        lambda: GPT2LMHeadModel(config, rngs=nnx.Rngs(0)),
        rules(),
        ignore=IGNORED,
        shardings=shardings,
    )


def from_pretrained(
    local_dir: str | os.PathLike[str], *, shardings: ShardingSpec = None
) -> GPT2LMHeadModel:
    """Builds a :class:`GPT2LMHeadModel` from a local HF GPT-2 directory (no network)."""
    return log_loaded(local_dir, load(local_dir, shardings=shardings))
