# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: frozen-prefix activation caching, on against off, in one lockstep run.

MiniLM-L6 (pretrained) on CrowdFlower, ``top_layers`` with ``k`` = each of ``--ks``, in a
low-data multi-epoch regime (the first ``--examples`` training tweets, ``--epochs`` epochs,
batch ``--batch-size``, length ``--max-length``, dropout off). For each ``k`` two trainers
run in lockstep (step ``t`` of each, each step timed alone, then ``t + 1``) on the same data
order: ``activation_cache=True`` and ``False``. Epoch 1 of the cached run fills the cache;
from epoch 2 on every batch's prefix outputs are read from it.

Per ``k`` it records the median step time of each epoch for both runs, XLA's GFLOPs of the
steps of epochs >= 2 (the cached run's hit steps), the cache's bytes, and the largest
absolute difference between the two runs' final params. Results are appended per ``k`` as
one JSON line to ``--out`` (a rerun skips the ``k`` already there) and printed as a table.

    nice -n 10 python -m recipes.bench_cache --ks 1,2
    python -m recipes.bench_cache --examples 256 --epochs 2 --ks 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np


def _load(args):
    from recipes import demo
    from rgft_jax import data

    model_dir = args.model_dir or demo.default_model_dir()
    data_dir = args.data_dir or os.path.join(os.path.dirname(os.path.abspath(args.out)), "tfds")
    train, _, info = data.crowdflower(demo.default_corpus(), data_dir=data_dir)
    n = min(args.examples, len(train))
    examples = [train[i] for i in range(n)]  # the first n of the (shuffled) split
    tok = data.TextTokenizer.from_pretrained(model_dir, max_length=args.max_length)
    return model_dir, examples, data.ClassificationBatcher(tok), info


def run_k(k: int, args, model_dir, examples, batcher) -> dict[str, Any]:
    import jax

    from rgft_jax import data
    from rgft_jax.models import bert
    from rgft_jax.training import TrainConfig, Trainer, fit_together, methods

    steps_per_epoch = len(examples) // args.batch_size
    steps = steps_per_epoch * args.epochs
    trainers, iters = [], []
    for cache in (True, False):
        model = bert.from_pretrained(model_dir, num_labels=3, seed=args.seed)
        cfg = model.config if hasattr(model, "config") else None
        layers = cfg.num_hidden_layers if cfg is not None else 6
        heads = cfg.num_attention_heads if cfg is not None else 12
        tr = Trainer(model, methods.top_layers(k=k, learning_rate=args.learning_rate,
                                               name=f"top{k}_cache_{'on' if cache else 'off'}"),
                     TrainConfig(steps=steps, seed=args.seed, progress=False, log_every=0,
                                 activation_cache=cache),
                     num_heads=heads, num_layers=layers, num_classes=3,
                     batch_shape=(args.batch_size, args.max_length))
        trainers.append(tr)
        iters.append(data.TrainIterator(examples, batch_size=args.batch_size, seed=args.seed,
                                        batch_fn=batcher))
    t0 = time.time()
    fit_together(trainers, iters)
    wall = time.time() - t0
    on, off = trainers
    out: dict[str, Any] = {"k": k, "examples": len(examples), "epochs": args.epochs,
                           "batch_size": args.batch_size, "max_length": args.max_length,
                           "steps": steps, "wall_s": wall, "backend": jax.default_backend()}
    for name, tr in (("on", on), ("off", off)):
        s = tr.summary()
        times = np.asarray(tr.accounting.step_times)
        fresh = np.asarray(tr.accounting.fresh_steps)
        per_epoch = []
        for e in range(args.epochs):
            sl = slice(e * steps_per_epoch, (e + 1) * steps_per_epoch)
            t, f = times[sl], fresh[sl]
            per_epoch.append(float(np.median(t[~f] if (~f).any() else t)))
        later = times[steps_per_epoch:][~fresh[steps_per_epoch:]]
        out[name] = {
            "median_step_s_by_epoch": per_epoch,
            "median_step_s_epochs_ge2": float(np.median(later)),
            "gflops_per_step": s["gflops_per_step"],
            "gflops_epochs_ge2": s.get("gflops_per_hit_step", s["gflops_max_step"]),
            # StableHLO matmul count: XLA's own count leaves out most matmuls on GPU
            "matmul_gflops_epochs_ge2": s.get("matmul_gflops_per_hit_step",
                                              s["matmul_gflops_per_step"]),
            "cache_hit_steps": s["cache_hit_steps"], "cache_fill_steps": s["cache_fill_steps"],
            **{key: s[key] for key in ("cache_rows", "cache_device_bytes", "cache_host_bytes",
                                       "cache_disk_bytes") if key in s},
            "compilations": s["compilations"],
        }
    diff = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                        on.state.params, off.state.params)
    out["max_abs_param_diff"] = max(jax.tree.leaves(diff))
    out["time_ratio_epochs_ge2"] = (out["on"]["median_step_s_epochs_ge2"]
                                    / out["off"]["median_step_s_epochs_ge2"])
    out["gflops_ratio_epochs_ge2"] = (out["on"]["gflops_epochs_ge2"]
                                      / out["off"]["gflops_epochs_ge2"])
    out["matmul_gflops_ratio_epochs_ge2"] = (out["on"]["matmul_gflops_epochs_ge2"]
                                             / out["off"]["matmul_gflops_epochs_ge2"])
    for tr in trainers:
        tr.close()
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| k | epoch-1 step s (on / off) | epochs>=2 step s (on / off) | time ratio | "
             "GFLOP/step epochs>=2 (on / off) | GFLOP ratio | matmul GFLOP ratio | hit / fill "
             "steps | cache MB (device / host) | max abs param diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        on, off = r["on"], r["off"]
        lines.append(
            f"| {r['k']} | {on['median_step_s_by_epoch'][0]:.3f} / "
            f"{off['median_step_s_by_epoch'][0]:.3f} | {on['median_step_s_epochs_ge2']:.3f} / "
            f"{off['median_step_s_epochs_ge2']:.3f} | {r['time_ratio_epochs_ge2']:.2f} | "
            f"{on['gflops_epochs_ge2']:.1f} / {off['gflops_epochs_ge2']:.1f} | "
            f"{r['gflops_ratio_epochs_ge2']:.2f} | "
            f"{r.get('matmul_gflops_ratio_epochs_ge2', float('nan')):.2f} | "
            f"{on['cache_hit_steps']} / "
            f"{on['cache_fill_steps']} | {on.get('cache_device_bytes', 0) / 2**20:.0f} / "
            f"{on.get('cache_host_bytes', 0) / 2**20:.0f} | {r['max_abs_param_diff']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m recipes.bench_cache", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", default="1,2", help="top-layer counts, comma-separated")
    p.add_argument("--examples", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", default=None)
    p.add_argument("--data-dir", default=None, help="TFDS data dir (default: <out>/../tfds)")
    p.add_argument("--out", default="results/bench_cache.jsonl")
    a = p.parse_args(argv)
    if a.epochs < 2:
        p.error(f"--epochs={a.epochs}: the cache is read from epoch 2 on; use >= 2.")
    ks = [int(x) for x in a.ks.split(",") if x]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    done = []
    if os.path.exists(a.out):
        with open(a.out) as f:
            done = [json.loads(line) for line in f if line.strip()]
    key = ("examples", "epochs", "batch_size", "max_length")
    same = [r for r in done if all(r[x] == getattr(a, x) for x in key)]
    have = {r["k"] for r in same}
    todo = [k for k in ks if k not in have]
    if todo:
        model_dir, examples, batcher, _ = _load(a)
        for k in todo:
            print(f"top_layers k={k}: cache on vs off, {a.epochs} epochs of {len(examples)} "
                  "examples ...", flush=True)
            row = run_k(k, a, model_dir, examples, batcher)
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            same.append(row)
    rows = sorted((r for r in same if r["k"] in ks), key=lambda r: r["k"])
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
