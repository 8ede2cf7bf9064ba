# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Fixed-length int32 tokenisation with Hugging Face tokenizers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tokenizers

from rgft_jax import data as rdata


def test_shapes_dtypes_and_padding(tokenizer_dir):
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=8)
    out = tok(["the cat sat", b"the dog sat on the mat good bad movie"])
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids"}
    for value in out.values():
        assert value.shape == (2, 8) and value.dtype == np.int32
    cls_id, sep_id = tok._tok.token_to_id("[CLS]"), tok._tok.token_to_id("[SEP]")
    np.testing.assert_array_equal(out["attention_mask"][0], [1, 1, 1, 1, 1, 0, 0, 0])
    assert out["input_ids"][0, 0] == cls_id and out["input_ids"][0, 4] == sep_id
    assert (out["input_ids"][0, 5:] == tok.pad_id).all()
    assert out["attention_mask"][1].all() and out["input_ids"][1, -1] == sep_id  # truncated
    assert not out["token_type_ids"].any()


def test_pairs_get_token_type_ids(tokenizer_dir):
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=10)
    out = tok(["the cat"], ["a dog sat"])
    np.testing.assert_array_equal(out["token_type_ids"][0], [0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["attention_mask"][0], [1] * 8 + [0, 0])
    with pytest.raises(ValueError, match=r"len\(pairs\)=2 must equal len\(texts\)=1"):
        tok(["a"], ["b", "c"])


def test_overrides_fixed_padding_in_tokenizer_json_without_mutating_it(tokenizer_dir, tmp_path):
    # Like MiniLM's tokenizer.json: fixed padding and truncation at 128.
    base = tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    base.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
    base.enable_truncation(128)
    tok = rdata.TextTokenizer(base, max_length=16)
    assert tok(["the cat"])["input_ids"].shape == (1, 16)
    assert base.padding["length"] == 128 and base.truncation["max_length"] == 128


def test_transformers_fast_tokenizer_matches(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_dir / "tokenizer.json"), pad_token="[PAD]"
    )
    ours = rdata.TextTokenizer(hf, max_length=12)
    texts, pairs = ["the cat sat", "hello world"], ["on the mat", "one two"]
    ref = hf(
        texts,
        pairs,
        padding="max_length",
        truncation=True,
        max_length=12,
        return_tensors="np",
        return_token_type_ids=True,
    )
    out = ours(texts, pairs)
    for key in out:
        np.testing.assert_array_equal(out[key], ref[key].astype(np.int32))


def test_folder_without_tokenizer_json_goes_through_transformers(tokenizer_dir, tmp_path):
    pytest.importorskip("transformers")
    folder = tmp_path / "vocab_only"
    folder.mkdir()
    (folder / "vocab.txt").write_text((tokenizer_dir / "vocab.txt").read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    tok = rdata.TextTokenizer.from_pretrained(folder, max_length=8)
    ref = rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=8)
    np.testing.assert_array_equal(
        tok(["The cat sat"])["input_ids"], ref(["The cat sat"])["input_ids"]
    )


def test_argument_errors(tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="max_length=1 must be an integer >= 2"):
        rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=1)
    with pytest.raises(TypeError, match="tokenizer=str is not a tokenizers.Tokenizer"):
        rdata.TextTokenizer("bert-base-uncased")
    with pytest.raises(FileNotFoundError, match="is neither a tokenizer.json nor a folder"):
        rdata.TextTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="must name one or two features"):
        rdata.ClassificationBatcher(
            rdata.TextTokenizer.from_pretrained(tokenizer_dir), text_keys=("a", "b", "c")
        )


def test_classification_batcher(tokenizer_dir):
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=8)
    examples = [
        {"s1": b"the cat", "s2": "a dog", "label": np.int64(2)},
        {"s1": "good", "s2": b"bad", "label": np.int64(0)},
    ]
    batch = rdata.ClassificationBatcher(tok, text_keys=("s1", "s2"))(examples)
    assert batch["label"].dtype == np.int32 and batch["label"].tolist() == [2, 0]
    assert batch["token_type_ids"][:, 4].tolist() == [1, 1]
