# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""PyTorch twins of our Llama for the parity tests (imported by the tests of this folder)."""

from __future__ import annotations


def transformers_gguf_twin(path: str):
    """transformers' own GGUF reading (dequantise + un-permute) into a PyTorch Llama.

    ``from_pretrained(..., gguf_file=...)`` would need ``accelerate``; the reader it calls,
    ``load_gguf_checkpoint``, does not.
    """
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = transformers.LlamaConfig(**load_gguf_checkpoint(path)["config"])
    model = transformers.LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(
        {k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    model.set_attn_implementation("eager")
    return model.eval()
