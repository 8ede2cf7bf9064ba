# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Compute-budgeted masks: pick the components worth most residual mass per FLOP.

Training a component of layer :math:`l` costs its weight-gradient matmul
(:math:`\mathrm{dW}_i`) *and* backpropagating activations through every layer from the top
down to :math:`l` (:math:`\mathrm{dX}_l`). The training loop computes weight gradients only
for active groups and differentiates only down to the lowest layer holding an active
component, so the cost of one step with active set :math:`S` is

.. math::

  \mathrm{cost}(S) = F + \sum_{l \ge \max(m_S, 0)} \mathrm{dX}_l + \sum_{i \in S} \mathrm{dW}_i,
  \qquad m_S = \min_{i \in S} \mathrm{layer}_i,

with :math:`F` the forward pass plus everything that is always trained, layer ``-1`` for
components below every layer (embeddings: their gradient needs backprop through all layers),
layer ``L`` for components above the encoder (no backprop through any layer), and no
:math:`\mathrm{dX}` term at all when :math:`S` is empty or holds only layer-``L``
components. :class:`ComponentCosts` holds :math:`\mathrm{dW}`, the layers,
:math:`\mathrm{dX}` and :math:`F`; :func:`analytic_costs` derives them from shapes and
:func:`calibrate` rescales them to XLA's measured FLOPs. :func:`budget_threshold` turns a
budget (a fraction of the full fine-tuning step) into a ``threshold=`` callable for
:func:`~rgft_jax.residual_mask` / :func:`~rgft_jax.residual_guided` that maximises the
captured residual mass under that budget.

Example:
  >>> import jax.numpy as jnp, rgft_jax as rgft
  >>> from rgft_jax._src.budget import analytic_costs, budget_threshold
  >>> params = {'layers': [{'q': jnp.zeros((8, 2, 4))} for _ in range(2)]}
  >>> part = rgft.Partition.build(params, [rgft.Rule('q$', kind='head', axis=1, groups=2)])
  >>> costs = analytic_costs(part, tokens=16, seq_len=4, batch=4, num_layers=2, hidden=8,
  ...                        num_heads=2)
  >>> th = budget_threshold(costs, 0.95)  # then residual_guided(..., threshold=th)
  >>> th(jnp.array([0.1, 0.2, 0.3, 0.4])).tolist()  # mass on top: no backprop into layer 0
  [False, False, True, True]
  >>> th(jnp.array([0.4, 0.3, 0.2, 0.1])).tolist()  # mass at the bottom pays for layer 0
  [True, True, False, False]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rgft_jax._src import components as comp_lib

#: Task heads are trained by every method and never masked: they start from scratch.
HEAD_REGEX = r"^(?:classifier|head|pooler)/"
#: A causal LM's output projection: an untied ``lm_head`` or, with none, the tied word
#: embedding. It is pretrained, so not a task head: a component like any other leaf (the
#: ``'heads'`` preset makes it a whole-leaf component; LoRA and the top-layer methods leave
#: it frozen). The cost model counts its matmuls at one row per token.
LM_HEAD_REGEX = r"(?:^|/)lm_head/kernel$"
TIED_HEAD_REGEX = r"^(?:embeddings/word/embedding|embed_tokens/embedding|wte/embedding)$"


def output_head(params: Any) -> str | None:
    """The regex of the LM head leaf of ``params``, or ``None`` for a classifier.

    A tree with a task head (:data:`HEAD_REGEX`) has no LM head; else the ``lm_head``
    kernel, or with none the word embedding (tied LM head, as SmolLM2 and GPT-2).
    """
    paths = [comp_lib.key_path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        params)[0]]
    if any(re.search(HEAD_REGEX, p) for p in paths):
        return None
    for rx in (LM_HEAD_REGEX, TIED_HEAD_REGEX):
        if any(re.search(rx, p) for p in paths):
            return rx
    return None


__all__ = [
    "ComponentCosts",
    "analytic_costs",
    "budget_threshold",
    "budget_threshold_exact",
    "calibrate",
    "cost_flops",
    "depth_cut_threshold",
]

#: Layer-less leaves whose path matches this are *below* the layers (layer ``-1``); the
#: other layer-less leaves (classifier, pooler, final norm) are *above* them (layer ``L``).
EMBEDDINGS_PATTERN = (
    r"(?:^|/)(?:embeddings?|word_embeddings|position_embeddings|token_type_embeddings|"
    r"embed_tokens|embed_positions|wte|wpe|cls_token|token_embd)(?:/|$)"
)

# Inside the traced threshold the budget check is int32 arithmetic: integer costs are divided
# by their gcd (exact); other costs become multiples of ``full / 2**30`` (dW rounded up, the
# remaining budget rounded down after a relative slack for the float64 reference).
_Q_BITS = 30
_SLACK = 1e-9
_MAX_EXACT = 16


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


