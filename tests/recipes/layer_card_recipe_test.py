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
    # First only k = 1 (a stopped or smaller run), then every k: the card rows of the first
    # run are reused and its cards give the new k's choices.
    assert layer_card.main(argv + ["--ks", "1"]) == 0
    first = (out / "validation.jsonl").read_text().splitlines()
    assert "| 1 | top_k |" in (out / "validation.md").read_text()
    assert "| 2 | top_k |" not in (out / "validation.md").read_text()
    assert layer_card.main(argv) == 0
    lines = (out / "validation.jsonl").read_text().splitlines()
    assert lines[:len(first)] == first
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys))
    # 2 seeds x (card + base + 2 layers) + a second card + placements
    # Per-layer runs are shared with the k = 1 placements (one key per configuration).
    assert sum(k.startswith("lora/r2/layers") and "-" not in k.split("/")[2] for k in keys) == 4
    summary = json.loads((out / "validation.json").read_text())
    assert len(summary["per_layer"]) == 2 and -1 <= summary["stability"] <= 1
    assert {p["policy"] for p in summary["placements"]} >= {"card_max_quality", "top_k",
                                                             "random_k", "all_layers_r1"}
    assert {(p["k"], p["policy"]) for p in summary["placements"]} >= {
        (2, "card_max_quality"), (2, "card_spread"), (2, "top_k")}
    md = (out / "validation.md").read_text()
    assert "Mean Spearman" in md and "| 1 | top_k |" in md and "| 2 | top_k |" in md
    assert "p vs top_k" in md
    # A rerun finds every run done: nothing is appended.
    assert layer_card.main(argv) == 0
    assert (out / "validation.jsonl").read_text().splitlines() == lines


def _tiny_llama_dir(path, csv):
    """A tiny HF Llama checkpoint (transformers writes it) with a byte-level BPE trained on
    the CSV's texts."""
    torch = pytest.importorskip("torch")
    import tokenizers
    import transformers

    path.mkdir()
    texts = [line.rsplit(",", 1)[0] for line in csv.read_text().splitlines()[1:]]
    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32,
                                   intermediate_size=40, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    return path


def test_layer_card_cli_decoder_cards_on_both_tasks(tmp_path):
    csv = tiny_csv(tmp_path / "train.csv")
    model = _tiny_llama_dir(tmp_path / "llama", csv)
    out = tmp_path / "out"
    rc = layer_card.main(["--model", str(model), "--train", str(csv), "--batch-size", "4",
                          "--max-length", "24", "--probe-batches", "2", "--micro-batch", "2",
                          "--out", str(out)])
    assert rc == 0
    for task in ("lm", "instruct"):
        card = json.loads((out / f"card_{task}.json").read_text())
        assert card["layers"] == [0, 1] and len(card["matrices"]) == 14  # 7 per layer
        assert (out / f"card_{task}.png").stat().st_size > 10_000
    stab = json.loads((out / "stability.json").read_text())
    assert -1 <= stab["across_tasks_spearman"] <= 1
    assert -1 <= stab["across_subsets_spearman_lm"] <= 1
    # --validate trains the BERT classifier: refused for a decoder, one line, no traceback.
    assert layer_card.main(["--model", str(model), "--validate", "--out", str(out)]) == 2
