# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""TFDS builders for local files (offline, no TensorFlow).

The builder classes live in this importable module on purpose: TFDS resolves a builder's
code location from its module file, and a builder defined in ``__main__`` fails with
``module '__main__' has no attribute '__file__'``.

Every option that changes the generated examples, and the SHA-256 of every input file, goes
into a fingerprint that names the builder config (``<stem>_<16 hex digits>``). A prepared
dataset is therefore reused only when the files and options are identical; a changed file or
option gets a fresh directory instead of stale data.

Both builders are built in the ``array_record`` file format and read with
``builder.as_data_source(split)`` (random access, no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from rgft_jax.data import _files

# Bump when generation code changes what a given file + options produce.
_GENERATION_VERSION = 1


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _config_name(stem_path: str, fingerprint: dict[str, Any]) -> tuple[str, str]:
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    stem = os.path.splitext(os.path.basename(stem_path))[0].lower()
    stem = re.sub(r"[^a-z0-9]+", "_", stem).strip("_")[:40] or "data"
    return f"{stem}_{digest[:16]}", digest


def _require_file(name: str, path: str | os.PathLike[str] | None) -> str | None:
    if path is None:
        return None
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}={path!r} does not exist or is not a file.")
    return path


# --------------------------------------------------------------------------------------------
# Text classification.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _PreparedClassification:
    """Cleaned splits and the statistics that go into the dataset metadata."""

    train: list[_files.Record]
    test: list[_files.Record]
    label_names: tuple[str, ...]
    metadata: dict[str, Any]
    description: str


