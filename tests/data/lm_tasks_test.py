# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Causal-LM rows: packing without cross-document attention, answer-only loss masks, retention."""

from __future__ import annotations

import csv

import jax
import numpy as np
import pytest
import tokenizers
from flax import nnx

from rgft_jax import data
from rgft_jax.models import llama

DOCS = [
    "the cat sat on the mat",
    "a dog",
    "good movie, very good movie and a very long review that goes on and on and on",
    "bad",
    "hello world",
]


@pytest.fixture(scope="module")
def bpe() -> data.TextTokenizer:
    """A byte-level BPE (GPT-2/SmolLM style) with ``<|endoftext|>`` as EOS and padding."""
    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(DOCS * 3 + ["Tweet: Sentiment: negative neutral positive"],
                            vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    return data.TextTokenizer(tok._tokenizer, max_length=64)


def _source(texts):
    return [{"text": t.encode()} for t in texts]


def _pairs(rows):
    """Every (segment-local input prefix, target) pair of the rows, in order."""
    out = []
    for r in rows:
        for s in sorted(set(r["segment_ids"].tolist()) - {0}):
            sel = r["segment_ids"] == s
            inputs, targets = r["input_ids"][sel], r["targets"][sel]
            assert (r["loss_mask"][sel] == 1).all()
            out += [(tuple(inputs[: t + 1]), int(targets[t])) for t in range(len(targets))]
    return out


@pytest.mark.parametrize("seq_len", [8, 16, 40])
def test_packed_and_padded_rows_hold_the_same_targets(bpe, seq_len):
    packed = list(data.causal_lm_examples(_source(DOCS), bpe, seq_len=seq_len))
    padded = list(data.causal_lm_examples(_source(DOCS), bpe, seq_len=seq_len, pack=False))
    assert len(packed) < len(padded)
    for rows in (packed, padded):
        for r in rows:
            assert set(r) == set(data.LM_FIELDS)
            assert all(v.shape == (seq_len,) and v.dtype == np.int32 for v in r.values())
            pad = r["segment_ids"] == 0
            assert (r["loss_mask"][pad] == 0).all() and (r["loss_mask"][~pad] == 1).all()
            # Padding only at the end of a row; segments numbered 1, 2, ... in order.
            seg = r["segment_ids"][~pad]
            assert not pad[: len(seg)].any() and seg[0] == 1 and (np.diff(seg) >= 0).all()
    # The same (context, target) pairs either way, each once: perplexity is packing-free.
    assert _pairs(packed) == _pairs(padded)
    # A document of n tokens + EOS has n targets (its first token is never predicted).
    n_targets = sum(len(ids) for ids in bpe.encode_ids(DOCS))
    assert sum(int(r["loss_mask"].sum()) for r in packed) == n_targets


def test_documents_are_shifted_and_end_with_eos(bpe):
    rows = list(data.causal_lm_examples(_source(DOCS[:1]), bpe, seq_len=32, bos_id=7))
    ids = bpe.encode_ids(DOCS[:1])[0]
    n = len(ids) + 1
    np.testing.assert_array_equal(rows[0]["input_ids"][:n], [7] + ids)
    np.testing.assert_array_equal(rows[0]["targets"][:n], ids + [bpe.eos_id])


def test_packed_rows_attend_within_documents_only(bpe):
    """The tiny Llama on a packed row gives each document's logits computed alone."""
    rows = list(data.causal_lm_examples(_source(DOCS), bpe, seq_len=40))
    row = next(r for r in rows if r["segment_ids"].max() >= 2)
    config = llama.LlamaConfig.tiny()
    model = llama.LlamaForCausalLM(
        llama.LlamaConfig(**{**config.__dict__, "vocab_size": 300}), rngs=nnx.Rngs(0))
    got = np.asarray(llama.forward(model, row["input_ids"][None],
                                   segment_ids=row["segment_ids"][None]))[0]
    for s in range(1, int(row["segment_ids"].max()) + 1):
        sel = row["segment_ids"] == s
        alone = np.asarray(llama.forward(model, row["input_ids"][sel][None]))[0]
        np.testing.assert_allclose(got[sel], alone, rtol=0, atol=1e-5)


def test_instruction_rows_mask_answer_tokens_only(bpe):
    source = [{"text": b"the cat sat on the mat", "label": 2}, {"text": b"bad", "label": 0}]
    names = ("negative", "neutral", "positive")
    rows = list(data.instruction_examples(source, bpe, label_names=names, seq_len=32))
    answers = bpe.encode_ids([" " + w for w in names])
    for r, ex in zip(rows, source, strict=True):
        answer = answers[ex["label"]]
        prompt = bpe.encode_ids(["Tweet:", " " + ex["text"].decode(), "\nSentiment:"])
        prompt = [t for p in prompt for t in p]
        n = len(prompt) + len(answer) - 1
        np.testing.assert_array_equal(r["input_ids"][:n], (prompt + answer)[:-1])
        np.testing.assert_array_equal(r["targets"][r["loss_mask"] == 1], answer)
        assert r["loss_mask"].sum() == len(answer) and r["label"] == ex["label"]
        assert (r["segment_ids"][:n] == 1).all() and (r["segment_ids"][n:] == 0).all()


def test_choice_rows_score_label_words(bpe):
    """Summed log-likelihood of each candidate equals the model's log p(answer | prompt)."""
    source = [{"text": b"good movie", "label": 1}]
    names = ("negative", "positive")
    (ex,) = list(data.instruction_examples(source, bpe, label_names=names, seq_len=48,
                                           choices=True))
    assert ex["input_ids"].shape == (2, 48) and ex["label"] == 1
    config = llama.LlamaConfig(**{**llama.LlamaConfig.tiny().__dict__, "vocab_size": 300})
    model = llama.LlamaForCausalLM(config, rngs=nnx.Rngs(1))
    logits = llama.forward(model, ex["input_ids"], segment_ids=ex["segment_ids"])
    scores = np.asarray(llama.token_log_likelihood(logits, ex["targets"], ex["loss_mask"]))
    for c in range(2):
        n = int(ex["segment_ids"][c].sum())
        full = np.concatenate([ex["input_ids"][c][:n], ex["targets"][c][n - 1 : n]])
        logp = np.asarray(jax.nn.log_softmax(llama.forward(model, full[None])[0], axis=-1))
        answer_len = int(ex["loss_mask"][c].sum())
        expected = sum(logp[t - 1, full[t]] for t in range(n + 1 - answer_len, n + 1))
        np.testing.assert_allclose(scores[c], expected, rtol=1e-5)


def test_long_texts_are_truncated_so_the_answer_fits(bpe):
    source = [{"text": " ".join(["movie"] * 100).encode(), "label": 0}]
    (r,) = list(data.instruction_examples(source, bpe, label_names=("negative", "positive"),
                                          seq_len=40))
    answer = bpe.encode_ids([" negative"])[0]
    np.testing.assert_array_equal(r["targets"][r["loss_mask"] == 1], answer)
    longest = max(len(a) for a in bpe.encode_ids([" negative", " positive"]))
    assert (r["segment_ids"] == 1).sum() == 40 - (longest - len(answer))  # text was cut
    with pytest.raises(ValueError, match="seq_len=4 leaves no room"):
        data.instruction_examples(source, bpe, label_names=("negative", "positive"), seq_len=4)


def test_crowdflower_through_tfds_and_grain(bpe, tmp_path, data_dir):
    """Tweets from the TFDS builder become LM rows and instruction rows, batched by grain."""
    path = tmp_path / "tweets.csv"
    rows = [("negative", "1", f"bad movie {i}") for i in range(10)]
    rows += [("positive", "1", f"good movie number {i}") for i in range(10)]
    rows += [("neutral", "1", f"a dog sat {i}") for i in range(10)]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("sentiment", "confidence", "text"), *rows])
    train, test, _ = data.crowdflower(path, data_dir=data_dir, test_fraction=0.2)
    lm = data.causal_lm_examples(train, bpe, seq_len=32)
    batch = next(data.TrainIterator(lm, batch_size=2, seed=0))
    assert batch["input_ids"].shape == (2, 32) and batch["segment_ids"].max() > 1
    inst = data.instruction_examples(test, bpe, label_names=data.CROWDFLOWER_LABELS,
                                     seq_len=32, choices=True)
    (first,) = list(data.eval_batches(inst, batch_size=len(test)))[:1]
    assert first["input_ids"].shape == (len(test), 3, 32)
    assert sorted(first["label"].tolist()) == sorted(int(test[i]["label"])
                                                     for i in range(len(test)))


def test_python_docs_slice_is_deterministic():
    a, b = data.python_docs(50_000), data.python_docs(50_000)
    assert a == b and sum(len(d["text"]) for d in a) == 50_000
    titles = [d["title"] for d in a]
    assert titles == sorted(titles) and len(titles) > 3
    assert a[0]["source"].startswith("pydoc_data.topics (Python 3.")
    longer = data.python_docs(80_000)
    assert [d["title"] for d in longer[: len(a) - 1]] == titles[:-1]  # a prefix of longer ones
    with pytest.raises(ValueError, match="max_chars=0"):
        data.python_docs(0)


def test_lm_examples_validate_arguments(bpe):
    with pytest.raises(ValueError, match="seq_len=1 must be"):
        data.causal_lm_examples(_source(DOCS), bpe, seq_len=1)
    with pytest.raises(ValueError, match="no token pairs"):
        data.causal_lm_examples(_source([""]), bpe, seq_len=8, add_eos=False)
    with pytest.raises(ValueError, match="one word per class"):
        data.instruction_examples([], bpe, label_names=("a", "b"), label_words=("x",),
                                  seq_len=8)
