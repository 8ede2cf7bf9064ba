# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""DSCA on a real fine-tuning run: MiniLM-L6 on CrowdFlower, the r x k ablation.

1. Fine-tunes MiniLM-L6 (full fine-tuning, the demo's data and settings) and, every
   ``--probe-every`` steps, sketches the full gradient of a fixed probe batch per block
   and the parameter change since the previous probe (the update the seed's
   ||dtheta - Pi_r dtheta|| is about). Blocks: heads and 32-neuron groups
   (``--block-width 0``) or DSCA's ``d_b``-wide blocks inside every head
   (``--block-width 16``).
2. Replays that sequence through the dynamic algorithm for every ``r x k``
   (``--ranks`` x ``--modules``): stability (ARI/NMI between consecutive clusterings and
   the per-module Jaccard stability), kappa(r) of the gradient covariance over steps, the
   gradient-subspace drift, the update residual, the Laplacian change and the centroid /
   row movement of equations 4-5, time per update — all on the same gradients.
3. Trains, for every ``r x k`` of ``--train-configs`` (default: all), only the
   highest-energy modules of the final library (until ``--module-budget`` of the
   parameters) from the pretrained weights; held-out accuracy next to full fine-tuning
   with the same steps, and the r x k accuracy and stability heatmaps (PNG). Every trained
   configuration is one line of ``trained.jsonl``: a rerun skips what is done.

    python -m recipes.bench_dsca_real --steps 120 --out runs/dsca_real
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np
from flax import nnx

from recipes import _cli, demo
from rgft_jax import data, dsca, reporting
from rgft_jax.components import Partition
from rgft_jax.models import bert
from rgft_jax.training import TrainConfig, Trainer, methods


@_cli.command
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--probe-every", type=int, default=6)
    p.add_argument("--ranks", default="4,8,16,32")
    p.add_argument("--modules", default="4,8,12,16")
    p.add_argument("--train-configs", default="all",
                   help="r x k pairs to train, e.g. 8x8,16x12 ('all': every pair)")
    p.add_argument("--block-width", type=int, default=0,
                   help="0: heads + 32-neuron groups; 16/32: d_b blocks inside every head")
    p.add_argument("--train-steps", type=int, default=None,
                   help="steps of each module run (default: --steps, same as full FT)")
    p.add_argument("--module-budget", type=float, default=0.3,
                   help="fraction of the maskable parameters the trained modules may hold")
    p.add_argument("--eval-examples", type=int, default=1024)
    p.add_argument("--out", default="runs/dsca_real")
    a = p.parse_args(argv)
    if a.train_steps is None:
        a.train_steps = a.steps
    os.makedirs(a.out, exist_ok=True)
    cfg = demo.DemoConfig(steps=a.steps, eval_examples=a.eval_examples, out=a.out,
                          progress=False, checkpoint_every=0)
    model_dir = demo.default_model_dir()
    train_src, test_src, names, _ = demo.load_data(cfg)
    tok = data.TextTokenizer.from_pretrained(model_dir, max_length=cfg.max_length)
    batcher = data.ClassificationBatcher(tok)
    eval_set = [b for i, b in enumerate(data.eval_batches(test_src, batch_size=32,
                                                          batch_fn=batcher))
                if i * 32 < a.eval_examples]
    probe = batcher([train_src[i] for i in range(32)])

    # 1. One fine-tuning run; sketches of a fixed probe batch along its trajectory.
    model = bert.from_pretrained(model_dir, num_labels=len(names), seed=0)
    trainer = Trainer(model, methods.full(learning_rate=cfg.learning_rate),
                      TrainConfig(steps=a.steps, progress=False), num_heads=12, num_layers=6,
                      num_classes=len(names))
    params0 = trainer.state.params
    # The components of the module runs too (the task head excluded: always trained).
    components = ("heads" if a.block_width == 0 else
                  dsca.dsca_rules(12, block_width=a.block_width, attention="block"))
    part = Partition.build(params0, methods.rgft(components=components).rules(12, params0))
    sketch_dim = 64
    delta_sketch = jax.jit(lambda p, q: dsca.sketch(
        part, jax.tree.map(lambda x, y: x - y, p, q), dim=sketch_dim, seed=0))

    @jax.jit
    def probe_sketch(params):
        def loss(p):
            m = nnx.merge(trainer.graphdef, p, trainer.rest)
            logits = m(probe["input_ids"], probe["attention_mask"], probe["token_type_ids"])
            return jax.numpy.mean(
                jax.nn.log_softmax(logits)[np.arange(32), probe["label"]]) * -1.0
        g = jax.grad(loss)(params)
        return dsca.sketch(part, g, dim=sketch_dim, seed=0), part.sq_norms(g)

    it = data.TrainIterator(train_src, batch_size=32, seed=0, batch_fn=batcher)
    sketches, sq, deltas = [], [], []
    t0 = time.time()
    # A copy: the train step donates the state's buffers.
    snapshot = jax.jit(lambda p: jax.tree.map(jax.numpy.copy, p))
    last = snapshot(trainer.state.params)
    for step in range(a.steps):
        if step % a.probe_every == 0:
            s, n = jax.device_get(probe_sketch(trainer.state.params))
            sketches.append(s)
            sq.append(n)
            # The update of the interval ending here (zeros at the first probe).
            deltas.append(jax.device_get(delta_sketch(trainer.state.params, last)))
            last = snapshot(trainer.state.params)
        trainer.train_step(next(it))
    full_eval = trainer.evaluate(eval_set)
    print(f"trajectory: {a.steps} steps, {len(sketches)} probes, {time.time() - t0:.0f}s; "
          f"full FT accuracy {full_eval['accuracy']:.4f}", flush=True)

    # 2. The r x k ablation on the same sketch sequence.
    rows, libraries = [], {}
    for r in map(int, a.ranks.split(",")):
        for k in map(int, a.modules.split(",")):
            conf = dsca.DSCAConfig.for_partition(part, num_modules=k, embed_dim=r,
                                                 sketch_dim=sketch_dim, recompute_every=10)
            state = dsca.dsca_init(part, config=conf)
            update = jax.jit(dsca.dsca_update, static_argnames=("config",))
            libs, times = [], []
            for i, (s, n) in enumerate(zip(sketches, sq)):
                # deltas[i + 1] is the update made after gradient i was probed.
                d = deltas[i + 1] if i + 1 < len(deltas) else None
                t = time.perf_counter()
                state, lib = update(state, s, n, config=conf, block_sizes=part.sizes,
                                    update_sketches=d)
                jax.block_until_ready(lib.labels)
                if i:
                    times.append(time.perf_counter() - t)
                libs.append(jax.device_get(lib))
            libraries[(r, k)] = libs[-1]
            half = len(libs) // 2  # once the library has settled

            def late(name, libs=libs, half=half):
                # Mean of the finite values of the late updates (NaN: none is defined yet).
                v = np.concatenate([np.asarray(getattr(x, name), float).reshape(-1)
                                    for x in libs[half:]])
                v = v[np.isfinite(v)]
                return float(v.mean()) if v.size else float("nan")

            rows.append({"r": r, "k": k, "ari": late("ari"), "nmi": late("nmi"),
                         "module_stability": late("module_stability"),
                         "kappa": float(libs[-1].kappa), "grad_drift": late("grad_drift"),
                         "grad_residual": late("grad_residual"),
                         "update_residual": late("update_residual"),
                         "drift": late("drift"), "laplacian_change": late("laplacian_change"),
                         "row_drift": late("row_drift"),
                         "centroid_drift": late("centroid_drift"),
                         "modules": int(np.sum(libs[-1].valid)),
                         "update_ms": 1e3 * float(np.median(times))})
            print(json.dumps(rows[-1]), flush=True)

    # 3. Train only the top-energy modules of a few libraries.
    trained = [{"config": "full fine-tuning", "accuracy": full_eval["accuracy"],
                "macro_f1": full_eval["macro_f1"], "update_ratio": 1.0}]
    done_path = os.path.join(a.out, "trained.jsonl")
    done = {}
    if os.path.exists(done_path):
        with open(done_path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    done[(row["r"], row["k"])] = row
    pairs = (sorted(libraries) if a.train_configs == "all" else
             [tuple(map(int, pair.split("x"))) for pair in a.train_configs.split(",")])
    for r, k in pairs:
        lib = libraries.get((r, k))
        if lib is None:
            continue
        if (r, k) in done:
            trained.append(done[(r, k)])
            continue
        order = np.argsort(-np.asarray(lib.mean_energy))
        budget = a.module_budget * part.sizes.sum()
        chosen, used = [], 0.0
        for j in order:
            if lib.valid[j] and used + lib.num_params[j] <= budget:
                chosen.append(int(j))
                used += float(lib.num_params[j])
        mask = np.asarray(dsca.module_mask(lib, chosen))
        model = bert.from_pretrained(model_dir, num_labels=len(names), seed=0)
        tr = Trainer(model, methods.modules(mask, learning_rate=cfg.learning_rate,
                                            components=components),
                     TrainConfig(steps=a.train_steps, progress=False), num_heads=12,
                     num_layers=6, num_classes=len(names))
        tr.fit(data.TrainIterator(train_src, batch_size=32, seed=0, batch_fn=batcher))
        ev, summ = tr.evaluate(eval_set), tr.summary()
        trained.append({"config": f"modules r={r} k={k} ({len(chosen)} modules)",
                        "r": r, "k": k, "accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"],
                        "update_ratio": summ["update_ratio"],
                        "gflops_per_step": summ["gflops_per_step"]})
        with open(done_path, "a") as f:
            f.write(json.dumps(trained[-1]) + "\n")
        print(json.dumps(trained[-1]), flush=True)

    ranks = sorted({r for r, _ in libraries})
    mods = sorted({k for _, k in libraries})
    grid = lambda get: [[get(r, k) for k in mods] for r in ranks]  # noqa: E731
    by_rk = {(t["r"], t["k"]): t for t in trained if "r" in t}
    stab = {(row["r"], row["k"]): row for row in rows}
    axes = dict(rows=ranks, cols=mods, xlabel="modules k", ylabel="embedding rank r")
    figure = reporting.plot_heatmaps({
        f"accuracy, top-energy modules <= {a.module_budget:g} of params, {a.train_steps} "
        f"steps\n(full FT {full_eval['accuracy']:.3f} at {a.steps} steps)": dict(
            values=grid(lambda r, k: by_rk.get((r, k), {}).get("accuracy", np.nan)), **axes),
        "module stability (Jaccard, late updates)": dict(
            values=grid(lambda r, k: stab[(r, k)]["module_stability"]), cmap="magma", **axes),
    }, os.path.join(a.out, "dsca_rk.png"),
        title=f"DSCA r x k on MiniLM-L6 / CrowdFlower ({len(part)} blocks)")

    cols = (("r", "r", "{}"), ("k", "k", "{}"), ("modules", "modules", "{}"),
            ("ari", "ARI", "{:.3f}"), ("module_stability", "module stab.", "{:.3f}"),
            ("kappa", "kappa(r)", "{:.3f}"), ("grad_drift", "Pi_r drift", "{:.3f}"),
            ("grad_residual", "g resid.", "{:.3f}"), ("update_residual", "dtheta resid.",
                                                       "{:.3f}"),
            ("laplacian_change", "dL", "{:.3f}"), ("row_drift", "eps_u", "{:.3f}"),
            ("centroid_drift", "centroid", "{:.3f}"), ("update_ms", "update (ms)", "{:.0f}"))
    tcols = (("config", "trained", "{}"), ("accuracy", "accuracy", "{:.4f}"),
             ("macro_f1", "macro-F1", "{:.4f}"), ("update_ratio", "update ratio", "{:.3f}"),
             ("gflops_per_step", "GFLOPs/step", "{:.1f}"))
    text = (f"# DSCA on MiniLM-L6 / CrowdFlower ({len(part)} blocks, {len(sketches)} probes)\n\n"
            + reporting.markdown_table(rows, cols) + "\n\n"
            + reporting.markdown_table(trained, tcols) + "\n")
    print(text)
    out = {"ablation": rows, "trained": trained, "blocks": len(part), "figure": figure,
           "config": dataclasses.asdict(cfg)}
    with open(os.path.join(a.out, "dsca_real.json"), "w") as f:
        json.dump(out, f, indent=2, default=str)
    with open(os.path.join(a.out, "dsca_real.md"), "w") as f:
        f.write(text)
    return out


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
