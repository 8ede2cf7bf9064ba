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
    "TABLE_COLUMNS",
    "error_map_grid",
    "markdown_table",
    "plot_error_map",
    "plot_predicted_vs_true",
    "plot_training_curves",
    "write_report",
]

#: (key, header, format) of the comparison table.
TABLE_COLUMNS = (
    ("method", "method", "{}"),
    ("seed", "seed", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("macro_f1", "macro-F1", "{:.4f}"),
    ("step_time_s", "step time (s)", "{:.3f}"),
    ("step_time_ratio", "time / full", "{:.2f}"),
    ("gflops_per_step", "GFLOPs/step", "{:.1f}"),
    ("gflops_ratio", "GFLOPs / full", "{:.2f}"),
    ("update_ratio", "update ratio", "{:.3f}"),
    ("opt_state_mb", "opt state (MB)", "{:.1f}"),
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
    fig = plt.figure(figsize=(max(3.2 * len(picks) + 1.5, 9.0), 7.5), constrained_layout=True)
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
        ax.set_yticks(range(len(layers)), layers)
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


def plot_training_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike,
    keys: Sequence[str] = ("loss", "accuracy", "update_ratio", "step_time_s"),
) -> str | None:
    """Training curves of several runs side by side (one panel per metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in h for hs in histories.values() for h in hs)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        for label, hist in histories.items():
            pts = [(h["step"], h[key]) for h in hist if key in h and "step" in h]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, label=label, lw=1.4)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
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