# ---------------------------------------------------------------------------- cost model
@dataclasses.dataclass(frozen=True, eq=False)
class ComponentCosts:
    r"""FLOPs of one training step, broken down per component and per layer.

    .. math::

      \mathrm{cost}(S) = \mathrm{fixed} + \sum_{l \ge \max(m_S, 0)} \mathrm{dx}_l
        + \sum_{i \in S} \mathrm{dw}_i, \qquad m_S = \min_{i \in S} \mathrm{layer}_i,
      \qquad \mathrm{full} = \mathrm{fixed} + \sum_l \mathrm{dx}_l + \sum_i \mathrm{dw}_i

    (no :math:`\mathrm{dx}` term when :math:`S` is empty or only holds layer-``L``
    components).

    Attributes:
      dw: ``float64[C]``, weight-gradient FLOPs of each component (``0``: free).
      layer: ``int[C]``, layer of each component in ``[-1, L]``: ``-1`` below every layer
        (embeddings; training them needs backprop through all layers), ``L`` above every
        layer (classifier, final norm; no backprop through any layer).
      dx: ``float64[L]``, FLOPs of backpropagating activations through layer ``l``.
      fixed: FLOPs paid by every step: the forward pass plus what is always trained
        (excluded leaves, and the backprop through the layers they need).
      forward: the forward-pass part of ``fixed`` (``None``: all of it); :func:`calibrate`
        replaces it by a measured number and scales the rest of ``fixed`` with the backward.
      layer_forward: ``float64[L]`` (optional), the forward FLOPs of each layer: what a
        step whose lowest ``c`` layers come from the activation cache does not run
        (``step_cost(mask, cut=c)``); ``None``: the cache saves nothing in this model.
    """

    dw: np.ndarray
    layer: np.ndarray
    dx: np.ndarray
    fixed: float
    forward: float | None = None
    layer_forward: np.ndarray | None = None

    def __post_init__(self):
        dw = np.array(self.dw, dtype=np.float64).reshape(-1) if np.ndim(self.dw) else None
        if dw is None or dw.size == 0:
            raise ValueError(f"ComponentCosts: dw must be a non-empty 1-D array, got {self.dw!r}.")
        if not np.all(np.isfinite(dw)) or np.any(dw < 0):
            bad = int(np.flatnonzero(~np.isfinite(dw) | (dw < 0))[0])
            raise ValueError(
                f"ComponentCosts: dw[{bad}]={float(dw[bad])!r}; every dw must be finite and >= 0.")
        dx = np.array(self.dx, dtype=np.float64)
        if dx.ndim != 1:
            raise ValueError(f"ComponentCosts: dx must be 1-D (one entry per layer), got shape "
                             f"{dx.shape}.")
        if not np.all(np.isfinite(dx)) or np.any(dx < 0):
            bad = int(np.flatnonzero(~np.isfinite(dx) | (dx < 0))[0])
            raise ValueError(
                f"ComponentCosts: dx[{bad}]={float(dx[bad])!r}; every dx must be finite and >= 0.")
        n_layers = dx.shape[0]
        layer_in = np.asarray(self.layer)
        if layer_in.shape != dw.shape or not np.issubdtype(layer_in.dtype, np.integer):
            raise ValueError(
                f"ComponentCosts: layer must be an int array of shape {dw.shape} (like dw), got "
                f"{layer_in.dtype} {layer_in.shape}.")
        layer = np.array(layer_in, dtype=np.int64)
        if np.any(layer < -1) or np.any(layer > n_layers):
            bad = int(np.flatnonzero((layer < -1) | (layer > n_layers))[0])
            raise ValueError(
                f"ComponentCosts: layer[{bad}]={layer[bad]}; layers must be in [-1, L={n_layers}] "
                "(-1: below every layer, L: above every layer).")
        if not _is_real(self.fixed) or not math.isfinite(self.fixed) or self.fixed < 0:
            raise ValueError(f"ComponentCosts: fixed={self.fixed!r}; must be a finite number >= 0.")
        fixed = float(self.fixed)
        forward = fixed if self.forward is None else self.forward
        if not _is_real(forward) or not 0 <= forward <= fixed:
            raise ValueError(f"ComponentCosts: forward={self.forward!r}; must be a number in "
                             f"[0, fixed={fixed}].")
        if self.layer_forward is not None:
            lf = np.array(self.layer_forward, dtype=np.float64)
            if lf.shape != dx.shape or not np.all(np.isfinite(lf)) or np.any(lf < 0):
                raise ValueError(f"ComponentCosts: layer_forward={self.layer_forward!r}; must "
                                 f"be None or finite numbers >= 0 of shape {dx.shape} (like dx).")
            lf.setflags(write=False)
            object.__setattr__(self, "layer_forward", lf)
        for a in (dw, layer, dx):
            a.setflags(write=False)
        object.__setattr__(self, "dw", dw)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "dx", dx)
        object.__setattr__(self, "fixed", fixed)
        object.__setattr__(self, "forward", float(forward))

    @property
    def num_components(self) -> int:
        """``C``."""
        return int(self.dw.shape[0])

    @property
    def num_layers(self) -> int:
        """``L``."""
        return int(self.dx.shape[0])

    @property
    def full(self) -> float:
        """FLOPs of a full fine-tuning step: ``fixed + sum(dx) + sum(dw)``."""
        return float(self.fixed + self.dx.sum() + self.dw.sum())

    def dx_tail(self, lowest: int) -> float:
        """Backprop FLOPs when ``lowest`` is the lowest active layer (``L``: none)."""
        if not -1 <= lowest <= self.num_layers:
            raise ValueError(f"dx_tail: lowest={lowest}; must be in [-1, {self.num_layers}].")
        return float(self.dx[max(lowest, 0):].sum())

    def step_cost(self, mask: Any, cut: int = 0) -> float:
        """FLOPs of one step that trains the components where ``mask`` is true.

        Args:
          mask: ``bool[C]`` active set (anything ``np.asarray`` turns into one).
          cut: layers whose output the step reads from the activation cache
          (``rgft_jax.training._cache``; capped at the lowest active layer): their
          ``layer_forward`` is not paid.

        Returns:
          ``fixed + sum(dx[l] for l >= max(lowest active layer, 0)) + sum(dw[mask])``, less
          ``sum(layer_forward[:cut])``; the ``dx`` term is empty when nothing (or only
          layer-``L`` components) is active.
        """
        if isinstance(cut, bool) or not isinstance(cut, (int, np.integer)) or not (
                0 <= cut <= self.num_layers):
            raise ValueError(f"step_cost: cut={cut!r}; must be an int in [0, {self.num_layers}].")
        mask = np.asarray(mask)
        if mask.shape != self.dw.shape:
            raise ValueError(
                f"step_cost: mask has shape {mask.shape}; expected ({self.num_components},).")
        mask = mask.astype(bool)
        lowest = int(self.layer[mask].min()) if mask.any() else self.num_layers
        cost = float(self.fixed + self.dx_tail(lowest) + self.dw[mask].sum())
        cut = min(int(cut), max(lowest, 0))
        if cut and self.layer_forward is not None:
            cost -= float(self.layer_forward[:cut].sum())
        return cost

    def with_cache(self, hit_rate: float) -> ComponentCosts:
        r"""The *expected* step cost when ``hit_rate`` of the steps read the activation cache.

        A step that reads its prefix at the cut ``c = max(m_S, 0)`` (its lowest active layer)
        does not run ``layer_forward[:c]``. Its expected cost is linear in the same
        structure, with :math:`h` = ``hit_rate`` and :math:`f_l` = ``layer_forward[l]``:

        .. math::

          E[\mathrm{cost}(S)] = \mathrm{cost}(S) - h \sum_{l < c} f_l
            = \Big(\mathrm{fixed} - h \sum_l f_l\Big)
              + \sum_{l \ge c} (\mathrm{dx}_l + h f_l) + \sum_{i \in S} \mathrm{dw}_i,

        so every budgeted mask rule (:func:`budget_threshold`, :func:`depth_cut_threshold`)
        bounds the expected cost when given these costs; ``full`` is unchanged, so budgets
        stay fractions of an uncached full step. A deeper cut gives up cached layers, so
        shallow masks get cheaper and the budget reaches further into them. In a run of
        ``E`` epochs over a fixed set whose mask settles, ``h`` is about ``(E - 1) / E``.

        Args:
          hit_rate: expected fraction of steps that hit the cache, in ``[0, 1]``.

        Returns:
          The re-expressed costs (``layer_forward`` is folded in and set to ``None``), or
          ``self`` when ``hit_rate`` is 0 or the model has no ``layer_forward``.
        """
        if not _is_real(hit_rate) or not 0 <= hit_rate <= 1:
            raise ValueError(f"with_cache: hit_rate={hit_rate!r}; must be a number in [0, 1].")
        if hit_rate == 0 or self.layer_forward is None:
            return self
        saved = float(hit_rate) * self.layer_forward
        return ComponentCosts(dw=self.dw, layer=self.layer, dx=self.dx + saved,
                              fixed=self.fixed - float(saved.sum()),
                              forward=max(self.forward - float(saved.sum()), 0.0))

    def summary(self) -> str:
        """One line per layer: components, dW and dX in GFLOP, plus fixed and full."""
        lines = [f"ComponentCosts: C={self.num_components}, L={self.num_layers}, "
                 f"fixed={self.fixed / 1e9:.3f} GFLOP, full={self.full / 1e9:.3f} GFLOP"]
        for lay in range(-1, self.num_layers + 1):
            sel = self.layer == lay
            dx = f"{self.dx[lay] / 1e9:8.3f}" if 0 <= lay < self.num_layers else "       -"
            lines.append(f"  layer {lay:3d}: {int(sel.sum()):5d} comps, "
                         f"dW {self.dw[sel].sum() / 1e9:8.3f}, dX {dx}")
        return "\n".join(lines)


