# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures of the data tests: a tiny WordPiece tokenizer and a TFDS data dir."""

from __future__ import annotations

import pathlib

import pytest
from tokenizers.implementations import BertWordPieceTokenizer

WORDS = (
    "the a cat dog sat on mat good bad movie is was not very great awful fine ok "
    "hello world line one two three four five six seven eight nine ten"
).split()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A folder with a BERT-style ``tokenizer.json`` (WordPiece, lowercase, [CLS]/[SEP])."""
    folder = tmp_path_factory.mktemp("tokenizer")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + list(WORDS) + ["##s", ".", ","])}
    tok = BertWordPieceTokenizer(vocab, lowercase=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A fresh TFDS data dir per test."""
    return tmp_path / "tfds"
