# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Data: TFDS datasets from local files, HF tokenisation, resumable grain batching.

Local CSV/TSV/JSONL files become TFDS datasets (array_record) offline through
:func:`load_text_classification` (preset :func:`crowdflower`); GLUE comes by TFDS name through
:func:`glue`, WikiText from its local files through :func:`wikitext` (tfds 4.9.10 has no
WikiText builder). :class:`TextTokenizer` gives fixed-length int32 inputs,
:class:`TrainIterator` seeded batches with an exactly resumable ``{'epoch', 'step'}``
position, :func:`eval_batches` padded batches with a ``valid`` mask. Causal-LM rows (packed
documents with ``segment_ids``, prompt -> answer rows with an answer-only ``loss_mask``, a
fixed slice of Python's reference docs for retention): :func:`causal_lm_examples`,
:func:`instruction_examples`, :func:`python_docs`.

Decision: read with ``tfds.data_source`` + grain, without TensorFlow. Measured with
``recipes/bench_data.py`` (CrowdFlower train split, MiniLM tokenizer, batch 32 x 64 tokens,
2-core CPU shared with other jobs, so +-30 %; TensorFlow in a separate venv):

=====================================  ============================  =========================
                                       tfds.data_source + grain      tf.data (tensorflow-cpu
                                       (chosen)                      2.21, tfrecord)
=====================================  ============================  =========================
extra install                          none                          +1.22 GiB
import                                 0.8-1.3 s (tfds + grain)      +1.8-3.8 s (tensorflow)
CSV -> TFDS dataset, first build       1.8-3.8 s                     1.6-3.4 s
shuffled raw batches / s               ~360                          ~7,000
shuffled tokenised batches / s         165-220 (2 threads)           ~400 (tokenised after)
resume mid-epoch                       exact; 2 ints; 0.02 s         iterator checkpoint (TF)
=====================================  ============================  =========================

tf.data reads ~20x and tokenises ~2x faster, but both are two orders of magnitude faster than
the consumer: a MiniLM-L6 train step here takes 0.35-1.6 s (< 3 batches/s). grain needs no
TensorFlow, gives random access (exact padded eval, O(1) resume) and a position that is two
integers in the checkpoint. Revisit if one host must feed > ~150 tokenised batches/s; try grain
worker processes first.
"""

from rgft_jax.data._builders import LocalTextClassification as LocalTextClassification
from rgft_jax.data._builders import LocalTextLines as LocalTextLines
from rgft_jax.data._builders import TextClassificationConfig as TextClassificationConfig
from rgft_jax.data._builders import TextLinesConfig as TextLinesConfig
from rgft_jax.data._classification import CROWDFLOWER_LABELS as CROWDFLOWER_LABELS
from rgft_jax.data._classification import build_text_classification as build_text_classification
from rgft_jax.data._classification import crowdflower as crowdflower
from rgft_jax.data._classification import load_text_classification as load_text_classification
from rgft_jax.data._files import decode_bytes as decode_bytes
from rgft_jax.data._lm import LM_FIELDS as LM_FIELDS
from rgft_jax.data._lm import causal_lm_examples as causal_lm_examples
from rgft_jax.data._lm import instruction_examples as instruction_examples
from rgft_jax.data._lm import python_docs as python_docs
from rgft_jax.data._pipeline import EXAMPLE_ID as EXAMPLE_ID
from rgft_jax.data._pipeline import TrainIterator as TrainIterator
from rgft_jax.data._pipeline import epoch_seed as epoch_seed
from rgft_jax.data._pipeline import eval_batches as eval_batches
from rgft_jax.data._pipeline import pad_batch as pad_batch
from rgft_jax.data._pipeline import read_examples as read_examples
from rgft_jax.data._pipeline import stack_batch as stack_batch
from rgft_jax.data._standard import GLUE_TASKS as GLUE_TASKS
from rgft_jax.data._standard import GlueTask as GlueTask
from rgft_jax.data._standard import glue as glue
from rgft_jax.data._standard import lm_blocks as lm_blocks
from rgft_jax.data._standard import text_lines as text_lines
from rgft_jax.data._standard import tfds_text as tfds_text
from rgft_jax.data._standard import wikitext as wikitext
from rgft_jax.data._tokenize import ClassificationBatcher as ClassificationBatcher
from rgft_jax.data._tokenize import TextTokenizer as TextTokenizer

__all__ = [
    "CROWDFLOWER_LABELS",
    "GLUE_TASKS",
    "LM_FIELDS",
    "ClassificationBatcher",
    "GlueTask",
    "LocalTextClassification",
    "LocalTextLines",
    "TextClassificationConfig",
    "TextLinesConfig",
    "TextTokenizer",
    "TrainIterator",
    "build_text_classification",
    "causal_lm_examples",
    "crowdflower",
    "decode_bytes",
    "epoch_seed",
    "eval_batches",
    "glue",
    "instruction_examples",
    "lm_blocks",
    "pad_batch",
    "python_docs",
    "read_examples",
    "stack_batch",
    "text_lines",
    "tfds_text",
    "wikitext",
]
