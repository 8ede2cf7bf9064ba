# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Causal-LM rows: packed or padded documents, prompt -> answer classification, a retention text.

Every row has four int32 ``[seq_len]`` arrays, the batch format of a decoder with segments
(:class:`rgft_jax.models.llama.LlamaForCausalLM`):

* ``input_ids``: tokens fed to the model;
* ``targets``: the token each position must predict (``input_ids`` shifted by one, within a
  document);
* ``loss_mask``: 1 where the target counts in the loss (0 on padding, and on prompt tokens
  for instruction rows);
* ``segment_ids``: document number within the row, 1, 2, ...; 0 on padding.

Packing (``pack=True``) puts several documents in one row; the model restricts attention to
the same segment and restarts positions per segment (``segment_ids``), so **no token attends
across documents** and a packed document sees exactly what it sees alone. ``pack=False``
gives one document per row, right-padded. Either way every target token of the corpus is
counted exactly once, so ``exp(-sum log p / sum loss_mask)`` over all rows is the corpus
perplexity whatever the packing.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from rgft_jax.data import _tokenize

__all__ = [
    "LM_FIELDS",
    "causal_lm_examples",
    "instruction_examples",
    "python_docs",
]

#: The arrays of every causal-LM row.
LM_FIELDS = ("input_ids", "targets", "loss_mask", "segment_ids")


def _check_seq_len(seq_len: Any) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 2:
        raise ValueError(f"seq_len={seq_len!r} must be an integer >= 2.")
    return int(seq_len)


@dataclasses.dataclass(frozen=True)
class _Rows:
    """Random-access rows over stacked ``[N, ...]`` arrays (a grain source)."""

    arrays: Mapping[str, np.ndarray]
    extra: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        out = {k: v[i] for k, v in self.arrays.items()}
        out.update({k: v[i] for k, v in self.extra.items()})
        return out


def _texts(source: Any, key: str, chunk: int) -> Any:
    for start in range(0, len(source), chunk):
        yield [source[i][key] for i in range(start, min(start + chunk, len(source)))]


def causal_lm_examples(
    source: Any,
    tokenizer: _tokenize.TextTokenizer,
    *,
    seq_len: int,
    pack: bool = True,
    text_key: str = "text",
    add_eos: bool = True,
    bos_id: int | None = None,
    chunk: int = 4096,
) -> grain.MapDataset:
    """Documents as causal-LM rows (domain adaptation, perplexity, retention).

    Each document becomes ``[bos_id] + tokens + [eos]`` (``bos_id`` only if given; the EOS
    only with ``add_eos``); its inputs are all but the last token and its targets all but
    the first. A document longer than ``seq_len`` targets is cut into consecutive pieces of
    ``seq_len`` (each piece its own segment: the first token of a piece loses its earlier
    context). Pieces are packed in source order: a piece starts a new row when it does not
    fit in the current one (no piece is split across rows).

    Args:
      source: random-access examples with a text feature (a TFDS data source, a list).
      tokenizer: the :class:`TextTokenizer` (``encode_ids`` adds no special tokens).
      seq_len: row length.
      pack: several documents per row (``segment_ids`` keep them apart), else one per row.
      text_key: name of the text feature.
      add_eos: end each document with the tokenizer's EOS (it is then a target).
      bos_id: token prepended to each document (SmolLM2 adds none).
      chunk: texts tokenised per call.

    Returns:
      A ``grain.MapDataset`` of ``{name: int32[seq_len] for name in LM_FIELDS}``.

    Raises:
      ValueError: on ``seq_len < 2``, ``add_eos`` without an EOS token, or an empty corpus.
    """
    seq_len = _check_seq_len(seq_len)
    if add_eos and tokenizer.eos_id is None:
        raise ValueError("add_eos=True but the tokenizer has no EOS token; pass add_eos=False.")
    head = [] if bos_id is None else [int(bos_id)]
    tail = [int(tokenizer.eos_id)] if add_eos else []
    pieces: list[np.ndarray] = []  # each [n + 1] tokens: n inputs/targets
    for texts in _texts(source, text_key, chunk):
        for ids in tokenizer.encode_ids(texts):
            doc = np.asarray(head + list(ids) + tail, np.int32)
            for start in range(0, len(doc) - 1, seq_len):
                pieces.append(doc[start : start + seq_len + 1])
    if not pieces:
        raise ValueError("the corpus gives no token pairs (every document has < 2 tokens).")
    rows: list[list[np.ndarray]] = []
    used = seq_len  # forces a first row
    for piece in pieces:
        n = len(piece) - 1
        if not pack or used + n > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(piece)
        used += n
    arrays = {k: np.zeros((len(rows), seq_len), np.int32) for k in LM_FIELDS}
    for r, row in enumerate(rows):
        t = 0
        for s, piece in enumerate(row, start=1):
            n = len(piece) - 1
            arrays["input_ids"][r, t : t + n] = piece[:-1]
            arrays["targets"][r, t : t + n] = piece[1:]
            arrays["loss_mask"][r, t : t + n] = 1
            arrays["segment_ids"][r, t : t + n] = s
            t += n
    return grain.MapDataset.source(_Rows(arrays))


