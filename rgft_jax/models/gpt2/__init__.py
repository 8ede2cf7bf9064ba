# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""GPT-2-family causal language model (HF ``GPT2LMHeadModel`` parity)."""

from rgft_jax.models.gpt2.modeling import GPT2Config as GPT2Config
from rgft_jax.models.gpt2.modeling import GPT2LMHeadModel as GPT2LMHeadModel
from rgft_jax.models.gpt2.modeling import forward as forward
from rgft_jax.models.gpt2.params import from_pretrained as from_pretrained
from rgft_jax.models.gpt2.params import load as load

__all__ = [
    "GPT2Config",
    "GPT2LMHeadModel",
    "forward",
    "from_pretrained",
    "load",
]
