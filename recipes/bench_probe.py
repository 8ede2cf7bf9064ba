# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: an RGFT probe step against a full fine-tuning step, optimizer state donated or not.

MiniLM-L6 shapes (random weights and tokens). RGFT runs with ``update_every=1`` and a median
mask, so every step is a probe step (full gradient, tracker update, refreshed mask, moment
freeze); the three trainers run interleaved, so machine noise hits them alike; medians of
``--steps`` steps after 3 warm-up steps. Small batches (e.g. 2 x 8) are overhead-bound like
MiniLM on a large GPU; 32 x 64 is compute-bound on a CPU.

    python -m recipes.bench_probe --batch-size 2 --seq-len 8 --steps 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from flax import nnx

from recipes import _cli
from rgft_jax.models import bert
from rgft_jax.training import TrainConfig, Trainer, methods


@_cli.command
def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m recipes.bench_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--layers", type=int, default=6)
    a = p.parse_args(argv)
    cfg = bert.BertConfig.minilm_l6_h384()
    if a.layers != cfg.num_hidden_layers:
        import dataclasses

        cfg = dataclasses.replace(cfg, num_hidden_layers=a.layers)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(a.batch_size, a.seq_len)).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids), "label": (ids[:, 0] % 3).astype(np.int32)}

    def trainer(method, donate):
        model = bert.BertForSequenceClassification(cfg, 3, rngs=nnx.Rngs(0))
        return Trainer(model, method, TrainConfig(steps=a.steps + 5, progress=False,
                                                  log_every=0, donate_optimizer_state=donate),
                       num_heads=cfg.num_attention_heads, num_layers=cfg.num_hidden_layers,
                       num_classes=3, batch_shape=(a.batch_size, a.seq_len))

    probe = dict(update_every=1, threshold="median")
    trainers = {"full": trainer(methods.full(), None),
                "rgft probe, state not donated (default)": trainer(methods.rgft(**probe), None),
                "rgft probe, state donated": trainer(methods.rgft(**probe), True)}
    for t in trainers.values():
        for _ in range(3):
            t.train_step(batch)
    times = {k: [] for k in trainers}
    for _ in range(a.steps):
        for k, t in trainers.items():
            t0 = time.perf_counter()
            t.train_step(batch)
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"\nbatch {a.batch_size} x {a.seq_len}, {cfg.num_hidden_layers} layers, median of "
          f"{a.steps} interleaved steps\n")
    print("| step | median (ms) | / full |\n|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {1e3 * v:.1f} | {v / med['full']:.2f} |")
    return med


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
