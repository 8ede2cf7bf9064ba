"""Soak: 2,000 steps of RGFT + DSCA on the tiny BERT: host memory and compile count flat
after warm-up, and a run resumed from its mid-run checkpoint ends equal to the straight run.

``python tests/faults/soak_test.py OUT.jsonl`` writes the memory curve (docs/results.md).
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

STEPS, WARMUP, EVERY, RESUME_AT = 2000, 1000, 100, 500


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make(workdir):
    from training.conftest import NUM_CLASSES, NUM_HEADS, bert

    from rgft_jax.training import TrainConfig, Trainer, methods

    method = methods.rgft(learning_rate=1e-3, update_every=10, components="layers",
                          threshold=("top_k", 1))
    config = TrainConfig(steps=STEPS, progress=False, log_every=EVERY,
                         checkpoint_every=RESUME_AT, keep_checkpoints=0)  # keep all
    return Trainer(bert(2), method, config, num_heads=NUM_HEADS, num_layers=2,
                   num_classes=NUM_CLASSES, workdir=workdir,
                   dsca={"num_modules": 2, "embed_dim": 2, "sketch_dim": 8})


def data_iter():
    from training.conftest import train_iterator

    return train_iterator()


def soak(workdir):
    """The straight run; returns ``(trainer, curve)``: RSS and compilations every 100 steps."""
    tr = make(workdir)
    it = data_iter()
    curve = []
    for step in range(STEPS):
        tr._dispatch(next(it))
        tr._after_step(None, 0, it.get_state)
        if (step + 1) % EVERY == 0:
            tr._drain()
            curve.append({"step": step + 1, "rss_mb": rss_mb(),
                          "compilations": tr.compilations, "cache": len(tr._cache)})
    tr._finish(None)
    return tr, curve


def check_flat(curve):
    after = [c for c in curve if c["step"] >= WARMUP]
    rss = np.array([c["rss_mb"] for c in after])
    grow = float(rss[-1] - rss[0])
    # A leak of a few KB per step would show as > 10 MB over 1,800 steps.
    assert grow < 10.0, f"host memory grew {grow:.1f} MB after warm-up: {rss.round(1)}"
    comp = {c["compilations"] for c in after}
    assert len(comp) == 1, f"compilations after warm-up: {[c['compilations'] for c in after]}"
    return grow


@pytest.mark.slow
def test_soak_memory_and_compiles_flat_and_resumed_twin_equal(tmp_path, cheap_codegen):
    tr, curve = soak(tmp_path)
    check_flat(curve)
    twin = make(tmp_path)
    position = twin.restore(RESUME_AT)
    it = data_iter()
    it.set_state(position)
    twin.fit(it)
    a, b = jax.device_get(tr.state), jax.device_get(twin.state)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert [h["loss"] for h in tr.history] == [h["loss"] for h in twin.history]


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    jax.config.update("jax_disable_most_optimizations", True)
    with tempfile.TemporaryDirectory() as tmp:
        _, curve = soak(tmp)
    with open(sys.argv[1], "w") as f:
        for c in curve:
            f.write(json.dumps(c) + "\n")
    print(json.dumps(curve[-1]), "growth after warm-up (MB):",
          curve[-1]["rss_mb"] - next(c for c in curve if c["step"] >= WARMUP)["rss_mb"])