class TextClassificationConfig(tfds.core.BuilderConfig):
    """Builder config for one local (text, label) file, or a train file plus a test file.

    See :func:`rgft_jax.data.load_text_classification` for the meaning of the arguments. The
    config name is derived from the files' SHA-256 and every option, so equal inputs share a
    prepared dataset and different inputs never do.
    """

    def __init__(
        self,
        *,
        train_path: str | os.PathLike[str],
        test_path: str | os.PathLike[str] | None = None,
        text_column: str = "text",
        label_column: str = "label",
        label_names: Sequence[str] | None = None,
        encoding: str = "auto",
        fallback: str = "utf-8-replace",
        file_format: str | None = None,
        normalize_whitespace: bool = True,
        conflicts: str = "majority",
        test_fraction: float = 0.1,
        seed: int = 0,
        stratify: bool = True,
    ):
        # Validate everything before touching any file.
        _files._check_choice("encoding", encoding, _files.ENCODINGS)
        _files._check_choice("fallback", fallback, _files.FALLBACKS)
        _files._check_choice("conflicts", conflicts, _files.CONFLICT_POLICIES)
        train_path = _require_file("train_path", train_path)
        test_path = _require_file("test_path", test_path)
        train_format = _files.infer_file_format(train_path, file_format)
        test_format = _files.infer_file_format(test_path, file_format) if test_path else None
        if test_path is None:
            if not 0.0 < test_fraction < 1.0:
                raise ValueError(
                    f"test_fraction={test_fraction!r} must be in the open interval (0, 1)."
                )
            if not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed={seed!r} must be a non-negative integer.")
        if label_names is not None:
            label_names = tuple(str(n) for n in label_names)
            if len(set(label_names)) != len(label_names) or not label_names:
                raise ValueError(f"label_names={list(label_names)} must be non-empty and unique.")
        self.train_path = train_path
        self.test_path = test_path
        self.train_format = train_format
        self.test_format = test_format
        self.text_column = text_column
        self.label_column = label_column
        self.label_names = label_names
        self.encoding = encoding
        self.fallback = fallback
        self.normalize_whitespace = bool(normalize_whitespace)
        self.conflicts = conflicts
        self.test_fraction = float(test_fraction) if test_path is None else None
        self.seed = int(seed) if test_path is None else None
        self.stratify = bool(stratify) if test_path is None else None
        self.fingerprint = {
            "generation_version": _GENERATION_VERSION,
            "train_sha256": _sha256(train_path),
            "test_sha256": _sha256(test_path) if test_path else None,
            "train_format": train_format,
            "test_format": test_format,
            "text_column": text_column,
            "label_column": label_column,
            "label_names": list(label_names) if label_names else None,
            "encoding": encoding,
            # The fallback only matters when it can be used.
            "fallback": fallback if encoding == "auto" else None,
            "normalize_whitespace": self.normalize_whitespace,
            "conflicts": conflicts,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "stratify": self.stratify,
        }
        name, self.digest = _config_name(train_path, self.fingerprint)
        super().__init__(
            name=name,
            version=LocalTextClassification.VERSION,
            description=f"Local text classification from {train_path}"
            + (f" and {test_path}" if test_path else ""),
        )
        self._prepared: _PreparedClassification | None = None

    def __repr__(self) -> str:
        # The dataclass repr of the base class would omit the fields that matter.
        return f"TextClassificationConfig(name={self.name!r}, fingerprint={self.fingerprint!r})"

    def prepare(self) -> _PreparedClassification:
        """Reads, cleans, deduplicates and splits the files (cached on the config)."""
        if self._prepared is None:
            self._prepared = self._prepare()
        return self._prepared

    def _read(self, path: str, file_format: str):
        records, report, empty = _files.read_records(
            path,
            text_column=self.text_column,
            label_column=self.label_column,
            encoding=self.encoding,
            fallback=self.fallback,
            file_format=file_format,
            normalize_whitespace=self.normalize_whitespace,
        )
        return records, report, empty

    def _prepare(self) -> _PreparedClassification:
        train_raw, train_report, train_empty = self._read(self.train_path, self.train_format)
        test_raw, test_report, test_empty = [], None, 0
        if self.test_path:
            test_raw, test_report, test_empty = self._read(self.test_path, self.test_format)
        label_names = self.label_names or _files.infer_label_names(
            [r.label for r in train_raw + test_raw]
        )
        _files.check_labels(train_raw, label_names, self.train_path)
        if len(label_names) < 2:
            raise ValueError(
                f"{self.train_path}: label_column={self.label_column!r} has "
                f"{len(label_names)} class ({list(label_names)}); a classifier needs >= 2."
            )
        if self.test_path:
            _files.check_labels(test_raw, label_names, self.test_path)
        train, train_stats = _files.deduplicate(train_raw, conflicts=self.conflicts)
        overlap = 0
        test_stats = None
        if self.test_path:
            test, test_stats = _files.deduplicate(test_raw, conflicts=self.conflicts)
            train, overlap = _files.remove_overlap(train, test)
        else:
            train, test = _files.split_train_test(
                train, test_fraction=self.test_fraction, seed=self.seed, stratify=self.stratify
            )
        metadata = {
            "config": self.fingerprint,
            "train_path": self.train_path,
            "test_path": self.test_path,
            "encoding_used": {"train": train_report.encoding}
            | ({"test": test_report.encoding} if test_report else {}),
            "invalid_utf8_bytes": {"train": train_report.invalid_bytes}
            | ({"test": test_report.invalid_bytes} if test_report else {}),
            "rows_read": {"train": len(train_raw) + train_empty}
            | ({"test": len(test_raw) + test_empty} if self.test_path else {}),
            "empty_texts_dropped": {"train": train_empty}
            | ({"test": test_empty} if self.test_path else {}),
            "dedupe": {"train": dataclasses.asdict(train_stats)}
            | ({"test": dataclasses.asdict(test_stats)} if test_stats else {}),
            "train_texts_removed_as_in_test": overlap,
            "num_examples": {"train": len(train), "test": len(test)},
            "label_names": list(label_names),
            "label_counts": {
                "train": _files.label_counts(train, label_names),
                "test": _files.label_counts(test, label_names),
            },
        }
        lines = [f"Text classification built offline from local files ({self.name})."]
        lines.append(f"train file {self.train_path}: {train_report.describe()}.")
        if test_report:
            lines.append(f"test file {self.test_path}: {test_report.describe()}.")
            lines.append(f"{overlap} train texts also in the test file were removed from train.")
        else:
            lines.append(
                f"test split: {'stratified ' if self.stratify else ''}random "
                f"{self.test_fraction:g} of the deduplicated texts, seed {self.seed}."
            )
        lines.append(
            f"Whitespace normalised: {self.normalize_whitespace}; duplicates removed exactly "
            f"after normalisation; label conflicts: {self.conflicts}."
        )
        return _PreparedClassification(
            train=train,
            test=test,
            label_names=tuple(label_names),
            metadata=metadata,
            description="\n".join(lines),
        )


