# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Hugging Face tokenizers with fixed-length int32 outputs for JAX."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tokenizers

_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>")
_EOS_TOKENS = ("</s>", "<|endoftext|>", "<eos>", "[SEP]")


def _as_str(value: Any) -> str:
    # TFDS `Text` features come back as UTF-8 bytes (mock data gives `str`).
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _as_str(value.item())
    return str(value)


class TextTokenizer:
    """Wraps a fast tokenizer: pads/truncates to ``max_length`` and returns int32 arrays.

    The wrapped :class:`tokenizers.Tokenizer` is a private copy, so padding and truncation
    settings stored in a ``tokenizer.json`` (MiniLM's fixes both at 128) are replaced without
    touching the caller's object.

    Args:
      tokenizer: a :class:`tokenizers.Tokenizer`, or a fast ``transformers`` tokenizer (its
        ``backend_tokenizer`` is used; the pre-/post-processing is the same).
      max_length: length of every output row; longer inputs are truncated
        (``longest_first`` for pairs), shorter ones padded on the right.
      pad_id: padding token id; ``None`` takes it from the tokenizer's padding settings or a
        known pad token (``[PAD]``, ``<pad>``...). Only needed for fixed-length encoding.
    """

    def __init__(self, tokenizer: Any, *, max_length: int = 64, pad_id: int | None = None):
        if not isinstance(max_length, (int, np.integer)) or max_length < 2:
            raise ValueError(f"max_length={max_length!r} must be an integer >= 2.")
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not isinstance(backend, tokenizers.Tokenizer):
            raise TypeError(
                f"tokenizer={type(tokenizer).__name__} is not a tokenizers.Tokenizer or a fast "
                "transformers tokenizer (one with `backend_tokenizer`)."
            )
        self._tok = tokenizers.Tokenizer.from_str(backend.to_str())
        self.max_length = int(max_length)
        padding = backend.padding
        if pad_id is None and padding is not None:
            pad_id = padding["pad_id"]
        if pad_id is None:
            pad_id = next(
                (i for t in _PAD_TOKENS if (i := self._tok.token_to_id(t)) is not None), None
            )
        self.pad_id = pad_id
        self.eos_id = next(
            (i for t in _EOS_TOKENS if (i := self._tok.token_to_id(t)) is not None), None
        )
        self._tok.no_padding()
        self._tok.no_truncation()
        self._fixed = tokenizers.Tokenizer.from_str(self._tok.to_str())
        self._fixed.enable_truncation(self.max_length, strategy="longest_first")
        if self.pad_id is not None:
            pad_token = self._tok.id_to_token(self.pad_id) or "[PAD]"
            self._fixed.enable_padding(
                length=self.max_length, pad_id=self.pad_id, pad_token=pad_token
            )

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], *, max_length: int = 64, pad_id: int | None = None
    ) -> TextTokenizer:
        """Loads from a local folder (or a ``tokenizer.json`` file), offline.

        A folder with ``tokenizer.json`` is read with :mod:`tokenizers` alone; otherwise
        ``transformers.AutoTokenizer`` (``local_files_only=True``) builds a fast tokenizer from
        what is there (e.g. ``vocab.txt`` + ``tokenizer_config.json``).
        """
        path = os.fspath(path)
        file = path if os.path.isfile(path) else os.path.join(path, "tokenizer.json")
        if os.path.isfile(file):
            return cls(tokenizers.Tokenizer.from_file(file), max_length=max_length, pad_id=pad_id)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"path={path!r} is neither a tokenizer.json nor a folder.")
        import transformers  # Lazy: slow import, only needed without tokenizer.json.

        tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(tok, max_length=max_length, pad_id=pad_id)

    @property
    def vocab_size(self) -> int:
        """Vocabulary size including added tokens."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(
        self, texts: Sequence[Any], pairs: Sequence[Any] | None = None
    ) -> dict[str, np.ndarray]:
        """Encodes a batch of texts (or text pairs) with special tokens, fixed length.

        Args:
          texts: ``str`` or UTF-8 ``bytes``.
          pairs: optional second segments (same length as ``texts``): token type 1.

        Returns:
          ``input_ids``, ``attention_mask`` and ``token_type_ids``, each int32
          ``[len(texts), max_length]``.
        """
        if self.pad_id is None:
            raise ValueError(
                "This tokenizer has no padding token; pass pad_id=... to TextTokenizer."
            )
        first = [_as_str(t) for t in texts]
        if pairs is None:
            inputs: list[Any] = first
        else:
            if len(pairs) != len(first):
                raise ValueError(f"len(pairs)={len(pairs)} must equal len(texts)={len(first)}.")
            inputs = list(zip(first, (_as_str(p) for p in pairs), strict=True))
        encodings = self._fixed.encode_batch(inputs, add_special_tokens=True)
        n = len(encodings)
        out = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int32),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int32),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int32),
        }
        for key in out:
            out[key] = out[key].reshape(n, self.max_length)
        return out

    def encode_ids(self, texts: Sequence[Any]) -> list[list[int]]:
        """Token ids of each text, without special tokens, padding or truncation."""
        encodings = self._tok.encode_batch([_as_str(t) for t in texts], add_special_tokens=False)
        return [e.ids for e in encodings]


class ClassificationBatcher:
    """A grain ``batch_fn``: a list of examples → tokenised int32 batch with ``label``.

    Args:
      tokenizer: the :class:`TextTokenizer`.
      text_keys: one key (single sentence) or two keys (sentence pair → token_type_ids 0/1).
      label_key: key of the integer label; ``None`` omits labels.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        *,
        text_keys: Sequence[str] = ("text",),
        label_key: str | None = "label",
    ):
        text_keys = (text_keys,) if isinstance(text_keys, str) else tuple(text_keys)
        if len(text_keys) not in (1, 2):
            raise ValueError(f"text_keys={text_keys!r} must name one or two features.")
        self.tokenizer = tokenizer
        self.text_keys = text_keys
        self.label_key = label_key

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Tokenises ``examples`` (as returned by a TFDS data source)."""
        first = [ex[self.text_keys[0]] for ex in examples]
        pairs = [ex[self.text_keys[1]] for ex in examples] if len(self.text_keys) == 2 else None
        batch = self.tokenizer(first, pairs)
        if self.label_key is not None:
            batch["label"] = np.array([ex[self.label_key] for ex in examples], dtype=np.int32)
        return batch
