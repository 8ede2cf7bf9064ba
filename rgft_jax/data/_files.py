# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reading, cleaning, deduplicating and splitting local text files.

Pure Python (no TFDS): the builders in :mod:`rgft_jax.data._builders` call these functions
from their generation code, and the tests call them directly.

Pipeline, in order:

1. :func:`decode_bytes` — strict UTF-8 first; on failure a named fallback policy.
2. :func:`read_records` — CSV/TSV (``csv`` module) or JSONL, by column name.
3. :func:`normalize_text` — whitespace runs collapse to one space; ends are stripped.
4. :func:`deduplicate` — exact duplicates after normalisation; label conflicts resolved by
   majority vote (ties dropped) or dropped entirely.
5. :func:`split_train_test` / :func:`remove_overlap` — seeded, optionally stratified split, or
   a given test file with every test text removed from train.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

ENCODINGS = ("auto", "utf-8", "latin-1", "utf-8-replace")
FALLBACKS = ("latin-1", "utf-8-replace")
CONFLICT_POLICIES = ("majority", "drop")
FILE_FORMATS = ("csv", "tsv", "jsonl")

_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(allowed)}.")


@dataclasses.dataclass(frozen=True)
class DecodeReport:
    """How a file's bytes were turned into text.

    Attributes:
      encoding: the policy that produced the text: ``'utf-8'`` (strict, valid), ``'latin-1'`` or
        ``'utf-8-replace'``.
      invalid_bytes: number of bytes that are not valid UTF-8 (0 when ``encoding='utf-8'``).
      first_error: description of the first invalid byte, or ``''``.
    """

    encoding: str
    invalid_bytes: int = 0
    first_error: str = ""

    def describe(self) -> str:
        """One human-readable line, used in dataset descriptions."""
        if not self.first_error:
            return f"decoded as {self.encoding}"
        return (
            f"not valid UTF-8 ({self.first_error}; {self.invalid_bytes} invalid bytes); "
            f"decoded as {self.encoding}"
        )


def decode_bytes(
    data: bytes, *, encoding: str = "auto", fallback: str = "utf-8-replace", source: str = "<bytes>"
) -> tuple[str, DecodeReport]:
    """Decodes file bytes with an explicit policy.

    A UTF-8 byte-order mark is removed. Under ``'auto'`` the bytes are first decoded as strict
    UTF-8; only if that fails is ``fallback`` used, and the report says so.

    Args:
      data: raw file content.
      encoding: ``'auto'`` (strict UTF-8, else ``fallback``), ``'utf-8'`` (strict; invalid bytes
        raise), ``'latin-1'`` (every byte maps to one code point, never fails) or
        ``'utf-8-replace'`` (invalid bytes become U+FFFD).
      fallback: the policy used by ``'auto'`` when strict UTF-8 fails: ``'latin-1'`` or
        ``'utf-8-replace'``.
      source: name of the data used in error messages.

    Returns:
      The text and a :class:`DecodeReport`.

    Raises:
      ValueError: on an unknown policy, or invalid UTF-8 under ``encoding='utf-8'``.
    """
    _check_choice("encoding", encoding, ENCODINGS)
    _check_choice("fallback", fallback, FALLBACKS)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if encoding == "latin-1":
        # Count the bytes that are not UTF-8 anyway, so the metadata says how much was affected.
        return data.decode("latin-1"), _report("latin-1", data)
    try:
        return data.decode("utf-8"), DecodeReport("utf-8")
    except UnicodeDecodeError as e:
        error = f"byte 0x{data[e.start]:02x} at offset {e.start}: {e.reason}"
        if encoding == "utf-8":
            raise ValueError(
                f"{source} is not valid UTF-8 ({error}) and encoding='utf-8' is strict; pass "
                f"encoding='auto' (with fallback in {list(FALLBACKS)}), 'latin-1' or "
                "'utf-8-replace'."
            ) from e
        policy = fallback if encoding == "auto" else encoding
    if policy == "latin-1":
        return data.decode("latin-1"), _report("latin-1", data)
    return data.decode("utf-8", errors="replace"), _report("utf-8-replace", data)


def _report(policy: str, data: bytes) -> DecodeReport:
    escaped = data.decode("utf-8", errors="surrogateescape")
    invalid = sum(1 for ch in escaped if "\udc80" <= ch <= "\udcff")
    if not invalid:
        return DecodeReport(policy)
    first = ""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        first = f"byte 0x{data[e.start]:02x} at offset {e.start}: {e.reason}"
    return DecodeReport(policy, invalid_bytes=invalid, first_error=first)


def normalize_text(text: str, *, normalize_whitespace: bool = True) -> str:
    """Collapses every run of Unicode whitespace to one space and strips the ends."""
    return " ".join(text.split()) if normalize_whitespace else text