def _is_table(path: str, name: str, ndim: int, embeddings: re.Pattern) -> bool:
    """Embedding tables / additive embeddings: their gradient is a scatter-add, no matmul."""
    return name == "embedding" or (
        ndim >= 2 and embeddings.search(path) is not None
        and name not in ("kernel", "bias", "scale"))


def analytic_costs(
    partition: comp_lib.Partition,
    *,
    tokens: int,
    seq_len: int,
    batch: int,
    num_layers: int,
    hidden: int,
    num_heads: int,
    head_rows: int | None = None,
    embeddings_pattern: str = EMBEDDINGS_PATTERN,
    output_head: str | None = None,
) -> ComponentCosts:
    r"""Per-component and per-layer FLOPs of a transformer step from the leaf shapes.

    Leaves are *matrices* (matmul weights: ``ndim >= 2`` and not named ``bias`` / ``scale``),
    *tables* (layer-less leaves named ``embedding``, or ``ndim >= 2`` leaves matching
    ``embeddings_pattern`` not named ``kernel`` / ``bias`` / ``scale``, e.g. a ViT
    ``cls_token``: their gradient is a scatter-add, counted as free) or *vectors*
    (everything else: biases, norm parameters). With :math:`T` the rows a leaf sees
    (``tokens``; ``head_rows`` for leaves above the encoder), :math:`|W|` the entries,
    :math:`B`, :math:`s`, :math:`D` = ``batch``, ``seq_len``, ``hidden``:

    .. math::

      \mathrm{dw}_i &= \sum_{\text{matrices } W} 2 T\, |W \cap i|
        + \sum_{\text{vectors } v} T\, |v \cap i| \quad (\text{tables: } 0) \\
      \mathrm{dx}_l &= 2\,\mathrm{tokens} \sum_{\text{matrices } W \in l} |W| + 8 B s^2 D \\
      \mathrm{forward} &= \sum_l \Bigl(2\,\mathrm{tokens} \sum_{\text{matrices } W \in l} |W|
        + 4 B s^2 D\Bigr) + \sum_{\text{matrices } W \text{ outside layers}} 2 T |W|

    (:math:`4 B s^2 D`: the score and context matmuls of attention, :math:`Q K^\top` and
    :math:`P V`, independent of the head count; their backward, :math:`8 B s^2 D`, is two
    matmuls of the same size for each, :math:`\mathrm{d}Q, \mathrm{d}K` and
    :math:`\mathrm{d}P, \mathrm{d}V`). Frozen leaves (``Rule(freeze=True)``) cost their
    forward pass only.
    ``fixed = forward`` plus the ``dw`` of every excluded leaf (the transforms pass
    them through, so they are always trained); when an excluded leaf lies in layer ``l`` (or
    below all layers) every step backprops down to it, so ``dx`` of those layers moves into
    ``fixed`` (and is 0 in ``dx``). On all-MiniLM-L6-v2 (batch 32 × 64 tokens) this gives
    forward / full = 0.333 and top-2-layers / full = 0.555 against XLA's 46/136 = 0.338 and
    74/136 = 0.544 (the step's StableHLO matmuls: 0.333 and 0.542); on a 3-layer width-64
    BERT at ``s = 1024``, where attention is 3/4 of the step, forward / full = 0.333 and
    top-1-layer / full = 0.555 against XLA's 0.344 and 0.555. The model overcounts the lowest
    trained layer a little (it pays that layer's whole backprop, XLA skips the gradient of
    its input). Element-wise work (GELU, softmax, norms) is not counted — use
    :func:`calibrate` for measured numbers.

    Language-model heads (``output_head``: the leaf of the output projection, an untied
    ``lm_head/kernel [D, V]`` or the tied word embedding ``[V, D]``) see ``head_rows`` rows
    (pass ``tokens``). A tied table's output matmul is counted like a matrix's: forward
    :math:`2 T |W|` and :math:`\mathrm{dw}` :math:`2 T |W|` (its scatter-add from the input
    lookup stays free). Either way, backpropagating through the head to anything below it
    costs :math:`2 T |W|` more, added to the top layer's :math:`\mathrm{dx}` (paid exactly
    when a component below the head trains). Leaves above the layers but below the head (the
    final norm) need that backprop too, so they count as layer ``L - 1``: exact with any
    other layer's component, and alone an overestimate by the top layer's
    :math:`\mathrm{dx}` (training the final norm alone is rare). On SmolLM2-135M
    (V = 49,152, D = 576) the tied output matmul is ~21 % of the forward pass.

    Args:
      partition: the components (``.leaves`` gives every leaf's path and shape).
      tokens: rows of every activation inside the encoder (``batch * seq_len`` for dense
        batches).
      seq_len: sequence length :math:`s` (attention's quadratic term).
      batch: sequences per step :math:`B`.
      num_layers: number of layers :math:`L`; every leaf's layer index must be below it.
      hidden: model width :math:`D`.
      num_heads: attention heads per layer (checked to divide ``hidden``; attention FLOPs do
        not depend on it).
      head_rows: rows seen by leaves above the encoder (pooler, classifier); ``None``:
        ``batch`` (one pooled vector per sequence). Pass ``tokens`` for token-level heads.
      embeddings_pattern: regex telling which layer-less leaves are below the layers.
      output_head: regex of the LM head leaf (see above); ``None``: no LM head.

    Returns:
      The :class:`ComponentCosts` of ``partition``'s components.

    Raises:
      TypeError: when ``partition`` is not a :class:`~rgft_jax.components.Partition`.
      ValueError: on a non-positive size, ``hidden % num_heads != 0``, or a leaf whose layer
        index is ``>= num_layers``.
    """
    if not isinstance(partition, comp_lib.Partition):
        raise TypeError(f"analytic_costs: partition must be a Partition, got "
                        f"{type(partition).__name__}.")
    for name, v in (("tokens", tokens), ("seq_len", seq_len), ("batch", batch),
                    ("num_layers", num_layers), ("hidden", hidden), ("num_heads", num_heads)):
        if not _is_pos_int(v):
            raise ValueError(f"analytic_costs: {name}={v!r}; must be an int >= 1.")
    if head_rows is None:
        head_rows = batch
    if not _is_pos_int(head_rows):
        raise ValueError(f"analytic_costs: head_rows={head_rows!r}; must be an int >= 1 or None.")
    if hidden % num_heads:
        raise ValueError(f"analytic_costs: hidden={hidden} is not divisible by "
                         f"num_heads={num_heads}.")
    try:
        emb = re.compile(embeddings_pattern)
    except re.error as e:
        raise ValueError(f"analytic_costs: embeddings_pattern={embeddings_pattern!r} is not a "
                         f"valid regex: {e}.") from e

    try:
        head_rx = None if output_head is None else re.compile(output_head)
    except re.error as e:
        raise ValueError(f"analytic_costs: output_head={output_head!r} is not a valid regex: "
                         f"{e}.") from e

    L = int(num_layers)
    C = partition.num_components
    head_dx = 0.0  # backprop through the LM head, paid when anything below it trains
    needs_head = []  # trained leaves between the layers and the head (the final norm)
    # Attention's score (Q K^T) and context (P V) matmuls: 2 B s^2 D FLOPs each forward; the
    # backward of each needs two matmuls of the same size (dQ, dK; dP, dV).
    attn_forward = 4.0 * batch * seq_len**2 * hidden
    attn_backward = 2.0 * attn_forward
    dw = np.zeros(C, np.float64)
    matrix_entries = np.zeros(L, np.float64)
    outside_forward = 0.0
    always_dw = 0.0
    lowest_always = L  # lowest layer an always-trained (excluded) leaf sits in
    below = np.zeros(C, bool)
    for spec in partition.leaves:
        layer, _ = comp_lib.layer_of(spec.path)
        if layer >= L:
            raise ValueError(
                f"analytic_costs: leaf {spec.path!r} is in layer {layer} but "
                f"num_layers={L}; layers must be in [0, {L - 1}].")
        name = spec.path.rsplit("/", 1)[-1]
        is_below = layer < 0 and emb.search(spec.path) is not None
        size = math.prod(spec.shape)
        rows = tokens if (layer >= 0 or is_below) else head_rows
        is_head = head_rx is not None and layer < 0 and head_rx.search(spec.path) is not None
        if is_head:
            rows = head_rows
            head_dx += 2.0 * rows * size
        if is_head and _is_table(spec.path, name, len(spec.shape), emb):
            per_entry = 2.0 * rows  # the tied output matmul's dW (the lookup's is free)
            outside_forward += per_entry * size
        elif layer < 0 and _is_table(spec.path, name, len(spec.shape), emb):
            per_entry = 0.0
        elif len(spec.shape) >= 2 and name not in ("bias", "scale"):
            per_entry = 2.0 * rows
            if layer >= 0:
                matrix_entries[layer] += size
            else:
                outside_forward += per_entry * size
        else:
            per_entry = float(rows)
        if spec.frozen:  # forward only: never differentiated
            continue
        if head_rx is not None and layer < 0 and not is_below and not is_head:
            needs_head.append(spec)
        if spec.n_groups == 0:
            always_dw += per_entry * size
            if size:
                lowest_always = min(lowest_always, layer if layer >= 0 else (-1 if is_below else L))
            continue
        per_group = size // spec.n_groups
        for cid in spec.component_ids:
            dw[cid] += per_entry * per_group
            below[cid] |= is_below

    under_head = np.zeros(C, bool)
    for spec in needs_head:
        if spec.n_groups == 0:
            lowest_always = min(lowest_always, L - 1)
        under_head[list(spec.component_ids)] = True
    comp_layer = np.array(
        [c.layer if c.layer >= 0 else (-1 if below[c.index] else (L - 1 if under_head[c.index]
                                                                    else L))
         for c in partition.components], dtype=np.int64)
    dx = 2.0 * tokens * matrix_entries + attn_backward
    dx[L - 1] += head_dx
    forward = float((2.0 * tokens * matrix_entries + attn_forward).sum() + outside_forward)
    # Excluded leaves are always trained: their dW and the backprop they need are fixed.
    start = max(lowest_always, 0)
    always_dx = float(dx[start:].sum()) if lowest_always < L else 0.0
    if lowest_always < L:
        dx[start:] = 0.0
    return ComponentCosts(dw=dw, layer=comp_layer, dx=dx,
                          fixed=forward + always_dw + always_dx, forward=forward,
                          layer_forward=2.0 * tokens * matrix_entries + attn_forward)


