# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Standard datasets by TFDS name (GLUE, TFDS text corpora) and WikiText from local files.

Real loading goes through ``tfds.builder(name, file_format='array_record')`` +
``download_and_prepare()`` + ``as_data_source(split)``: no TensorFlow is needed to read, and
the GLUE generator reads its TSVs with ``etils.epath``. Machines without network access cannot
download these; the tests exercise this exact code path under ``tfds.testing.mock_data``.

WikiText is **not** in tensorflow-datasets 4.9.10 (there is no ``wikitext`` builder), so
:func:`wikitext` builds it from the files of the official ``wikitext-2-raw-v1.zip``
(``wiki.{train,valid,test}.raw``) with the local :class:`LocalTextLines` builder.
:func:`tfds_text` covers the text corpora TFDS does have (``lm1b``, ``wiki40b/en``, ``pg19``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from rgft_jax.data import _builders, _tokenize


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """How to read one GLUE task from TFDS.

    Attributes:
      name: TFDS config name (``glue/<name>``).
      text_keys: one feature (single sentence) or two (sentence pair).
      label_names: class names in label-id order (as in TFDS).
      eval_splits: labelled evaluation splits (GLUE test labels are hidden: ``label == -1``).
    """

    name: str
    text_keys: tuple[str, ...]
    label_names: tuple[str, ...]
    eval_splits: tuple[str, ...] = ("validation",)


#: The GLUE tasks :func:`glue` loads, by TFDS config name: text fields, label names,
#: evaluation splits.
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("sst2", ("sentence",), ("negative", "positive")),
        GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
        GlueTask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
        GlueTask(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("validation_matched", "validation_mismatched"),
        ),
        GlueTask("qnli", ("question", "sentence"), ("entailment", "not_entailment")),
    )
}


def _register_glue() -> None:
    # `import tensorflow_datasets` registers its builders lazily: `tfds.builder('glue/...')`
    # fails with DatasetNotFoundError until the module defining `Glue` is imported.
    import tensorflow_datasets.text.glue  # noqa: F401  pylint: disable=g-import-not-at-top


def _tfds_sources(
    name: str, splits: Sequence[str], data_dir: str | os.PathLike[str] | None, download: bool
) -> tuple[dict[str, Any], tfds.core.DatasetInfo]:
    builder = tfds.builder(
        name, data_dir=None if data_dir is None else os.fspath(data_dir), file_format="array_record"
    )
    if download:
        builder.download_and_prepare()
    return {s: builder.as_data_source(split=s) for s in splits}, builder.info


def glue(
    task: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    splits: Sequence[str] | None = None,
) -> tuple[dict[str, Any], tfds.core.DatasetInfo, GlueTask]:
    """A GLUE task from TFDS (``glue/<task>``) as array_record data sources.

    Args:
      task: one of ``GLUE_TASKS`` (``sst2``, ``mrpc``, ``rte``, ``mnli``, ``qnli``).
      data_dir: TFDS data directory; ``None`` uses TFDS's default.
      download: download and prepare if needed (needs network the first time).
      splits: splits to open; default ``train`` plus the task's labelled eval splits.

    Returns:
      ``({split: source}, info, task)``; feed examples to
      ``ClassificationBatcher(tokenizer, text_keys=task.text_keys)``.
    """
    if task not in GLUE_TASKS:
        raise ValueError(f"task={task!r} is not supported; expected one of {sorted(GLUE_TASKS)}.")
    spec = GLUE_TASKS[task]
    _register_glue()
    sources, info = _tfds_sources(
        f"glue/{task}", tuple(splits or ("train", *spec.eval_splits)), data_dir, download
    )
    return sources, info, spec


