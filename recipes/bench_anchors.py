# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: the published answers to "where to train" against full FT and top-k layers.

MiniLM-L6 on CrowdFlower, one seed. The methods train in lockstep (step ``t`` of each, then
``t + 1``) on the same data order for the same steps, through the one Trainer, so accuracy,
GFLOPs (XLA's count of each compiled step, averaged over the steps that ran) and step-time
ratios are measured side by side. Methods are registered names with knobs:

    NAME[:key=value[:key=value...]][@LR]     e.g. badam:order=random@3e-4

Resumable per method: each finished method appends its row to ``rows.jsonl`` in ``--out``;
a rerun skips the methods already there and runs the rest in lockstep (the reference full FT
row is reused for the ratios, so time ratios of a resumed method come from another run:
``same_run`` says so).

    python -m recipes.bench_anchors                      # the default list, 200 steps
    python -m recipes.bench_anchors --steps 20 --methods full,lisa
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from recipes import demo
from recipes.bench_savings import demo_batcher

METHODS = (
    "full@3e-4", "top_layers:k=2@1e-3", "lisa@3e-4", "random_layers@3e-4",
    "badam:switch_every=25@3e-4", "badam:switch_every=25:order=random@3e-4",
    "autofreeze@3e-4", "green_trainer:rho=0.5@3e-4",
)


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(text, text)


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``(registered name, constructor keywords)`` of ``NAME[:k=v...][@LR]``."""
    from rgft_jax.training import methods

    body, _, lr = spec.partition("@")
    name, *knobs = body.split(":")
    if name not in methods.names():
        raise ValueError(f"--methods: {spec!r}: {name!r} is not registered; allowed: "
                         f"{', '.join(methods.names())}.")
    kwargs = {}
    for kv in knobs:
        k, eq, v = kv.partition("=")
        if not eq:
            raise ValueError(f"--methods: {spec!r}: knob {kv!r} is not key=value.")
        kwargs[k] = _value(v)
    if lr:
        kwargs["learning_rate"] = float(lr)
    kwargs["name"] = spec
    methods.get(name)(**kwargs)  # validates now, not after the other methods ran
    return name, kwargs


def run(args, todo: list[str], rows_path: str) -> None:
    from rgft_jax import data
    from rgft_jax.models import bert
    from rgft_jax.training import TrainConfig, Trainer, methods

    model_dir = demo.default_model_dir()
    bcfg = bert.BertConfig.from_hf(model_dir)
    dcfg = demo.DemoConfig(out=os.path.join(args.out, "demo"), max_length=args.max_length,
                           data_dir=args.data_dir)
    train_src, test_src, label_names, _ = demo.load_data(dcfg)
    n_classes = len(label_names)
    n_eval = min(args.eval_examples, len(test_src)) if args.eval_examples else len(test_src)
    eval_set = [b for i, b in enumerate(data.eval_batches(
        test_src, batch_size=args.batch_size, batch_fn=demo_batcher(model_dir, args)))
        if i * args.batch_size < n_eval]
    trainers, iters = [], []
    for spec in todo:
        name, kwargs = parse_method(spec)
        model = bert.from_pretrained(model_dir, num_labels=n_classes, seed=args.seed)
        trainers.append(Trainer(
            model, methods.get(name)(**kwargs),
            TrainConfig(steps=args.steps, seed=args.seed, progress=False, log_every=0),
            num_heads=bcfg.num_attention_heads, num_layers=bcfg.num_hidden_layers,
            num_classes=n_classes, batch_shape=(args.batch_size, args.max_length)))
        iters.append(data.TrainIterator(train_src, batch_size=args.batch_size, seed=args.seed,
                                        batch_fn=demo_batcher(model_dir, args)))
    t0 = time.time()
    for step in range(args.steps):
        for tr, it in zip(trainers, iters):
            tr.train_step(next(it))
        if (step + 1) % 10 == 0:
            print(f"  step {step + 1}/{args.steps} ({time.time() - t0:.0f}s)", flush=True)
    for spec, tr in zip(todo, trainers):
        final = tr.evaluate(eval_set)
        s = tr.summary()
        row = {"method": spec, "seed": args.seed, "steps": args.steps,
               "accuracy": final["accuracy"], "macro_f1": final["macro_f1"],
               **{k: s[k] for k in ("gflops_per_step", "matmul_gflops_per_step",
                                    "step_time_s", "compilations", "update_ratio",
                                    "probe_steps")},
               "run": args.run_id, "eval_examples": sum(int(b["valid"].sum())
                                                        for b in eval_set)}
        sched = tr.schedule
        if sched is not None:
            row["frozen_prefix"] = sched.frozen_prefix
        with open(rows_path, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        print(f"{spec:>40}: acc {row['accuracy']:.4f} GFLOPs {row['gflops_per_step']:.1f} "
              f"step {row['step_time_s']:.3f}s", flush=True)
        tr.close()


def table(rows: list[dict[str, Any]], order: list[str]) -> str:
    from rgft_jax.reporting import markdown_table

    by = {r["method"]: r for r in rows}
    ref = next((by[m] for m in order if m in by and m.split("@")[0].split(":")[0] == "full"),
               None)
    out = []
    for m in order:
        if m not in by:
            continue
        r = dict(by[m])
        for key, name in (("gflops_per_step", "gflops_ratio"),
                          ("matmul_gflops_per_step", "matmul_ratio"),
                          ("step_time_s", "time_ratio")):
            r[name] = r[key] / ref[key] if ref and ref[key] else float("nan")
        r["same_run"] = "yes" if ref and r["run"] == ref["run"] else "no"
        r["prefix"] = r.get("frozen_prefix", "")
        out.append(r)
    cols = (("method", "method", "{}"), ("accuracy", "accuracy", "{:.4f}"),
            ("macro_f1", "macro-F1", "{:.4f}"), ("gflops_ratio", "GFLOPs / full", "{:.2f}"),
            ("matmul_ratio", "matmul GFLOPs / full", "{:.2f}"),
            ("time_ratio", "step time / full", "{:.2f}"),
            ("update_ratio", "update ratio", "{:.3f}"), ("compilations", "compiles", "{}"),
            ("prefix", "frozen prefix", "{}"), ("same_run", "same run as full", "{}"))
    return markdown_table(out, cols)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.bench_anchors", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--eval-examples", type=int, default=1024)
    p.add_argument("--out", default="runs/bench_anchors")
    p.add_argument("--data-dir", default=None, help="TFDS data dir (default: <out>/../tfds)")
    a = p.parse_args(argv)
    specs = [m for m in a.methods.split(",") if m]
    try:
        for s in specs:
            parse_method(s)
    except (ValueError, TypeError) as e:
        p.error(str(e))
    os.makedirs(a.out, exist_ok=True)
    rows_path = os.path.join(a.out, "rows.jsonl")
    rows = []
    if os.path.exists(rows_path):
        with open(rows_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    done = {r["method"] for r in rows if r["steps"] == a.steps and r["seed"] == a.seed}
    todo = [s for s in specs if s not in done]
    a.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    if todo:
        print(f"running {todo} ({len(done)} done)", flush=True)
        run(a, todo, rows_path)
        with open(rows_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if r["steps"] == a.steps and r["seed"] == a.seed]
    md = table(rows, specs)
    with open(os.path.join(a.out, "bench_anchors.md"), "w") as f:
        f.write(f"# Anchors vs full FT and top-k layers ({a.steps} steps, seed {a.seed})\n\n"
                f"{md}\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
