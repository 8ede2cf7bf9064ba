# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""GLUE and language-modelling datasets without network access.

Two levels of fidelity:

* ``tfds.testing.mock_data`` (one tfds bug patched, see ``mock_data`` below) runs our real
  loading code (``tfds.builder`` → ``as_data_source``) against TFDS's random examples for the
  real feature specs. It works without TensorFlow for data sources; it skips generation and
  storage.
* For GLUE the real ``Glue`` builder also generates from small TSV files shaped like the
  official ones (only the download is replaced), is written as array_record and read back.
"""

from __future__ import annotations

import contextlib
import pathlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from rgft_jax import data as rdata


@contextlib.contextmanager
def mock_data(num_examples: int):
    """``tfds.testing.mock_data`` with the mock's ``__getitems__`` repaired.

    tfds 4.9.10 sets ``functools.partial(_getitems, generator=...)`` as the mocked record
    reader's ``__getitems__``; ``unittest.mock`` does not treat that name as a magic method, so
    it is called without ``self`` and raises ``TypeError: missing ... 'record_keys'``. Real
    array_record sources have a working ``__getitems__`` (batched reads), which the pipeline
    uses, so the mock must have one too.
    """
    original = mocking._getitems

    def getitems(*args, generator, serialized=False):
        return original(None, args[-1], generator, serialized=serialized)

    with mock.patch.object(mocking, "_getitems", getitems):
        with tfds.testing.mock_data(num_examples=num_examples):
            yield


@pytest.mark.parametrize("task", sorted(rdata.GLUE_TASKS))
def test_glue_with_mock_data(task, tokenizer_dir, data_dir):
    spec = rdata.GLUE_TASKS[task]
    with mock_data(num_examples=9):
        sources, info, got_spec = rdata.glue(task, data_dir=data_dir)
    assert got_spec == spec
    assert set(sources) == {"train", *spec.eval_splits}
    assert tuple(info.features["label"].names) == spec.label_names
    assert set(spec.text_keys) <= set(info.features)
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=16)
    batcher = rdata.ClassificationBatcher(tok, text_keys=spec.text_keys)
    batch = next(rdata.TrainIterator(sources["train"], batch_size=4, seed=0, batch_fn=batcher))
    assert batch["input_ids"].shape == (4, 16) and batch["label"].dtype == np.int32
    assert batch["token_type_ids"].any() == (len(spec.text_keys) == 2)
    evals = list(rdata.eval_batches(sources[spec.eval_splits[0]], batch_size=4, batch_fn=batcher))
    assert sum(int(b["valid"].sum()) for b in evals) == 9


def test_glue_unknown_task():
    with pytest.raises(ValueError, match=r"task='cola' is not supported.*\['mnli', 'mrpc'"):
        rdata.glue("cola")


def _write_tsv(path: pathlib.Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")


def _fake_glue_download(root: pathlib.Path) -> None:
    sst = [["the cat sat", "1"], ["bad movie", "0"], ["good movie", "1"]]
    _write_tsv(root / "SST-2" / "train.tsv", ["sentence", "label"], sst)
    _write_tsv(root / "SST-2" / "dev.tsv", ["sentence", "label"], sst[:2])
    _write_tsv(root / "SST-2" / "test.tsv", ["index", "sentence"], [["0", "a dog"]])
    cols = ["index", "sentence1", "sentence2", "gold_label"]
    nli = [
        ["0", "the cat sat", "a cat sat", "entailment"],
        ["1", "a dog", "the cat", "neutral"],
        ["2", "good", "bad", "contradiction"],
    ]
    _write_tsv(root / "MNLI" / "train.tsv", cols, nli)
    for part in ("dev_matched", "dev_mismatched"):
        _write_tsv(root / "MNLI" / f"{part}.tsv", cols, nli[:2])
    for part in ("test_matched", "test_mismatched"):
        _write_tsv(root / "MNLI" / f"{part}.tsv", cols[:3], [r[:3] for r in nli[:1]])


@pytest.mark.parametrize("task, n_train, n_eval", [("sst2", 3, 2), ("mnli", 3, 2)])
def test_glue_real_generation_from_local_tsv(task, n_train, n_eval, tmp_path, tokenizer_dir):
    root = tmp_path / "download"
    _fake_glue_download(root)
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", return_value=str(root)
    ):
        sources, info, spec = rdata.glue(task, data_dir=tmp_path / "tfds")
    assert len(sources["train"]) == n_train
    assert all(len(sources[s]) == n_eval for s in spec.eval_splits)
    assert info.file_format == tfds.core.file_adapters.FileFormat.ARRAY_RECORD
    example = sources["train"][0]
    assert all(isinstance(example[k], bytes) for k in spec.text_keys)  # real sources give bytes
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=12)
    batcher = rdata.ClassificationBatcher(tok, text_keys=spec.text_keys)
    (batch,) = list(rdata.eval_batches(sources["train"], batch_size=4, batch_fn=batcher))
    assert batch["valid"].tolist() == [True] * 3 + [False]
    expected = [0, 1, 1] if task == "sst2" else [0, 1, 2]
    assert sorted(batch["label"][:3].tolist()) == expected


def test_tfds_text_corpus_with_mock_data(tokenizer_dir, data_dir):
    with mock_data(num_examples=12):
        sources, info = rdata.tfds_text("lm1b", splits=("train", "test"), data_dir=data_dir)
    assert "text" in info.features and len(sources["train"]) == 12
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir)
    blocks = rdata.lm_blocks(sources["train"], tok, block_size=4)
    assert len(blocks) > 0 and blocks[0]["input_ids"].shape == (4,)


def _write_wikitext(folder: pathlib.Path) -> None:
    folder.mkdir(parents=True)
    body = " = Heading = \n \n the cat sat on the mat . \n a dog was good , \n \n"
    (folder / "wiki.train.raw").write_text(body * 3)
    (folder / "wiki.valid.raw").write_text(" = Valid = \n one two three \n")
    (folder / "wiki.test.raw").write_text(" = Test = \n four five six seven \n")


def test_wikitext_local_files_and_lm_blocks(tmp_path, tokenizer_dir, data_dir):
    folder = tmp_path / "wikitext-2-raw"
    _write_wikitext(folder)
    sources, info = rdata.wikitext(folder, data_dir=data_dir)
    assert {s: len(v) for s, v in sources.items()} == {"train": 9, "validation": 2, "test": 2}
    assert sources["train"][1]["text"] == b"the cat sat on the mat ."  # order kept, stripped
    assert info.metadata["encoding_used"] == {
        "train": "utf-8",
        "validation": "utf-8",
        "test": "utf-8",
    }

    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir)
    lines = [sources["train"][i]["text"].decode() for i in range(len(sources["train"]))]
    stream = []
    for ids in tok.encode_ids(lines):
        stream += ids + [tok.eos_id]
    blocks = rdata.lm_blocks(sources["train"], tok, block_size=5)
    assert len(blocks) == len(stream) // 5
    got = np.concatenate([blocks[i]["input_ids"] for i in range(len(blocks))])
    np.testing.assert_array_equal(got, stream[: len(got)])
    assert got.dtype == np.int32

    it = rdata.TrainIterator(blocks, batch_size=2, seed=0)
    assert next(it)["input_ids"].shape == (2, 5)
    evals = list(rdata.eval_batches(blocks, batch_size=4))
    assert sum(int(b["valid"].sum()) for b in evals) == len(blocks)


def test_wikitext_missing_files_and_lm_errors(tmp_path, tokenizer_dir):
    with pytest.raises(FileNotFoundError, match=r"lacks .*wiki\.train\.raw"):
        rdata.wikitext(tmp_path)
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir)
    with pytest.raises(ValueError, match="block_size=0 must be a positive integer"):
        rdata.lm_blocks([{"text": "a"}], tok, block_size=0)
