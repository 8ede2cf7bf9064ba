# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Frozen-prefix activation caching: a step whose lowest layers are frozen reuses their output.

The *cut* of a step follows from its pattern (one ``False`` / ``True`` / ``K`` per params
leaf): the number of lowest transformer layers that, together with the embeddings, hold no
differentiated leaf. Their output for an example (``hidden_at(cut, ...)`` of the model, ``[T,
D]``) depends only on the example and on their weights, so a step with cut ``c`` may take it
from the cache and run ``logits_from(c, hidden, ...)`` only: its forward and backward skip
the prefix, and its cost can fall below a forward pass.

**Validity.** Each block (the embeddings, layer ``0`` .. ``L - 1``) keeps the version after
which it last changed: after step ``s`` (0-based), every block holding a leaf that step ``s``
differentiated gets version ``s + 1``. An entry stores the version (the step count) of the
params it was computed from and its cut; it serves a step of cut ``c`` at version ``u`` iff
its cut is ``c`` and no block below ``c`` changed after the entry's version. This relies on
the engine's contract that *a leaf a step does not differentiate gets a zero update in that
step* (frozen leaves: ``optax.set_to_zero``; RGFT and the mask baselines: the
``rgft_trainable`` pattern zeroes them statically, moments and weight decay included).

**Keys.** Entries are keyed by example id (the ``example_id`` of
:class:`rgft_jax.data.TrainIterator` batches, stripped before the step). A batch uses the
cached step only when *every* example has a valid entry; otherwise it runs a *fill* step
(prefix and suffix in one program, the prefix output returned) and the entries are
(re)written.

**Storage.** Rows live on the device while ``device_bytes`` allows (one buffer, grown by
doubling), then in host memory (numpy chunks) while ``host_bytes`` allows, then in
``np.memmap`` chunk files under ``disk_dir`` (when given; else the row is not cached).
Host and disk writes are deferred until the host next waits for the device (:meth:`flush`),
so fill steps are dispatched without a sync.

**Resume.** The cache is not checkpointed: :meth:`reset` drops it on restore and the
resumed run refills it lazily (exact: an entry only ever replaces the prefix computation it
was computed by).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rgft_jax._src.budget import EMBEDDINGS_PATTERN
from rgft_jax._src.components import key_path_to_str

__all__ = ["ActivationCache", "leaf_blocks", "step_cut"]

#: Batch key of the example ids (``rgft_jax.data.EXAMPLE_ID``; not imported: the data
#: package pulls in tfds).
EXAMPLE_ID = "example_id"
#: The smallest cut worth caching (a cut of 0 would cache the embeddings' output only).
MIN_CUT = 1
#: Rows per host / disk chunk.
CHUNK_ROWS = 256

_LAYER = re.compile(r"(?:^|/)layers/(\d+)/")
_EMB = re.compile(EMBEDDINGS_PATTERN)


def leaf_blocks(params: Any, num_layers: int) -> tuple[int, ...]:
    """Per params leaf, its block: ``-1`` embeddings, ``i`` layer ``i``, ``num_layers`` above
    the layers (final norm, pooler, task head)."""
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        p = key_path_to_str(path)
        m = _LAYER.search(p)
        if m is not None:
            out.append(min(int(m.group(1)), num_layers))
        elif _EMB.search(p):
            out.append(-1)
        else:
            out.append(num_layers)
    return tuple(out)


def step_cut(pattern: Sequence[Any], blocks: Sequence[int], num_layers: int) -> int:
    """Layers below every differentiated leaf (``0`` when an embedding leaf is)."""
    lowest = min((b for b, t in zip(blocks, pattern) if t is not False), default=num_layers)
    return max(0, min(lowest, num_layers))


class _Entry(NamedTuple):
    cut: int
    version: int  # the step count of the params the row was computed from
    tier: str  # 'device' | 'host' | 'disk'
    slot: int


@jax.jit
def _take(buf, slots):
    return jnp.take(buf, slots, axis=0)


@jax.jit
def _merge(buf, slots, on_device, host_rows):
    dev = jnp.take(buf, slots, axis=0)
    return jnp.where(on_device.reshape((-1,) + (1,) * (dev.ndim - 1)), dev, host_rows)


