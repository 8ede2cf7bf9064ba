"""The step-time benchmark on a tiny random BERT: runs, and its ratios mean what they say."""

import json

import pytest

from recipes import bench_step_time


def test_tiny_model_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench_step_time.main(["--model", "tiny", "--steps", "6", "--update-every", "3",
                               "--batch-size", "4", "--seq-len", "8",
                               "--methods", "full,rgft_budget50,top_layers",
                               "--json", str(out)])
    assert rc == 0
    assert "| rgft_budget50 |" in capsys.readouterr().out
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    full, rgft = rows["full"], rows["rgft_budget50"]
    assert full["gflops_per_step_ratio"] == 1.0 and full["step_s_ratio"] == 1.0
    # Probe steps are full steps; sparse steps differentiate less.
    assert rgft["probe_steps"] >= 2 and any(rgft["probe"]) and not all(rgft["probe"])
    assert rgft["gflops_per_step"] < full["gflops_per_step"]
    assert rows["top_layers"]["gflops_per_step_ratio"] < 1.0
    # The first run of every compiled step is flagged (and left out of the medians).
    assert sum(rgft["compiled"]) == rgft["compilations"]
    assert len(rgft["step_times_s"]) == 6


@pytest.mark.parametrize("argv, match", [
    (["--methods", "full,nope"], "'nope' is not a method"),
    (["--steps", "3", "--update-every", "2"], "two refresh periods"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--warmup-steps", "-1"], "--warmup-steps -1"),
])
def test_bad_arguments_are_named(argv, match, capsys):
    with pytest.raises(SystemExit):
        bench_step_time.main(["--model", "tiny", *argv])
    assert match in capsys.readouterr().err
