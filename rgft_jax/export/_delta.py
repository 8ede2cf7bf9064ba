# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Sparse deltas of fine-tuned params against their base, in one safetensors file.

A fine-tuning run that trains a few components (heads, neuron groups, layers) changes a few
slices of a few leaves. :func:`save_delta` writes only those: for every leaf that changed,
either the indices of its changed groups along the partition's component axis and the values
of those groups, or the whole leaf when every group (or a leaf outside the components)
changed. Unchanged leaves are not stored. :func:`apply_delta` rebuilds the fine-tuned params
from the base bit for bit.

The file's metadata names the partition (leaf paths, split axes, component names and a
fingerprint of them) and holds a SHA-256 of every base leaf, so applying a delta to a
different base fails with a ``ValueError`` that names the leaves that differ.

Change detection compares raw bits: ``-0.0`` vs ``+0.0`` and NaN payloads count as changes,
so the round trip is exact for every dtype (bfloat16 included).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, NamedTuple

import jax
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from rgft_jax.components import LeafSpec, Partition, key_path_to_str, resolve

__all__ = ["FORMAT", "DeltaSummary", "apply_delta", "partition_fingerprint", "read_delta_info",
           "save_delta"]

PyTree = Any

#: Format tag written into (and required from) every delta file's metadata.
FORMAT = "rgft_jax.delta/1"
_META_KEY = "rgft_jax.delta"

# safetensors dtype tags numpy cannot name by itself (numpy has no bfloat16 / float8).
_EXTRA_DTYPES = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "U64": np.uint64, "I32": np.int32, "U32": np.uint32, "I16": np.int16, "U16": np.uint16,
    "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "C64": np.complex64,
}


class DeltaSummary(NamedTuple):
    """What :func:`save_delta` wrote."""

    path: str  # the file
    changed_leaves: tuple[str, ...]  # '/'-joined paths of the leaves stored
    changed_groups: int  # groups stored across split leaves (whole leaves count 1 each)
    stored_entries: int  # parameter entries stored
    total_entries: int  # entries of the whole params tree
    file_bytes: int  # size of the file