class LocalTextClassification(tfds.core.GeneratorBasedBuilder):
    """(text, label) examples from a local CSV/TSV/JSONL file; splits ``train`` and ``test``.

    Features: ``text`` (``tfds.features.Text``), ``label`` (``ClassLabel``) and ``row`` (int64,
    1-based row of the example in its source file). ``info.metadata`` records the encoding
    used, the deduplication counts and the label distribution.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # Configs are made per file set by `TextClassificationConfig`; none is predefined.
    BUILDER_CONFIGS: list[tfds.core.BuilderConfig] = []

    def _info(self) -> tfds.core.DatasetInfo:
        prepared = self._text_config().prepare()
        return self.dataset_info_from_configs(
            description=prepared.description,
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=list(prepared.label_names)),
                    "row": np.int64,
                }
            ),
            supervised_keys=("text", "label"),
            metadata=tfds.core.MetadataDict(prepared.metadata),
            # Keep the generated order (file order, or the seeded split order) on disk instead
            # of TFDS's key-hash order: the stored order is then ours, stable across TFDS
            # versions, and eval iterates in it.
            disable_shuffling=True,
        )

    def _text_config(self) -> TextClassificationConfig:
        config = self.builder_config
        if not isinstance(config, TextClassificationConfig):
            raise ValueError(
                f"{type(self).__name__} needs config=TextClassificationConfig(...); got "
                f"config={config!r}."
            )
        return config

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Local files only.
        prepared = self._text_config().prepare()
        return {
            "train": self._generate_examples(prepared.train),
            "test": self._generate_examples(prepared.test),
        }

    def _generate_examples(self, records: Sequence[_files.Record]):
        for i, r in enumerate(records):
            yield i, {"text": r.text, "label": r.label, "row": r.row}


# --------------------------------------------------------------------------------------------
# Plain text lines (language modelling).
# --------------------------------------------------------------------------------------------


class TextLinesConfig(tfds.core.BuilderConfig):
    """Builder config for local plain-text files, one example per line, one file per split.

    Args:
      split_paths: ``{split name: path}``, e.g. ``{'train': '.../wiki.train.raw', ...}``.
      encoding: decoding policy (see :func:`rgft_jax.data._files.decode_bytes`).
      fallback: fallback policy of ``encoding='auto'``.
      skip_empty: drop lines that are empty or whitespace only.
      strip: strip leading/trailing whitespace of each line.
    """

    def __init__(
        self,
        *,
        split_paths: dict[str, str | os.PathLike[str]],
        encoding: str = "auto",
        fallback: str = "utf-8-replace",
        skip_empty: bool = True,
        strip: bool = True,
    ):
        _files._check_choice("encoding", encoding, _files.ENCODINGS)
        _files._check_choice("fallback", fallback, _files.FALLBACKS)
        if not split_paths:
            raise ValueError("split_paths={} must name at least one split.")
        self.split_paths = {
            s: _require_file(f"split_paths[{s!r}]", p) for s, p in split_paths.items()
        }
        self.encoding = encoding
        self.fallback = fallback
        self.skip_empty = bool(skip_empty)
        self.strip = bool(strip)
        self.fingerprint = {
            "generation_version": _GENERATION_VERSION,
            "sha256": {s: _sha256(p) for s, p in self.split_paths.items()},
            "encoding": encoding,
            "fallback": fallback if encoding == "auto" else None,
            "skip_empty": self.skip_empty,
            "strip": self.strip,
        }
        first = self.split_paths.get("train") or next(iter(self.split_paths.values()))
        name, self.digest = _config_name(first, self.fingerprint)
        super().__init__(name=name, version=LocalTextLines.VERSION)
        self._lines: dict[str, tuple[list[str], _files.DecodeReport]] | None = None

    def __repr__(self) -> str:
        return f"TextLinesConfig(name={self.name!r}, fingerprint={self.fingerprint!r})"

    def lines(self) -> dict[str, tuple[list[str], _files.DecodeReport]]:
        """``{split: (lines, decode report)}`` (cached on the config)."""
        if self._lines is None:
            out = {}
            for split, path in self.split_paths.items():
                with open(path, "rb") as f:
                    text, report = _files.decode_bytes(
                        f.read(), encoding=self.encoding, fallback=self.fallback, source=path
                    )
                lines = text.splitlines()
                if self.strip:
                    lines = [line.strip() for line in lines]
                if self.skip_empty:
                    lines = [line for line in lines if line.strip()]
                out[split] = (lines, report)
            self._lines = out
        return self._lines


class LocalTextLines(tfds.core.GeneratorBasedBuilder):
    """One ``text`` example per line of local plain-text files (e.g. WikiText ``*.raw``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: list[tfds.core.BuilderConfig] = []

    def _lines_config(self) -> TextLinesConfig:
        config = self.builder_config
        if not isinstance(config, TextLinesConfig):
            raise ValueError(
                f"{type(self).__name__} needs config=TextLinesConfig(...); got config={config!r}."
            )
        return config

    def _info(self) -> tfds.core.DatasetInfo:
        config = self._lines_config()
        lines = config.lines()
        description = "\n".join(
            [f"Plain text lines built offline from local files ({config.name})."]
            + [f"{s}: {config.split_paths[s]}: {r.describe()}." for s, (_, r) in lines.items()]
        )
        metadata = {
            "config": config.fingerprint,
            "split_paths": config.split_paths,
            "encoding_used": {s: r.encoding for s, (_, r) in lines.items()},
            "invalid_utf8_bytes": {s: r.invalid_bytes for s, (_, r) in lines.items()},
        }
        return self.dataset_info_from_configs(
            description=description,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            metadata=tfds.core.MetadataDict(metadata),
            disable_shuffling=True,  # Line order is the text's order: keep it.
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Local files only.
        return {
            split: self._generate_examples(lines)
            for split, (lines, _) in self._lines_config().lines().items()
        }

    def _generate_examples(self, lines: Sequence[str]):
        for i, line in enumerate(lines):
            yield i, {"text": line}