def calibrate(costs: ComponentCosts, *, full_flops: float, forward_flops: float) -> ComponentCosts:
    r"""Rescales ``costs`` to measured FLOPs (e.g. XLA's cost analysis).

    The forward pass becomes ``forward_flops``; every backward term (``dw``, ``dx`` and the
    backward part of ``fixed``) is multiplied by one common factor

    .. math::

      k = \frac{\mathrm{full\_flops} - \mathrm{forward\_flops}}
               {\mathrm{full} - \mathrm{forward}}, \qquad
      \mathrm{fixed}' = \mathrm{forward\_flops} + k\,(\mathrm{fixed} - \mathrm{forward}),
      \quad \mathrm{dw}' = k\,\mathrm{dw}, \quad \mathrm{dx}' = k\,\mathrm{dx},

    so that ``full`` equals ``full_flops`` and the relative costs of components and layers
    keep their analytic proportions.

    Args:
      costs: analytic costs (e.g. from :func:`analytic_costs`).
      full_flops: measured FLOPs of a full fine-tuning step (forward + backward).
      forward_flops: measured FLOPs of the forward pass.

    Returns:
      The rescaled :class:`ComponentCosts`.

    Raises:
      ValueError: unless ``0 < forward_flops < full_flops`` (finite), or when ``costs`` has
        no backward FLOPs to scale.
    """
    if not isinstance(costs, ComponentCosts):
        raise TypeError(f"calibrate: costs must be ComponentCosts, got {type(costs).__name__}.")
    for name, v in (("full_flops", full_flops), ("forward_flops", forward_flops)):
        if not _is_real(v) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"calibrate: {name}={v!r}; must be a finite number > 0.")
    if forward_flops >= full_flops:
        raise ValueError(f"calibrate: forward_flops={forward_flops!r} must be < "
                         f"full_flops={full_flops!r} (the backward pass costs something).")
    backward = costs.full - costs.forward
    if backward <= 0:
        raise ValueError(f"calibrate: costs have no backward FLOPs to scale (full={costs.full}, "
                         f"forward={costs.forward}).")
    k = (float(full_flops) - float(forward_flops)) / backward
    fixed = float(forward_flops) + k * (costs.fixed - costs.forward)
    lf = costs.layer_forward
    if lf is not None and costs.forward > 0:  # the forward scales to the measured one
        lf = lf * (float(forward_flops) / costs.forward)
    return ComponentCosts(dw=costs.dw * k, layer=costs.layer, dx=costs.dx * k, fixed=fixed,
                          forward=float(forward_flops), layer_forward=lf)


