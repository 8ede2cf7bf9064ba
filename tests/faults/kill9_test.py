"""kill -9: a real demo run SIGKILLed at >= 10 moments, rerun each time with the same command,
ends bit-equal to an uninterrupted run (params, optimizer state with the error map, data
position, metrics), for every method the demo offers."""

import importlib.util
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from recipes import demo

from . import _kill

REPO = pathlib.Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("_demo_fixtures",
                                               REPO / "tests" / "recipes" / "demo_test.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

#: Keys of a history / report row that differ by design: wall-clock measurements, the
#: compile count (each restarted process compiles its steps again; the count is cumulative)
#: and the activation cache's occupancy at the end (a restore drops the cache; it refills).
TIMES = {"step_time_s", "wall_time_s", "step_time_std_s", "fresh_step_fraction",
         "compilations", "cache_rows", "cache_device_bytes", "cache_host_bytes",
         "cache_disk_bytes"}
#: Keys that count compute spent. A restore drops the activation cache, so a resumed run can
#: miss where the uninterrupted one hit (never the reverse): the same updates, bit for bit, at
#: a cost that may only be higher. Compared by ``check_costs``; exactly where nothing hit.
COSTS = {"gflops_cum", "gflops_per_step", "matmul_gflops_per_step", "gflops_ratio",
         "gflops_total", "cache_hit_steps", "cache_fill_steps", "gflops_per_hit_step",
         "matmul_gflops_per_hit_step"}


def read_checkpoint(folder):
    """``(state leaves by path, data position, host json)`` of a step folder."""
    import orbax.checkpoint as ocp

    from rgft_jax.training._checkpoint import path_names

    mgr = ocp.CheckpointManager(os.path.dirname(folder), item_handlers={
        "state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
        "host": ocp.JsonCheckpointHandler()})
    step = int(os.path.basename(folder))
    out = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore(),
        host=ocp.args.JsonRestore()))
    mgr.close()
    import jax

    leaves = dict(zip(path_names(out["state"]), (np.asarray(x) for x in
                                                 jax.tree.leaves(out["state"]))))
    return leaves, out["data"], out["host"]


def untimed(x):
    if isinstance(x, dict):
        return {k: untimed(v) for k, v in x.items()
                if k not in TIMES | COSTS and "time" not in k}
    if isinstance(x, list):
        return [untimed(v) for v in x]
    return x


def uncached(pattern_steps):
    """Steps per (pattern, probe) with the cache's inputs (mode, cached rows) out of the key."""
    out = {}
    for (pattern, observe, shapes), n in pattern_steps or []:
        shapes = [s for s in shapes if not s[0].startswith("cache")]
        key = json.dumps([pattern, observe, shapes])
        out[key] = out.get(key, 0) + n
    return out


def check_costs(ref, killed, name):
    """``killed`` (rows or a summary) costs what ``ref`` does, or more where ``ref`` hit."""
    hit = ref.get("cache_hit_steps", 0) > 0
    for key in COSTS & set(ref):
        if not hit:
            assert killed[key] == ref[key], (name, key)
        elif key.startswith("gflops") and key != "gflops_per_hit_step":
            assert killed[key] >= ref[key] * (1 - 1e-6), (name, key, ref[key], killed[key])
    if hit:
        assert killed["cache_hit_steps"] <= ref["cache_hit_steps"], name


def bits(x):
    x = np.ascontiguousarray(x)
    return x.view(np.dtype(f"u{x.dtype.itemsize}")) if x.dtype.kind == "f" else x


def demo_cmd(model, csv, out, methods, steps):
    return [sys.executable, "-m", "recipes.demo", "--model", str(model), "--train", str(csv),
            "--methods", ",".join(methods), "--steps", str(steps), "--checkpoint-every", "2",
            "--update-every", "2", "--batch-size", "8", "--max-length", "16",
            "--eval-examples", "0", "--keep-checkpoints", "--no-progress", "--out", str(out)]


def compare_runs(ref_out, out, methods, steps):
    for name in methods:
        a = read_checkpoint(os.path.join(ref_out, "seed0", "checkpoints", name, str(steps)))
        b = read_checkpoint(os.path.join(out, "seed0", "checkpoints", name, str(steps)))
        assert sorted(a[0]) == sorted(b[0]), name
        for path in a[0]:
            np.testing.assert_array_equal(bits(a[0][path]), bits(b[0][path]),
                                          err_msg=f"{name}: {'/'.join(path)}")
        assert a[1] == b[1], (name, "data position")
        assert untimed(a[2]["history"]) == untimed(b[2]["history"]), (name, "history")
        cached = any(s[0] == "cache_hit" for (_, _, shapes), _ in a[2].get("pattern_steps") or []
                     for s in shapes)
        for ha, hb in zip(a[2]["history"], b[2]["history"]):
            # Cumulative GFLOPs: equal until a restore drops the cache, never lower after.
            assert hb["gflops_cum"] >= ha["gflops_cum"] * (1 - 1e-6), (name, ha, hb)
            assert cached or hb["gflops_cum"] == ha["gflops_cum"], (name, ha, hb)
        assert uncached(a[2].get("pattern_steps")) == uncached(b[2].get("pattern_steps")), name
        for key in ("error_history", "module_history", "run"):
            assert a[2].get(key) == b[2].get(key), (name, key)
    ra = json.loads(pathlib.Path(ref_out, "report.json").read_text())["runs"]
    rb = json.loads(pathlib.Path(out, "report.json").read_text())["runs"]
    assert untimed(ra) == untimed(rb)
    for run_a, run_b in zip(ra, rb):
        check_costs(run_a, run_b, run_a.get("name"))


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_bit_exactly(tmp_path):
    # Dense (full), the error map (rgft) and adapters (lora): the set verified within CI's
    # time on a 2-core CPU. Every method resumes exactly in process
    # (resume_every_method_test.py); RGFT_KILL9_METHODS=all kills the demo with every one.
    chosen = os.environ.get("RGFT_KILL9_METHODS", "full,rgft,lora")
    methods = tuple(demo.DEMO_METHODS if chosen == "all" else chosen.split(","))
    steps = 10
    model = fixtures.tiny_checkpoint(tmp_path / "model", layers=1)
    csv = fixtures.tiny_csv(tmp_path / "train.csv", n=64)
    env = _kill.subprocess_env(str(REPO), str(tmp_path / "jax_cache"))
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"
    log = tmp_path / "log.txt"
    ref = _kill.run_with_kills(demo_cmd(model, csv, tmp_path / "ref", methods, steps), env,
                               str(tmp_path / "ref"), kills=0, seed=0, log_path=str(log))
    assert ref == []
    out = tmp_path / "killed"
    kills = _kill.run_with_kills(demo_cmd(model, csv, out, methods, steps), env, str(out),
                                 kills=10, seed=0, log_path=str(log))
    assert len(kills) == 10
    # At least one kill cut a checkpoint write short (its temporary folder was left behind).
    assert any(k.tmp_left for k in kills), [k.__dict__ for k in kills]
    assert "resumed at step" in log.read_text()
    compare_runs(str(tmp_path / "ref"), str(out), methods, steps)
