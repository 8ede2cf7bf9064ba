# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""The MFTC search space on a model: nodes, and the candidate ways to fine-tune each.

A *node* is a set of components of a :class:`~rgft_jax.components.Partition` (a layer, or a
DSCA module) together with the projection matrices those components live in. A *candidate*
says how a node is fine-tuned:

* ``'off'``: not at all (the base network :math:`N_e` has every node off; its task head
  trains);
* ``'sparse'``: its components train (sparse steps: weight gradients of those blocks only);
* ``'lora4'``, ``'lora8'``, ... (any ``'lora<r>'``): rank-``r`` LoRA adapters on its matrices.

Nodes are named by component *names*, not indices, so the same node selects the same blocks
in a partition of the model after LoRA adapters were added (adapters add components).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from rgft_jax._src import components as comp_lib

__all__ = ["DEFAULT_CANDIDATES", "Node", "candidate_kind", "layer_nodes", "module_nodes"]

#: Off, sparse-train the node's blocks, LoRA rank 4 and 8 on its matrices.
DEFAULT_CANDIDATES = ("off", "sparse", "lora4", "lora8")
_LORA = re.compile(r"^lora(\d+)$")


class Node(NamedTuple):
    """One node of the search space."""

    name: str  # e.g. 'layer 3' or 'module 5'
    components: tuple[str, ...]  # component names of the partition the node was built on
    matrices: tuple[str, ...]  # module paths of its projections (LoRA targets)


def candidate_kind(candidate: str) -> tuple[str, int]:
    """``'off'`` -> ``('off', 0)``, ``'sparse'`` -> ``('sparse', 0)``, ``'lora8'`` ->
    ``('lora', 8)``.

    Raises:
      ValueError: for anything else.
    """
    if candidate in ("off", "sparse"):
        return candidate, 0
    m = _LORA.match(candidate) if isinstance(candidate, str) else None
    if m is None or int(m.group(1)) < 1:
        raise ValueError(f"candidate {candidate!r}; allowed: 'off', 'sparse' or 'lora<r>' with "
                         "r >= 1 (e.g. 'lora8').")
    return "lora", int(m.group(1))


def check_candidates(candidates: Sequence[str]) -> tuple[str, ...]:
    """Validates a candidate list: distinct, ``'off'`` first (the base network)."""
    cands = tuple(candidates)
    for c in cands:
        candidate_kind(c)
    if not cands or cands[0] != "off" or len(set(cands)) != len(cands):
        raise ValueError(f"candidates={cands!r}; allowed: distinct candidates starting with "
                         "'off' (the base network), e.g. " + repr(DEFAULT_CANDIDATES) + ".")
    return cands


def _matrices(part: comp_lib.Partition, ids: Sequence[int]) -> tuple[str, ...]:
    out = []
    for i in ids:
        for p in part.components[i].paths:
            if p.endswith("/kernel"):
                m = p[: -len("/kernel")]
                if m not in out:
                    out.append(m)
    return tuple(out)


def layer_nodes(part: comp_lib.Partition) -> tuple[Node, ...]:
    """One node per transformer layer: every component of the layer.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rgft_jax.components import Partition, Rule
      >>> from rgft_jax import search
      >>> params = {'layers': [{'q': {'kernel': jnp.ones((4, 2, 2))}}] * 2}
      >>> part = Partition.build(params, [Rule('q/kernel', kind='head', axis=1, groups=2)])
      >>> [(n.name, n.matrices) for n in search.layer_nodes(part)]
      [('layer 0', ('layers/0/q',)), ('layer 1', ('layers/1/q',))]
    """
    layers = sorted({int(c.layer) for c in part.components if c.layer >= 0})
    if not layers:
        raise ValueError("layer_nodes: the partition has no component inside a layer.")
    out = []
    for layer in layers:
        ids = [c.index for c in part.components if c.layer == layer]
        out.append(Node(f"layer {layer}", tuple(part.components[i].name for i in ids),
                        _matrices(part, ids)))
    return tuple(out)


def module_nodes(part: comp_lib.Partition, labels: Any, *,
                 min_size: int = 1) -> tuple[Node, ...]:
    """One node per DSCA module: the components with the same label.

    Args:
      part: the partition the labels index (``labels[c]`` is component ``c``'s module).
      labels: int ``[C]``, e.g. ``ModuleLibrary.labels``.
      min_size: modules with fewer components are left out (never trained).
    """
    lab = np.asarray(labels)
    if lab.shape != (len(part),):
        raise ValueError(f"module_nodes: labels has shape {lab.shape}; the partition has "
                         f"{len(part)} components.")
    out = []
    for k in np.unique(lab):
        ids = np.flatnonzero(lab == k).tolist()
        if len(ids) >= min_size:
            out.append(Node(f"module {int(k)}", tuple(part.components[i].name for i in ids),
                            _matrices(part, ids)))
    if not out:
        raise ValueError(f"module_nodes: no module has >= min_size={min_size} components.")
    return tuple(out)


def component_indices(part: comp_lib.Partition, names: Sequence[str], who: str) -> list[int]:
    """Indices of component ``names`` in ``part`` (all missing ones listed in the error)."""
    index = {c.name: c.index for c in part.components}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"{who}: components {missing[:6]} (of {len(missing)}) are not in the "
                         "partition; build the nodes on a partition with the same rules.")
    return [index[n] for n in names]


def lora_component_indices(part: comp_lib.Partition, matrices: Sequence[str]) -> list[int]:
    """Indices of the ``lora_a`` / ``lora_b`` leaf components of ``matrices``."""
    want = {f"{m}/lora_{ab}" for m in matrices for ab in "ab"}
    return [c.index for c in part.components if c.name in want]


def anchored(paths: Sequence[str]) -> tuple[str, ...]:
    """Regexes matching exactly these module paths (for :func:`rgft_jax.adapters.add_lora`)."""
    return tuple(f"^{re.escape(p)}$" for p in paths)
