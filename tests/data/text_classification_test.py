# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The local TFDS text classification builder, end to end (array_record, no TensorFlow)."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from rgft_jax import data as rdata


def _rows_csv(path: pathlib.Path, rows, header="label,text", encoding="utf-8") -> pathlib.Path:
    lines = [header] + [f"{label},{text}" for label, text in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def _texts(source) -> list[str]:
    return [source[i]["text"].decode("utf-8") for i in range(len(source))]


ROWS = [("pos", f"good movie {i}") for i in range(30)] + [
    ("neg", f"bad movie {i}") for i in range(20)
]


def test_build_read_and_metadata(tmp_path, data_dir):
    # 3 duplicates (one with extra whitespace), one conflicting pair resolved by majority.
    rows = ROWS + [
        ("pos", "good  movie 1"),
        ("pos", "good movie 2"),
        ("neg", "good movie 3"),
        ("pos", "good movie 3"),
    ]
    path = _rows_csv(tmp_path / "reviews.csv", rows)
    train, test, info = rdata.load_text_classification(path, data_dir=data_dir, test_fraction=0.2)
    assert info.features["label"].names == ["neg", "pos"]  # inferred, sorted
    assert len(train) + len(test) == 50
    assert len(test) == 10  # stratified: 6 pos + 4 neg
    labels = [int(test[i]["label"]) for i in range(len(test))]
    assert labels.count(1) == 6 and labels.count(0) == 4
    example = train[0]
    assert set(example) == {"text", "label", "row"}
    assert isinstance(example["text"], bytes)
    assert rows[int(example["row"]) - 1][1].split() == example["text"].decode().split()
    meta = info.metadata
    assert meta["encoding_used"] == {"train": "utf-8"}
    assert meta["rows_read"] == {"train": 54}
    assert meta["dedupe"]["train"] == {
        "duplicates_removed": 3,
        "conflict_texts": 1,
        "conflict_records_dropped": 1,
    }
    assert meta["num_examples"] == {"train": 40, "test": 10}
    assert "decoded as utf-8" in info.description
    assert not set(_texts(train)) & set(_texts(test))
    # Metadata survives on disk (read back by TFDS on reuse).
    meta_file = pathlib.Path(info.data_dir) / "metadata.json"
    assert json.loads(meta_file.read_text())["num_examples"] == {"train": 40, "test": 10}


def test_latin1_file_records_encoding(tmp_path, data_dir):
    path = _rows_csv(
        tmp_path / "l1.csv",
        [("pos", "café crème"), ("neg", "naïve plot")] * 5 + [("pos", f"x{i}") for i in range(10)],
        encoding="latin-1",
    )
    train, test, info = rdata.load_text_classification(
        path, data_dir=data_dir, fallback="latin-1", test_fraction=0.5
    )
    texts = set(_texts(train)) | set(_texts(test))
    assert {"café crème", "naïve plot"} <= texts
    assert info.metadata["encoding_used"] == {"train": "latin-1"}
    assert "decoded as latin-1" in info.description and "not valid UTF-8" in info.description


def test_strict_utf8_rejects_invalid_bytes(tmp_path, data_dir):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"label,text\npos,ok \xff\n")
    with pytest.raises(ValueError, match=r"not valid UTF-8 \(byte 0xff"):
        rdata.load_text_classification(path, data_dir=data_dir, encoding="utf-8")


def test_reuse_and_new_config_on_changes(tmp_path, data_dir):
    path = _rows_csv(tmp_path / "r.csv", ROWS)
    _, _, info = rdata.load_text_classification(path, data_dir=data_dir)
    marker = pathlib.Path(info.data_dir) / "marker"
    marker.write_text("prepared once")
    _, _, again = rdata.load_text_classification(path, data_dir=data_dir)
    assert again.data_dir == info.data_dir and marker.exists()  # reused, not regenerated

    _, test_seed1, seed1 = rdata.load_text_classification(path, data_dir=data_dir, seed=1)
    assert seed1.data_dir != info.data_dir
    _rows_csv(path, ROWS[:-1])  # same name, new content
    train, test, changed = rdata.load_text_classification(path, data_dir=data_dir)
    assert changed.data_dir not in (info.data_dir, seed1.data_dir)
    assert len(train) + len(test) == len(ROWS) - 1
    builder_dir = pathlib.Path(info.data_dir).parents[1]
    assert len(os.listdir(builder_dir)) == 3


