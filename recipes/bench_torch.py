# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: a full fine-tuning step of ours against PyTorch (``transformers``), side by side.

Both sides train the same BERT classifier (all-MiniLM-L6-v2 when its weights are installed,
``recipes.assets.minilm_dir()``, else a random init of the same shape) with AdamW on the same
batches of random tokens, with dropout off on both sides (our Trainer's default), the same
thread count, in ONE process. Steps are interleaved (torch, ours, torch, ours, ...) so that
whatever else runs on the machine slows both alike, and each side's statistic is the median
of its timed steps (the first ``--warmup`` steps of each side are left out: compilation,
allocator warm-up). The ratio is what to read; absolute times depend on the machine's load.

Sides (``--sides``):

* ``torch``: ``transformers.BertForSequenceClassification`` in train mode; ``zero_grad``,
  forward, cross-entropy, backward, ``AdamW.step``;
* ``trainer``: :class:`~rgft_jax.training.Trainer` with ``Method("full")``: the time of the
  whole ``train_step`` call (host work included) and of its compiled step;
* ``plain``: the smallest jitted NNX + optax step (``value_and_grad``, ``optax.adamw``,
  donated state): what the model itself costs, without the Trainer.

    python -m recipes.bench_torch                       # MiniLM, batch 32 x 64, all cores
    python -m recipes.bench_torch --threads 2 --steps 12 --sides torch,trainer,plain
    python -m recipes.bench_torch --xla-flags=--xla_cpu_use_thunk_runtime=false  # try flags

Thread counts: torch via ``torch.set_num_threads``; XLA's CPU intra-op pool via
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=N`` (set before
JAX is imported, which is why this module imports JAX only inside :func:`run`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from recipes import _cli

SIDES = ("torch", "trainer", "plain")


def _set_threads(threads: int, extra_flags: str) -> None:
    """XLA's CPU thread pool size (must run before ``import jax``) plus any extra flags."""
    flags = os.environ.get("XLA_FLAGS", "")
    if threads:
        flags += (" --xla_cpu_multi_thread_eigen=true"
                  f" intra_op_parallelism_threads={threads}")
    if extra_flags:
        flags += " " + extra_flags
    os.environ["XLA_FLAGS"] = flags.strip()


def _batches(vocab: int, batch: int, seq_len: int, classes: int, seed: int):
    rng = np.random.default_rng(seed)
    while True:
        yield {"input_ids": rng.integers(0, vocab, (batch, seq_len), dtype=np.int32),
               "attention_mask": np.ones((batch, seq_len), np.int32),
               "token_type_ids": np.zeros((batch, seq_len), np.int32),
               "label": rng.integers(0, classes, (batch,), dtype=np.int32)}


def _torch_side(a, model_dir: str | None, cfg):
    """A closure running one torch training step on a host batch."""
    import torch
    import transformers

    torch.manual_seed(a.seed)
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if model_dir:
        model = transformers.BertForSequenceClassification.from_pretrained(
            model_dir, num_labels=a.num_classes, **no_dropout)
    else:
        hf = transformers.BertConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size, num_labels=a.num_classes, **no_dropout)
        model = transformers.BertForSequenceClassification(hf)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.learning_rate, weight_decay=0.01)

    def step(batch):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=torch.from_numpy(batch["input_ids"]).long(),
                    attention_mask=torch.from_numpy(batch["attention_mask"]).long(),
                    token_type_ids=torch.from_numpy(batch["token_type_ids"]).long())
        loss = torch.nn.functional.cross_entropy(
            out.logits, torch.from_numpy(batch["label"]).long())
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, loss.item()

    info = {"attn_implementation": getattr(model.config, "_attn_implementation", None),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    return step, info


def _our_model(a, model_dir: str | None, cfg):
    from flax import nnx

    from rgft_jax.models import bert

    # pooling="cls": HF's pooler, so both sides run the same layers.
    if model_dir:
        return bert.from_pretrained(model_dir, num_labels=a.num_classes, pooling="cls",
                                    seed=a.seed)
    return bert.BertForSequenceClassification(cfg, a.num_classes, "cls",
                                              rngs=nnx.Rngs(a.seed))


def _trainer_side(a, model_dir, cfg):
    from rgft_jax.training import Method, TrainConfig, Trainer

    tr = Trainer(_our_model(a, model_dir, cfg), Method("full", learning_rate=a.learning_rate),
                 TrainConfig(steps=a.steps + a.warmup, seed=a.seed, progress=False,
                             log_every=0),
                 num_heads=cfg.num_attention_heads, num_layers=cfg.num_hidden_layers,
                 num_classes=a.num_classes, batch_shape=(a.batch_size, a.seq_len))

    def step(batch):
        t0 = time.perf_counter()
        m = tr.train_step(batch)
        return time.perf_counter() - t0, float(m["loss"])

    return step, tr


def _plain_side(a, model_dir, cfg):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    model = _our_model(a, model_dir, cfg)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adamw(a.learning_rate, weight_decay=0.01)
    state = (params, tx.init(params))

    def train_step(state, batch):
        params, opt_state = state

        def loss_fn(p):
            logits = nnx.merge(graphdef, p, rest)(
                batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            return optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), batch["label"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    jitted = jax.jit(train_step, donate_argnums=0)
    box = [state]

    def step(batch):
        b = {k: jnp.asarray(v) for k, v in batch.items()}
        t0 = time.perf_counter()
        box[0], loss = jitted(box[0], b)
        loss = float(loss)  # waits for the step
        return time.perf_counter() - t0, loss

    return step


def run(a) -> dict[str, Any]:
    _set_threads(a.threads, a.xla_flags)
    import jax

    from recipes import assets
    from rgft_jax.models import bert

    model_dir = None if a.random_init else assets.minilm_dir()
    cfg = bert.BertConfig.from_hf(model_dir) if model_dir else bert.BertConfig.minilm_l6_h384()
    steps, info, trainer = {}, {}, None
    for side in a.sides:
        if side == "torch":
            steps[side], info["torch"] = _torch_side(a, model_dir, cfg)
        elif side == "trainer":
            steps[side], trainer = _trainer_side(a, model_dir, cfg)
        else:
            steps[side] = _plain_side(a, model_dir, cfg)
    times: dict[str, list[float]] = {s: [] for s in a.sides}
    losses: dict[str, list[float]] = {s: [] for s in a.sides}
    data = _batches(cfg.vocab_size, a.batch_size, a.seq_len, a.num_classes, a.seed)
    t0 = time.time()
    for i in range(a.warmup + a.steps):
        batch = next(data)  # every side sees the same batch
        order = a.sides if i % 2 == 0 else a.sides[::-1]  # alternate who goes first
        for side in order:
            dt, loss = steps[side](batch)
            times[side].append(dt)
            losses[side].append(loss)
    rows = []
    for side in a.sides:
        t = np.asarray(times[side][a.warmup:])
        row = {"side": side, "median_s": float(np.median(t)), "mean_s": float(t.mean()),
               "min_s": float(t.min()), "max_s": float(t.max())}
        if side == "trainer":  # the compiled step alone (Trainer.step_times)
            row["compiled_step_median_s"] = float(np.median(trainer.step_times[a.warmup:]))
        rows.append(row)
    ref = next((r for r in rows if r["side"] == "torch"), None)
    for r in rows:
        r["ratio_to_torch"] = r["median_s"] / ref["median_s"] if ref else float("nan")
    if trainer is not None:
        trainer.close()
    return {"config": {**vars(a), "sides": list(a.sides), "weights": model_dir or "random",
                       "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
                       "xla_flags": os.environ.get("XLA_FLAGS", ""), **info.get("torch", {})},
            "rows": rows, "times_s": times, "losses": losses, "wall_time_s": time.time() - t0}


@_cli.command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.bench_torch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", default="torch,trainer",
                   help=f"comma-separated, from {','.join(SIDES)}")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads and XLA intra-op threads (0: leave XLA's default)")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for our side")
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--random-init", action="store_true",
                   help="random weights even when MiniLM is installed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    a.sides = tuple(s.strip() for s in a.sides.split(",") if s.strip())
    bad = [s for s in a.sides if s not in SIDES]
    if bad or not a.sides:
        p.error(f"--sides {','.join(a.sides)}: unknown {bad}; allowed: {', '.join(SIDES)}")
    for name in ("batch_size", "seq_len", "steps"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(a, name)}: must be >= 1")
    for name in ("warmup", "threads"):
        if getattr(a, name) < 0:
            p.error(f"--{name} {getattr(a, name)}: must be >= 0")
    if "torch" in a.sides:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as e:
            p.error(f"--sides torch needs torch and transformers ({e}); pip install torch "
                    "transformers, or drop the torch side")

    out = run(a)
    c = out["config"]
    print(f"BERT {c['weights']}, batch {a.batch_size} x {a.seq_len}, {a.steps} timed steps "
          f"per side (+{a.warmup} warm-up), threads {a.threads}, XLA_FLAGS={c['xla_flags']!r}"
          + (f", torch {c['torch']} attention {c['attn_implementation']}" if "torch" in c
             else ""))
    print("| side | median (s) | mean (s) | min (s) | median / torch |")
    print("|---|---|---|---|---|")
    for r in out["rows"]:
        print(f"| {r['side']} | {r['median_s']:.4f} | {r['mean_s']:.4f} | {r['min_s']:.4f} | "
              f"{r['ratio_to_torch']:.3f} |")
        if "compiled_step_median_s" in r:
            print(f"| trainer (compiled step) | {r['compiled_step_median_s']:.4f} | | | |")
    print(f"wall time {out['wall_time_s']:.0f}s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