def tfds_text(
    name: str,
    *,
    splits: Sequence[str] = ("train", "validation", "test"),
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> tuple[dict[str, Any], tfds.core.DatasetInfo]:
    """A TFDS text corpus (``lm1b``, ``wiki40b/en``, ``pg19``...) as array_record sources.

    Args:
      name: TFDS name, with config (``'wiki40b/en'``).
      splits: splits to open.
      data_dir: TFDS data directory; ``None`` uses TFDS's default.
      download: download and prepare if needed.

    Returns:
      ``({split: source}, info)``; pass the text feature's key to :func:`lm_blocks`.
    """
    # Importing the package section registers its builders (see `_register_glue`).
    import tensorflow_datasets.text  # noqa: F401  pylint: disable=g-import-not-at-top

    return _tfds_sources(name, tuple(splits), data_dir, download)


def text_lines(
    split_paths: dict[str, str | os.PathLike[str]],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    encoding: str = "auto",
    fallback: str = "utf-8-replace",
    skip_empty: bool = True,
) -> tuple[dict[str, Any], tfds.core.DatasetInfo]:
    """Local plain-text files (one example per line) as a TFDS dataset, built offline.

    Args:
      split_paths: ``{split: path}``.
      data_dir: TFDS data directory; ``None`` uses TFDS's default.
      encoding: decoding policy (``'auto'``, ``'utf-8'``, ``'latin-1'``, ``'utf-8-replace'``).
      fallback: fallback policy of ``'auto'``.
      skip_empty: drop blank lines.

    Returns:
      ``({split: source}, info)``; examples are ``{'text': bytes}``.
    """
    config = _builders.TextLinesConfig(
        split_paths=split_paths, encoding=encoding, fallback=fallback, skip_empty=skip_empty
    )
    builder = _builders.LocalTextLines(
        config=config,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        file_format="array_record",
    )
    builder.download_and_prepare()
    return {s: builder.as_data_source(split=s) for s in config.split_paths}, builder.info


WIKITEXT_FILES = {"train": "wiki.train", "validation": "wiki.valid", "test": "wiki.test"}


def wikitext(
    folder: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    raw: bool = True,
) -> tuple[dict[str, Any], tfds.core.DatasetInfo]:
    """WikiText-2/103 from the folder of the official zip (TFDS 4.9.10 has no builder).

    Args:
      folder: folder holding ``wiki.{train,valid,test}.raw`` (``raw=True``, from
        ``wikitext-2-raw-v1.zip``) or ``.tokens`` (``raw=False``).
      data_dir: TFDS data directory; ``None`` uses TFDS's default.
      raw: use the ``.raw`` files (untokenised text, what subword tokenizers expect).

    Returns:
      ``({'train', 'validation', 'test': source}, info)``; lines are stripped and blank lines
      dropped (headings such as ``= Title =`` are kept).
    """
    suffix = ".raw" if raw else ".tokens"
    paths = {s: os.path.join(os.fspath(folder), f + suffix) for s, f in WIKITEXT_FILES.items()}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"folder={os.fspath(folder)!r} lacks {missing}; expected the files of "
            f"wikitext-2-raw-v1.zip: {sorted(f + suffix for f in WIKITEXT_FILES.values())}."
        )
    return text_lines(paths, data_dir=data_dir)


def lm_blocks(
    source: Any,
    tokenizer: _tokenize.TextTokenizer,
    *,
    block_size: int,
    text_key: str = "text",
    add_eos: bool = True,
    chunk: int = 4096,
) -> grain.MapDataset:
    """Concatenates tokenised texts and cuts them into fixed blocks for causal LM.

    Each text is tokenised without special tokens, followed by the tokenizer's EOS id
    (``add_eos``); the whole stream is cut into ``len // block_size`` blocks (the tail that does
    not fill a block is dropped). Blocks carry ``input_ids`` only; the model/loss shifts by one
    (targets ``input_ids[1:]``), as in Hugging Face's ``labels = input_ids`` convention.

    Args:
      source: random-access examples with a text feature.
      tokenizer: the :class:`TextTokenizer`.
      block_size: tokens per block.
      text_key: name of the text feature.
      add_eos: separate documents/lines with the EOS token (error if the tokenizer has none).
      chunk: texts tokenised per call.

    Returns:
      A ``grain.MapDataset`` of ``{'input_ids': int32[block_size]}``, ready for
      :class:`TrainIterator` / :func:`eval_batches`.
    """
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, (int, np.integer))
        or block_size < 1
    ):
        raise ValueError(f"block_size={block_size!r} must be a positive integer.")
    if add_eos and tokenizer.eos_id is None:
        raise ValueError("add_eos=True but the tokenizer has no EOS token; pass add_eos=False.")
    pieces = []
    for start in range(0, len(source), chunk):
        texts = [source[i][text_key] for i in range(start, min(start + chunk, len(source)))]
        for ids in tokenizer.encode_ids(texts):
            pieces.append(np.asarray(ids, dtype=np.int32))
            if add_eos:
                pieces.append(np.asarray([tokenizer.eos_id], dtype=np.int32))
    stream = np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)
    n_blocks = len(stream) // block_size
    blocks = stream[: n_blocks * block_size].reshape(n_blocks, block_size)
    return grain.MapDataset.source(blocks).map(lambda row: {"input_ids": row})