def test_same_seed_same_split_different_seed_different_split(tmp_path):
    path = _rows_csv(tmp_path / "r.csv", ROWS)
    a = rdata.load_text_classification(path, data_dir=tmp_path / "a", seed=7)
    b = rdata.load_text_classification(path, data_dir=tmp_path / "b", seed=7)
    c = rdata.load_text_classification(path, data_dir=tmp_path / "c", seed=8)
    assert _texts(a[0]) == _texts(b[0]) and _texts(a[1]) == _texts(b[1])
    assert set(_texts(a[1])) != set(_texts(c[1]))
    for train, test, _ in (a, c):
        assert not set(_texts(train)) & set(_texts(test))
        assert len(train) + len(test) == len(ROWS)


def test_given_test_file_dedupes_across_files(tmp_path, data_dir):
    train_path = tmp_path / "train.jsonl"
    test_path = tmp_path / "test.jsonl"
    train_rows = [{"sentence": f"text {i}", "y": "a" if i % 2 else "b"} for i in range(20)]
    train_rows.append({"sentence": "text  3", "y": "a"})  # duplicate after normalisation
    test_rows = [
        {"sentence": "text 3", "y": "a"},
        {"sentence": "text 4", "y": "a"},
        {"sentence": "new", "y": "b"},
        {"sentence": "new", "y": "b"},
    ]
    train_path.write_text("\n".join(json.dumps(r) for r in train_rows))
    test_path.write_text("\n".join(json.dumps(r) for r in test_rows))
    train, test, info = rdata.load_text_classification(
        train_path, test_path, text_column="sentence", label_column="y", data_dir=data_dir
    )
    assert _texts(test) == ["text 3", "text 4", "new"]  # test file order, deduplicated
    assert len(train) == 18 and not set(_texts(train)) & set(_texts(test))
    assert info.metadata["train_texts_removed_as_in_test"] == 2
    assert info.metadata["dedupe"]["test"]["duplicates_removed"] == 1
    assert info.metadata["config"]["test_fraction"] is None


def test_label_names_order_and_unknown_label_error(tmp_path, data_dir):
    path = _rows_csv(tmp_path / "r.csv", ROWS)
    _, _, info = rdata.load_text_classification(path, data_dir=data_dir, label_names=["pos", "neg"])
    assert info.features["label"].names == ["pos", "neg"]
    with pytest.raises(
        ValueError, match=r"labels \['neg'\].*not in label_names=\['pos', 'other'\]"
    ):
        rdata.load_text_classification(path, data_dir=data_dir, label_names=["pos", "other"])


def test_missing_column_error_from_public_api(tmp_path, data_dir):
    path = _rows_csv(tmp_path / "r.csv", ROWS, header="sentiment,tweet")
    with pytest.raises(
        ValueError, match=r"label_column='label' not found.*\['sentiment', 'tweet'\]"
    ):
        rdata.load_text_classification(path, text_column="tweet", data_dir=data_dir)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"encoding": "ascii"}, r"encoding='ascii'.*expected one of"),
        ({"conflicts": "first"}, r"conflicts='first'.*\['majority', 'drop'\]"),
        ({"test_fraction": 0.0}, r"test_fraction=0\.0 must be in the open interval"),
        ({"seed": -3}, "seed=-3 must be a non-negative integer"),
        ({"label_names": ["a", "a"]}, "must be non-empty and unique"),
    ],
)
def test_option_errors(tmp_path, data_dir, kwargs, match):
    path = _rows_csv(tmp_path / "r.csv", ROWS)
    with pytest.raises(ValueError, match=match):
        rdata.load_text_classification(path, data_dir=data_dir, **kwargs)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train_path=.*nope\.csv"):
        rdata.load_text_classification(tmp_path / "nope.csv")