@dataclasses.dataclass(frozen=True)
class Record:
    """One labelled text.

    Attributes:
      text: the (normalised) text.
      label: the label as a string (JSON numbers and booleans are converted with ``str``).
      row: 1-based position of the record in its file (data rows for CSV, lines for JSONL).
    """

    text: str
    label: str
    row: int


def infer_file_format(path: str | os.PathLike[str], file_format: str | None = None) -> str:
    """Returns ``file_format`` or the format implied by the file suffix."""
    if file_format is not None:
        _check_choice("file_format", file_format, FILE_FORMATS)
        return file_format
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in _SUFFIX_FORMATS:
        raise ValueError(
            f"Cannot infer file_format from the suffix of {os.fspath(path)!r}; known suffixes "
            f"{sorted(_SUFFIX_FORMATS)}; pass file_format in {list(FILE_FORMATS)}."
        )
    return _SUFFIX_FORMATS[suffix]


def read_records(
    path: str | os.PathLike[str],
    *,
    text_column: str,
    label_column: str,
    encoding: str = "auto",
    fallback: str = "utf-8-replace",
    file_format: str | None = None,
    normalize_whitespace: bool = True,
) -> tuple[list[Record], DecodeReport, int]:
    """Reads labelled texts from a CSV/TSV file with a header row, or a JSONL file.

    Records whose text is empty after normalisation are dropped (and counted).

    Args:
      path: the file.
      text_column: name of the text column (CSV header name or JSON key).
      label_column: name of the label column.
      encoding: decoding policy, see :func:`decode_bytes`.
      fallback: fallback policy of ``encoding='auto'``.
      file_format: ``'csv'``, ``'tsv'`` or ``'jsonl'``; ``None`` infers it from the suffix.
      normalize_whitespace: collapse whitespace runs (see :func:`normalize_text`).

    Returns:
      ``(records, decode_report, num_empty_dropped)``.

    Raises:
      ValueError: a column is missing (the message names it and the available ones), a label
        is empty, a row is malformed, or an option is unknown.
    """
    path = os.fspath(path)
    file_format = infer_file_format(path, file_format)
    with open(path, "rb") as f:
        data = f.read()
    text, report = decode_bytes(data, encoding=encoding, fallback=fallback, source=path)
    if file_format == "jsonl":
        rows = _jsonl_rows(text, path, (text_column, label_column))
    else:
        rows = _csv_rows(
            text, path, (text_column, label_column), "\t" if file_format == "tsv" else ","
        )
    records = []
    num_empty = 0
    for row, values in rows:
        raw_text, raw_label = values[text_column], values[label_column]
        if raw_label is None or str(raw_label).strip() == "":
            raise ValueError(
                f"{path}: row {row} has an empty value in label_column={label_column!r}."
            )
        clean = normalize_text(
            "" if raw_text is None else str(raw_text), normalize_whitespace=normalize_whitespace
        )
        if not clean:
            num_empty += 1
            continue
        records.append(Record(clean, str(raw_label).strip(), row))
    return records, report, num_empty


def _missing(path: str, columns: Sequence[str], available: Sequence[str], where: str) -> None:
    names = ("text_column", "label_column")
    for name, column in zip(names, columns, strict=True):
        if column not in available:
            raise ValueError(
                f"{name}={column!r} not found in {path}{where}; available columns: "
                f"{list(available)}."
            )


def _csv_rows(text: str, path: str, columns: Sequence[str], delimiter: str):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path} is empty: expected a header row with columns {list(columns)}.")
    header = [h.strip() for h in header]
    _missing(path, columns, header, " (header row)")
    positions = {c: header.index(c) for c in columns}
    out = []
    rows = enumerate(reader, start=1)
    while True:
        try:
            row, fields = next(rows)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. a field over csv.field_size_limit()
            raise ValueError(
                f"{path}: data row {len(out) + 1}: {e} (allowed: at most "
                f"csv.field_size_limit()={csv.field_size_limit()} characters per field)."
            ) from None
        if not fields:  # blank line
            continue
        if len(fields) != len(header):
            raise ValueError(
                f"{path}: data row {row} has {len(fields)} fields but the header has "
                f"{len(header)} ({header})."
            )
        out.append((row, {c: fields[i] for c, i in positions.items()}))
    return out


def _jsonl_rows(text: str, path: str, columns: Sequence[str]):
    out = []
    for row, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {row} is not valid JSON: {e}.") from e
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path}: line {row} is a JSON {type(obj).__name__}, not an object.")
        _missing(path, columns, list(obj), f" (line {row})")
        out.append((row, {c: obj[c] for c in columns}))
    return out


