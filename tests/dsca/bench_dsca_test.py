"""The DSCA benchmark recipe runs end to end in --quick mode."""

import importlib.util
import json
import pathlib

RECIPE = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "bench_dsca.py"


def test_bench_dsca_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_dsca", RECIPE)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    rows = bench.main(["--quick", "--no-dynamic", "--repeats", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert [r["m"] for r in data["rows"]] == [512, 512, 4096] == [r["m"] for r in rows]
    dense, noisy, sparse = data["rows"]
    assert [r["graph_kind"] for r in rows] == ["dense", "noisy", "sparse"]
    for r in (dense, noisy):
        assert r["dsca_ari"] >= 0.95 and r["sklearn_ari"] is not None
        assert abs(r["dsca_ari"] - r["sklearn_ari"]) <= 0.02
        assert r["speedup"] > 0
    assert sparse["sklearn_s"] is None and "skipped" in sparse["sklearn_note"]
    assert sparse["dsca_ari"] >= 0.95