@jax.jit
def _scatter(buf, slots, rows, which):
    return buf.at[slots].set(jnp.take(rows, which, axis=0).astype(buf.dtype))


_scatter_donated = jax.jit(_scatter.__wrapped__, donate_argnums=0)


class _Chunks:
    """Rows in numpy chunks of :data:`CHUNK_ROWS` (host memory or ``np.memmap`` files)."""

    def __init__(self, row_shape, dtype, directory: str | None):
        self.row_shape, self.dtype, self.dir = tuple(row_shape), np.dtype(dtype), directory
        self.chunks: list[np.ndarray] = []
        self.rows = 0

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    def alloc(self) -> int:
        if self.rows == len(self.chunks) * CHUNK_ROWS:
            shape = (CHUNK_ROWS, *self.row_shape)
            if self.dir is None:
                self.chunks.append(np.empty(shape, self.dtype))
            else:
                os.makedirs(self.dir, exist_ok=True)
                path = os.path.join(self.dir, f"rows_{os.getpid()}_{id(self)}_"
                                              f"{len(self.chunks)}.npy")
                self.chunks.append(np.lib.format.open_memmap(path, "w+", self.dtype, shape))
        self.rows += 1
        return self.rows - 1

    def write(self, slot: int, row: np.ndarray) -> None:
        self.chunks[slot // CHUNK_ROWS][slot % CHUNK_ROWS] = row

    def read(self, slot: int) -> np.ndarray:
        return self.chunks[slot // CHUNK_ROWS][slot % CHUNK_ROWS]

    def close(self) -> None:
        paths = [c.filename for c in self.chunks if isinstance(c, np.memmap)]
        self.chunks, self.rows = [], 0
        for p in paths:
            try:
                os.remove(p)
            except OSError:
                pass


class ActivationCache:
    """Per-example prefix outputs and the versions that say when they are still valid.

    Args:
      blocks: per params leaf, its block (:func:`leaf_blocks`).
      num_layers: ``L``.
      device_bytes: bytes of device memory the rows may take.
      host_bytes: bytes of host memory the rows may take after that.
      disk_dir: folder of the ``np.memmap`` chunk files beyond that (``None``: no disk tier).
    """

    def __init__(self, blocks: Sequence[int], num_layers: int, *, device_bytes: int,
                 host_bytes: int, disk_dir: str | None = None):
        self.blocks, self.num_layers = tuple(blocks), int(num_layers)
        self.device_bytes, self.host_bytes, self.disk_dir = device_bytes, host_bytes, disk_dir
        self._cuts: dict[tuple, int] = {}
        self._touched: dict[tuple, np.ndarray] = {}
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Drops every entry and the change history (a restored run refills lazily)."""
        for store in getattr(self, "_stores", {}).values():
            store.close()
        # changed[b + 1]: version after which block b (-1 = embeddings) last changed.
        self.changed = np.zeros(self.num_layers + 1, np.int64)
        self.entries: dict[int, _Entry] = {}
        self._row: tuple | None = None  # (row shape, dtype) of the stored rows
        self._buf: jax.Array | None = None
        self._dev_rows = 0
        self._stores: dict[str, _Chunks] = {}
        self._pending: list[tuple[np.ndarray, list[tuple[int, str, int]], jax.Array]] = []

    def cut(self, pattern: tuple) -> int | None:
        """The cut of a step of ``pattern``, or ``None`` when it is below :data:`MIN_CUT`."""
        if pattern not in self._cuts:
            self._cuts[pattern] = step_cut(pattern, self.blocks, self.num_layers)
        c = self._cuts[pattern]
        return c if c >= MIN_CUT else None

    def advance(self, pattern: tuple, step: int) -> None:
        """Records that step ``step`` (0-based) ran ``pattern``: its blocks changed."""
        if pattern not in self._touched:
            t = np.zeros(self.num_layers + 1, bool)
            for b, k in zip(self.blocks, pattern):
                if k is not False and b < self.num_layers:
                    t[b + 1] = True
            self._touched[pattern] = t
        self.changed[self._touched[pattern]] = step + 1

    def valid(self, example_id: int, cut: int) -> bool:
        e = self.entries.get(int(example_id))
        return (e is not None and e.cut == cut
                and int(self.changed[:cut + 1].max()) <= e.version)

    # ------------------------------------------------------------------ reads
    def lookup(self, ids: np.ndarray, cut: int) -> Any:
        """The rows of ``ids`` stacked ``[B, ...]`` when all are valid at ``cut``, else None."""
        ids = np.asarray(ids).reshape(-1)
        if not all(self.valid(i, cut) for i in ids):
            return None
        entries = [self.entries[int(i)] for i in ids]
        if self._pending and any(e.tier != "device" for e in entries):
            self.flush()
        on_dev = np.array([e.tier == "device" for e in entries])
        slots = np.array([e.slot if d else 0 for e, d in zip(entries, on_dev)], np.int32)
        if on_dev.all():
            return _take(self._buf, slots)
        rows = np.zeros((len(ids), *self._row[0]), self._row[1])
        for j, e in enumerate(entries):
            if e.tier != "device":
                rows[j] = self._stores[e.tier].read(e.slot)
        if not on_dev.any():
            return rows
        return _merge(self._buf, slots, on_dev, rows)

    # ------------------------------------------------------------------ writes
    def put(self, ids: np.ndarray, hidden: jax.Array, cut: int, version: int) -> None:
        """Stores a fill step's prefix output ``hidden`` ``[B, ...]`` for ``ids``."""
        ids = np.asarray(ids).reshape(-1)
        row = (tuple(hidden.shape[1:]), np.dtype(hidden.dtype))
        if self._row is None:
            self._row = row
        elif row != self._row:  # another sequence length: start over
            self.reset()
            self._row = row
        row_bytes = int(np.prod(row[0])) * row[1].itemsize
        dev_slots, dev_which, later = [], [], []
        for j, i in enumerate(ids):
            i = int(i)
            e = self.entries.get(i)
            tier, slot = (e.tier, e.slot) if e is not None else self._alloc(row_bytes)
            if tier is None:
                self.entries.pop(i, None)
                continue
            self.entries[i] = _Entry(cut, version, tier, slot)
            if tier == "device":
                dev_slots.append(slot)
                dev_which.append(j)
            else:
                later.append((j, tier, slot))
        if dev_slots:
            self._buf = _scatter_donated(self._buf, np.asarray(dev_slots, np.int32), hidden,
                                         np.asarray(dev_which, np.int32))
        if later:
            self._pending.append((ids, later, hidden))

    def _alloc(self, row_bytes: int) -> tuple[str | None, int]:
        shape, dtype = self._row
        if (self._dev_rows + 1) * row_bytes <= self.device_bytes:
            cap = 0 if self._buf is None else self._buf.shape[0]
            if self._dev_rows == cap:
                new = min(max(2 * cap, 64), self.device_bytes // row_bytes)
                grown = jnp.zeros((new, *shape), dtype)
                if self._buf is not None:
                    grown = grown.at[:cap].set(self._buf)
                self._buf = grown
            self._dev_rows += 1
            return "device", self._dev_rows - 1
        for tier, budget, directory in (("host", self.host_bytes, None),
                                        ("disk", None, self.disk_dir)):
            if tier == "disk" and directory is None:
                break
            store = self._stores.get(tier)
            if store is None:
                store = self._stores[tier] = _Chunks(shape, dtype, directory)
            full_chunk = store.rows == len(store.chunks) * CHUNK_ROWS
            if budget is not None and full_chunk and (
                    len(store.chunks) + 1) * CHUNK_ROWS * row_bytes > budget:
                continue
            return tier, store.alloc()
        return None, -1

    def flush(self) -> None:
        """Copies the deferred host / disk rows off the device (waits for their steps)."""
        pending, self._pending = self._pending, []
        for _, later, hidden in pending:
            host = np.asarray(hidden)
            for j, tier, slot in later:
                self._stores[tier].write(slot, host[j])

    # ------------------------------------------------------------------ report
    def stats(self) -> dict[str, int]:
        """Cached rows and the bytes each tier holds (hit and fill steps: the accounting)."""
        return {
            "cache_rows": len(self.entries),
            "cache_device_bytes": 0 if self._buf is None else int(self._buf.nbytes),
            "cache_host_bytes": self._stores["host"].nbytes if "host" in self._stores else 0,
            "cache_disk_bytes": self._stores["disk"].nbytes if "disk" in self._stores else 0,
        }

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