# ---------------------------------------------------------------------------- thresholds
def _check_budget(costs: ComponentCosts, budget: Any, fn: str) -> float:
    if not isinstance(costs, ComponentCosts):
        raise TypeError(f"{fn}: costs must be ComponentCosts, got {type(costs).__name__}.")
    if not _is_real(budget) or not 0 < budget <= 1:
        raise ValueError(f"{fn}: budget={budget!r}; must be a fraction of the full step in (0, 1].")
    budget = float(budget)
    full = costs.full
    if full <= 0:
        raise ValueError(f"{fn}: costs.full={full}; a budget needs a step that costs > 0 FLOPs.")
    if budget * full < costs.fixed:
        raise ValueError(
            f"{fn}: budget={budget!r} allows {budget * full:.4g} FLOPs but every step costs "
            f"fixed={costs.fixed:.4g} (forward + always-trained); the minimum budget is "
            f"fixed/full = {costs.fixed / full:.6g}.")
    return budget


def _common_unit(costs: ComponentCosts) -> int | None:
    """The gcd of all costs when they are integers small enough for exact int32 sums."""
    vals = [costs.fixed, *costs.dx.tolist(), *costs.dw.tolist()]
    if not all(float(v).is_integer() for v in vals) or costs.full >= 2.0**53:
        return None
    g = 0
    for v in vals:
        g = math.gcd(g, int(v))
    return g if g > 0 and costs.full / g < 2.0**_Q_BITS else None


