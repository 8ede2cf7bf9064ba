# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Components: one partition of a params pytree into the units RGFT reasons about.

A *component* is a set of parameter entries that is tracked, masked and scaled as one unit:
a whole leaf, one attention head of one layer (its slices of query/key/value/out together),
one group of MLP neurons of one layer, or a fixed-width block of columns. A :class:`Partition`
is built once, in Python, from the shapes of a params tree and an ordered list of
:class:`Rule` s. Everything that needs per-component values (residual tracking, masks,
component learning rates, DSCA blocks, the Layer Card, reports) goes through it.

The per-component reductions are reshapes plus sums (one per leaf, never one per component),
followed by one static gather + sum that merges the groups of several leaves that belong to
the same component (no scatter-add, so the result is deterministic on every backend);
broadcasting a per-component vector back to leaves is the inverse gather.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

__all__ = [
    "Component",
    "LeafSpec",
    "Partition",
    "Rule",
    "key_path_to_str",
    "layer_of",
]


def _key_to_str(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def key_path_to_str(path: Sequence[Any]) -> str:
    """Joins a JAX key path with ``'/'``.

    A trailing ``value`` attribute (how ``flax.nnx.Variable`` flattens) is dropped, so the
    same rules match a plain dict of arrays and an ``nnx.State`` of ``nnx.Param`` s.
    """
    parts = [_key_to_str(k) for k in path]
    if parts and isinstance(path[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
        parts = parts[:-1]
    return "/".join(parts)


_LAYER_RE = re.compile(r"(?:^|/)(?:[A-Za-z_]*?_)?(\d+)(?=/|$)")


def layer_of(path: str) -> tuple[int, str]:
    """Returns ``(layer_index, prefix)`` for a '/'-joined path.

    The layer is the first path element that is an integer (``layers/3/...``) or ends with
    ``_<int>`` (``layer_3/...``, ``h_3/...``). The prefix is the path up to and including that
    element; it names the layer. Paths without such an element give ``(-1, "")``.
    """
    m = _LAYER_RE.search(path)
    if m is None:
        return -1, ""
    return int(m.group(1)), path[: m.end()].lstrip("/")


@dataclasses.dataclass(frozen=True)
class Rule:
    """How the leaves whose path matches ``pattern`` are split into components.

    Exactly one of the following forms:

    * ``Rule(pattern)``: the whole leaf is one component.
    * ``Rule(pattern, axis=a, groups=n)``: axis ``a`` is split into ``n`` equal groups
      (attention heads: ``groups=num_heads``).
    * ``Rule(pattern, axis=a, width=d_b)``: axis ``a`` is split into groups of ``d_b``
      entries (neuron groups, column blocks).
    * ``axis=(a, a + 1, ...)``: consecutive axes read as one (row-major), then split as
      above: ``Rule('query/kernel$', axis=(1, 2), width=16)`` on a ``[D, H, Dh]`` kernel
      cuts every head into ``Dh / 16`` blocks, never a block across heads.
    * ``Rule(..., ndim=r)``: the rule applies to leaves of rank ``r`` only (one pattern,
      two layouts: ``[D, H, Dh]`` and flat ``[D, H * Dh]`` kernels).
    * ``Rule(pattern, exclude=True)``: the leaf belongs to no component; transforms pass its
      updates through untouched (always trained, e.g. a new task head).
    * ``Rule(pattern, freeze=True)``: the leaf belongs to no component and is never trained:
      transforms zero its updates, the compact optimizer state holds nothing for it and the
      training loop does not differentiate it (e.g. frozen embeddings).

    Groups of different leaves of the same layer with the same ``kind`` and the same group
    index form *one* component (query, key, value and output slices of head 3 of layer 2 are
    the component ``layers/2/head/3``). Leaves outside any layer are never merged.

    Args:
      pattern: regular expression searched (``re.search``) in the '/'-joined leaf path.
      kind: component kind, e.g. ``"head"``, ``"neuron"``, ``"block"``, ``"leaf"``.
      axis: axis to split along (negative values count from the end), or a tuple of
        consecutive axes split as their row-major merge.
      groups: number of equal groups along ``axis``.
      width: group width along ``axis``.
      exclude: whether matching leaves belong to no component (always trained).
      freeze: whether matching leaves belong to no component and are never trained.
      ndim: if given, only leaves of this rank match.
    """

    pattern: str
    kind: str = "leaf"
    axis: int | tuple[int, ...] | None = None
    groups: int | None = None
    width: int | None = None
    exclude: bool = False
    freeze: bool = False
    ndim: int | None = None

    def __post_init__(self):
        if not isinstance(self.pattern, str):
            raise TypeError(f"Rule: pattern must be a str regex, got {self.pattern!r}.")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"Rule: pattern={self.pattern!r} is not a valid regex: {e}.") from e
        if not isinstance(self.kind, str) or not self.kind or "/" in self.kind:
            raise ValueError(f"Rule: kind must be a non-empty str without '/', got {self.kind!r}.")
        if self.groups is not None and self.width is not None:
            raise ValueError(
                f"Rule({self.pattern!r}): give groups= or width=, not both "
                f"(got groups={self.groups}, width={self.width})."
            )
        for name in ("groups", "width"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)
                                  or v < 1):
                raise ValueError(f"Rule({self.pattern!r}): {name} must be an int >= 1, got {v!r}.")
            if v is not None:
                object.__setattr__(self, name, int(v))
        if self.axis is not None:
            axes = self.axis if isinstance(self.axis, (tuple, list)) else (self.axis,)
            if not axes or any(not isinstance(a, (int, np.integer)) or isinstance(a, bool)
                               for a in axes):
                raise ValueError(f"Rule({self.pattern!r}): axis must be an int or a tuple of "
                                 f"consecutive ints, got {self.axis!r}.")
            axes = tuple(int(a) for a in axes)
            if len(axes) > 1 and (any(b != a + 1 for a, b in zip(axes, axes[1:]))
                                  or (axes[0] < 0 <= axes[-1])):
                raise ValueError(f"Rule({self.pattern!r}): axis={self.axis!r}; a tuple must "
                                 "name consecutive axes of one sign, e.g. (1, 2) or (-2, -1).")
            object.__setattr__(self, "axis", axes[0] if len(axes) == 1 else axes)
        if self.ndim is not None and (not isinstance(self.ndim, (int, np.integer))
                                      or isinstance(self.ndim, bool) or self.ndim < 0):
            raise ValueError(f"Rule({self.pattern!r}): ndim must be an int >= 0 or None, got "
                             f"{self.ndim!r}.")
        split = self.groups is not None or self.width is not None
        if split and self.axis is None:
            raise ValueError(f"Rule({self.pattern!r}): groups/width need axis=, got axis=None.")
        if self.axis is not None and not split:
            raise ValueError(
                f"Rule({self.pattern!r}): axis={self.axis} given without groups= or width=."
            )
        if self.exclude and split:
            raise ValueError(f"Rule({self.pattern!r}): exclude=True takes no axis/groups/width.")
        if self.freeze and (split or self.exclude):
            raise ValueError(f"Rule({self.pattern!r}): freeze=True takes no axis/groups/width "
                             "and no exclude=True.")

    @property
    def split(self) -> bool:
        return self.groups is not None or self.width is not None


class LeafSpec(NamedTuple):
    """How one leaf maps to components (static)."""

    path: str  # '/'-joined key path
    shape: tuple[int, ...]
    axis: int | None  # normalised split axis, None for whole / excluded leaves
    n_groups: int  # groups along axis (1 for whole leaves, 0 for excluded)
    component_ids: tuple[int, ...]  # component of each group, len n_groups
    frozen: bool = False  # excluded and never trained (Rule(freeze=True))
    merge: int = 1  # axes axis .. axis + merge - 1 read as one split axis (row-major)

    @property
    def axis_size(self) -> int:
        """Entries along the (merged) split axis."""
        return math.prod(self.shape[self.axis:self.axis + self.merge])

    @property
    def split_shape(self) -> tuple[int, ...]:
        """The split view: the split axis as ``(n_groups, width)``."""
        if self.axis is None:
            return self.shape
        a = self.axis
        return (self.shape[:a] + (self.n_groups, self.axis_size // self.n_groups)
                + self.shape[a + self.merge:])


class Component(NamedTuple):
    """One component: the unit that is tracked, masked and scaled together."""

    index: int  # position in every per-component vector
    name: str  # e.g. 'encoder/layers/2/head/3' or a leaf path
    kind: str  # rule kind
    layer: int  # layer index parsed from the path, -1 if none
    group: int  # group index within the layer (0 for whole leaves)
    size: int  # number of parameter entries
    paths: tuple[str, ...]  # leaves it has entries in


@functools.lru_cache(maxsize=256)
def _build_cached(
    paths: tuple[str, ...],
    shapes: tuple[tuple[int, ...], ...],
    rules: tuple[Rule, ...],
    unmatched: str,
) -> tuple[tuple[LeafSpec, ...], tuple[Component, ...]]:
    errors = []
    compiled = [(r, re.compile(r.pattern)) for r in rules]
    comp_index: dict[tuple, int] = {}
    comp_data: list[dict] = []
    group_counts: dict[tuple, tuple[int, str]] = {}
    specs = []
    for path, shape in zip(paths, shapes):
        rule = next((r for r, rx in compiled
                     if rx.search(path) and r.ndim in (None, len(shape))), None)
        if rule is None:
            rule = Rule(".*") if unmatched == "whole" else Rule(".*", exclude=True)
        if rule.exclude or rule.freeze:
            specs.append(LeafSpec(path, shape, None, 0, (), bool(rule.freeze)))
            continue
        layer, prefix = layer_of(path)
        size = math.prod(shape)
        if not rule.split:
            key = ("leaf", path)
            axis, merge, n, per_group = None, 1, 1, size
        else:
            ndim = len(shape)
            axes = rule.axis if isinstance(rule.axis, tuple) else (rule.axis,)
            if not all(-ndim <= a < ndim for a in axes):
                errors.append(
                    f"{path}: axis={rule.axis} out of range for shape {shape} "
                    f"(rule {rule.pattern!r})"
                )
                continue
            axis, merge = axes[0] % ndim, len(axes)
            dim = math.prod(shape[axis:axis + merge])
            where = (f"axis {axis}" if merge == 1 else
                     f"the merged axes {tuple(range(axis, axis + merge))}")
            if rule.groups is not None:
                n = rule.groups
                if dim % n:
                    errors.append(
                        f"{path}: {where} has size {dim}, not divisible into groups={n} "
                        f"(rule {rule.pattern!r})"
                    )
                    continue
            else:
                if dim % rule.width:
                    errors.append(
                        f"{path}: {where} has size {dim}, not divisible by width="
                        f"{rule.width} (rule {rule.pattern!r})"
                    )
                    continue
                n = dim // rule.width
                inner = math.prod(shape[axis + 1:axis + merge])
                if merge > 1 and rule.width % inner and inner % rule.width:
                    errors.append(
                        f"{path}: width={rule.width} on {where} of shape "
                        f"{shape} would span two entries of axis {axis}: it must divide "
                        f"{inner} or be a multiple of it (rule {rule.pattern!r})"
                    )
                    continue
            per_group = size // n
            key = None
            if prefix:
                gkey = (prefix, rule.kind)
                seen = group_counts.setdefault(gkey, (n, path))
                if seen[0] != n:
                    errors.append(
                        f"{path}: {n} groups of kind {rule.kind!r} but {seen[1]} in the same "
                        f"layer has {seen[0]}; give different kinds (e.g. 'kv_head') to split "
                        "them separately"
                    )
                    continue
        ids = []
        for g in range(n):
            if not rule.split:
                ckey, name, grp = key, path, 0
            elif prefix:
                ckey = ("group", prefix, rule.kind, g)
                name, grp = f"{prefix}/{rule.kind}/{g}", g
            else:
                ckey = ("group", path, rule.kind, g)
                name, grp = f"{path}/{rule.kind}/{g}", g
            if ckey not in comp_index:
                comp_index[ckey] = len(comp_data)
                comp_data.append(
                    dict(name=name, kind=rule.kind, layer=layer, group=grp, size=0, paths=[])
                )
            cid = comp_index[ckey]
            comp_data[cid]["size"] += per_group
            if path not in comp_data[cid]["paths"]:
                comp_data[cid]["paths"].append(path)
            ids.append(cid)
        specs.append(LeafSpec(path, shape, axis, n, tuple(ids), merge=merge))
    if errors:
        raise ValueError(
            "Partition: cannot split these leaves:\n  " + "\n  ".join(errors)
        )
    if not comp_data:
        raise ValueError(
            f"Partition: the rules leave no component (all {len(paths)} leaves excluded or the "
            f"tree is empty); paths: {list(paths)[:10]}"
        )
    comps = tuple(
        Component(i, d["name"], d["kind"], d["layer"], d["group"], d["size"], tuple(d["paths"]))
        for i, d in enumerate(comp_data)
    )
    return tuple(specs), comps


def _shape_of(x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if shape is None:
        return tuple(np.shape(x))
    return tuple(int(d) for d in shape)


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
    """A static map from the leaves of one params tree to ``C`` components.

    Build it with :meth:`Partition.build` (or a preset from :mod:`rgft_jax.presets`); it
    holds only Python values, so it can be captured in closures, hashed and reused under
    ``jit``. Its array methods work on the concrete tree, on tracers, and (for shapes) on
    ``jax.ShapeDtypeStruct`` trees.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rgft_jax.components import Partition, Rule
      >>> params = {'layers': [{'q': jnp.ones((8, 4))}, {'q': jnp.ones((8, 4))}]}
      >>> part = Partition.build(params, [Rule(r'q$', kind='head', axis=1, groups=2)])
      >>> [c.name for c in part.components]
      ['layers/0/head/0', 'layers/0/head/1', 'layers/1/head/0', 'layers/1/head/1']
      >>> part.norms(params).tolist()
      [4.0, 4.0, 4.0, 4.0]
    """

    treedef: Any
    leaves: tuple[LeafSpec, ...]
    components: tuple[Component, ...]
    rules: tuple[Rule, ...] = ()
    unmatched: str = "whole"

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        params: PyTree,
        rules: Sequence[Rule] = (),
        *,
        unmatched: Literal["whole", "exclude"] = "whole",
    ) -> Partition:
        """Builds the partition of ``params`` (arrays or ``ShapeDtypeStruct`` s).

        Args:
          params: the params tree; only structure and shapes are read.
          rules: ordered rules; the first whose pattern matches a leaf path wins.
          unmatched: ``"whole"`` makes every unmatched leaf its own component,
            ``"exclude"`` leaves it out of every component.

        Raises:
          ValueError: on an unknown ``unmatched``, a rule that cannot split a leaf (axis out of
            range, indivisible size, inconsistent group counts in one layer; all collected),
            or when no component remains.
          TypeError: when ``rules`` holds something other than :class:`Rule`.
        """
        if unmatched not in ("whole", "exclude"):
            raise ValueError(
                f"Partition.build: unmatched={unmatched!r}; allowed: 'whole', 'exclude'."
            )
        if isinstance(rules, Rule):
            rules = (rules,)
        rules = tuple(rules)
        for r in rules:
            if not isinstance(r, Rule):
                raise TypeError(f"Partition.build: rules must be Rule objects, got {r!r}.")
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        paths = tuple(key_path_to_str(p) for p, _ in flat)
        shapes = tuple(_shape_of(x) for _, x in flat)
        specs, comps = _build_cached(paths, shapes, rules, unmatched)
        return cls(treedef, specs, comps, rules, unmatched)

    # ------------------------------------------------------------------ info
    @property
    def num_components(self) -> int:
        return len(self.components)

    def __len__(self) -> int:
        return len(self.components)

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        """Parameter entries per component, ``int64[C]``."""
        return np.array([c.size for c in self.components], dtype=np.int64)

    @functools.cached_property
    def layers(self) -> np.ndarray:
        """Layer index per component (-1 outside layers), ``int32[C]``."""
        return np.array([c.layer for c in self.components], dtype=np.int32)

    @functools.cached_property
    def total_size(self) -> int:
        """All parameter entries of the tree, excluded leaves included."""
        return int(sum(math.prod(s.shape) for s in self.leaves))

    @functools.cached_property
    def excluded_size(self) -> int:
        """Entries of excluded (always trained) leaves; frozen leaves do not count."""
        return int(sum(math.prod(s.shape) for s in self.leaves
                       if s.n_groups == 0 and not s.frozen))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    def index(self, name: str) -> int:
        """Index of the component called ``name``."""
        for c in self.components:
            if c.name == name:
                return c.index
        raise KeyError(f"Partition: no component named {name!r}; e.g. {self.names[:5]}")

    def select(self, predicate: Callable[[Component], bool]) -> np.ndarray:
        """Boolean ``[C]`` vector of the components for which ``predicate`` holds."""
        return np.array([bool(predicate(c)) for c in self.components], dtype=bool)

    def summary(self) -> str:
        """A short human-readable description (kinds, counts, sizes)."""
        by_kind: dict[str, list[int]] = {}
        for c in self.components:
            by_kind.setdefault(c.kind, []).append(c.size)
        lines = [
            f"Partition: {self.num_components} components over {len(self.leaves)} leaves "
            f"({self.total_size:,} entries, {self.excluded_size:,} excluded)"
        ]
        for k, sizes in by_kind.items():
            lines.append(f"  {k:>10}: {len(sizes):5d} components, {sum(sizes):>12,} entries")
        return "\n".join(lines)

    # ------------------------------------------------------------------ checks
    def check_tree(self, tree: PyTree, argname: str = "params") -> None:
        """Raises ``ValueError`` unless ``tree`` has this partition's leaf paths and shapes.

        Only paths and shapes are compared, not container types: an ``nnx.State`` of
        ``nnx.Param`` s (what ``nnx.Optimizer`` passes to ``init``) and the same state holding
        plain arrays (what it passes to ``update``) share one partition.
        """
        flat, _ = jax.tree_util.tree_flatten_with_path(tree)
        paths = [key_path_to_str(p) for p, _ in flat]
        if paths != [s.path for s in self.leaves]:
            mine = {s.path for s in self.leaves}
            theirs = set(paths)
            raise ValueError(
                f"Partition was built for another tree than {argname}: "
                f"missing from {argname}: {sorted(mine - theirs)[:8]}, "
                f"unexpected in {argname}: {sorted(theirs - mine)[:8]} "
                f"({len(self.leaves)} vs {len(flat)} leaves)."
            )
        bad = [
            f"{s.path}: partition {s.shape} vs {argname} {_shape_of(x)}"
            for s, (_, x) in zip(self.leaves, flat)
            if _shape_of(x) != s.shape
        ]
        if bad:
            raise ValueError(
                f"Partition was built for other shapes than {argname}:\n  " + "\n  ".join(bad)
            )

    # ------------------------------------------------------------------ arrays
    @functools.cached_property
    def _segment_ids(self) -> np.ndarray:
        ids = [i for s in self.leaves for i in s.component_ids]
        return np.asarray(ids, dtype=np.int32)

    @functools.cached_property
    def _merge_index(self) -> np.ndarray | None:
        """``int32[C, m]``: the group values of every component (in group order), padded
        with ``G`` (an appended zero); ``None`` when groups and components coincide."""
        ids = self._segment_ids
        g = ids.shape[0]
        if np.array_equal(ids, np.arange(self.num_components)):
            return None
        members = [[] for _ in range(self.num_components)]
        for j, c in enumerate(ids.tolist()):
            members[c].append(j)
        m = max(len(x) for x in members)
        return np.array([x + [g] * (m - len(x)) for x in members], dtype=np.int32)

    def _merge(self, vals: jax.Array) -> jax.Array:
        """Per-group values ``[G]`` summed per component ``[C]``: a static gather and a
        row sum, in a fixed order (``segment_sum`` lowers to a scatter-add, whose order, and
        so whose rounding, is not fixed on GPUs)."""
        idx = self._merge_index
        if idx is None:
            return vals
        padded = jnp.concatenate([vals, jnp.zeros((1,), vals.dtype)])
        return jnp.sum(padded[idx], axis=1)

    def _group_reduce(self, x: jax.Array, spec: LeafSpec, fn) -> jax.Array:
        """Reduces one leaf to its ``(n_groups,)`` values with ``fn(array, axes)``."""
        if spec.axis is None:
            return fn(x, None).reshape(1)
        a = spec.axis
        x = x.reshape(spec.split_shape)
        axes = tuple(i for i in range(x.ndim) if i != a)
        return fn(x, axes)

    def leaf_group_values(self, tree: PyTree, fn) -> jax.Array:
        """Concatenated per-group reductions ``fn(leaf, axes)`` over all non-excluded leaves."""
        leaves = jax.tree_util.tree_leaves(tree)
        parts = [
            self._group_reduce(x, s, fn) for s, x in zip(self.leaves, leaves) if s.n_groups
        ]
        return jnp.concatenate(parts)

    def reduce(self, tree: PyTree, fn=None) -> jax.Array:
        """Per-component sums of ``fn(leaf)`` (default: squares), ``float32[C]``."""
        if fn is None:
            # ``x * x``, not ``jnp.square``: an optimizer's ``g ** 2`` (Adam's nu) is the same
            # integer_pow, and XLA's CSE would then materialise it and unfuse this reduction.
            fn = lambda x: x * x

        def red(x, axes):
            return jnp.sum(fn(x.astype(jnp.float32)), axis=axes)

        return self._merge(self.leaf_group_values(tree, red))

    def sq_norms(self, tree: PyTree) -> jax.Array:
        """Squared L2 norm of every component, ``float32[C]``."""
        return self.reduce(tree)

    def norms(self, tree: PyTree) -> jax.Array:
        """L2 norm of every component, ``float32[C]``."""
        return jnp.sqrt(self.sq_norms(tree))

    def broadcast(self, values: jax.Array, *, fill: Any = 1.0, like: PyTree | None = None):
        """Broadcasts a per-component vector ``[C]`` back to full-shape leaves.

        Args:
          values: ``[C]`` array.
          fill: value for the entries of excluded leaves.
          like: optional tree whose leaf dtypes are used (default: ``values.dtype``).

        Returns:
          A tree with this partition's structure; leaf ``l`` has ``l``'s shape and carries
          the value of the component each entry belongs to.
        """
        values = jnp.asarray(values)
        if values.shape != (self.num_components,):
            raise ValueError(
                f"Partition.broadcast: values must have shape ({self.num_components},), "
                f"got {values.shape}."
            )
        dtypes = (
            [x.dtype for x in jax.tree_util.tree_leaves(like)]
            if like is not None
            else [values.dtype] * len(self.leaves)
        )
        out = []
        for s, dt in zip(self.leaves, dtypes):
            if s.n_groups:
                out.append(self._expand(values, s).astype(dt))
            else:
                out.append(jnp.full(s.shape, fill, dt))
        treedef = self.treedef if like is None else jax.tree_util.tree_structure(like)
        return jax.tree_util.tree_unflatten(treedef, out)

    def _expand(self, values: jax.Array, s: LeafSpec) -> jax.Array:
        """``values`` of leaf ``s``'s components, materialised in the leaf's shape."""
        return jnp.broadcast_to(self._group_view(values, s), s.split_shape).reshape(s.shape)

    def _group_view(self, values: jax.Array, s: LeafSpec) -> jax.Array:
        """``values`` of leaf ``s``'s groups, shaped to broadcast against its split view."""
        v = values[np.asarray(s.component_ids, dtype=np.int32)]
        if s.axis is None:
            return v.reshape(())
        bshape = [1] * len(s.split_shape)
        bshape[s.axis] = s.n_groups
        return v.reshape(bshape)

    def _axis_view(self, values: jax.Array, s: LeafSpec) -> jax.Array:
        """``values`` of leaf ``s``'s entries along its split axis (each group's value
        repeated over its width), shaped to broadcast against the leaf itself.

        Leaf-sized operands are used in their own shape (no reshape to the split view):
        a reshape inside the fusion that writes an update in place makes XLA copy the
        donated buffer first; only the small ``[shape[axis]]`` vector is expanded.
        """
        v = values[np.asarray(s.component_ids, dtype=np.int32)]
        if s.axis is None:
            return v.reshape(())
        width = s.axis_size // s.n_groups
        if width > 1:
            v = jnp.broadcast_to(v[:, None], (s.n_groups, width)).reshape(-1)
        bshape = [1] * len(s.shape)
        a = s.axis
        bshape[a:a + s.merge] = s.shape[a:a + s.merge]
        return v.reshape(bshape)

    def leaf_where(self, i: int, active: jax.Array, on_true: jax.Array, on_false: jax.Array):
        """:meth:`where` for leaf ``i`` alone (arrays of that leaf's shape)."""
        s = self.leaves[i]
        if not s.n_groups:
            return on_true
        return jnp.where(self._axis_view(active, s), on_true, on_false)

    def leaf_scale_where(self, i: int, x: jax.Array, values: jax.Array, active: jax.Array):
        """``active[c] ? x * values[c] : 0`` for leaf ``i`` (a leaf with components): one
        select of the product against per-group vectors, in ``x``'s dtype."""
        s = self.leaves[i]
        y = x * self._axis_view(values, s).astype(x.dtype)
        return jnp.where(self._axis_view(active, s), y, jnp.zeros((), x.dtype))

    def scale(self, tree: PyTree, values: jax.Array, *, fill: Any = None) -> PyTree:
        """Multiplies every leaf entry by its component's value (excluded: by ``fill``).

        ``fill=None`` leaves excluded leaves untouched. The product is taken in the leaf's
        dtype, so bf16 updates stay bf16. The per-component values broadcast against a
        reshaped view of each leaf (a free bitcast), so nothing leaf-sized is materialised.
        """
        return self.scale_where(tree, values, None, fill=fill)

    def scale_where(
        self, tree: PyTree, values: jax.Array, active: jax.Array | None, *, fill: Any = None
    ) -> PyTree:
        """``active[c] ? x * values[c] : 0`` entry-wise (``active=None``: always scale).

        The zeros are exact (``0 * inf`` would be ``nan``); excluded leaves get ``fill``
        (``None``: untouched).
        """
        leaves = jax.tree_util.tree_leaves(tree)
        out = []
        for i, (s, x) in enumerate(zip(self.leaves, leaves)):
            if not s.n_groups:
                if s.frozen:
                    out.append(jnp.zeros_like(x))
                else:
                    out.append(x if fill is None else x * jnp.asarray(fill, x.dtype))
                continue
            if active is None:
                out.append(x * self._axis_view(values, s).astype(x.dtype))
            else:
                out.append(self.leaf_scale_where(i, x, values, active))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), out)

    def where(self, active: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
        """Entry-wise ``active[c] ? on_true : on_false``; excluded leaves take ``on_true``."""
        t_leaves = jax.tree_util.tree_leaves(on_true)
        f_leaves = jax.tree_util.tree_leaves(on_false)
        out = [self.leaf_where(i, active, t, f) for i, (t, f) in enumerate(zip(t_leaves, f_leaves))]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(on_true), out)


