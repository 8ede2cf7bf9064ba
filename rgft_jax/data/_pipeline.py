# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Seeded, resumable batching with grain.

Training batches of epoch ``e`` are

    grain.MapDataset.range(len(source)).shuffle(seed_e).batch(batch_size).map(read + batch_fn)

(grain's shuffle of the indices, then one batched read of the examples per batch), with
``seed_e`` derived from ``(seed, e)``, so batch ``s`` of epoch ``e`` is a pure function of
``(seed, e, s)``. The iterator position is just ``{'epoch': e, 'step': s}``: saving it with the
model checkpoint and calling :meth:`TrainIterator.set_state` resumes with exactly the batches
an uninterrupted run would have seen. Each batch also carries the source indices of its
examples under :data:`EXAMPLE_ID` (``int64 [batch]``): the key of the Trainer's
frozen-prefix activation cache. Within an epoch, grain reads ahead in threads
(``to_iter_dataset(ReadOptions(...))``) and keeps the order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np

BatchFn = Callable[[Sequence[Any]], Mapping[str, np.ndarray]]

#: Batch key of the examples' source indices (``int64 [batch]``); models never read it.
EXAMPLE_ID = "example_id"


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)


def stack_batch(examples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Default ``batch_fn``: stacks each feature along a new first axis."""
    return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in examples[0]}


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of ``epoch``: a 32-bit hash of ``(seed, epoch)``."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def read_examples(source: Any, indices: Any) -> list[Any]:
    """``[source[i] for i in indices]``, in one batched read when the source supports it.

    TFDS array_record sources implement ``__getitems__``: one batched read is ~10x faster than
    as many single random reads (measured: 8 vs 86 us per record), which grain's own batching
    (one ``source[i]`` per element) does not use.
    """
    keys = [int(i) for i in indices]
    getitems = getattr(source, "__getitems__", None)
    if getitems is not None:
        return list(getitems(keys))
    return [source[i] for i in keys]


class TrainIterator(Iterator[dict[str, np.ndarray]]):
    """Epoch-aware shuffled batches whose position can be checkpointed exactly.

    Args:
      source: random-access examples (a TFDS data source, a list, a ``grain.MapDataset``).
      batch_size: examples per batch.
      seed: non-negative shuffle seed; epoch ``e`` uses :func:`epoch_seed` ``(seed, e)``.
      batch_fn: list of examples → batch (e.g. a :class:`ClassificationBatcher`); default
        :func:`stack_batch`.
      drop_remainder: drop each epoch's last partial batch (keeps shapes static under jit).
      num_epochs: stop after this many epochs; ``None`` runs forever.
      num_threads: grain read-ahead threads within an epoch (0 reads in the caller's thread).
      prefetch: batches grain keeps ready ahead of the consumer.
      example_ids: add each example's source index under :data:`EXAMPLE_ID` (the key of
        the Trainer's activation cache, which strips it before the step).

    Example::

      it = TrainIterator(train_source, batch_size=32, seed=0, batch_fn=batcher)
      batch = next(it)
      state = it.get_state()          # {'epoch': 0, 'step': 1}: store with the checkpoint
      ...
      it = TrainIterator(train_source, batch_size=32, seed=0, batch_fn=batcher)
      it.set_state(state)             # next(it) is the batch an unstopped run sees next
    """

    def __init__(
        self,
        source: Any,
        *,
        batch_size: int,
        seed: int,
        batch_fn: BatchFn | None = None,
        drop_remainder: bool = True,
        num_epochs: int | None = None,
        num_threads: int = 2,
        prefetch: int = 4,
        example_ids: bool = True,
    ):
        self._batch_size = _check_positive_int("batch_size", batch_size)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer.")
        if num_epochs is not None:
            num_epochs = _check_positive_int("num_epochs", num_epochs)
        if num_threads < 0 or prefetch < 0:
            raise ValueError(f"num_threads={num_threads!r} and prefetch={prefetch!r} must be >= 0.")
        self._source = source
        self._seed = int(seed)
        self._batch_fn = batch_fn or stack_batch
        self._example_ids = bool(example_ids)
        self._drop_remainder = bool(drop_remainder)
        self._num_epochs = num_epochs
        self._read_options = grain.ReadOptions(
            num_threads=num_threads, prefetch_buffer_size=prefetch
        )
        n = self._num_examples = len(source)
        self._steps_per_epoch = (
            n // self._batch_size if drop_remainder else -(-n // self._batch_size)
        )
        if self._steps_per_epoch == 0:
            raise ValueError(
                f"batch_size={batch_size} with drop_remainder={drop_remainder} leaves no batch "
                f"in a source of {n} examples."
            )
        self._epoch = 0
        self._step = 0
        self._it: Iterator[Any] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one epoch."""
        return self._steps_per_epoch

    @property
    def epoch(self) -> int:
        """Epoch of the next batch."""
        return self._epoch

    @property
    def step(self) -> int:
        """Index of the next batch within its epoch."""
        return self._step

    def epoch_batches(self, epoch: int) -> grain.MapDataset:
        """All batches of ``epoch`` as a random-access ``grain.MapDataset``."""
        return (
            grain.MapDataset.range(self._num_examples)
            .shuffle(seed=epoch_seed(self._seed, epoch))
            .batch(self._batch_size, drop_remainder=self._drop_remainder)
            .map(self._read_batch)
        )

    def _read_batch(self, indices: Any) -> Mapping[str, np.ndarray]:
        batch = self._batch_fn(read_examples(self._source, indices))
        if not self._example_ids:
            return batch
        return {**batch, EXAMPLE_ID: np.asarray(indices, np.int64)}

    def get_state(self) -> dict[str, int]:
        """The position of the next batch: ``{'epoch': int, 'step': int}``."""
        return {"epoch": self._epoch, "step": self._step}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Moves to a position returned by :meth:`get_state` (ints or scalar arrays)."""
        missing = {"epoch", "step"} - set(state)
        if missing:
            raise ValueError(f"state={dict(state)!r} lacks keys {sorted(missing)}.")
        epoch, step = int(np.asarray(state["epoch"])), int(np.asarray(state["step"]))
        if epoch < 0 or not 0 <= step <= self._steps_per_epoch:
            raise ValueError(
                f'state={{"epoch": {epoch}, "step": {step}}} is out of range: epoch >= 0 and '
                f"0 <= step <= steps_per_epoch={self._steps_per_epoch}."
            )
        self._epoch, self._step = epoch, step
        self._it = None

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._step >= self._steps_per_epoch:
            self._epoch, self._step, self._it = self._epoch + 1, 0, None
        if self._num_epochs is not None and self._epoch >= self._num_epochs:
            raise StopIteration
        if self._it is None:
            remaining = self.epoch_batches(self._epoch)[self._step :]
            self._it = iter(remaining.to_iter_dataset(self._read_options))
        batch = next(self._it)
        self._step += 1
        return batch


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Pads every array with zeros to ``batch_size`` rows and adds a bool ``valid`` mask."""
    n = len(next(iter(batch.values())))
    if n > batch_size:
        raise ValueError(f"batch has {n} rows, more than batch_size={batch_size}.")
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        pad = np.zeros((batch_size - n, *value.shape[1:]), dtype=value.dtype)
        out[key] = np.concatenate([value, pad]) if n < batch_size else value
    out["valid"] = np.arange(batch_size) < n
    return out


def eval_batches(
    source: Any, *, batch_size: int, batch_fn: BatchFn | None = None
) -> grain.MapDataset:
    """Every example once, in source order, in batches of exactly ``batch_size`` rows.

    The last batch is zero-padded; every batch has a bool ``valid`` ``[batch_size]`` mask that
    is ``False`` on padding rows, so metrics computed as ``sum(x * valid) / sum(valid)`` are
    exact and the eval step compiles once.

    Args:
      source: random-access examples.
      batch_size: rows per batch.
      batch_fn: list of examples → batch; default :func:`stack_batch`.

    Returns:
      A ``grain.MapDataset`` of ``ceil(len(source) / batch_size)`` batches (iterate it, or
      index it).
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    fn = batch_fn or stack_batch
    return (
        grain.MapDataset.range(len(source))
        .batch(batch_size, drop_remainder=False)
        .map(lambda indices: pad_batch(fn(read_examples(source, indices)), batch_size))
    )
