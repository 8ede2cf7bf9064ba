# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reports people can look at: comparison tables (JSON + Markdown) and figures (PNG).

One reporting path for every recipe: :func:`write_report` takes the per-run records the
training loop produces and writes ``report.json``, ``report.md`` and the figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ARENA_COLUMNS",
    "TABLE_COLUMNS",
    "arena_summary",
    "arena_table",
    "average_histories",
    "ema",
    "error_map_grid",
    "markdown_table",
    "mean_std",
    "paired_ttest",
    "pareto_front",
    "plot_error_map",
    "plot_heatmaps",
    "plot_pareto",
    "plot_predicted_vs_true",
    "plot_training_curves",
    "time_to_quality",
    "value_at",
    "write_report",
]

#: (key, header, format) of the comparison table.
TABLE_COLUMNS = (
    ("method", "method", "{}"),
    ("seed", "seed", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("macro_f1", "macro-F1", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("retention_ratio", "retention ppl after/before", "{:.3f}"),
    ("step_time_s", "step time (s)", "{:.3f}"),
    ("step_time_ratio", "time / full", "{:.2f}"),
    ("gflops_per_step", "GFLOPs/step", "{:.1f}"),
    ("gflops_ratio", "GFLOPs / full", "{:.2f}"),
    ("update_ratio", "update ratio", "{:.3f}"),
    ("opt_state_mb", "opt state (MB)", "{:.1f}"),
    ("peak_step_mb", "peak step memory (MB)", "{:.0f}"),
    ("compilations", "compiles", "{}"),
)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns=TABLE_COLUMNS) -> str:
    """A Markdown table of ``rows`` with the given ``(key, header, format)`` columns."""
    cols = [c for c in columns if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("" if v is None else (fmt.format(v) if not isinstance(v, str) else v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def error_map_grid(
    residuals: np.ndarray, components: Sequence[Any], kind: str = "head"
) -> tuple[np.ndarray, list[int]]:
    """Arranges the residuals of components of ``kind`` as a ``[layers, groups]`` grid."""
    sel = _drawn(components, kind)
    if not sel:
        return np.zeros((0, 0)), []
    layers = sorted({c.layer for c in sel})
    groups = max(c.group for c in sel) + 1
    grid = np.full((len(layers), groups), np.nan)
    for c in sel:
        grid[layers.index(c.layer), c.group] = residuals[c.index]
    return grid, layers


def plot_error_map(
    history: Sequence[tuple[int, np.ndarray, np.ndarray]],
    components: Sequence[Any],
    path: str | os.PathLike,
    *,
    kind: str = "head",
    title: str = "RGFT error map",
    snapshots: int = 4,
) -> str | None:
    """Error-map heatmaps (layer x ``kind``) at a few steps, plus every component over time.

    Args:
      history: ``(step, residuals [C], mask [C])`` at each probe step.
      components: the partition's components.
      path: the PNG to write.
      kind: the component kind laid out as columns (``'head'``, ``'neuron'``...).
      snapshots: how many steps to draw as grids.

    Returns:
      The path written, or ``None`` when there is nothing to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return None
    # Snapshots evenly spaced in *steps* (probes are dense during warm-up, sparse later).
    steps_arr = np.array([h[0] for h in history], float)
    targets = np.linspace(steps_arr[0], steps_arr[-1], min(snapshots, len(history)))
    picks = np.unique([int(np.argmin(np.abs(steps_arr - t))) for t in targets])
    grids = [error_map_grid(history[i][1], components, kind) for i in picks]
    if grids[0][0].size == 0:
        return None
    c = len(components)
    # Outline the minority: masked components when most are active (mask = 1), active ones
    # when most are masked (a budgeted mask often trains no head at all, and boxing every
    # cell says nothing), decided once over the drawn snapshots so every panel means the same.
    drawn = _drawn(components, kind)
    outline = _outline_choice(drawn, [history[i][2] for i in picks])
    color, lw = ("lime", 1.2) if outline == "active" else ("cyan", 0.6)
    # Shares scale with 1/C: show them relative to the uniform share 1/C.
    vmax = max(np.nanmax(g) for g, _ in grids) * c
    # Taller grids for deep models, so 30 layers of cells stay legible.
    height = 7.5 + max(0, len(grids[0][1]) - 12) * 0.12
    fig = plt.figure(figsize=(max(3.2 * len(picks) + 1.5, 9.0), height), constrained_layout=True)
    gs = fig.add_gridspec(2, len(picks) + 1, height_ratios=[1.0, 1.1],
                          width_ratios=[1] * len(picks) + [0.06])
    im = None
    for j, (i, (grid, layers)) in enumerate(zip(picks, grids)):
        ax = fig.add_subplot(gs[0, j])
        im = ax.imshow(grid * c, aspect="auto", cmap="magma", vmin=0, vmax=vmax)
        step, _, mask = history[i]
        for comp in drawn:
            if (mask[comp.index] >= 1) == (outline == "active"):
                ax.add_patch(plt.Rectangle((comp.group - 0.5, layers.index(comp.layer) - 0.5),
                                           1, 1, fill=False, ec=color, lw=lw, alpha=0.9))
        ax.set_title(f"step {step}", fontsize=10)
        ax.set_xlabel(kind)
        ax.set_xticks(range(grid.shape[1]))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel("layer")
        # Deep models (SmolLM2: 30 layers): label every k-th layer, at most ~16 labels.
        every = max(1, -(-len(layers) // 16))
        ax.set_yticks(range(0, len(layers), every), layers[::every])
        ax.tick_params(axis="y", labelsize=7 if len(layers) > 12 else 9)
    fig.colorbar(im, cax=fig.add_subplot(gs[0, -1]), label="residual x C (1 = uniform)")
    ax = fig.add_subplot(gs[1, :])
    steps = [h[0] for h in history]
    order = sorted(range(c), key=lambda i: (components[i].kind, components[i].layer,
                                            components[i].group))
    mat = np.stack([h[1] for h in history], axis=1)[order] * c
    # Shares span orders of magnitude (an embedding table vs a LayerNorm bias): log colours.
    pos = mat[mat > 0]
    norm = matplotlib.colors.LogNorm(vmin=max(pos.min(), 1e-3) if pos.size else 1e-3,
                                     vmax=pos.max() if pos.size else 1.0)
    # Probe steps are unevenly spaced (every step in warm-up, then every N): true x spacing.
    st = np.asarray(steps, float)
    mids = (st[1:] + st[:-1]) / 2 if len(st) > 1 else np.array([])
    edges = np.concatenate([[st[0] - 0.5], mids, [st[-1] + 0.5]])
    im2 = ax.pcolormesh(edges, np.arange(c + 1), np.maximum(mat, norm.vmin), cmap="magma",
                        norm=norm, shading="flat")
    ax.set_ylim(c, 0)
    kinds = [components[i].kind for i in order]
    bounds = [0, *[k for k in range(1, c) if kinds[k] != kinds[k - 1]], c]
    for b in bounds[1:-1]:
        ax.axhline(b, color="white", lw=0.6)
    ax.set_yticks([(a + b) / 2 for a, b in zip(bounds, bounds[1:])],
                  [f"{kinds[a]} ({b - a})" for a, b in zip(bounds, bounds[1:])], fontsize=8)
    ax.set_xlabel("step")
    ax.set_title("every component over training (grouped by kind, layer-major)\n"
                 "right strip: active (white; mask = 1) at the last probe", fontsize=10)
    # Which components the last mask trains, row-aligned with the panel.
    strip = ax.inset_axes([1.004, 0.0, 0.012, 1.0])
    last = (np.asarray(history[-1][2])[order] >= 1).astype(float)
    strip.pcolormesh([0, 1], np.arange(c + 1), last[:, None], cmap="gray", vmin=0, vmax=1,
                     shading="flat")
    strip.set_ylim(c, 0)
    strip.set_xticks([])
    strip.set_yticks([])
    fig.colorbar(im2, ax=ax, label="residual x C", pad=0.03)
    fig.suptitle(f"{title}: {color} boxes = {outline} {kind}s")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def _drawn(components, kind: str) -> list:
    """The components of ``kind`` that belong to a layer: the cells of the error-map grid."""
    return [c for c in components if c.kind == kind and c.layer >= 0]


def _outline_choice(drawn, masks) -> str:
    """``'active'`` (mask = 1) when most ``drawn`` components are masked in ``masks``, else
    ``'masked'``: the smaller set is the one worth outlining."""
    idx = [c.index for c in drawn]
    masked = sum(int(np.sum(np.asarray(m)[idx] < 1)) for m in masks)
    return "active" if 2 * masked > len(idx) * len(masks) else "masked"


def ema(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """Exponential moving average, debiased (TensorBoard's smoothing).

    ``s_t = weight * s_{t-1} + (1 - weight) * x_t`` from ``s_0 = 0``, divided by
    ``1 - weight**t`` so that the first points are not pulled towards 0. Non-finite values
    are skipped (the average carries over them).

    Args:
      values: the raw series.
      weight: smoothing weight in ``[0, 1)`` (0: no smoothing).

    Returns:
      ``float64[len(values)]``.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"ema: weight={weight!r}; allowed: a number in [0, 1).")
    out = np.empty(len(values))
    acc, norm = 0.0, 0.0
    for i, v in enumerate(values):
        v = float(v)
        if np.isfinite(v):
            acc = weight * acc + (1 - weight) * v
            norm = weight * norm + (1 - weight)
        out[i] = acc / norm if norm > 0 else np.nan
    return out


def average_histories(
    histories: Sequence[Sequence[Mapping[str, Any]]], keys: Sequence[str]
) -> list[dict[str, float]]:
    """The mean over runs (e.g. seeds) of ``keys`` at each ``step`` every run logged."""
    by_step: dict[int, list[Mapping[str, Any]]] = {}
    for hist in histories:
        for h in hist:
            if "step" in h:
                by_step.setdefault(int(h["step"]), []).append(h)
    out = []
    for step in sorted(by_step):
        pts = by_step[step]
        if len(pts) < len(histories):
            continue
        row = {"step": step}
        for k in keys:
            vals = [float(p[k]) for p in pts if k in p]
            if len(vals) == len(pts):
                row[k] = float(np.mean(vals))
        out.append(row)
    return out


def _palette(labels: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per label: tab10 up to ten labels, tab20 past them (not repeated)."""
    import matplotlib.pyplot as plt

    cmap, n = (plt.cm.tab10, 10) if len(labels) <= 10 else (plt.cm.tab20, 20)
    return {lab: cmap(i % n) for i, lab in enumerate(labels)}


def plot_training_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike,
    evals: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    *, metric: str = "accuracy", smoothing: float = 0.9, title: str | None = None,
) -> str | None:
    """Smoothed training loss and held-out ``metric`` against steps and cumulative GFLOPs.

    Per-batch training accuracy at batch 32 is noise; the figure shows the training loss
    smoothed by :func:`ema` and the periodic evaluations (a Trainer's ``eval_history``).
    Top row: against steps; bottom row: against cumulative training GFLOPs (the
    ``gflops_cum`` the Trainer records), drawn only where the runs have it.

    Args:
      histories: label -> the run's training history (``step``, ``loss``, ``gflops_cum``).
      path: the PNG to write.
      evals: label -> the run's evaluations (``step``, ``metric``, ``gflops_cum``).
      metric: the evaluation metric to draw.
      smoothing: :func:`ema` weight of the training loss.
      title: figure title.

    Returns:
      The path written, or ``None`` when there is nothing to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = evals or {}
    has_loss = any("loss" in h for hs in histories.values() for h in hs)
    has_eval = any(metric in e for es in evals.values() for e in es)
    if not has_loss and not has_eval:
        return None
    xs = [("step", "step")]
    if any("gflops_cum" in h for hs in [*histories.values(), *evals.values()] for h in hs):
        xs.append(("gflops_cum", "cumulative training GFLOPs"))
    # A column per quantity the runs have: no empty validation panel for runs without
    # periodic evaluations (or no loss panel for evaluations alone).
    panels = [p for p, has in (("loss", has_loss), ("eval", has_eval)) if has]
    fig, axes = plt.subplots(len(xs), len(panels), figsize=(5.5 * len(panels), 3.6 * len(xs)),
                             squeeze=False, constrained_layout=True)
    labels = sorted(set(histories) | set(evals), key=list({**histories, **evals}).index)
    colors = _palette(labels)
    for row, (xkey, xlabel) in enumerate(xs):
        ax = dict(zip(panels, axes[row]))
        for lab in labels:
            pts = [(h[xkey], h["loss"]) for h in histories.get(lab, ())
                   if xkey in h and "loss" in h]
            if pts and has_loss:
                x, y = zip(*pts)
                ax["loss"].plot(x, y, color=colors[lab], lw=0.5, alpha=0.25)
                ax["loss"].plot(x, ema(y, smoothing), color=colors[lab], lw=1.5, label=lab)
            pts = [(e[xkey], e[metric]) for e in evals.get(lab, ()) if xkey in e and metric in e]
            if pts:
                x, y = zip(*pts)
                ax["eval"].plot(x, y, "o-", color=colors[lab], lw=1.4, ms=3, label=lab)
        if has_loss:
            ax["loss"].set_title(f"training loss (EMA {smoothing:g}; raw faint)", fontsize=10)
        if has_eval:
            ax["eval"].set_title(f"held-out validation {metric}", fontsize=10)
        for a in ax.values():
            a.set_xlabel(xlabel)
            a.grid(alpha=0.3)
    handles = [a for a in axes.ravel() if a.get_legend_handles_labels()[0]]
    if handles:
        handles[-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


# ---------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and *sample* standard deviation (``ddof=1``; ``nan`` with fewer than 2 values)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test of ``a`` against ``b`` (``scipy.stats.ttest_rel``, two-sided).

    Returns:
      ``(t, p)``; ``(nan, nan)`` with fewer than 2 pairs, ``(0, 1)`` when every pair is
      equal (no evidence of a difference; scipy would return ``nan``).

    Raises:
      ValueError: when ``a`` and ``b`` differ in length.
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_ttest: {a.size} values against {b.size}; pairs need equal "
                         "lengths.")
    if a.size < 2:
        return float("nan"), float("nan")
    d = a - b
    if np.all(d == d[0]):
        return (0.0, 1.0) if d[0] == 0 else (float(np.sign(d[0]) * np.inf), 0.0)
    res = stats.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def time_to_quality(
    evals: Sequence[Mapping[str, Any]], target: float, *, metric: str = "accuracy",
    keys: Sequence[str] = ("gflops_cum", "train_time_s", "step"),
) -> dict[str, float] | None:
    """Where a run first reaches ``metric >= target``, interpolated between evaluations.

    Between the last evaluation below ``target`` and the first at or above it every key is
    interpolated linearly at the fraction where ``metric`` crosses ``target``; when the
    first evaluation already reaches it, that evaluation's keys are returned.

    Args:
      evals: the run's evaluations in step order (a Trainer's ``eval_history``).
      target: the quality to reach (e.g. full FT's final accuracy minus 0.01).
      metric: the evaluation metric.
      keys: what to report at the crossing (cumulative GFLOPs, training time, step).

    Returns:
      ``{key: value}`` at the crossing, or ``None`` when the run never reaches ``target``.
    """
    prev = None
    for e in evals:
        if metric not in e:
            continue
        if e[metric] >= target:
            if prev is None or e[metric] == prev[metric]:
                return {k: float(e[k]) for k in keys if k in e}
            f = (target - prev[metric]) / (e[metric] - prev[metric])
            return {k: float(prev[k] + f * (e[k] - prev[k])) for k in keys
                    if k in e and k in prev}
        prev = e
    return None


def value_at(
    evals: Sequence[Mapping[str, Any]], x: float, *, key: str = "gflops_cum",
    metric: str = "accuracy",
) -> float | None:
    """``metric`` at ``key == x`` (e.g. accuracy at equal GFLOPs), linearly interpolated.

    Returns:
      The interpolated value, or ``None`` when ``x`` lies outside the evaluated range (the
      run stopped before spending ``x``, or ``x`` precedes its first evaluation).
    """
    pts = [(float(e[key]), float(e[metric])) for e in evals if key in e and metric in e]
    if not pts:
        return None
    slack = 1e-9 * max(abs(pts[-1][0]), 1.0)  # a mean of equal totals may round past the end
    if not pts[0][0] - slack <= x <= pts[-1][0] + slack:
        return None
    xs, ys = zip(*pts)
    return float(np.interp(x, xs, ys))


#: (key, header, format) of the arena table (:func:`arena_summary` rows).
ARENA_COLUMNS = (
    ("regime", "regime", "{}"),
    ("method", "method", "{}"),
    ("budget_text", "budget", "{}"),
    ("lr", "lr", "{:.0e}"),
    ("n", "seeds", "{}"),
    ("acc_text", "accuracy (mean ± std)", "{}"),
    ("p_full", "p vs full", "{:.3f}"),
    ("vs_heuristic", "vs best heuristic", "{}"),
    ("p_heuristic", "p vs heuristic", "{:.3f}"),
    ("vs_anchor", "vs best anchor", "{}"),
    ("p_anchor", "p vs anchor", "{:.3f}"),
    ("gflops_ratio", "GFLOPs / full", "{:.2f}"),
    ("time_ratio", "time / full", "{:.2f}"),
    ("ttq_gflops_text", "TTQ GFLOPs", "{}"),
    ("ttq_time_text", "TTQ time (s)", "{}"),
    ("acc_eq_text", "acc @ equal GFLOPs", "{}"),
)


def _pm(mean: float, std: float, fmt: str = "{:.4f}") -> str:
    if not np.isfinite(mean):
        return "n/a"
    return fmt.format(mean) + ("" if not np.isfinite(std) else " ± " + fmt.format(std))


def arena_summary(
    records: Sequence[Mapping[str, Any]], *, reference: str = "full",
    heuristics: Sequence[str] = (), anchors: Sequence[str] = (), metric: str = "accuracy",
    tolerance: float = 0.01,
) -> list[dict[str, Any]]:
    """Per (regime, method, budget): mean ± std over seeds, p-values, time-to-quality.

    Each record is one finished run: ``regime``, ``method``, ``budget`` (``None`` for
    methods without one), ``seed``, ``metric`` (final), ``gflops_total``,
    ``train_time_s`` and ``evals`` (its ``eval_history``). Within a regime:

    * ``p_full``: paired t-test (by seed) against the ``reference`` method;
    * ``p_heuristic``: against the best of ``heuristics`` (highest mean) at the same budget
      (``budget=None`` heuristics count at every budget), named in ``vs_heuristic``;
    * ``p_anchor`` / ``vs_anchor``: the same against the best of ``anchors`` (the published
      methods; a subset of ``heuristics`` or not), for every method that is not one of them;
    * time-to-quality: the target is the reference's mean final ``metric`` minus
      ``tolerance``; ``ttq_gflops`` / ``ttq_time_s`` average the seeds that reach it
      (:func:`time_to_quality`); ``ttq_reached`` counts them;
    * ``acc_eq``: ``metric`` at equal GFLOPs, :func:`value_at` the smallest mean
      ``gflops_total`` of the regime (every method has spent that much by its end).

    Returns:
      One dict per group (regime order, then first appearance), raw numbers and ``*_text``
      cells for :data:`ARENA_COLUMNS`.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["regime"], r["method"], r.get("budget")), []).append(r)
    rows = []
    for regime in dict.fromkeys(k[0] for k in groups):
        keys = [k for k in groups if k[0] == regime]
        ref = next((k for k in keys if k[1] == reference), None)
        ref_runs = {r["seed"]: r for r in groups[ref]} if ref else {}
        target = (float(np.mean([r[metric] for r in ref_runs.values()])) - tolerance
                  if ref_runs else None)
        ref_g = np.mean([r["gflops_total"] for r in ref_runs.values()]) if ref_runs else None
        ref_t = np.mean([r["train_time_s"] for r in ref_runs.values()]) if ref_runs else None
        g_eq = min(np.mean([r["gflops_total"] for r in groups[k]]) for k in keys)
        means = {k: float(np.mean([r[metric] for r in groups[k]])) for k in keys}
        for key in keys:
            runs = sorted(groups[key], key=lambda r: r["seed"])
            _, method, budget = key
            acc, std = mean_std([r[metric] for r in runs])
            row: dict[str, Any] = {
                "regime": regime, "method": method, "budget": budget, "n": len(runs),
                "seeds": [r["seed"] for r in runs], "lr": runs[0].get("lr"),
                "accuracy": acc, "accuracy_std": std, "target": target,
                "gflops_total": float(np.mean([r["gflops_total"] for r in runs])),
                "train_time_s": float(np.mean([r["train_time_s"] for r in runs])),
            }
            row["budget_text"] = "-" if budget is None else f"{budget:g}"
            row["acc_text"] = _pm(acc, std)
            if ref_g:
                row["gflops_ratio"] = row["gflops_total"] / ref_g
                row["time_ratio"] = row["train_time_s"] / ref_t
            if ref_runs and key != ref:
                row["p_full"] = _paired(runs, ref_runs, metric)
            for names, col in ((heuristics, "heuristic"), (anchors, "anchor")):
                cands = [k for k in keys if k[1] in names and k != key
                         and (k[2] is None or budget is None or k[2] == budget)]
                if cands and method not in names and method != reference:
                    best = max(cands, key=lambda k: means[k])
                    row[f"vs_{col}"] = best[1] + ("" if best[2] is None else f"@{best[2]:g}")
                    row[f"p_{col}"] = _paired(runs, {r["seed"]: r for r in groups[best]},
                                              metric)
            if target is not None:
                hits = [time_to_quality(r.get("evals", ()), target, metric=metric)
                        for r in runs]
                ok = [h for h in hits if h is not None]
                row["ttq_reached"] = len(ok)
                for k, out, text in (("gflops_cum", "ttq_gflops", "ttq_gflops_text"),
                                     ("train_time_s", "ttq_time_s", "ttq_time_text")):
                    v, sd = mean_std([h[k] for h in ok if k in h])
                    row[out] = v
                    some = f" ({len(ok)}/{len(runs)})" if len(ok) < len(runs) else ""
                    row[text] = _pm(v, sd, "{:.0f}") + some if ok else "not reached"
            eq = [value_at(r.get("evals", ()), g_eq, metric=metric) for r in runs]
            eq = [v for v in eq if v is not None]
            row["acc_eq"], row["acc_eq_std"] = mean_std(eq)
            row["gflops_eq"] = float(g_eq)
            row["acc_eq_text"] = _pm(*mean_std(eq)) if eq else "n/a"
            rows.append(row)
    return rows


def _paired(runs, ref_by_seed, metric) -> float:
    pairs = [(r[metric], ref_by_seed[r["seed"]][metric]) for r in runs if r["seed"] in ref_by_seed]
    if len(pairs) < 2:
        return float("nan")
    a, b = zip(*pairs)
    return paired_ttest(a, b)[1]


def arena_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table of :func:`arena_summary` rows."""
    rows = [{k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v))}
            for r in rows]
    return markdown_table(rows, ARENA_COLUMNS)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (less or equal cost, higher or equal
    accuracy, one of them strictly), by increasing cost."""
    idx = []
    for i, (c, a) in enumerate(points):
        dominated = any((c2 <= c and a2 >= a and (c2 < c or a2 > a))
                        for j, (c2, a2) in enumerate(points) if j != i)
        if not dominated and np.isfinite(c) and np.isfinite(a):
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def plot_pareto(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, title: str | None = None,
) -> str | None:
    """Accuracy against total training GFLOPs and against wall time, one row per regime.

    Each point is one (method, budget) of :func:`arena_summary` with error bars of one
    sample standard deviation over seeds (accuracy only: the costs vary little); the grey
    line joins the Pareto front.

    Returns:
      The path written, or ``None`` when there is nothing to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if np.isfinite(r.get("accuracy", np.nan))]
    if not rows:
        return None
    regimes = list(dict.fromkeys(r["regime"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = _palette(methods)
    markers = "o^sDvP*X<>"
    fig, axes = plt.subplots(len(regimes), 2, figsize=(13.5, 4.2 * len(regimes)), squeeze=False,
                             constrained_layout=True)
    for row_axes, regime in zip(axes, regimes):
        rs = [r for r in rows if r["regime"] == regime]
        budgets = list(dict.fromkeys(r.get("budget") for r in rs))
        for ax, (xkey, xlabel) in zip(row_axes, (("gflops_total", "total training GFLOPs"),
                                                 ("train_time_s", "training wall time (s)"))):
            for r in rs:
                yerr = r.get("accuracy_std")
                yerr = yerr if yerr is not None and np.isfinite(yerr) else None
                b = r.get("budget")
                ax.errorbar(r[xkey], r["accuracy"], yerr=yerr, fmt=markers[
                    budgets.index(b) % len(markers)], color=colors[r["method"]], capsize=3,
                    ms=6, label=r["method"] + ("" if b is None else f" @{b:g}"))
            front = pareto_front([(r[xkey], r["accuracy"]) for r in rs])
            if len(front) > 1:
                ax.plot([rs[i][xkey] for i in front], [rs[i]["accuracy"] for i in front],
                        color="grey", lw=1, ls="--", zorder=0)
            target = rs[0].get("target")
            if target is not None:
                ax.axhline(target, color="grey", lw=0.6, ls=":")
                ax.annotate("full FT − 1 pt", (1.0, target), xycoords=("axes fraction", "data"),
                            ha="right", va="bottom", fontsize=7, color="grey")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation accuracy")
            ax.set_title(f"{regime}: accuracy vs {xlabel.split(' (')[0]}", fontsize=10)
            ax.grid(alpha=0.3)
        # Outside the axes: with a dozen methods a legend inside hides points.
        row_axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def plot_predicted_vs_true(
    panels: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
) -> str | None:
    """Predicted against measured values, one panel per quantity, with the identity line.

    Args:
      panels: title -> ``{'predicted': [k], 'true': [k], 'labels': [k] (optional),
        'highlight': [k] bools (optional, drawn as stars), 'note': str (optional)}``.
      path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.0),
                             constrained_layout=True)
    for ax, (title, d) in zip(np.atleast_1d(axes), panels.items()):
        p = np.asarray(d["predicted"], float)
        t = np.asarray(d["true"], float)
        hi = np.asarray(d.get("highlight", np.zeros(len(p), bool)), bool)
        ax.scatter(t[~hi], p[~hi], s=22, alpha=0.8, label="configurations")
        if hi.any():
            ax.scatter(t[hi], p[hi], s=90, marker="*", color="C3", label="chosen")
        lo, up = float(min(p.min(), t.min())), float(max(p.max(), t.max()))
        pad = 0.05 * (up - lo or 1.0)
        ax.plot([lo - pad, up + pad], [lo - pad, up + pad], "k--", lw=0.8, alpha=0.6)
        for x, y, lab in zip(t, p, d.get("labels", ())):
            ax.annotate(str(lab), (x, y), fontsize=6, alpha=0.7)
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
        ax.set_title(title + (f"\n{d['note']}" if d.get("note") else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def plot_heatmaps(
    panels: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, *, title: str = "",
) -> str | None:
    """Annotated heatmaps side by side (e.g. accuracy and stability over ``r x k``).

    Args:
      panels: title -> ``{'values': [R, C] (NaN: empty cell), 'rows': R labels,
        'cols': C labels, 'xlabel': str, 'ylabel': str, 'fmt': e.g. '{:.3f}',
        'cmap': a matplotlib colormap name (optional)}``.
      path: the PNG to write.
      title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9),
                             constrained_layout=True)
    for ax, (name, d) in zip(np.atleast_1d(axes), panels.items()):
        v = np.asarray(d["values"], float)
        im = ax.imshow(np.ma.masked_invalid(v), cmap=d.get("cmap", "viridis"), aspect="auto",
                       origin="lower")
        fig.colorbar(im, ax=ax, shrink=0.85)
        ax.set_xticks(range(v.shape[1]), [str(c) for c in d["cols"]])
        ax.set_yticks(range(v.shape[0]), [str(r) for r in d["rows"]])
        ax.set_xlabel(d.get("xlabel", ""))
        ax.set_ylabel(d.get("ylabel", ""))
        ax.set_title(name, fontsize=10)
        fmt = d.get("fmt", "{:.3f}")
        finite = v[np.isfinite(v)]
        mid = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
        for (i, j), x in np.ndenumerate(v):
            if np.isfinite(x):
                ax.text(j, i, fmt.format(x), ha="center", va="center", fontsize=8,
                        color="black" if x > mid else "white")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def write_report(
    out_dir: str | os.PathLike,
    runs: Sequence[Mapping[str, Any]],
    *,
    title: str,
    config: Mapping[str, Any],
    notes: Sequence[str] = (),
    figures: Sequence[str] = (),
) -> dict[str, str]:
    """Writes ``report.json`` and ``report.md`` (table, figures, configuration, notes).

    Ratios to full fine-tuning (``*_ratio``) are added per seed when a ``full`` run exists.
    Both files are written to a temporary name and renamed, so a crash never leaves a
    half-written report.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    runs = [dict(r) for r in runs]
    full = {r.get("seed"): r for r in runs if r.get("kind") == "full"}
    for r in runs:
        ref = full.get(r.get("seed"))
        if ref:
            for key, out in (("step_time_s", "step_time_ratio"),
                             ("gflops_per_step", "gflops_ratio"),
                             ("opt_state_bytes", "opt_state_ratio")):
                if r.get(key) and ref.get(key):
                    r[out] = r[key] / ref[key]
        if "opt_state_bytes" in r:
            r["opt_state_mb"] = r["opt_state_bytes"] / 2**20
    table = markdown_table(runs)
    md = [f"# {title}", "", table, ""]
    for fig in figures:
        md += [f"![{os.path.basename(fig)}]({os.path.basename(fig)})", ""]
    if notes:
        md += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    md += ["## Configuration", "", "```json", json.dumps(config, indent=2, default=str), "```", ""]
    paths = {"json": os.path.join(out_dir, "report.json"),
             "md": os.path.join(out_dir, "report.md")}
    payload = {"title": title, "config": config, "runs": runs, "notes": list(notes),
               "figures": [os.path.basename(f) for f in figures]}
    for key, text in (("json", json.dumps(payload, indent=2, default=_jsonable)),
                      ("md", "\n".join(md))):
        tmp = paths[key] + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, paths[key])
    return paths


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