def _flat(tree: PyTree) -> tuple[list[str], list[Any], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [key_path_to_str(p) for p, _ in flat], [x for _, x in flat], treedef


def _host(x: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(jax.device_get(x)))


def _bytes_view(x: np.ndarray) -> np.ndarray:
    """``x`` as ``uint8[..., itemsize]`` (compares raw bits for any dtype)."""
    x = np.ascontiguousarray(x)
    return x.reshape(-1).view(np.uint8).reshape(x.shape + (x.dtype.itemsize,))


def _digest(x: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str((x.dtype.str, x.shape)).encode())
    h.update(memoryview(np.ascontiguousarray(x).reshape(-1).view(np.uint8)))
    return h.hexdigest()[:32]


def _split_shape(spec: LeafSpec) -> tuple[int, ...]:
    return spec.split_shape


def partition_fingerprint(partition: Partition) -> str:
    """A SHA-256 of the partition's leaves (paths, shapes, axes, groups) and component names."""
    desc = {
        # A merged split axis adds its count (older fingerprints stay as they were).
        "leaves": [[s.path, list(s.shape), s.axis, s.n_groups, list(s.component_ids), s.frozen]
                   + ([s.merge] if s.merge != 1 else []) for s in partition.leaves],
        "components": partition.names,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]


def _check_same_leaves(paths, arrays, base_paths, base_arrays, argname: str) -> None:
    if paths != base_paths:
        mine, theirs = set(paths), set(base_paths)
        raise ValueError(
            f"save_delta: {argname} and base_params have different leaves: only in {argname}: "
            f"{sorted(mine - theirs)[:8]}, only in base_params: {sorted(theirs - mine)[:8]} "
            f"({len(paths)} vs {len(base_paths)} leaves); both must have the same paths.")
    bad = [f"{p}: {argname} {x.dtype}{list(x.shape)} vs base_params {b.dtype}{list(b.shape)}"
           for p, x, b in zip(paths, arrays, base_arrays)
           if x.shape != b.shape or x.dtype != b.dtype]
    if bad:
        raise ValueError(f"save_delta: {argname} and base_params differ in shape or dtype "
                         "(a delta needs the same leaves):\n  " + "\n  ".join(bad))


def save_delta(
    params: PyTree,
    base_params: PyTree,
    partition: Any,
    path: str | os.PathLike,
) -> DeltaSummary:
    """Writes the components of ``params`` that differ from ``base_params`` to ``path``.

    Every leaf is compared bit for bit with its base. A leaf split into groups by
    ``partition`` (heads, neuron groups, layer blocks) stores the indices of its changed
    groups along its component axis (``index/<leaf>``, ``int32[k]``) and their values
    (``values/<leaf>``: the leaf with that axis cut to the ``k`` groups, in the leaf's
    dtype); a leaf whose groups all changed, a whole-leaf component and a leaf outside the
    components (an excluded task head) store the whole leaf (``values/<leaf>``) when it
    changed. Unchanged leaves are not stored.

    Args:
      params: the fine-tuned params (any pytree of arrays: a dict, an ``nnx.State``).
      base_params: the params they were fine-tuned from; same leaf paths, shapes and dtypes.
      partition: a :class:`rgft_jax.components.Partition` of ``params``, a rule sequence
        (e.g. ``rgft_jax.components.bert(12)``), a callable ``params -> Partition``, or
        ``None`` (every leaf one component).
      path: the ``.safetensors`` file to write (its folder must exist).

    Returns:
      A :class:`DeltaSummary` of what was written.

    Raises:
      ValueError: when ``params`` and ``base_params`` have different leaves, shapes or dtypes
        (every offender listed), or the partition does not fit ``params``.

    Examples:
      >>> import tempfile, os, jax.numpy as jnp
      >>> from rgft_jax import components, export
      >>> base = {'q': jnp.zeros((4, 2, 3))}
      >>> tuned = {'q': base['q'].at[:, 1].set(1.0)}          # head 1 of 2 changed
      >>> part = [components.Rule('q', kind='head', axis=1, groups=2)]
      >>> f = os.path.join(tempfile.mkdtemp(), 'delta.safetensors')
      >>> export.save_delta(tuned, base, part, f).stored_entries
      12
      >>> bool((export.apply_delta(base, f)['q'] == tuned['q']).all())
      True
    """
    part = resolve(partition, params)
    paths, leaves, _ = _flat(params)
    base_paths, base_leaves, _ = _flat(base_params)
    arrays = [_host(x) for x in leaves]
    base_arrays = [_host(x) for x in base_leaves]
    _check_same_leaves(paths, arrays, base_paths, base_arrays, "params")

    tensors: dict[str, np.ndarray] = {}
    leaf_meta: dict[str, dict[str, Any]] = {}
    changed, groups, entries = [], 0, 0
    for spec, x, b in zip(part.leaves, arrays, base_arrays):
        entry = {"dtype": x.dtype.name, "shape": list(x.shape), "base_sha256": _digest(b)}
        leaf_meta[spec.path] = entry
        diff = (_bytes_view(x) != _bytes_view(b)).any(-1)
        if not diff.any():
            continue
        changed.append(spec.path)
        if spec.axis is not None:
            a = spec.axis
            split = diff.reshape(_split_shape(spec))
            per_group = split.any(axis=tuple(i for i in range(split.ndim) if i != a))
            idx = np.flatnonzero(per_group).astype(np.int32)
            if len(idx) < spec.n_groups:
                values = np.take(x.reshape(_split_shape(spec)), idx, axis=a)
                tensors[f"values/{spec.path}"] = np.ascontiguousarray(values)
                tensors[f"index/{spec.path}"] = idx
                if spec.merge != 1:
                    entry.update(merge=spec.merge)
                entry.update(stored="groups", axis=a, n_groups=spec.n_groups,
                             components=[part.names[spec.component_ids[i]] for i in idx])
                groups += len(idx)
                entries += values.size
                continue
            groups += spec.n_groups
        else:
            groups += 1
        tensors[f"values/{spec.path}"] = x
        entry.update(stored="leaf")
        entries += x.size

    meta = {
        "format": FORMAT,
        "partition_fingerprint": partition_fingerprint(part),
        "num_components": part.num_components,
        "leaf_order": paths,
        "leaves": leaf_meta,
    }
    path = os.fspath(path)
    safetensors.numpy.save_file(tensors, path, metadata={_META_KEY: json.dumps(meta)})
    return DeltaSummary(path, tuple(changed), groups, entries,
                        int(sum(x.size for x in arrays)), os.path.getsize(path))


def read_delta_info(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a delta file: format, partition fingerprint, per-leaf entries.

    Raises:
      ValueError: when ``path`` is not a delta written by :func:`save_delta`.
    """
    path = os.fspath(path)
    with safetensors.safe_open(path, framework="np") as f:
        raw = (f.metadata() or {}).get(_META_KEY)
    if raw is None:
        raise ValueError(f"apply_delta: path={path!r} is a safetensors file without "
                         f"{_META_KEY!r} metadata; only files written by save_delta apply.")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise ValueError(f"apply_delta: path={path!r} has format {meta.get('format')!r}; "
                         f"this version reads {FORMAT!r}.")
    return meta


def _read_tensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as fh:
        raw = fh.read()
    out = {}
    for name, view in safetensors.deserialize(raw):
        dtype = _EXTRA_DTYPES.get(view["dtype"]) or np.dtype(_NUMPY_DTYPES[view["dtype"]])
        out[name] = np.frombuffer(bytes(view["data"]), dtype=dtype).reshape(view["shape"])
    return out


def apply_delta(
    base_params: PyTree,
    path: str | os.PathLike,
    *,
    partition: Any = None,
    verify_base: bool = True,
) -> PyTree:
    """Rebuilds the fine-tuned params from ``base_params`` and a delta file.

    Args:
      base_params: the params the delta was taken against (same leaf paths, shapes, dtypes
        and, with ``verify_base``, the same values).
      path: a file written by :func:`save_delta`.
      partition: optionally the partition (as :func:`save_delta` takes it); when given, its
        fingerprint must match the file's.
      verify_base: compare a SHA-256 of every base leaf with the one recorded at save time.

    Returns:
      A tree with ``base_params``' structure: unchanged leaves are ``base_params``' own
      objects, changed leaves new arrays (``jax.Array`` with the base leaf's sharding where
      the base leaf is one, else ``numpy``), bit for bit equal to the params given to
      :func:`save_delta`.

    Raises:
      ValueError: when ``path`` is not a delta file, or ``base_params`` is not the delta's
        base (leaves missing or extra, other shapes or dtypes, other values, another
        partition); every offending leaf is named.
    """
    path = os.fspath(path)
    meta = read_delta_info(path)
    paths, leaves, treedef = _flat(base_params)
    if paths != meta["leaf_order"]:
        mine, theirs = set(paths), set(meta["leaf_order"])
        raise ValueError(
            f"apply_delta: base_params does not have the leaves of the delta {path!r}: "
            f"missing from base_params: {sorted(theirs - mine)[:8]}, not in the delta's base: "
            f"{sorted(mine - theirs)[:8]} ({len(paths)} vs {len(meta['leaf_order'])} leaves).")
    if partition is not None:
        fp = partition_fingerprint(resolve(partition, base_params, tree_name="base_params"))
        if fp != meta["partition_fingerprint"]:
            raise ValueError(
                f"apply_delta: partition has fingerprint {fp}, the delta {path!r} was written "
                f"with {meta['partition_fingerprint']}; pass the partition used by save_delta "
                "(or none).")
    arrays = [_host(x) for x in leaves]
    bad = []
    for p, b in zip(paths, arrays):
        m = meta["leaves"][p]
        if list(b.shape) != m["shape"] or b.dtype.name != m["dtype"]:
            bad.append(f"{p}: base_params {b.dtype.name}{list(b.shape)}, delta's base "
                       f"{m['dtype']}{m['shape']}")
        elif verify_base and _digest(b) != m["base_sha256"]:
            bad.append(f"{p}: values differ from the delta's base (SHA-256 mismatch)")
    if bad:
        raise ValueError(f"apply_delta: base_params is not the base of {path!r}:\n  "
                         + "\n  ".join(bad))

    tensors = _read_tensors(path)
    out = []
    for p, leaf, b in zip(paths, leaves, arrays):
        m = meta["leaves"][p]
        stored = m.get("stored")
        if stored is None:
            out.append(leaf)
            continue
        values = tensors[f"values/{p}"]
        if stored == "leaf":
            new = values
        else:
            a, n, k = m["axis"], m["n_groups"], m.get("merge", 1)
            width = math.prod(b.shape[a:a + k]) // n
            split = b.reshape(b.shape[:a] + (n, width) + b.shape[a + k:]).copy()
            index = [slice(None)] * split.ndim
            index[a] = tensors[f"index/{p}"]
            split[tuple(index)] = values
            new = split.reshape(b.shape)
        # A jax.Array base leaf gives a jax.Array on the same devices (sharding kept).
        out.append(jax.device_put(new, leaf.sharding) if isinstance(leaf, jax.Array)
                   else np.array(new))
    return jax.tree_util.tree_unflatten(treedef, out)

