# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: cost of RGFT's tracking + masking against plain AdamW and a whole train step.

On a MiniLM-L6-sized params tree (22.7 M parameters; the real model's shapes, random values)
with synthetic gradients, times the jitted optimizer update + apply of

* ``optax.adamw``,
* ``optax.chain(rgft.residual_mask(bert preset), optax.adamw)``,
* ``rgft.residual_guided(optax.adamw, bert preset)`` with frozen moments (``'keep'``),
  with ``moments='reset'`` and with the compact state (``capacity=0.25``),

interleaved round-robin so machine noise hits all alike, and one whole train step of the
model (batch 32 x 64 tokens, forward + backward + AdamW). Each optimizer state is donated to
its step as the Trainer does by default (``TrainConfig.donate_optimizer_state``): AdamW's
and the chain form's are, ``residual_guided``'s are not (their moment freeze would make XLA
copy every donated moment); ``--donate-all`` donates every state, to see that cost. The
figure of merit is the ratio ``(t_rgft - t_adamw) / t_train_step``: the overhead RGFT adds
to fine-tuning (goal <= 2 %).

    python -m recipes.bench_overhead [--steps 40] [--update-every 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import rgft_jax as rgft
from recipes import _cli
from rgft_jax.models import bert
from rgft_jax.training import TrainConfig, Trainer, methods


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return time.perf_counter() - t0, out


@_cli.command
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40, help="timed optimizer steps per variant")
    p.add_argument("--update-every", type=int, default=10,
                   help="mask refresh period (refresh steps are included in the timing)")
    p.add_argument("--train-steps", type=int, default=6, help="timed whole train steps")
    p.add_argument("--donate-all", action="store_true",
                   help="donate every optimizer state (the Trainer does not, for residual_guided)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    cfg = bert.BertConfig.minilm_l6_h384()
    model = bert.BertForSequenceClassification(cfg, 3, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    rules = (rgft.Rule(r"^classifier/", exclude=True), *rgft.components.bert(12))
    part = rgft.Partition.build(params, rules)
    grads = []
    for key in jax.random.split(jax.random.key(1), 4):
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        grads.append(jax.tree.unflatten(
            treedef, [1e-3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]))
    knobs = dict(update_every=a.update_every)
    variants = {
        "adamw": optax.adamw(1e-4),
        "chain(residual_mask, adamw)": optax.chain(rgft.residual_mask(part, **knobs),
                                                   optax.adamw(1e-4)),
        "residual_guided(adamw)": rgft.residual_guided(optax.adamw(1e-4), part, **knobs),
        "residual_guided(adamw, reset)": rgft.residual_guided(
            optax.adamw(1e-4), part, moments="reset", **knobs),
        "residual_guided(adamw, cap 0.25)": rgft.residual_guided(
            optax.adamw(1e-4), part, capacity=0.25, **knobs),
        # The same optimizer with its state donated, as the Trainer did before: the price of
        # the in-place moment freeze, measured side by side.
        "residual_guided(adamw), donated": rgft.residual_guided(optax.adamw(1e-4), part,
                                                                **knobs),
    }
    steps, states, ps = {}, {}, {}
    for name, tx in variants.items():
        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s
        # As the Trainer: no component mask -> state donated; a moment freeze -> not.
        donate = a.donate_all or not name.startswith("residual_guided") or (
            name.endswith("donated"))
        steps[name] = jax.jit(step, donate_argnums=(0, 1) if donate else (0,))
        ps[name] = jax.tree.map(jnp.copy, params)
        states[name] = tx.init(ps[name])
        ps[name], states[name] = steps[name](ps[name], states[name], grads[0])  # compile
    times = {name: [] for name in variants}
    for i in range(a.steps):
        for name in variants:  # round-robin: noise hits every variant alike
            dt, (ps[name], states[name]) = _timed(steps[name], ps[name], states[name],
                                                  grads[i % len(grads)])
            times[name].append(dt)

    # A whole train step of the same model: batch 32 x 64 tokens, full fine-tuning.
    trainer = Trainer(model, methods.full(), TrainConfig(steps=a.train_steps + 1, progress=False),
                      num_heads=12, num_layers=6, num_classes=3)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(32, 64)).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids), "label": (ids[:, 0] % 3).astype(np.int32)}
    for _ in range(a.train_steps + 1):
        trainer.train_step(batch)
    t_train = float(np.median(trainer.step_times[1:]))

    med = {k: float(np.median(v)) for k, v in times.items()}
    base = med["adamw"]
    rows = []
    print(f"\nMiniLM-L6-sized tree: {n_params / 1e6:.1f} M params, {len(part)} components "
          f"(heads + 32-neuron groups + leaves); refresh every {a.update_every} steps; "
          f"median of {a.steps} steps; whole train step (batch 32x64) {t_train:.3f} s\n")
    print(f"| {'optimizer':<32} | step (ms) | vs adamw | overhead / train step | state MB |")
    print(f"|{'-' * 34}|-----------|----------|-----------------------|----------|")
    for name, t in med.items():
        over = (t - base) / t_train
        state_bytes = sum(x.nbytes for x in jax.tree.leaves(states[name]))
        rows.append({"optimizer": name, "step_ms": 1e3 * t, "ratio_to_adamw": t / base,
                     "overhead_of_train_step": over, "state_bytes": state_bytes})
        print(f"| {name:<32} | {1e3 * t:9.1f} | {t / base:8.2f} | {100 * over:20.2f}% | "
              f"{state_bytes / 2**20:8.1f} |")
    out = {"params": n_params, "components": len(part), "train_step_s": t_train, "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
