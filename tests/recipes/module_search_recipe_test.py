"""The module-search recipe end to end on a tiny checkpoint: probes, search, validation runs,
the 3-seed table with paired tests, the figure, and a resumed rerun (slow tier: ~20 compiles)."""

import json

import pytest
from demo_test import tiny_checkpoint, tiny_csv

from recipes import module_search


@pytest.mark.slow
def test_module_search_recipe_end_to_end_and_resumes(tmp_path):
    model = tiny_checkpoint(tmp_path / "model")
    train, test = tiny_csv(tmp_path / "train.csv", 96), tiny_csv(tmp_path / "test.csv", 64)
    out = tmp_path / "ms"
    args = ["--model", str(model), "--train", str(train), "--test", str(test),
            "--steps", "2", "--repeats", "2", "--batch-size", "8", "--max-length", "16",
            "--probe-examples", "16", "--eval-examples", "16", "--validation", "3",
            "--seeds", "0,1", "--candidates", "off,sparse,lora4", "--cheap-compile",
            "--out", str(out)]
    res = module_search.main(args)
    assert res["nodes"] == ["layer 0", "layer 1"]
    assert res["search"]["gap_greedy_vs_ilp"] >= -1e-9  # greedy is never above the ILP
    assert res["search"]["ilp"]["bound"] >= res["search"]["ilp"]["objective"] - 1e-9
    assert res["predictor"]["random"]["n"] == 3
    rows = {r["method"]: r for r in res["table"]}
    assert rows["full fine-tuning"]["seeds"] == 2
    assert "p_vs_full" in rows["searched (greedy+2opt)"]
    assert "p_vs_energy" in rows["searched (greedy+2opt)"]
    assert "p vs full (paired t)" in (out / "module_search.md").read_text()
    assert (out / "predicted_vs_true.png").stat().st_size > 10_000
    lines = (out / "runs.jsonl").read_text().splitlines()
    keys = [json.loads(x)["key"] for x in lines]
    assert len(keys) == len(set(keys))  # nothing trained twice
    # A rerun trains nothing and reports the same table.
    again = module_search.main(args)
    assert (out / "runs.jsonl").read_text().splitlines() == lines
    assert again["table"] == res["table"]