def infer_label_names(labels: Sequence[str]) -> tuple[str, ...]:
    """Sorted distinct labels; numerically sorted when every label is an integer."""
    distinct = set(labels)
    try:
        return tuple(sorted(distinct, key=int))
    except ValueError:
        return tuple(sorted(distinct))


def check_labels(records: Sequence[Record], label_names: Sequence[str], path: str) -> None:
    """Raises ``ValueError`` listing every label not in ``label_names``."""
    allowed = set(label_names)
    unknown = collections.Counter(r.label for r in records if r.label not in allowed)
    if unknown:
        first = next(r for r in records if r.label not in allowed)
        raise ValueError(
            f"{path}: labels {sorted(unknown)} (counts {dict(unknown)}; first at row {first.row}) "
            f"are not in label_names={list(label_names)}."
        )


@dataclasses.dataclass(frozen=True)
class DedupeStats:
    """Counts from :func:`deduplicate`.

    Attributes:
      duplicates_removed: extra copies of a text whose label was kept.
      conflict_texts: distinct texts that appeared with more than one label.
      conflict_records_dropped: records dropped because their text's labels conflicted
        (majority ties, or every conflict under ``conflicts='drop'``).
    """

    duplicates_removed: int = 0
    conflict_texts: int = 0
    conflict_records_dropped: int = 0


def deduplicate(
    records: Sequence[Record], *, conflicts: str = "majority"
) -> tuple[list[Record], DedupeStats]:
    """Keeps one record per distinct text (exact match after normalisation).

    The first occurrence of a text keeps its place in the order. When copies disagree on the
    label, ``conflicts='majority'`` keeps the text with its most frequent label (a tie drops the
    text entirely: there is no defensible label), and ``conflicts='drop'`` drops every copy.

    Args:
      records: records in file order.
      conflicts: ``'majority'`` or ``'drop'``.

    Returns:
      The deduplicated records and their :class:`DedupeStats`.
    """
    _check_choice("conflicts", conflicts, CONFLICT_POLICIES)
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.text, []).append(r)
    out = []
    dup = n_conflict = n_dropped = 0
    for copies in groups.values():
        counts = collections.Counter(r.label for r in copies)
        if len(counts) == 1:
            out.append(copies[0])
            dup += len(copies) - 1
            continue
        n_conflict += 1
        (top, top_n), (_, second_n) = counts.most_common(2)
        if conflicts == "drop" or top_n == second_n:
            n_dropped += len(copies)
            continue
        keep = next(r for r in copies if r.label == top)
        out.append(keep)
        dup += top_n - 1
        n_dropped += len(copies) - top_n
    return out, DedupeStats(dup, n_conflict, n_dropped)


def split_train_test(
    records: Sequence[Record],
    *,
    test_fraction: float,
    seed: int,
    stratify: bool = True,
) -> tuple[list[Record], list[Record]]:
    """Seeded random train/test split; both outputs are in a seeded shuffled order.

    With ``stratify=True`` each label contributes ``round(n_label * test_fraction)`` records to
    the test split, so label proportions match (to rounding) in both splits.

    Args:
      records: deduplicated records (texts are distinct, so no text ends up in both splits).
      test_fraction: fraction in ``(0, 1)`` of records that go to test.
      seed: non-negative integer seed of :func:`numpy.random.default_rng`.
      stratify: split per label.

    Returns:
      ``(train, test)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} must be in the open interval (0, 1).")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer.")
    rng = np.random.default_rng(seed)
    if stratify:
        by_label: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            by_label.setdefault(r.label, []).append(i)
        test_idx = []
        for label in sorted(by_label):
            idx = rng.permutation(np.asarray(by_label[label]))
            test_idx.extend(idx[: int(round(len(idx) * test_fraction))].tolist())
    else:
        perm = rng.permutation(len(records))
        test_idx = perm[: int(round(len(records) * test_fraction))].tolist()
    in_test = np.zeros(len(records), dtype=bool)
    in_test[np.asarray(test_idx, dtype=np.int64)] = True
    train = [records[i] for i in rng.permutation(np.flatnonzero(~in_test))]
    test = [records[i] for i in rng.permutation(np.flatnonzero(in_test))]
    return train, test


def remove_overlap(train: Sequence[Record], test: Sequence[Record]) -> tuple[list[Record], int]:
    """Removes from ``train`` every record whose text is also in ``test``.

    The test file is the reference benchmark, so it is kept whole and train gives way.

    Returns:
      The filtered train records and how many were removed.
    """
    test_texts = {r.text for r in test}
    kept = [r for r in train if r.text not in test_texts]
    return kept, len(train) - len(kept)


def label_counts(records: Sequence[Record], label_names: Sequence[str]) -> dict[str, int]:
    """Number of records per label, in ``label_names`` order."""
    counts = collections.Counter(r.label for r in records)
    return {name: counts.get(name, 0) for name in label_names}
