"""The DSCA r x k recipe end to end on the real MiniLM (tiny settings; slow tier)."""

import json

import pytest

from recipes import bench_dsca_real


@pytest.mark.slow
def test_rk_ablation_trains_every_pair_writes_heatmaps_and_resumes(tmp_path):
    args = ["--steps", "6", "--probe-every", "1", "--ranks", "2,3", "--modules", "2",
            "--train-steps", "2", "--eval-examples", "32", "--block-width", "16",
            "--out", str(tmp_path)]
    out = bench_dsca_real.main(args)
    assert [(r["r"], r["k"]) for r in out["ablation"]] == [(2, 2), (3, 2)]
    late = out["ablation"][0]
    for key in ("kappa", "grad_residual", "update_residual", "module_stability"):
        assert 0.0 <= late[key] <= 1.0 + 1e-6, (key, late[key])
    assert late["laplacian_change"] >= 0 and late["row_drift"] >= 0
    assert (tmp_path / "dsca_rk.png").stat().st_size > 10_000
    lines = (tmp_path / "trained.jsonl").read_text().splitlines()
    assert [(json.loads(x)["r"], json.loads(x)["k"]) for x in lines] == [(2, 2), (3, 2)]
    # A rerun trains nothing new: the lines are not repeated.
    again = bench_dsca_real.main(args)
    assert (tmp_path / "trained.jsonl").read_text().splitlines() == lines
    assert [t.get("accuracy") for t in again["trained"][1:]] == [
        json.loads(x)["accuracy"] for x in lines]