def _quantise(
    costs: ComponentCosts, allowed: float, tails: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``dw`` and remaining budgets (``-1``: infeasible) in units where fitting is exact.

    Integer costs (e.g. analytic FLOPs) whose gcd brings ``full`` below ``2**30`` are
    represented exactly, and the float64 reference ``step_cost`` is exact on them too. Other
    costs are rounded conservatively: ``dw`` up, the remaining budget down after a relative
    slack that covers the reference's float64 rounding.
    """
    g = _common_unit(costs)
    if g is not None:
        dwq = np.array([int(v) // g for v in costs.dw.tolist()], np.int64)
        allowed_q = Fraction(allowed)
        remq = np.array([
            math.floor((allowed_q - int(costs.fixed) - int(t)) / g) for t in tails.tolist()],
            dtype=np.float64)
        return dwq, np.maximum(remq, -1.0)
    unit = max(costs.full, 1e-300) / 2.0**_Q_BITS  # full >= every dw sum and remainder
    dwq = np.ceil(costs.dw / unit).astype(np.int64)
    rem = allowed - costs.fixed - tails
    remq = np.floor((rem - _SLACK * allowed) / unit)
    return dwq, np.where(rem >= 0, np.maximum(remq, -1.0), -1.0)


def budget_threshold(costs: ComponentCosts, budget: float) -> Callable[[jax.Array], jax.Array]:
    r"""A ``threshold=`` callable that keeps each step within ``budget * costs.full`` FLOPs.

    For every candidate lowest layer :math:`m \in \{-1, 0, \dots, L\}` (all at once, as an
    ``[L + 2, C]`` matrix) the remaining budget is

    .. math::

      R_m = \mathrm{budget} \cdot \mathrm{full} - \mathrm{fixed}
            - \sum_{l \ge \max(m, 0)} \mathrm{dx}_l \quad (m = L: \text{no dx term}),

    the eligible components are those with :math:`\mathrm{layer}_i \ge m` (and
    :math:`\mathrm{dw}_i \le R_m`), taken greedily by :math:`r_i / \mathrm{dw}_i` (free
    components, :math:`\mathrm{dw}_i = 0`, first; ties: higher layer, then lower index), and
    the candidate keeps the longest prefix whose cumulative :math:`\mathrm{dw}` fits
    :math:`R_m`. Its value is the captured residual mass :math:`\sum_{i \in S_m} r_i`; the
    mask of the best candidate is returned (ties: higher :math:`m`, the cheaper backprop, so
    zero-mass components of lower layers are not paid for). If that mask is empty, or a
    single component that fits on its own holds more mass, that component is returned
    instead: at least one component is active whenever one fits, and the result captures at
    least half the optimal mass. Non-finite or negative residuals count as 0.

    Against the exact optimum :math:`V^*` (:func:`budget_threshold_exact`, whose lowest
    layer is :math:`m^*`) the captured mass is at least
    :math:`\max(V^* - \max_{\mathrm{layer}_i \ge m^*} r_i,\; V^*/2)`, and exactly
    :math:`V^*` when all non-free components have equal ``dw`` (e.g. a heads-only
    partition). Every mask satisfies ``costs.step_cost(mask) <= budget * costs.full``:
    inside the traced function the fit is checked in int32. Integer costs (as
    :func:`analytic_costs` gives) are divided by their gcd and checked exactly; other costs
    (e.g. calibrated) become multiples of :math:`2^{-30}` ``full`` (``dw`` rounded up,
    :math:`R_m` rounded down after a :math:`10^{-9}` relative slack), so a budget that
    equals the cost of a set to that precision may leave out one of its components (except
    when the set is everything of layers :math:`\ge m`, which is checked exactly).

    The returned function is pure ``jnp`` with static shapes: it runs under ``jit``,
    ``vmap`` and inside :func:`~rgft_jax.residual_guided` with traced residuals, without
    recompiling when the residuals change.

    Args:
      costs: the cost model of the partition the transform uses.
      budget: fraction of ``costs.full`` one step may cost, in ``(0, 1]``.

    Returns:
      ``residuals float32[C] -> bool[C]``.

    Raises:
      ValueError: when ``budget`` is not in ``(0, 1]`` or ``budget * full < fixed`` (nothing
        fits; the message gives the minimum budget ``fixed / full``).
    """
    budget = _check_budget(costs, budget, "budget_threshold")
    C, L = costs.num_components, costs.num_layers
    dw, layer = costs.dw, costs.layer
    allowed = budget * costs.full
    cands = np.arange(-1, L + 1)  # candidate lowest layers m
    M = cands.shape[0]
    tails = np.array([costs.dx_tail(int(m)) for m in cands])
    rem = allowed - costs.fixed - tails  # float64 [M]
    eligible = layer[None, :] >= cands[:, None]  # [M, C]

    dwq, remq = _quantise(costs, allowed, tails)
    # Where every eligible component fits exactly (checked with step_cost itself), allow all.
    for j in range(M):
        if rem[j] >= 0 and costs.step_cost(eligible[j]) <= allowed:
            remq[j] = max(remq[j], float(dwq[eligible[j]].sum()))
    remq = np.clip(remq, -1, np.iinfo(np.int32).max).astype(np.int32)
    if dwq.sum() >= np.iinfo(np.int32).max:  # cannot happen with C < 2**30
        raise ValueError(f"budget_threshold: too many components (C={C}) for int32 costs.")
    dwq = dwq.astype(np.int32)
    feasible = remq >= 0
    # A component too big for a candidate on its own can never be in its prefix: dropping it
    # keeps the prefix going (this is what makes the greedy + single fallback a 1/2-approx).
    eligible = eligible & (dwq[None, :] <= remq[:, None])

    free = dw == 0
    log_dw = np.log(np.where(free, 1.0, dw)).astype(np.float32)
    # Static tie-break rank: higher layer first, then lower index.
    tie_rank = np.empty(C, np.int32)
    tie_rank[np.lexsort((np.arange(C), -layer))] = np.arange(C, dtype=np.int32)

    # Single-component fallback: components that fit on their own (checked with step_cost).
    single_cost = np.array([costs.step_cost(np.arange(C) == i) for i in range(C)])
    single_ok = single_cost <= allowed
    cheap_rank = np.empty(C, np.int32)
    cheap_rank[np.lexsort((np.arange(C), single_cost))] = np.arange(C, dtype=np.int32)
    consts = (free, log_dw, tie_rank, eligible, dwq, remq, feasible, single_ok, cheap_rank)

    def threshold(residuals: jax.Array) -> jax.Array:
        r = jnp.asarray(residuals, jnp.float32)
        if r.shape != (C,):
            raise ValueError(f"budget_threshold: residuals have shape {r.shape}; the costs are "
                             f"for C={C} components.")
        return _greedy_select(r, *consts)

    threshold.__doc__ = (f"Budgeted mask: at most {budget:g} x {costs.full:.4g} FLOPs per step "
                         f"over C={C} components (see rgft_jax budget_threshold).")
    threshold.__name__ = f"budget_threshold_{budget:g}"
    return threshold


@jax.jit
def _greedy_select(r, free, log_dw, tie_rank, eligible, dwq, remq, feasible, single_ok,
                   cheap_rank):
    """The traced part of :func:`budget_threshold` (jitted once per ``(M, C)`` shape)."""
    M, C = eligible.shape
    r = jnp.where(jnp.isfinite(r), jnp.maximum(r, 0.0), 0.0)
    key = jnp.where(free, jnp.inf, jnp.log(r) - log_dw)  # log(r / dw); r = 0 -> -inf
    order = jnp.lexsort((tie_rank, -key))  # descending key, then tie rank
    elig = eligible[:, order]  # [M, C] in greedy order
    cost = jnp.where(elig, dwq[order][None, :], 0)
    cum = jnp.cumsum(cost, axis=1, dtype=jnp.int32)
    take_sorted = elig & (cum <= remq[:, None])
    take = jnp.zeros((M, C), bool).at[:, order].set(take_sorted)
    values = jnp.sum(jnp.where(take, r[None, :], 0.0), axis=1)
    values = jnp.where(feasible, values, -jnp.inf)
    best = M - 1 - jnp.argmax(values[::-1])  # ties -> higher m (cheaper backprop)
    mask, value = take[best], values[best]
    # Fallback: the single component with most mass among those that fit alone.
    rs = jnp.where(single_ok, r, -jnp.inf)
    rmax = jnp.max(rs)
    pick = jnp.argmin(jnp.where(single_ok & (rs == rmax), cheap_rank, C))
    single = jnp.arange(C) == pick
    use_single = jnp.any(single_ok) & ((rmax > value) | ~jnp.any(mask))
    return jnp.where(use_single, single, mask)


def budget_threshold_exact(
    costs: ComponentCosts, budget: float, residuals: Any
) -> np.ndarray:
    """The exact optimum of the budgeted mask by brute force over all ``2**C`` subsets.

    Maximises ``sum(residuals[mask])`` subject to ``costs.step_cost(mask) <= budget *
    costs.full`` (ties: the cheaper mask, then the first in enumeration order). A reference
    for tests of :func:`budget_threshold`.

    Args:
      costs: the cost model, with ``C <= 16`` components.
      budget: fraction of ``costs.full``, in ``(0, 1]``.
      residuals: ``float[C]`` (numpy).

    Returns:
      ``bool[C]``, the optimal active set.

    Raises:
      ValueError: on ``C > 16``, residuals of the wrong shape, or an invalid budget.
    """
    budget = _check_budget(costs, budget, "budget_threshold_exact")
    C, L = costs.num_components, costs.num_layers
    if C > _MAX_EXACT:
        raise ValueError(f"budget_threshold_exact: C={C} components; brute force needs "
                         f"C <= {_MAX_EXACT}.")
    r = np.asarray(residuals, np.float64)
    if r.shape != (C,):
        raise ValueError(f"budget_threshold_exact: residuals have shape {r.shape}; expected "
                         f"({C},).")
    masks = np.array(list(itertools.product((False, True), repeat=C)), dtype=bool).reshape(-1, C)
    lowest = np.where(masks, costs.layer[None, :], L).min(axis=1)
    tails = np.array([costs.dx_tail(m) for m in range(-1, L + 1)])
    cost = costs.fixed + tails[lowest + 1] + masks.astype(np.float64) @ costs.dw
    values = masks.astype(np.float64) @ r
    ok = cost <= budget * costs.full
    values = np.where(ok, values, -np.inf)
    best = np.lexsort((np.arange(len(masks)), cost, -values))[0]
    return masks[best].copy()


def depth_cut_threshold(
    costs: ComponentCosts, budget: float
) -> Callable[[jax.Array], jax.Array]:
    r"""A budgeted mask that first chooses the depth cut by residuals, then what to train in it.

    Stage 1 (the cut): for every cut :math:`m \in \{-1, \dots, L - 1\}` whose backprop fits
    the budget (``fixed + dx_tail(m) <= budget * full``) the density of training everything
    at or above it,

    .. math::

      \rho_m = \frac{\sum_{\mathrm{layer}_i \ge m} r_i}
                    {\mathrm{fixed} + \sum_{l \ge \max(m, 0)} \mathrm{dx}_l
                     + \sum_{\mathrm{layer}_i \ge m} \mathrm{dw}_i},

    and the cut of highest density is chosen (ties: the higher cut). It is an adaptive
    "top ``k`` layers": deep when the residual mass sits low, shallow when the top layers
    hold it. Stage 2 (inside the cut): :func:`budget_threshold` over the residuals of the
    components at or above the cut (the others count as 0), i.e. whole layers when they fit,
    heads / neuron groups by residual mass per FLOP when they do not. The mask never costs
    more than ``budget * full`` (stage 2's guarantee) and may cost less: a shallow cut that
    fits whole leaves the rest of the budget unspent. When no layer's backprop fits, only
    the components above every layer (layer ``L``) are candidates.

    Args:
      costs: the cost model of the partition the transform uses.
      budget: fraction of ``costs.full`` one step may cost, in ``(0, 1]``.

    Returns:
      ``residuals float32[C] -> bool[C]`` (pure ``jnp``, static shapes: traceable).

    Raises:
      ValueError: as :func:`budget_threshold`.

    Example:
      >>> costs = ComponentCosts(dw=[1.0] * 5, layer=[0, 0, 1, 1, 2], dx=[1.0, 1.0],
      ...                        fixed=1.0)
      >>> r = jnp.array([0.2, 0.15, 0.3, 0.15, 0.2])
      >>> depth_cut_threshold(costs, 0.75)(r).tolist()  # the whole top layer + head
      [False, False, True, True, True]
      >>> budget_threshold(costs, 0.75)(r).tolist()  # most mass: spread over both layers
      [True, False, True, False, True]
    """
    budget = _check_budget(costs, budget, "depth_cut_threshold")
    inner = budget_threshold(costs, budget)
    C, L = costs.num_components, costs.num_layers
    cuts = np.arange(-1, L)
    tails = np.array([costs.dx_tail(int(m)) for m in cuts])
    above = costs.layer[None, :] >= cuts[:, None]  # [L + 1, C]
    cost_all = costs.fixed + tails + above.astype(np.float64) @ costs.dw
    feasible = costs.fixed + tails <= budget * costs.full
    consts = (jnp.asarray(above, jnp.float32), jnp.asarray(cost_all, jnp.float32),
              jnp.asarray(feasible), jnp.asarray(cuts, jnp.int32),
              jnp.asarray(costs.layer, jnp.int32))
    any_cut = bool(feasible.any())

    def threshold(residuals: jax.Array) -> jax.Array:
        r = jnp.asarray(residuals, jnp.float32)
        if r.shape != (C,):
            raise ValueError(f"depth_cut_threshold: residuals have shape {r.shape}; the costs "
                             f"are for C={C} components.")
        r = jnp.where(jnp.isfinite(r), jnp.maximum(r, 0.0), 0.0)
        above_f, cost_f, feas, cut_ids, layer = consts
        if any_cut:
            score = jnp.where(feas, (above_f @ r) / cost_f, -jnp.inf)
            cut = cut_ids[cut_ids.shape[0] - 1 - jnp.argmax(score[::-1])]  # ties: higher
        else:
            cut = jnp.int32(L)
        return inner(jnp.where(layer >= cut, r, 0.0))

    threshold.__doc__ = (f"Depth-cut budgeted mask: at most {budget:g} x {costs.full:.4g} "
                         f"FLOPs per step over C={C} components (see depth_cut_threshold).")
    threshold.__name__ = f"depth_cut_threshold_{budget:g}"
    return threshold


def cost_flops(stage) -> float:
    """XLA's cost-analysis FLOPs of a lowered or compiled computation (NaN when unavailable):
    the count the Trainer records per step and the Layer Card per probe batch."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without a cost analysis
        return float("nan")
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))
