# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: what RGFT's compute savings cost in quality, against full FT and baselines.

MiniLM-L6 on CrowdFlower (the demo's model and corpus). Every method of a seed runs in
lockstep (step ``t`` of each, then ``t + 1``) on the same data order for the same number of
steps, so background load hits all alike and the ratios are measured side by side:

* ``full``: full fine-tuning (the first ``full...`` method is the reference of every ratio).
* ``rgft_budgetB``: RGFT with budgeted masks (``B`` % of the full step's FLOPs, cost model),
  ``rgft_budgetB_compact`` with the compact optimizer state (``--capacity``).
* ``rgft_topF``: RGFT with ``threshold=('top_fraction', F)``, ``..._embfrozen`` with frozen
  embeddings (the embedding policy measured); ``rgft_median``: the proposal's median mask.
* ``lora`` (r = 8, query/value), ``bitfit``, ``top_layers`` (the top ``k`` layers + head,
  ``k`` the most layers the cost model fits in ``--match-budget``), ``top_layersK``.
* ``NAME@LR`` sets a method's learning rate (see :data:`METHODS` for the defaults).

Columns: accuracy / macro-F1 after equal steps; accuracy after equal wall time (each
method evaluated when its summed step time first reaches the time full FT needed for
``--wall-fraction`` of its steps; ``reached=False`` when it never does within the steps);
mean step time (probes included), GFLOPs (XLA cost analysis, averaged over the steps that
ran), optimizer-state bytes and peak step memory (XLA memory analysis) as ratios to full FT
of the same seed;
compilations; update ratio. Means and standard deviations over seeds. Writes
``bench_savings.json`` and ``bench_savings.md``.

    python -m recipes.bench_savings                         # 3 seeds, 120 steps
    python -m recipes.bench_savings --seeds 0 --steps 40 --methods full,rgft_budget40@1e-3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from typing import Any

import numpy as np

from recipes import _cli, demo

#: The default comparison. Learning rates: each method's best of {1e-4, 3e-4, 1e-3} in a
#: one-seed sweep (seed 0, 120 steps; the README lists it); LoRA and BitFit at their usual
#: 5x and 10x the base rate.
METHODS = (
    "full@3e-4", "rgft_budget40@1e-3", "rgft_budget40_compact@1e-3", "rgft_budget50@3e-4",
    "rgft_budget60@3e-4", "rgft_top25@3e-4", "rgft_top25_embfrozen@3e-4", "top_layers@1e-3",
    "top_layers2@1e-3", "lora", "bitfit",
)
#: Method names: ``NN`` is a percentage; ``@LR`` sets that method's learning rate.
METHOD_SYNTAX = ("full | lora | bitfit | top_layers (k matched to --match-budget) | top_layersK "
                 "| rgft_median | rgft_budgetNN[_compact] | rgft_topNN[_embfrozen], each "
                 "optionally followed by @LR (e.g. rgft_budget40@3e-4)")
_NAME = re.compile(r"^(?P<base>full|lora|bitfit|top_layers(?P<k>\d+)?|rgft_median|"
                   r"rgft_budget(?P<budget>\d+)(?P<compact>_compact)?|"
                   r"rgft_top(?P<top>\d+)(?P<emb>_embfrozen)?)(?:@(?P<lr>[^@]+))?$")


def parse_method(name: str) -> dict[str, Any]:
    """The parts of a method name (see :data:`METHOD_SYNTAX`); ``ValueError`` if malformed."""
    m = _NAME.match(name)
    pct = m and (m["budget"] or m["top"])
    if not m or (pct and not 0 < int(pct) <= 100) or (m["k"] and int(m["k"]) < 1):
        raise ValueError(f"--methods: {name!r} is not a method; allowed: {METHOD_SYNTAX}.")
    lr = None
    if m["lr"] is not None:
        try:
            lr = float(m["lr"])
        except ValueError:
            lr = -1.0
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"--methods: {name!r}: the learning rate after @ must be a "
                             f"finite number > 0, got {m['lr']!r}.")
    return {"base": "top_layers" if m["k"] else m["base"], "k": m["k"] and int(m["k"]),
            "budget": m["budget"] and int(m["budget"]) / 100,
            "compact": bool(m["compact"]), "top": m["top"] and int(m["top"]) / 100,
            "embfrozen": bool(m["emb"]), "lr": lr}


def reference(names) -> str | None:
    """The full fine-tuning run every ratio refers to: the first method named ``full...``."""
    return next((n for n in names if parse_method(n)["base"] == "full"), None)


def parse_methods(text: str) -> tuple[str, ...]:
    """Comma-separated method names, validated (``ValueError`` names the first bad one)."""
    names = tuple(m for m in text.split(",") if m)
    if not names:
        raise ValueError(f"--methods {text!r}: no method; allowed: {METHOD_SYNTAX}.")
    for name in names:
        parse_method(name)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--methods {text!r}: {', '.join(twice)} named twice.")
    return names


def top_layers_for_budget(part, costs, num_layers: int, budget: float) -> tuple[int, float]:
    """The most top layers whose training fits ``budget`` of the full step (cost model)."""
    layers = np.asarray([c.layer for c in part.components])
    best = (1, float(costs.step_cost(layers >= num_layers - 1)) / float(costs.full))
    for k in range(1, num_layers + 1):
        frac = float(costs.step_cost(layers >= num_layers - k)) / float(costs.full)
        if frac <= budget:
            best = (k, frac)
    return best


def top_layers_k_of(params, num_heads: int, num_layers: int, batch_shape: tuple[int, int],
                    budget: float, hit_rate: float = 0.0) -> tuple[int, float]:
    """``top_layers``'s ``k`` matched to ``budget`` by the cost model the budgeted masks use,
    for any transformer's ``params`` (abstract shapes suffice; ``hit_rate``: the expected
    cost when that fraction of steps reads the activation cache,
    :meth:`rgft_jax.ComponentCosts.with_cache`). Returns ``(k, cost fraction)``."""
    from rgft_jax.training import methods
    from rgft_jax.training._components import costs_for

    part = methods.rgft(budget=budget).partition(params, num_heads)
    costs = costs_for(part, params, num_heads, num_layers, batch_shape,
                      "top_layers_k").with_cache(hit_rate)
    return top_layers_for_budget(part, costs, num_layers, budget)


def top_layers_k(bcfg, num_labels: int, batch_shape: tuple[int, int],
                 budget: float, hit_rate: float = 0.0) -> tuple[int, float]:
    """:func:`top_layers_k_of` of the BERT classifier of ``bcfg``."""
    from rgft_jax.models import bert

    return top_layers_k_of(bert.abstract_params(bcfg, num_labels=num_labels),
                           bcfg.num_attention_heads, bcfg.num_hidden_layers, batch_shape,
                           budget, hit_rate)


def method_spec(name: str, args, top_k: int) -> tuple[str, dict[str, Any]]:
    """``(registered method name, constructor keywords)`` of a benchmark method name.

    LoRA and BitFit default to 5x and 10x ``args.learning_rate`` (their usual larger rates);
    ``@LR`` overrides any method's rate. RGFT methods take ``args.warmup_steps`` and
    ``args.update_every``.
    """
    p = parse_method(name)
    scale = {"lora": 5.0, "bitfit": 10.0}.get(p["base"], 1.0)
    common = dict(learning_rate=p["lr"] or args.learning_rate * scale, name=name)
    rgft = dict(warmup_steps=args.warmup_steps, update_every=args.update_every, **common)
    base = p["base"]
    if base == "rgft_median":
        return "rgft", dict(threshold="median", **rgft)
    if p["top"]:
        return "rgft", dict(threshold=("top_fraction", p["top"]),
                            embeddings="freeze" if p["embfrozen"] else "component", **rgft)
    if p["budget"]:
        return "rgft", dict(budget=p["budget"],
                            capacity=args.capacity if p["compact"] else None, **rgft)
    if base == "top_layers":
        return "top_layers", dict(k=p["k"] or top_k, **common)
    return base, common


def make_method(name: str, args, top_k: int):
    """The method of a benchmark method name, built through the method registry."""
    from rgft_jax.training import methods

    kind, kwargs = method_spec(name, args, top_k)
    return methods.get(kind)(**kwargs)


def run_seed(seed: int, args, model_dir, bcfg, train_src, eval_set, n_classes, top_k):
    from rgft_jax import data
    from rgft_jax.models import bert
    from rgft_jax.training import TrainConfig, Trainer

    trainers, iters = [], []
    for name in args.methods:
        model = bert.from_pretrained(model_dir, num_labels=n_classes, seed=seed)
        tr = Trainer(model, make_method(name, args, top_k),
                     TrainConfig(steps=args.steps, seed=seed, progress=False, log_every=0),
                     num_heads=bcfg.num_attention_heads, num_layers=bcfg.num_hidden_layers,
                     num_classes=n_classes, batch_shape=(args.batch_size, args.max_length))
        trainers.append(tr)
        iters.append(data.TrainIterator(train_src, batch_size=args.batch_size, seed=seed,
                                        batch_fn=demo_batcher(model_dir, args)))
    names = list(args.methods)
    ref = reference(names)
    cum = dict.fromkeys(names, 0.0)
    wall_eval: dict[str, dict[str, Any]] = {}
    wall_step = max(1, round(args.wall_fraction * args.steps))
    budget_time = None
    t0 = time.time()
    for step in range(args.steps):
        for name, tr, it in zip(names, trainers, iters):
            m = tr.train_step(next(it))
            cum[name] += m["step_time_s"]
        if ref is not None and step + 1 == wall_step:
            budget_time = cum[ref]
        if budget_time is not None:
            for name, tr in zip(names, trainers):
                if name not in wall_eval and cum[name] >= budget_time:
                    wall_eval[name] = {**tr.evaluate(eval_set), "step": step + 1,
                                       "time_s": cum[name], "reached": True}
        if (step + 1) % 10 == 0:
            print(f"  seed {seed} step {step + 1}/{args.steps} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    rows = []
    for name, tr in zip(names, trainers):
        final = tr.evaluate(eval_set)
        if name not in wall_eval:
            wall_eval[name] = {**final, "step": args.steps, "time_s": cum[name],
                               "reached": budget_time is None}
        s = tr.summary()
        rows.append({
            **{k: s[k] for k in ("gflops_per_step", "matmul_gflops_per_step", "step_time_s",
                                 "compilations",
                                 "opt_state_bytes", "peak_step_bytes", "update_ratio",
                                 "probe_steps")},
            "method": name, "seed": seed, "accuracy": final["accuracy"],
            "macro_f1": final["macro_f1"], "wall_accuracy": wall_eval[name]["accuracy"],
            "wall_step": wall_eval[name]["step"], "wall_reached": wall_eval[name]["reached"],
            "train_time_s": cum[name], "budget_time_s": budget_time,
        })
        tr.close()
    full = next((r for r in rows if r["method"] == ref), None)
    ratios = {"step_time_s": "step_time_ratio", "gflops_per_step": "gflops_ratio",
              "matmul_gflops_per_step": "matmul_gflops_ratio",
              "opt_state_bytes": "opt_state_bytes_ratio",
              "peak_step_bytes": "peak_step_bytes_ratio"}
    for r in rows:
        for key, out in ratios.items():
            r[out] = r[key] / full[key] if full and full[key] > 0 else float("nan")
    return rows


_BATCHER = {}


def demo_batcher(model_dir, args):
    from rgft_jax import data

    key = (model_dir, args.max_length)
    if key not in _BATCHER:
        tok = data.TextTokenizer.from_pretrained(model_dir, max_length=args.max_length)
        _BATCHER[key] = data.ClassificationBatcher(tok)
    return _BATCHER[key]


def aggregate(rows: list[dict[str, Any]], methods) -> list[dict[str, Any]]:
    out = []
    for name in methods:
        rs = [r for r in rows if r["method"] == name]
        agg: dict[str, Any] = {"method": name, "seeds": len(rs)}
        for key in ("accuracy", "macro_f1", "wall_accuracy", "step_time_ratio",
                    "gflops_ratio", "matmul_gflops_ratio", "opt_state_bytes_ratio",
                    "peak_step_bytes_ratio",
                    "update_ratio", "compilations", "wall_step"):
            v = np.asarray([r[key] for r in rs], np.float64)
            agg[key] = float(v.mean())
            agg[key + "_std"] = float(v.std())
        agg["wall_reached"] = all(r["wall_reached"] for r in rs)
        out.append(agg)
    return out


COLUMNS = (
    ("method", "method", "{}"),
    ("acc", "acc (equal steps)", "{}"),
    ("f1", "macro-F1", "{}"),
    ("wall", "acc (equal wall time)", "{}"),
    ("step_time_ratio", "step time / full", "{:.2f}"),
    ("gflops_ratio", "GFLOPs / full", "{:.2f}"),
    ("matmul_gflops_ratio", "matmul GFLOPs / full", "{:.2f}"),
    ("opt_state_bytes_ratio", "opt state / full", "{:.2f}"),
    ("peak_step_bytes_ratio", "peak mem / full", "{:.2f}"),
    ("update_ratio", "update ratio", "{:.3f}"),
    ("compilations", "compiles", "{:.1f}"),
)


def table(agg: list[dict[str, Any]]) -> str:
    from rgft_jax.reporting import markdown_table

    rows = []
    for a in agg:
        wall = f"{a['wall_accuracy']:.4f} ± {a['wall_accuracy_std']:.4f}"
        if not a["wall_reached"]:
            wall += " (not reached)"
        rows.append({**a, "acc": f"{a['accuracy']:.4f} ± {a['accuracy_std']:.4f}",
                     "f1": f"{a['macro_f1']:.4f} ± {a['macro_f1_std']:.4f}", "wall": wall})
    return markdown_table(rows, COLUMNS)


@_cli.command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.bench_savings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated: {METHOD_SYNTAX}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--update-every", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="RGFT: step of the first mask refresh (see Method.warmup_steps)")
    p.add_argument("--eval-examples", type=int, default=1024)
    p.add_argument("--wall-fraction", type=float, default=0.35,
                   help="equal wall time = full FT's summed step time at this fraction of "
                        "the steps")
    p.add_argument("--match-budget", type=float, default=0.4,
                   help="FLOPs fraction the top_layers heuristic is matched to")
    p.add_argument("--capacity", type=float, default=0.25,
                   help="compact optimizer state of rgft_budget40_compact")
    p.add_argument("--out", default="runs/bench_savings")
    a = p.parse_args(argv)
    try:
        a.methods = parse_methods(a.methods)
    except ValueError as e:
        p.error(str(e))
    if a.warmup_steps < 0:
        p.error(f"--warmup-steps {a.warmup_steps}: must be >= 0")
    if not 0 < a.wall_fraction <= 1:
        p.error(f"--wall-fraction {a.wall_fraction}: must be in (0, 1]")
    seeds = tuple(int(s) for s in a.seeds.split(",") if s)

    from rgft_jax import data
    from rgft_jax.models import bert

    t_start = time.time()
    os.makedirs(a.out, exist_ok=True)
    model_dir = demo.default_model_dir()
    bcfg = bert.BertConfig.from_hf(model_dir)
    dcfg = demo.DemoConfig(out=os.path.join(a.out, "demo"), max_length=a.max_length)
    train_src, test_src, label_names, _ = demo.load_data(dcfg)
    n_eval = min(a.eval_examples, len(test_src)) if a.eval_examples else len(test_src)
    eval_set = [b for i, b in enumerate(data.eval_batches(
        test_src, batch_size=a.batch_size, batch_fn=demo_batcher(model_dir, a)))
        if i * a.batch_size < n_eval]
    top_k, top_frac = top_layers_k(bcfg, len(label_names), (a.batch_size, a.max_length),
                                   a.match_budget)
    print(f"top_layers: k={top_k} ({top_frac:.2f} of the full step by the cost model)",
          flush=True)
    rows = []
    for seed in seeds:
        rows += run_seed(seed, a, model_dir, bcfg, train_src, eval_set, len(label_names), top_k)
        for r in rows[-len(a.methods):]:
            print(f"{r['method']:>22} seed {seed}: acc {r['accuracy']:.4f} f1 "
                  f"{r['macro_f1']:.4f} wall-acc {r['wall_accuracy']:.4f} time "
                  f"{r['step_time_ratio']:.2f} GFLOPs {r['gflops_ratio']:.2f} opt "
                  f"{r['opt_state_bytes_ratio']:.2f} ratio {r['update_ratio']:.3f} "
                  f"compiles {r['compilations']}", flush=True)
    agg = aggregate(rows, a.methods)
    md = table(agg)
    payload = {"config": {**vars(a), "methods": list(a.methods), "seeds": list(seeds),
                          "top_layers_k": top_k, "top_layers_cost_fraction": top_frac,
                          "eval_examples": sum(int(b["valid"].sum()) for b in eval_set),
                          "model": model_dir},
               "runs": rows, "summary": agg, "wall_time_s": time.time() - t_start}
    with open(os.path.join(a.out, "bench_savings.json"), "w") as f:
        json.dump(payload, f, indent=1, default=float)
    with open(os.path.join(a.out, "bench_savings.md"), "w") as f:
        f.write(f"# RGFT compute savings benchmark\n\n{md}\n")
    print()
    print(md)
    print(f"\nwall time {time.time() - t_start:.0f}s; {a.out}/bench_savings.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
