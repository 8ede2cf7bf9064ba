# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Layer Card: per-layer residual, activation energy, coupling and cost of a model.

:func:`compute` probes a model on a few batches (:func:`rgft_jax.layer_card.probe`), turns
the raw statistics into per-matrix and per-layer quantities (:mod:`._stats`) and attaches
the cost of adapting each layer from the library's analytic cost model
(:func:`rgft_jax.analytic_costs`, the one the budgeted masks use). The card renders as JSON,
Markdown and one PNG figure, and :func:`rgft_jax.layer_card.place` turns it into a
placement.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from rgft_jax._src import components as comp_lib
from rgft_jax._src import presets
from rgft_jax._src.budget import analytic_costs, output_head
from rgft_jax.layer_card import _probe, _stats

__all__ = ["LayerCard", "compute"]


@dataclasses.dataclass(frozen=True)
class LayerCard:
    """Per-layer diagnostics of one model on one task (all arrays indexed like ``layers``).

    Attributes:
      layers: layer indices.
      res: projected residual norm per layer, ``sqrt(sum over its matrices of Res^2)``.
      grad_norm: Frobenius norm of the layer's target gradients.
      energy: mean over the layer's matrices of ``tr Σ`` (activation energy).
      condition: largest condition number of the layer's (ridged) input covariances (NaN
        when computed with ``spectrum=False``; so is ``effective_rank``).
      effective_rank: mean effective rank of the layer's input covariances.
      train_cost: FLOPs of a step that fully trains only this layer, as a fraction of full
        fine-tuning (forward + backprop down to the layer + its weight gradients).
      lora_cost: the same for rank-``lora_rank`` LoRA on the layer's target matrices.
      lora_params: adapter parameters of that LoRA.
      inference_flops: extra FLOPs per token of unmerged adapters on the layer.
      rho: ``[L, L]`` whitened gradient coupling between layers (0 on the diagonal; NaN off
        it when not measured, see :attr:`has_coupling`).
      coupling: global coupling ``||D^{-1/2} E D^{-1/2}||_2`` (see :func:`._stats.coupling`;
        NaN when not measured).
      matrices: per-matrix rows (path, layer, res, grad_norm, energy, condition,
        effective_rank, d_in, d_out).
      meta: how the card was measured (batches, tokens, ridge, lora_rank, sketch samples,
        batch shape) and what it cost: ``probe_flops`` (see :func:`probe_flops`), against
        ``full_step_flops`` (the cost model's full fine-tuning step at ``batch_shape``).
      dx_tail: ``[L]`` backprop FLOPs fractions used by :meth:`set_cost` (per layer).
      forward: FLOPs fraction of a step that trains only the task head (the forward pass plus
        the head's weight gradients).
      dw: ``[L]`` weight-gradient FLOPs fraction of fully training each layer.
      lora_dw: ``[L]`` adapter FLOPs fraction (forward + backward of the adapters).
      layer_forward: ``[L]`` forward FLOPs fraction of each layer: what a step that reads the
        activation cache does not run below its lowest trained layer (``None`` on cards
        written before it was recorded; :meth:`set_cost` then needs ``hit_rate=0``).
    """

    layers: tuple[int, ...]
    res: np.ndarray
    grad_norm: np.ndarray
    energy: np.ndarray
    condition: np.ndarray
    effective_rank: np.ndarray
    train_cost: np.ndarray
    lora_cost: np.ndarray
    lora_params: np.ndarray
    inference_flops: np.ndarray
    rho: np.ndarray
    coupling: float
    matrices: tuple[dict[str, Any], ...]
    meta: dict[str, Any]
    dx_tail: np.ndarray
    forward: float
    dw: np.ndarray
    lora_dw: np.ndarray
    layer_forward: np.ndarray | None = None

    @property
    def has_coupling(self) -> bool:
        """Whether ``rho`` was measured (``compute(..., coupling=False)`` leaves it NaN)."""
        return bool(self.meta.get("coupling_measured", True) and np.all(np.isfinite(self.rho)))

    @property
    def gain(self) -> np.ndarray:
        """Predicted loss reduction of adapting each layer alone: ``Res^2 / 2``."""
        return 0.5 * self.res**2

    def set_cost(self, layers: Iterable[int], kind: str = "lora", *,
                 hit_rate: float = 0.0) -> float:
        """FLOPs fraction of a step that adapts the set ``layers`` (``'lora'``) or fully trains
        it (``'train'``): the forward pass, backprop down to the lowest layer of the set
        (shared by all of them) and each layer's own weight/adapter gradients.

        ``hit_rate``: the expected fraction of steps that read the frozen layers below the
        set from the activation cache (about ``(E - 1) / E`` over ``E`` epochs of a fixed
        training set); those steps do not run the forward pass of the layers below the set's
        lowest one, so the cost is the *expected* step cost, as in
        :meth:`rgft_jax.ComponentCosts.with_cache`.
        """
        if kind not in ("lora", "train"):
            raise ValueError(f"LayerCard.set_cost: kind={kind!r}; allowed: 'lora', 'train'.")
        if isinstance(hit_rate, bool) or not isinstance(hit_rate, (int, float)) or not (
                0 <= hit_rate <= 1):
            raise ValueError(f"LayerCard.set_cost: hit_rate={hit_rate!r}; allowed: a number "
                             "in [0, 1].")
        if hit_rate and self.layer_forward is None:
            raise ValueError(f"LayerCard.set_cost: hit_rate={hit_rate!r} needs the card's "
                             "layer_forward, which this (older) card lacks; allowed: 0, or a "
                             "card computed again.")
        idx = [self._index(layer) for layer in layers]
        cut = min(idx) if idx else len(self.layers)
        saved = float(hit_rate * np.sum(self.layer_forward[:cut])) if hit_rate else 0.0
        if not idx:
            return float(self.forward) - saved
        own = self.lora_dw if kind == "lora" else self.dw
        return float(self.forward + self.dx_tail[cut] + sum(own[i] for i in idx)) - saved

    def _index(self, layer: int) -> int:
        try:
            return self.layers.index(int(layer))
        except ValueError:
            raise ValueError(f"LayerCard: layer {layer!r} is not on the card; layers: "
                             f"{list(self.layers)}.") from None

    # ----------------------------------------------------------------- renderings
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python view (lists and floats) of every field."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        out["layers"] = list(self.layers)
        out["matrices"] = [dict(m) for m in self.matrices]
        out["gain"] = self.gain.tolist()
        return out

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The card as JSON (written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=1, default=float)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> LayerCard:
        """Reads a card written by :meth:`to_json` (a JSON string or a file path)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path) as f:
                text = f.read()
        d = json.loads(text)
        d.pop("gain", None)
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in d and f.default is not dataclasses.MISSING:
                continue  # a field added since the card was written: its default
            v = d[f.name]
            if f.name == "layers":
                v = tuple(int(x) for x in v)
            elif f.name == "matrices":
                v = tuple(v)
            elif f.name not in ("coupling", "meta", "forward") and v is not None:
                v = np.asarray(v, np.float64)
            kw[f.name] = v
        return cls(**kw)

    def to_markdown(self) -> str:
        """A per-layer table plus the coupling summary."""
        head = ("| layer | Res | Res rank | grad norm | E_act (tr Σ) | cond | eff. rank | "
                "train cost | LoRA cost | LoRA params | +FLOPs/token |")
        lines = [head, "|" + "---|" * 11]
        rank = np.empty(len(self.layers), int)
        rank[np.argsort(-self.res, kind="stable")] = np.arange(1, len(self.layers) + 1)
        for i, layer in enumerate(self.layers):
            lines.append(
                f"| {layer} | {self.res[i]:.4g} | {rank[i]} | {self.grad_norm[i]:.4g} | "
                f"{self.energy[i]:.4g} | {self.condition[i]:.3g} | {self.effective_rank[i]:.1f} | "
                f"{self.train_cost[i]:.3f} | {self.lora_cost[i]:.3f} | "
                f"{int(self.lora_params[i]):,} | {int(self.inference_flops[i]):,} |")
        m = self.meta
        if self.has_coupling:
            off = self.rho[~np.eye(len(self.layers), dtype=bool)] if len(self.layers) > 1 else (
                np.zeros(1))
            coupling_line = (
                f"Coupling: global {self.coupling:.3f}; pairwise max {off.max():.3f}, "
                f"mean {off.mean():.3f}; independent layers would show about "
                f"{m.get('rho_null', float('nan')):.3f} with this many samples (whitened "
                f"gradient second moments from {m.get('sketch_samples')} micro-batch "
                f"gradients, {m.get('sketch_dims')} sketch dimensions per layer).")
        else:
            coupling_line = "Coupling: not measured (the card was computed with coupling=False)."
        lines += [
            "",
            coupling_line,
            f"Probe: {m.get('batches')} batches, {m.get('tokens'):.0f} input rows, ridge "
            f"{m.get('ridge')}; costs are fractions of a full fine-tuning step at batch shape "
            f"{m.get('batch_shape')}, LoRA rank {m.get('lora_rank')}.",
        ]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike, *, title: str | None = None) -> str:
        """One figure: per-layer profiles (Res, E_act, gradient norm, cost) and the coupling
        heatmap. Returns ``path``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x = np.asarray(self.layers)
        # Every layer labelled up to 16 layers; beyond, about 10 labels (30 layers: 0, 3, ...).
        every = 1 if len(x) <= 16 else int(np.ceil(len(x) / 10))
        ticks = np.arange(0, len(x), every)
        fig = plt.figure(figsize=(13, 6.2))
        grid = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.15])
        panels = [
            (grid[0, 0], self.res, "projected residual norm Res", "C0", False),
            # Log scale where a few layers dwarf the rest (Llama's outlier layers: 1000x).
            (grid[0, 1], self.energy, "activation energy tr Σ", "C1",
             float(np.max(self.energy)) > 100 * max(float(np.min(self.energy)), 1e-30)),
            (grid[1, 0], self.grad_norm, "gradient norm", "C2", False),
        ]
        for spec, values, label, color, log in panels:
            ax = fig.add_subplot(spec)
            ax.bar(x, values, color=color)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("layer")
            ax.set_xticks(x[ticks])
            if log:
                ax.set_yscale("log")
        ax = fig.add_subplot(grid[1, 1])
        ax.plot(x, self.train_cost, "o-", label="train layer")
        ax.plot(x, self.lora_cost, "s-", label=f"LoRA r={self.meta.get('lora_rank')}")
        ax.set_ylim(0, 1.05)
        ax.set_title("step FLOPs / full fine-tuning", fontsize=10)
        ax.set_xlabel("layer")
        ax.set_xticks(x[ticks])
        ax.legend(fontsize=8)
        ax = fig.add_subplot(grid[:, 2])
        if self.has_coupling:
            im = ax.imshow(self.rho, vmin=0, vmax=max(1e-6, float(self.rho.max())),
                           cmap="viridis")
            ax.set_xticks(ticks, x[ticks])
            ax.set_yticks(ticks, x[ticks])
            for i in range(len(x) if len(x) <= 12 else 0):  # values only where they fit
                for j in range(len(x)):
                    if i != j:
                        ax.text(j, i, f"{self.rho[i, j]:.2f}", ha="center", va="center",
                                fontsize=7, color="w" if self.rho[i, j] < 0.6 * self.rho.max()
                                else "k")
            null = self.meta.get("rho_null")
            ax.set_title(f"coupling ρ (global {self.coupling:.2f}"
                         + (f"; independent ≈ {null:.2f})" if null is not None else ")"),
                         fontsize=10)
            fig.colorbar(im, ax=ax, fraction=0.046)
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, "coupling not measured\n(coupling=False)", ha="center",
                    va="center", fontsize=11, transform=ax.transAxes)
        fig.suptitle(title or f"Layer Card ({self.meta.get('model', 'model')}, "
                     f"{self.meta.get('tokens', 0):.0f} probe rows)", fontsize=12)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return os.fspath(path)


