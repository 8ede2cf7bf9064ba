"""The step-time benchmark on a tiny random BERT: runs, and its ratios mean what they say."""

import json

import numpy as np
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
    # The probe overhead is the probe steps' median over the full steps' median, same run.
    probe_times = [t for t, p, c in zip(rgft["step_times_s"], rgft["probe"], rgft["compiled"])
                   if p and not c]
    full_times = [t for t, c in zip(full["step_times_s"], full["compiled"]) if not c]
    assert rgft["probe_step_s_ratio"] == pytest.approx(
        np.median(probe_times) / np.median(full_times))
    assert np.isnan(full["probe_step_s_ratio"])  # full fine-tuning has no probe steps
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


def test_bench_probe_runs_tiny(capsys):
    from recipes import bench_probe

    med = bench_probe.main(["--batch-size", "2", "--seq-len", "8", "--steps", "2",
                            "--layers", "1"])
    assert set(med) == {"full", "rgft probe, state not donated (default)",
                        "rgft probe, state donated"}
    assert "| / full |" in capsys.readouterr().out
