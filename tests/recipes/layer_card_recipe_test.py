# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Layer Card recipe's CLI on a tiny HF-format BERT checkpoint and CSV."""

import json

import pytest
from demo_test import tiny_checkpoint, tiny_csv

from recipes import layer_card


def test_layer_card_cli_tiny_end_to_end(tmp_path):
    model = tiny_checkpoint(tmp_path / "model")
    csv = tiny_csv(tmp_path / "train.csv")
    out = tmp_path / "out"
    rc = layer_card.main(["--model", str(model), "--train", str(csv), "--batch-size", "8",
                          "--max-length", "16", "--probe-batches", "2", "--micro-batch", "2",
                          "--out", str(out)])
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    assert card["layers"] == [0, 1] and len(card["res"]) == 2
    assert "| layer |" in (out / "card.md").read_text()
    assert (out / "card.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv, match", [
    (["--micro-batch", "3"], "--micro-batch 3 must divide --batch-size 32"),
    (["--probe-batches", "0"], "--probe-batches 0"),
    (["--test", "x.csv"], "--test needs --train"),
])
def test_layer_card_cli_rejects_bad_flags(argv, match, capsys):
    assert layer_card.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and "Traceback" not in err


@pytest.mark.slow  # ~20 tiny LoRA runs, each compiling its own step
def test_layer_card_validation_tiny_is_resumable(tmp_path):
    model = tiny_checkpoint(tmp_path / "model")
    csv = tiny_csv(tmp_path / "train.csv")
    out = tmp_path / "out"
    argv = ["--model", str(model), "--train", str(csv), "--batch-size", "8", "--max-length",
            "16", "--probe-batches", "1", "--micro-batch", "4", "--out", str(out), "--validate",
            "--steps", "2", "--seeds", "0,1", "--eval-examples", "16", "--lora-rank", "2"]
    assert layer_card.main(argv) == 0
    lines = (out / "validation.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys))
    # 2 seeds x (card + base + 2 layers) + a second card + placements
    # Per-layer runs are shared with the k = 1 placements (one key per configuration).
    assert sum(k.startswith("lora/r2/layers") and "-" not in k.split("/")[2] for k in keys) == 4
    summary = json.loads((out / "validation.json").read_text())
    assert len(summary["per_layer"]) == 2 and -1 <= summary["stability"] <= 1
    assert {p["policy"] for p in summary["placements"]} >= {"card_max_quality", "top_k",
                                                             "random_k", "all_layers_r1"}
    md = (out / "validation.md").read_text()
    assert "Mean Spearman" in md and "| 1 | top_k |" in md
    # A rerun finds every run done: nothing is appended.
    assert layer_card.main(argv) == 0
    assert (out / "validation.jsonl").read_text().splitlines() == lines