def probe_flops(pr: _probe.ProbeResult, *, spectrum: bool = True) -> float:
    """FLOPs the card cost: XLA's count of the probe's batch steps (batch gradient, input
    covariances, micro-batch gradient sketches when coupling is measured) plus, per matrix,
    the dense linear algebra done once at the end, which XLA's count does not see (LAPACK
    calls): the Cholesky factor of ``Σ_λ`` (``d^3 / 3``) and ``L^{-1} G`` (``d^2 d_out``) for
    Res, and with ``spectrum`` ``eigvalsh`` for the energy's condition and effective rank
    (``4 d^3 / 3`` for the tridiagonal reduction, rounded up to ``5 d^3 / 3``)."""
    tail = sum(m.d_in**3 / 3.0 + float(m.d_in) ** 2 * m.d_out
               + (5.0 * m.d_in**3 / 3.0 if spectrum else 0.0) for m in pr.matrices)
    return float(pr.flops + tail)


def _hidden(matrices: Sequence[_probe.MatrixProbe]) -> int:
    return Counter(m.d_in for m in matrices).most_common(1)[0][0]


def compute(
    model: nnx.Module,
    batches: Iterable[Mapping[str, Any]],
    loss_fn: Callable[[nnx.Module, Mapping[str, Any]], Any],
    *,
    num_heads: int,
    batch_shape: tuple[int, int],
    targets: str = _probe.DEFAULT_TARGETS,
    ridge: float = 1e-3,
    lora_rank: int = 8,
    micro_batch: int = 1,
    sketch_width: int = 2,
    coupling_ridge: float = 1e-2,
    weights_key: str | None = "attention_mask",
    seed: int = 0,
    name: str = "model",
    coupling: bool = True,
    spectrum: bool = True,
) -> LayerCard:
    """Probes ``model`` on ``batches`` and builds its :class:`LayerCard`.

    Args:
      model: an NNX model built from :class:`~rgft_jax.models.Projection` modules.
      batches: a few host batches of the task (e.g. 8 × 32 sequences).
      loss_fn: ``loss_fn(model, batch) -> scalar`` mean task loss.
      num_heads: attention heads per layer (cost model).
      batch_shape: ``(batch, seq_len)`` of the training step the costs refer to.
      targets: regex of the adaptable projections (default: every projection in a layer).
      ridge: relative ridge of ``Σ`` (see :func:`._stats.projected_residual_norm`).
      lora_rank: rank of the LoRA whose cost the card reports.
      micro_batch: rows per gradient sample for the coupling estimate.
      sketch_width: sketch width per matrix (``w^2`` numbers per matrix).
      coupling_ridge: relative ridge of the coupling whitening.
      weights_key: batch key of the padding mask weighting ``Σ``'s rows.
      seed: seed of the sketches.
      name: model name shown on the card.
      coupling: ``False``: skip the micro-batch gradient sketches (about one full step per
        probe batch): ``rho`` is NaN off the diagonal, ``coupling`` NaN, and
        ``place(objective='spread')`` refuses the card. Placements by Res (``max_quality``,
        ``min_cost``) do not need it.
      spectrum: ``False``: skip the covariance eigenvalues (``4 d^3 / 3`` per matrix):
        ``condition`` and ``effective_rank`` are NaN; ``energy`` (``tr Σ``) stays.

    Returns:
      The :class:`LayerCard`.
    """
    if not (isinstance(ridge, (int, float)) and ridge > 0):
        raise ValueError(f"layer_card.compute: ridge={ridge!r} must be a number > 0.")
    if not isinstance(lora_rank, int) or lora_rank < 1:
        raise ValueError(f"layer_card.compute: lora_rank={lora_rank!r} must be an int >= 1.")
    if not (isinstance(batch_shape, (tuple, list)) and len(batch_shape) == 2
            and all(isinstance(v, int) and v >= 1 for v in batch_shape)):
        raise ValueError(f"layer_card.compute: batch_shape={batch_shape!r} must be (batch, "
                         "seq_len) with ints >= 1.")
    for flag, v in (("coupling", coupling), ("spectrum", spectrum)):
        if not isinstance(v, bool):
            raise ValueError(f"layer_card.compute: {flag}={v!r} must be True or False.")
    pr = _probe.probe(model, batches, loss_fn, targets=targets, micro_batch=micro_batch,
                      sketch_width=sketch_width, weights_key=weights_key, seed=seed,
                      coupling=coupling)
    rows = []
    nan = float("nan")
    for m in pr.matrices:
        sigma = m.moments.xx / max(float(m.moments.count), 1.0)
        if spectrum:
            energy = jax.device_get(_stats.activation_energy(sigma, ridge=ridge))
        else:
            energy = {"trace": np.trace(sigma), "condition": nan, "effective_rank": nan}
        rows.append({
            "path": m.path, "layer": m.layer, "d_in": m.d_in, "d_out": m.d_out,
            "res": float(_stats.projected_residual_norm(m.grad, sigma, ridge=ridge)),
            "grad_norm": float(np.linalg.norm(m.grad)),
            "energy": float(energy["trace"]), "condition": float(energy["condition"]),
            "effective_rank": float(energy["effective_rank"]),
        })
    layers = tuple(pr.layers)

    def per_layer(fn):
        return np.asarray([fn([r for r in rows if r["layer"] == layer]) for layer in layers],
                          np.float64)

    res = per_layer(lambda rs: math.sqrt(sum(r["res"] ** 2 for r in rs)))
    grad_norm = per_layer(lambda rs: math.sqrt(sum(r["grad_norm"] ** 2 for r in rs)))
    energy = per_layer(lambda rs: float(np.mean([r["energy"] for r in rs])))
    condition = per_layer(lambda rs: max(r["condition"] for r in rs))
    eff_rank = per_layer(lambda rs: float(np.mean([r["effective_rank"] for r in rs])))
    if coupling:
        rho = _stats.whitened_coupling_matrix(pr.sketches, ridge=coupling_ridge)
        # The level independent layers would show with this many samples and dimensions
        # (sample canonical correlations are biased upwards): the same estimate after
        # permuting each layer's samples independently, which destroys every cross-layer
        # dependence.
        rng = np.random.default_rng(seed)
        shuffled = np.stack([pr.sketches[rng.permutation(len(pr.sketches)), i]
                             for i in range(pr.sketches.shape[1])], 1)
        null = _stats.whitened_coupling_matrix(shuffled, ridge=coupling_ridge)
        rho_null = (float(null[~np.eye(len(layers), dtype=bool)].mean()) if len(layers) > 1
                    else 0.0)
        global_coupling = _stats.coupling(rho)
    else:  # not measured
        rho = np.where(np.eye(len(layers), dtype=bool), 0.0, nan)
        rho_null = global_coupling = nan

    # Costs: the library's analytic model over a by-layer partition of the model's params.
    _, params, _ = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    part = comp_lib.Partition.build(params, presets.by_layer())
    num_layers = 1 + max(max(layers), max((c.layer for c in part.components), default=0))
    batch, seq_len = batch_shape
    tokens = batch * seq_len
    # A causal LM's output matmul is counted as the Trainer's cost model counts it (tied or
    # not): without it a decoder's full step, and every fraction of it, would be too small.
    lm_head = output_head(params)
    costs = analytic_costs(part, tokens=tokens, seq_len=seq_len, batch=batch,
                           num_layers=num_layers, hidden=_hidden(pr.matrices),
                           num_heads=num_heads, head_rows=tokens if lm_head else None,
                           output_head=lm_head)
    full = costs.full
    comp_of_layer = {c.layer: c.index for c in part.components if c.layer >= 0}
    dw = np.asarray([costs.dw[comp_of_layer[layer]] / full for layer in layers])
    dx_tail = np.asarray([costs.dx_tail(layer) / full for layer in layers])
    layer_forward = None if costs.layer_forward is None else np.asarray(
        [costs.layer_forward[layer] / full for layer in layers])
    # Every placement also trains the task head (components above the layers).
    head = float(costs.dw[costs.layer == costs.num_layers].sum())
    forward = float((costs.fixed + head) / full)
    lora_params = per_layer(lambda rs: sum(lora_rank * (r["d_in"] + r["d_out"]) for r in rs))
    # Adapter matmuls: forward (2 per entry per token) + backward (its two gradients: 4).
    lora_dw = 6.0 * tokens * lora_params / full
    train_cost = forward + dx_tail + dw
    lora_cost = forward + dx_tail + lora_dw
    meta = {
        "model": name, "batches": pr.batches, "tokens": pr.tokens, "ridge": ridge,
        "lora_rank": lora_rank, "sketch_samples": int(pr.sketches.shape[0]),
        "sketch_dims": int(pr.sketches.shape[2]), "batch_shape": list(batch_shape),
        "targets": targets, "micro_batch": micro_batch, "rho_null": rho_null,
        "full_step_flops": float(full),
        "probe_flops": probe_flops(pr, spectrum=spectrum),
        "coupling_measured": coupling, "spectrum_measured": spectrum,
    }
    return LayerCard(
        layers=layers, res=res, grad_norm=grad_norm, energy=energy, condition=condition,
        effective_rank=eff_rank, train_cost=train_cost, lora_cost=lora_cost,
        lora_params=lora_params, inference_flops=2.0 * lora_params, rho=rho,
        coupling=global_coupling, matrices=tuple(rows), meta=meta, dx_tail=dx_tail,
        forward=forward, dw=dw, lora_dw=lora_dw, layer_forward=layer_forward)
