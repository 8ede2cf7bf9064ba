# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Llama-family causal language model (HF ``LlamaForCausalLM`` parity; HF or GGUF weights)."""

from rgft_jax.models.llama.modeling import KVCache as KVCache
from rgft_jax.models.llama.modeling import LlamaConfig as LlamaConfig
from rgft_jax.models.llama.modeling import LlamaForCausalLM as LlamaForCausalLM
from rgft_jax.models.llama.modeling import forward as forward
from rgft_jax.models.llama.modeling import generate as generate
from rgft_jax.models.llama.modeling import token_log_likelihood as token_log_likelihood
from rgft_jax.models.llama.params import from_pretrained as from_pretrained
from rgft_jax.models.llama.params import load as load
from rgft_jax.models.llama.params import load_tokenizer as load_tokenizer
from rgft_jax.models.llama.tokenizer import tokenizer_from_gguf as tokenizer_from_gguf

__all__ = [
    "KVCache",
    "LlamaConfig",
    "LlamaForCausalLM",
    "forward",
    "from_pretrained",
    "generate",
    "load",
    "load_tokenizer",
    "token_log_likelihood",
    "tokenizer_from_gguf",
]
