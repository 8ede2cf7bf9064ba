# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Component rules of the engine's methods, and the cost model of budgeted masks.

Task heads are trained by every method and never masked (they start from scratch), so
every rule set starts with an exclusion of :data:`HEAD_REGEX`.
"""

from __future__ import annotations

import re
from typing import Any

import jax

from rgft_jax._src import components as comp_lib
from rgft_jax._src import presets
from rgft_jax._src.budget import HEAD_REGEX as HEAD_REGEX
from rgft_jax._src.budget import LM_HEAD_REGEX as LM_HEAD_REGEX
from rgft_jax._src.budget import TIED_HEAD_REGEX as TIED_HEAD_REGEX
from rgft_jax._src.budget import ComponentCosts, analytic_costs
from rgft_jax._src.budget import output_head as output_head

#: Named granularities of a method's ``components=``.
COMPONENTS = ("heads", "leaves", "layers")
#: ``embeddings=`` -> the ``embeddings=`` of :func:`rgft_jax.components.transformer`.
EMBEDDING_POLICIES = {"component": "whole", "train": "exclude", "freeze": "freeze"}


def neuron_width(params: Any, preferred: int = 32) -> int | None:
    """The largest width <= ``preferred`` that divides the MLP width found in ``params``."""
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if re.search(r"mlp/(?:up|gate)(?:_proj)?/kernel$|intermediate/dense/kernel$",
                     comp_lib.key_path_to_str(path)):
            f = x.shape[-1]
            return max(w for w in range(1, preferred + 1) if f % w == 0)
    return None


def kv_heads(params: Any) -> int | None:
    """Key/value heads of the first ``attention/key/kernel`` ``[D, K, Dh]`` in ``params``."""
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if x.ndim == 3 and re.search(r"attention/key/kernel$", comp_lib.key_path_to_str(path)):
            return int(x.shape[1])
    return None




def component_rules(
    components: Any, embeddings: str, num_heads: int, params: Any = None
) -> tuple[comp_lib.Rule, ...]:
    """The rules of ``components`` (see :data:`COMPONENTS`), task heads excluded.

    ``'heads'`` uses 32-neuron groups, or the largest smaller width that divides the MLP,
    and, with ``params``, their key/value head count (grouped-query attention: SmolLM2's
    key/value kernels are ``[576, 3, 64]`` beside ``[576, 9, 64]`` queries).
    """
    head = (comp_lib.Rule(HEAD_REGEX, exclude=True),)
    if not isinstance(components, str):
        return head + tuple(components)
    if components == "heads":
        width = 32 if params is None else neuron_width(params)
        kv = None if params is None else kv_heads(params)
        return head + presets.transformer(
            num_heads, num_kv_heads=kv if kv != num_heads else None, neuron_width=width,
            embeddings=EMBEDDING_POLICIES[embeddings])
    if components == "layers":
        return head + presets.by_layer()
    return head


def costs_for(
    part: comp_lib.Partition, params: Any, num_heads: int, num_layers: int,
    batch_shape: tuple[int, int] | None, who: str,
) -> ComponentCosts:
    """Analytic per-component FLOPs of ``part`` for batches of ``batch_shape`` tokens.

    ``who`` names the caller in errors. A causal LM's head (:func:`output_head`) sees one
    row per token and its output matmul is counted, tied or not.
    """
    if batch_shape is None:
        raise ValueError(f"{who}: the cost model needs the batch shape: pass "
                         "batch_shape=(batch, seq_len) to the Trainer.")
    hidden = None
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if re.search(r"attention/(?:self/)?query/kernel$", comp_lib.key_path_to_str(path)):
            hidden = x.shape[0]
            break
    if hidden is None:
        raise ValueError(f"{who}: no attention/query/kernel leaf to read the hidden size "
                         "from; budget thresholds need a transformer.")
    batch, seq_len = batch_shape
    lm_head = output_head(params)
    return analytic_costs(part, tokens=batch * seq_len, seq_len=seq_len, batch=batch,
                          num_layers=num_layers, hidden=hidden, num_heads=num_heads,
                          head_rows=batch * seq_len if lm_head else None, output_head=lm_head)
