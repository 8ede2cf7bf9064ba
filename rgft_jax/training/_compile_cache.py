# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A bounded LRU cache of compiled steps, keyed on everything a compiled program fixes.

An AOT-compiled executable accepts only the exact abstract inputs it was compiled for:
shapes, dtypes, shardings and the tree structure. The key is therefore the step's static
arguments (pattern, probe flag) plus :func:`signature` of *every* input leaf (train state
and batch), not just the batch shapes: the same shapes with another dtype (an ``int64``
or ``bfloat16`` batch, a restored state with other shardings) compile a new step instead
of reaching a cached one that raises.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import jax

V = TypeVar("V")


def _leaf_signature(x: Any) -> Hashable:
    if isinstance(x, jax.Array):
        # jax.typeof(x) (shape, dtype, weak type) is x.aval for a concrete array; reading the
        # attribute costs a tenth of the call, which matters at hundreds of leaves per step.
        aval = getattr(x, "aval", None)
        return (jax.typeof(x) if aval is None else aval, x.sharding)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return (tuple(x.shape), str(x.dtype), getattr(x, "sharding", None))
    return (type(x).__name__, x)  # Python scalars are static in jit: the value matters


def signature(*trees: Any) -> Hashable:
    """The abstract signature of ``trees``: structure plus each leaf's type and sharding."""
    leaves, treedef = jax.tree_util.tree_flatten(trees)
    return treedef, tuple(_leaf_signature(x) for x in leaves)


class CompileCache(Generic[V]):
    """At most ``max_size`` entries; the least recently used one is evicted first.

    Args:
      max_size: the bound (>= 1).
      on_compile: called as ``on_compile(key, value)`` after each build (accounting).
    """

    def __init__(self, max_size: int, on_compile: Callable[[Hashable, V], None] | None = None):
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
            raise ValueError(f"CompileCache: max_size={max_size!r}; allowed: an int >= 1.")
        self.max_size = max_size
        self._entries: collections.OrderedDict[Hashable, V] = collections.OrderedDict()
        self._on_compile = on_compile
        self.compilations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        return list(self._entries)

    def get(self, key: Hashable, build: Callable[[], V]) -> tuple[V, bool]:
        """``(value, fresh)``: the cached value, or ``build()`` (then ``fresh`` is True)."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key], False
        value = build()
        self.compilations += 1
        self._entries[key] = value
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
        if self._on_compile is not None:
            self._on_compile(key, value)
        return value, True
