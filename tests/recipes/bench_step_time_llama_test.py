"""The step-time benchmark on a tiny random Llama (task 'lm', every projection LoRA-adapted)."""

import json

from recipes import bench_step_time


def test_llama_tiny_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench_step_time.main(["--model", "llama-tiny", "--steps", "4", "--update-every", "2",
                               "--batch-size", "2", "--seq-len", "8",
                               "--methods", "full,rgft_budget50,lora,top_layers",
                               "--dtype", "bfloat16", "--json", str(out)])
    assert rc == 0
    assert "| rgft_budget50 |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert data["config"]["params"] > 0
    assert rows["full"]["gflops_per_step_ratio"] == 1.0
    assert rows["rgft_budget50"]["gflops_per_step"] < rows["full"]["gflops_per_step"]
    assert rows["top_layers"]["gflops_per_step"] < rows["full"]["gflops_per_step"]
    assert all(r["peak_mb"] > 0 for r in rows.values())