def instruction_examples(
    source: Any,
    tokenizer: _tokenize.TextTokenizer,
    *,
    label_names: Sequence[str],
    seq_len: int,
    choices: bool = False,
    label_words: Sequence[str] | None = None,
    prefix: str = "Tweet:",
    suffix: str = "\nSentiment:",
    text_key: str = "text",
    label_key: str = "label",
    add_eos: bool = False,
    chunk: int = 4096,
) -> grain.MapDataset:
    """Prompt -> label-word rows: ``'Tweet: <text>\\nSentiment: <word>'``, loss on the answer.

    The prompt is ``prefix``, then ``' ' + text``, then ``suffix``; the answer is
    ``' ' + word`` (plus EOS with ``add_eos``). Pieces are tokenised separately (a byte-level
    BPE splits before a space anyway), and the text alone is truncated so that the longest
    answer always fits. ``loss_mask`` is 1 exactly on the targets that are answer tokens.

    Args:
      source: random-access examples with text and integer label features.
      tokenizer: the :class:`TextTokenizer`.
      label_names: class names in label-id order.
      seq_len: row length.
      choices: ``False``: one row per example with the gold answer (training). ``True``:
        every field gets a leading ``[C]`` axis, one row per candidate label word
        (scoring: predict the label whose answer has the highest summed log-likelihood).
      label_words: the answer word per class; defaults to ``label_names``.
      prefix: text before the example text.
      suffix: text between the example text and the answer.
      text_key: name of the text feature.
      label_key: name of the label feature.
      add_eos: end the answer with EOS (then also scored / trained).
      chunk: texts tokenised per call.

    Returns:
      A ``grain.MapDataset`` of ``{name: int32[seq_len] (or [C, seq_len]) for name in
      LM_FIELDS}`` plus ``label`` (int32).

    Raises:
      ValueError: on a bad ``seq_len``, mismatched ``label_words``, a label out of range, or
        a ``seq_len`` too short for the prompt and the answer.
    """
    seq_len = _check_seq_len(seq_len)
    words = tuple(label_names if label_words is None else label_words)
    if len(words) != len(label_names) or len(words) < 2:
        raise ValueError(f"label_words={label_words!r} must give one word per class of "
                         f"label_names={tuple(label_names)!r} (at least 2).")
    if add_eos and tokenizer.eos_id is None:
        raise ValueError("add_eos=True but the tokenizer has no EOS token; pass add_eos=False.")
    pre = tokenizer.encode_ids([prefix])[0] if prefix else []
    post = tokenizer.encode_ids([suffix])[0] if suffix else []
    answers = [list(a) + ([int(tokenizer.eos_id)] if add_eos else [])
               for a in tokenizer.encode_ids([" " + w for w in words])]
    budget = seq_len + 1 - len(pre) - len(post) - max(len(a) for a in answers)
    if budget < 1:
        raise ValueError(f"seq_len={seq_len} leaves no room for the text after the prompt "
                         f"({len(pre) + len(post)} tokens) and the longest answer "
                         f"({max(len(a) for a in answers)} tokens).")
    n_cls = len(words)
    shape = (len(source), n_cls, seq_len) if choices else (len(source), seq_len)
    arrays = {k: np.zeros(shape, np.int32) for k in LM_FIELDS}
    labels = np.zeros((len(source),), np.int32)
    i = 0
    for start in range(0, len(source), chunk):
        batch = [source[j] for j in range(start, min(start + chunk, len(source)))]
        texts = tokenizer.encode_ids([" " + _tokenize._as_str(ex[text_key]) for ex in batch])
        for ex, text in zip(batch, texts, strict=True):
            label = int(np.asarray(ex[label_key]))
            if not 0 <= label < n_cls:
                raise ValueError(f"label={label} of example {i} is outside [0, {n_cls}).")
            labels[i] = label
            prompt = list(pre) + list(text[:budget]) + list(post)
            for c in range(n_cls) if choices else (label,):
                ids = np.asarray(prompt + answers[c], np.int32)
                n = len(ids) - 1
                where = (i, c) if choices else (i,)
                arrays["input_ids"][where][:n] = ids[:-1]
                arrays["targets"][where][:n] = ids[1:]
                arrays["loss_mask"][where][len(prompt) - 1 : n] = 1
                arrays["segment_ids"][where][:n] = 1
            i += 1
    return grain.MapDataset.source(_Rows(arrays, {"label": labels}))


def python_docs(max_chars: int = 100_000) -> list[dict[str, str]]:
    """A fixed slice of Python's own reference documentation, as documents.

    ``pydoc_data.topics.topics`` ships with every Python: the language reference's topics
    (~465 KB of English prose with code, 79 topics in CPython 3.11). Topics are taken in
    sorted-key order until ``max_chars`` characters (the last one cut), so the slice depends
    only on the Python version (recorded in each example's ``source`` field) — a held-out
    general-domain text for measuring forgetting (perplexity before vs after fine-tuning).

    Args:
      max_chars: total characters of the slice.

    Returns:
      ``[{'title': key, 'text': str, 'source': 'pydoc_data.topics (Python X.Y.Z)'}, ...]``,
      a random-access source for :func:`causal_lm_examples`.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_chars={max_chars!r} must be a positive integer.")
    from pydoc_data import topics  # Standard library; lazy: 0.5 MB of strings.

    version = "pydoc_data.topics (Python {}.{}.{})".format(*sys.version_info[:3])
    out, left = [], max_chars
    for key in sorted(topics.topics):
        text = topics.topics[key].strip()
        if not text:
            continue
        out.append({"title": key, "text": text[:left], "source": version})
        left -= len(out[-1]["text"])
        if left <= 0:
            break
    return out
