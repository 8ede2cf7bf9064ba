# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The method of a searched MFTC configuration: one candidate per node, in the one loop.

:func:`rgft_jax.search.solve` returns ``choice`` (a candidate index per node); this method
trains exactly that configuration: the blocks of the ``'sparse'`` nodes with sparse steps
(a fixed component mask: only leaves holding an active block are differentiated, with
group-sparse weight gradients for partly active matrices), rank-``r`` LoRA adapters on the
matrices of the ``'lora<r>'`` nodes, nothing of the ``'off'`` nodes, and the task head. The
savings are the engine's (XLA's FLOP count of the compiled sparse steps, measured time).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgft_jax._src import components as comp_lib
from rgft_jax._src import residual
from rgft_jax.search import _space
from rgft_jax.training._methods import Plan, _is_int, _is_real, _Masked

__all__ = ["Searched", "searched"]

_LORA_LEAF = re.compile(r"/lora_[ab]$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Searched(_Masked):
    """A searched configuration (see :func:`rgft_jax.search.solve`).

    Args:
      choice: candidate index per node (``SearchResult.choice``).
      nodes: the search space's nodes (:func:`rgft_jax.search.layer_nodes` /
        :func:`~rgft_jax.search.module_nodes`), built on a partition with the rules of
        ``components`` (default ``'heads'``).
      candidates: candidate names, ``'off'`` first (``rgft_jax.search.DEFAULT_CANDIDATES``).
      lora_scale: learning rate of the adapters over ``learning_rate``.
      lora_alpha_ratio: LoRA ``alpha = ratio * rank``.
    """

    kind: ClassVar[str] = "searched"
    policy: ClassVar[str] = "fixed"

    choice: tuple[int, ...] = ()
    nodes: tuple[_space.Node, ...] = ()
    candidates: tuple[str, ...] = _space.DEFAULT_CANDIDATES
    lora_scale: float = 1.0
    lora_alpha_ratio: float = 2.0

    def __post_init__(self):
        super().__post_init__()
        try:
            object.__setattr__(self, "candidates", _space.check_candidates(self.candidates))
        except ValueError as e:
            raise ValueError(f"{self.kind}: {e}") from None
        nodes = tuple(self.nodes)
        self._check(len(nodes) > 0 and all(isinstance(n, _space.Node) for n in nodes), "nodes",
                    "a non-empty sequence of rgft_jax.search.Node")
        object.__setattr__(self, "nodes", nodes)
        choice = tuple(np.asarray(self.choice).ravel().tolist())
        object.__setattr__(self, "choice", choice)
        n = len(self.candidates)
        self._check(len(choice) == len(nodes) and all(_is_int(c) and 0 <= c < n for c in choice),
                    "choice", f"{len(nodes)} candidate indices (one per node) in [0, {n})")
        self._check(_is_real(self.lora_scale) and self.lora_scale > 0, "lora_scale",
                    "a number > 0")
        self._check(_is_real(self.lora_alpha_ratio) and self.lora_alpha_ratio > 0,
                    "lora_alpha_ratio", "a number > 0")

    def _kinds(self) -> list[tuple[str, int]]:
        return [_space.candidate_kind(self.candidates[c]) for c in self.choice]

    @property
    def lora_ranks(self) -> dict[int, tuple[str, ...]]:
        """LoRA rank -> the matrices adapted at that rank."""
        out: dict[int, list[str]] = {}
        for node, (kind, r) in zip(self.nodes, self._kinds()):
            if kind == "lora":
                out.setdefault(r, []).extend(node.matrices)
        return {r: tuple(dict.fromkeys(ms)) for r, ms in out.items()}

    def describe(self) -> str:
        """``'layer 0: sparse, layer 1: off, ...'``."""
        return ", ".join(f"{n.name}: {self.candidates[c]}" for n, c in
                         zip(self.nodes, self.choice))

    def prepare_model(self, model: Any) -> list[str]:
        from rgft_jax.adapters import add_lora

        paths: list[str] = []
        for r, mats in sorted(self.lora_ranks.items()):
            if mats:
                paths += add_lora(model, targets=_space.anchored(mats), rank=r,
                                  alpha=self.lora_alpha_ratio * r, seed=self.seed)
        return paths

    def initial_mask(self, part: comp_lib.Partition, params: Any,
                     target_ratio: float | None = None) -> np.ndarray:
        del params, target_ratio
        mask = np.zeros(len(part), bool)
        for node, (kind, _) in zip(self.nodes, self._kinds()):
            if kind == "sparse":
                mask[_space.component_indices(part, node.components, self.kind)] = True
            elif kind == "lora":
                ids = _space.lora_component_indices(part, node.matrices)
                if not ids:
                    raise ValueError(f"{self.kind}: node {node.name!r} has no adapters in the "
                                     "partition (was prepare_model run on this model?).")
                mask[ids] = True
        return mask

    def build(self, params: Any, *, total_steps: int, num_heads: int, num_layers: int,
              target_ratio: float | None = None,
              batch_shape: tuple[int, int] | None = None) -> Plan:
        """A fixed mask (the Trainer installs it before the first step); adapters' updates
        scaled by ``lora_scale``."""
        del num_layers, batch_shape, target_ratio
        part = self.partition(params, num_heads)
        mask = jnp.asarray(self.initial_mask(part, params))
        inner = self.base_optimizer(total_steps)
        if self.lora_scale != 1.0:
            flat, treedef = jax.tree_util.tree_flatten_with_path(params)
            is_lora = jax.tree_util.tree_unflatten(treedef, [
                bool(_LORA_LEAF.search(comp_lib.key_path_to_str(p))) for p, _ in flat])
            inner = optax.chain(inner, optax.masked(optax.scale(self.lora_scale), is_lora))
        tx = residual.residual_guided(
            inner, part, threshold=lambda r: mask, gamma=0.0, beta=0.0, update_every=1,
            moments=self.moments, capacity=self.capacity)
        return Plan(tx, part, None)


def searched(choice: Any, nodes: Any, **kwargs: Any) -> Searched:
    """Trains a searched configuration ``choice`` over ``nodes`` (see :class:`Searched`)."""
    return Searched(choice=choice, nodes=nodes, **kwargs)