def resolve(spec: Any, tree: PyTree, *, tree_name: str = "params") -> Partition:
    """Turns what a user passes as ``partition=`` into a :class:`Partition` of ``tree``.

    Accepts ``None`` (every leaf one component), a :class:`Partition` (checked against the
    tree), a :class:`Rule` or sequence of rules, or a callable ``tree -> Partition``.
    """
    if spec is None:
        return Partition.build(tree)
    if isinstance(spec, Partition):
        spec.check_tree(tree, tree_name)
        return spec
    if isinstance(spec, Rule) or (
        isinstance(spec, (list, tuple)) and all(isinstance(r, Rule) for r in spec)
    ):
        return Partition.build(tree, spec)
    if callable(spec):
        part = spec(tree)
        if not isinstance(part, Partition):
            raise TypeError(
                f"partition: the callable must return a Partition, got {type(part).__name__}."
            )
        part.check_tree(tree, tree_name)
        return part
    raise TypeError(
        f"partition={spec!r}: expected None, a Partition, a Rule / sequence of Rules, or a "
        "callable params -> Partition."
    )


def check_partition_arg(spec: Any, argname: str = "partition") -> None:
    """Construction-time type check of a ``partition=`` argument (shapes come at init)."""
    if getattr(spec, "__module__", "") == "rgft_jax._src.presets":
        raise TypeError(
            f"{argname}={getattr(spec, '__name__', spec)}: a preset must be called to give "
            f"rules, e.g. {argname}=rgft_jax.components.{getattr(spec, '__name__', 'bert')}"
            "(num_heads=12).")
    if spec is None or isinstance(spec, (Partition, Rule)) or callable(spec):
        return
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"{argname}=[]: an empty rule list; pass None for whole leaves.")
        bad = [r for r in spec if not isinstance(r, Rule)]
        if not bad:
            return
        raise TypeError(f"{argname}: every rule must be a Rule, got {bad[0]!r}.")
    raise TypeError(
        f"{argname}={spec!r}: expected None, a Partition, a Rule / sequence of Rules, or a "
        "callable params -> Partition."
    )
