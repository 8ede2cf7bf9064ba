# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A ``tokenizers`` byte-level BPE rebuilt from GGUF metadata (no hub, no PyTorch).

A GGUF file of ``tokenizer.ggml.model = 'gpt2'`` carries the vocabulary (``tokens``, already
spelled in GPT-2's byte alphabet, e.g. ``'Ġt'``), the ``merges``, the token types (3 =
control, 4 = user-defined) and the special token ids. ``tokenizer.ggml.pre`` names llama.cpp's
pre-tokenizer; those supported here:

* ``'gpt2'`` / ``'default'``: GPT-2's regex split (``ByteLevel(use_regex=True)``);
* ``'smollm'``: every digit split off first, then GPT-2's split — llama.cpp's
  ``LLAMA_VOCAB_PRE_TYPE_SMOLLM`` and SmolLM2's own ``tokenizer.json``
  (``Digits(individual_digits=True)`` then ``ByteLevel``).

Anything else raises, rather than tokenising differently from the model's training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SUPPORTED_PRE_TOKENIZERS", "tokenizer_from_gguf"]

SUPPORTED_PRE_TOKENIZERS: frozenset[str] = frozenset({"default", "gpt2", "smollm"})

_CONTROL, _USER_DEFINED = 3, 4


def tokenizer_from_gguf(metadata: Mapping[str, Any]) -> Any:
    """Builds the ``tokenizers.Tokenizer`` described by GGUF ``tokenizer.ggml.*`` metadata.

    Args:
        metadata: GGUF metadata (e.g. from :func:`rgft_jax.models.llama.params.read_gguf`).

    Returns:
        A :class:`tokenizers.Tokenizer`: byte-level BPE, control tokens as special added
        tokens, BOS/EOS prepended/appended only when ``tokenizer.ggml.add_{bos,eos}_token``
        says so (SmolLM2: neither).

    Raises:
        ValueError: if the tokenizer model is not ``'gpt2'`` (byte-level BPE) or the
            pre-tokenizer is not in :data:`SUPPORTED_PRE_TOKENIZERS`.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"GGUF tokenizer.ggml.model={kind!r} is not supported; allowed: 'gpt2'")
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in SUPPORTED_PRE_TOKENIZERS:
        raise ValueError(f"GGUF tokenizer.ggml.pre={pre!r} is not supported; allowed: "
                         f"{sorted(SUPPORTED_PRE_TOKENIZERS)}")
    tokens = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    types = list(metadata.get("tokenizer.ggml.token_type", []))
    tok.add_special_tokens([
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types) if ty == _CONTROL
    ])
    tok.add_tokens([
        AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, types) if ty == _USER_DEFINED
    ])
    bos = metadata.get("tokenizer.ggml.bos_token_id")
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    if add_bos or add_eos:
        used = ([bos] if add_bos else []) + ([eos] if add_eos else [])
        special = [(tokens[i], i) for i in dict.fromkeys(used)]
        first = f"{tokens[bos]}:0 " if add_bos else ""
        last = f" {tokens[eos]}:0" if add_eos else ""
        tok.post_processor = processors.TemplateProcessing(
            single=f"{first}$A:0{last}",
            pair=f"{first}$A:0{last} {first}$B:1{last}",
            special_tokens=special,
        )
    return tok
