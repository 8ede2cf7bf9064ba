# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Decoding, reading, deduplication and splitting of local files (no TFDS)."""

from __future__ import annotations

import json
import pathlib

import pytest

from rgft_jax.data import _files

R = _files.Record


def test_decode_valid_utf8_is_strict_utf8():
    text, report = _files.decode_bytes("café ☕".encode(), encoding="auto")
    assert text == "café ☕"
    assert report == _files.DecodeReport("utf-8")


def test_decode_strips_bom():
    text, _ = _files.decode_bytes(b"\xef\xbb\xbftext,label\n")
    assert text == "text,label\n"


def test_decode_latin1_file_falls_back_to_named_policy():
    data = "café naïve".encode("latin-1")
    text, report = _files.decode_bytes(data, encoding="auto", fallback="latin-1")
    assert text == "café naïve"
    assert report.encoding == "latin-1"
    assert report.invalid_bytes == 2
    assert "offset 3" in report.first_error


@pytest.mark.parametrize(
    "encoding, fallback, expected, used",
    [
        ("auto", "utf-8-replace", "ok \ufffd\ufffd é", "utf-8-replace"),
        ("auto", "latin-1", "ok \xff\xfe Ã©", "latin-1"),
        ("utf-8-replace", "latin-1", "ok \ufffd\ufffd é", "utf-8-replace"),
        ("latin-1", "utf-8-replace", "ok \xff\xfe Ã©", "latin-1"),
    ],
)
def test_decode_invalid_bytes_under_each_policy(encoding, fallback, expected, used):
    data = b"ok \xff\xfe " + "é".encode()
    text, report = _files.decode_bytes(data, encoding=encoding, fallback=fallback)
    assert text == expected
    assert report.encoding == used
    assert report.invalid_bytes == 2
    assert used in report.describe() and "not valid UTF-8" in report.describe()


def test_decode_strict_utf8_raises_naming_position():
    with pytest.raises(ValueError, match=r"0xff at offset 3.*encoding='utf-8'"):
        _files.decode_bytes(b"ok \xff", encoding="utf-8", source="f.csv")


@pytest.mark.parametrize("name, value", [("encoding", "ascii"), ("fallback", "utf-8")])
def test_decode_unknown_policy_names_argument_and_allowed(name, value):
    with pytest.raises(ValueError, match=rf"{name}='{value}'.*expected one of"):
        _files.decode_bytes(b"x", **{name: value})


def test_normalize_whitespace():
    assert _files.normalize_text("  a \t b\n\u00a0c  ") == "a b c"
    assert _files.normalize_text(" a  b ", normalize_whitespace=False) == " a  b "


def _write_csv(path: pathlib.Path, rows, header=("label", "text"), encoding="utf-8"):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def test_read_csv_and_jsonl_give_same_records(tmp_path):
    rows = [("pos", "good  movie"), ("neg", "bad,\n movie"), ("pos", "   ")]
    csv_path = _write_csv(tmp_path / "a.csv", rows)
    jsonl_path = tmp_path / "a.jsonl"
    jsonl_path.write_text("\n".join(json.dumps({"label": y, "text": t}) for y, t in rows) + "\n")
    for path in (csv_path, jsonl_path):
        records, report, empty = _files.read_records(path, text_column="text", label_column="label")
        assert [(r.text, r.label, r.row) for r in records] == [
            ("good movie", "pos", 1),
            ("bad, movie", "neg", 2),
        ]
        assert empty == 1
        assert report.encoding == "utf-8"


