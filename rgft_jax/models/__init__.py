# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reference models (BERT, GPT-2, Llama, ViT) in Flax NNX with a shared checkpoint loader.

Import a family as ``from rgft_jax.models import bert`` (``gpt2``, ``llama``, ``vit``); Llama
also loads GGUF files. Shared pieces:
:class:`Projection` (the swappable dense module behind every attention/MLP weight),
:func:`load_checkpoint` with its :class:`Rule` table and :class:`LoadResult`.
"""

from rgft_jax.models._layers import Mlp as Mlp
from rgft_jax.models._layers import MultiHeadAttention as MultiHeadAttention
from rgft_jax.models._layers import Projection as Projection
from rgft_jax.models._loading import LoadResult as LoadResult
from rgft_jax.models._loading import Rule as Rule
from rgft_jax.models._loading import load_checkpoint as load_checkpoint
from rgft_jax.models._loading import path_str as path_str

__all__ = [
    "LoadResult",
    "Mlp",
    "MultiHeadAttention",
    "Projection",
    "Rule",
    "load_checkpoint",
    "path_str",
]