def test_read_tsv_and_numeric_json_labels(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_text("text\tlabel\nhello\t1\n")
    records, _, _ = _files.read_records(tsv, text_column="text", label_column="label")
    assert records == [R("hello", "1", 1)]
    jl = tmp_path / "a.jsonl"
    jl.write_text('{"text": "x", "label": 10}\n{"text": "y", "label": 2}\n')
    records, _, _ = _files.read_records(jl, text_column="text", label_column="label")
    assert _files.infer_label_names([r.label for r in records]) == ("2", "10")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_missing_column_names_column_and_available(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    if suffix == ".csv":
        _write_csv(path, [("pos", "x")], header=("sentiment", "tweet"))
    else:
        path.write_text('{"sentiment": "pos", "tweet": "x"}\n')
    with pytest.raises(ValueError, match=r"text_column='text' not found.*\['sentiment', 'tweet'\]"):
        _files.read_records(path, text_column="text", label_column="sentiment")
    with pytest.raises(
        ValueError, match=r"label_column='label' not found.*\['sentiment', 'tweet'\]"
    ):
        _files.read_records(path, text_column="tweet", label_column="label")


def test_empty_label_and_ragged_rows_raise(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text,label\nhello,\n")
    with pytest.raises(ValueError, match=r"row 1 has an empty value in label_column='label'"):
        _files.read_records(path, text_column="text", label_column="label")
    path.write_text("text,label\nhello,pos,extra\n")
    with pytest.raises(ValueError, match="data row 1 has 3 fields"):
        _files.read_records(path, text_column="text", label_column="label")


def test_unknown_file_format(tmp_path):
    with pytest.raises(ValueError, match=r"Cannot infer file_format.*a\.txt"):
        _files.infer_file_format(tmp_path / "a.txt")
    with pytest.raises(ValueError, match=r"file_format='xml'.*\['csv', 'tsv', 'jsonl'\]"):
        _files.infer_file_format(tmp_path / "a.csv", "xml")


def test_label_inference_and_unknown_labels():
    records = [R("a", "pos", 1), R("b", "neg", 2), R("c", "meh", 3), R("d", "meh", 4)]
    assert _files.infer_label_names([r.label for r in records]) == ("meh", "neg", "pos")
    with pytest.raises(ValueError, match=r"labels \['meh'\].*first at row 3.*\['neg', 'pos'\]"):
        _files.check_labels(records, ("neg", "pos"), "f.csv")


def test_dedupe_majority_keeps_first_position_and_majority_label():
    records = [
        R("x", "pos", 1),
        R("y", "neg", 2),
        R("x", "neg", 3),
        R("x", "neg", 4),
        R("z", "pos", 5),
        R("z", "pos", 6),
        R("t", "pos", 7),
        R("t", "neg", 8),
    ]
    out, stats = _files.deduplicate(records, conflicts="majority")
    # 'x' keeps its first-occurrence position with the majority label; 't' is a tie: dropped.
    assert [(r.text, r.label, r.row) for r in out] == [
        ("x", "neg", 3),
        ("y", "neg", 2),
        ("z", "pos", 5),
    ]
    assert stats == _files.DedupeStats(
        duplicates_removed=2, conflict_texts=2, conflict_records_dropped=3
    )


def test_dedupe_drop_removes_every_conflicting_copy():
    records = [
        R("x", "pos", 1),
        R("x", "neg", 2),
        R("x", "neg", 3),
        R("z", "pos", 4),
        R("z", "pos", 5),
    ]
    out, stats = _files.deduplicate(records, conflicts="drop")
    assert out == [R("z", "pos", 4)]
    assert stats == _files.DedupeStats(
        duplicates_removed=1, conflict_texts=1, conflict_records_dropped=3
    )
    with pytest.raises(ValueError, match=r"conflicts='keep'.*\['majority', 'drop'\]"):
        _files.deduplicate(records, conflicts="keep")


def _records(n=200):
    return [R(f"t{i}", ("a", "b", "c")[i % 3 if i < 150 else 0], i + 1) for i in range(n)]


def test_split_is_deterministic_disjoint_and_stratified():
    records = _records()
    train, test = _files.split_train_test(records, test_fraction=0.2, seed=3)
    train2, test2 = _files.split_train_test(records, test_fraction=0.2, seed=3)
    assert train == train2 and test == test2
    assert not {r.text for r in train} & {r.text for r in test}
    assert len(train) + len(test) == len(records)
    counts = _files.label_counts(test, ("a", "b", "c"))
    assert counts == {"a": round(100 * 0.2), "b": 10, "c": 10}
    other_train, other_test = _files.split_train_test(records, test_fraction=0.2, seed=4)
    assert {r.text for r in other_test} != {r.text for r in test}


def test_split_unstratified_and_argument_errors():
    records = _records()
    train, test = _files.split_train_test(records, test_fraction=0.25, seed=0, stratify=False)
    assert len(test) == 50 and len(train) == 150
    with pytest.raises(ValueError, match=r"test_fraction=1\.0 must be in the open interval"):
        _files.split_train_test(records, test_fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="seed=-1 must be a non-negative integer"):
        _files.split_train_test(records, test_fraction=0.5, seed=-1)


def test_remove_overlap_keeps_test_whole():
    train = [R("x", "pos", 1), R("y", "neg", 2)]
    test = [R("x", "neg", 1)]
    kept, removed = _files.remove_overlap(train, test)
    assert kept == [R("y", "neg", 2)] and removed == 1
