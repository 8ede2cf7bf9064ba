"""The Trainer keeps its periodic evaluations (with cumulative GFLOPs and time) and saves them."""

import itertools

import numpy as np
import pytest

from rgft_jax.training import TrainConfig, Trainer, methods
from tests.training.conftest import NUM_CLASSES, NUM_HEADS, batches, bert


def _trainer(steps, workdir=None, checkpoint_every=0):
    return Trainer(bert(1), methods.full(learning_rate=1e-2),
                   TrainConfig(steps=steps, progress=False, log_every=1,
                               checkpoint_every=checkpoint_every),
                   num_heads=NUM_HEADS, num_layers=1, num_classes=NUM_CLASSES, workdir=workdir)


def _eval(tr):
    return {"accuracy": tr.step / 10, "confusion": [[1]]}  # non-scalars are not kept


def test_eval_history_has_every_periodic_evaluation_and_the_final_one():
    tr = _trainer(5)
    tr.fit(itertools.cycle(batches(3)), eval_fn=_eval, eval_every=2)
    ev = tr.eval_history
    assert [e["step"] for e in ev] == [2, 4, 5]
    assert [e["accuracy"] for e in ev] == pytest.approx([0.2, 0.4, 0.5])
    assert all("confusion" not in e for e in ev)
    g = [e["gflops_cum"] for e in ev]
    s = tr.summary()
    per_step = s["gflops_per_step"]
    assert per_step > 0
    np.testing.assert_allclose(g, [2 * per_step, 4 * per_step, 5 * per_step], rtol=1e-6)
    # Training loss points carry the same running total.
    assert tr.history[-1]["gflops_cum"] == pytest.approx(g[-1])
    assert [e["train_time_s"] for e in ev] == sorted(e["train_time_s"] for e in ev)
    tr.close()


def test_eval_history_is_saved_and_restored_with_checkpoints(tmp_path):
    tr = _trainer(3, workdir=tmp_path, checkpoint_every=2)
    tr.fit(iter(batches(3)), eval_fn=_eval, eval_every=1)  # evals 1, 2, 3; checkpoint at 2
    assert [e["step"] for e in tr.eval_history] == [1, 2, 3]
    tr.close()
    back = _trainer(3, workdir=tmp_path, checkpoint_every=2)
    back.restore()
    assert back.step == 2
    assert back.eval_history == tr.eval_history[:2]
    assert back._flops_total / 1e9 == tr.eval_history[1]["gflops_cum"]  # exact: whole FLOPs
    back.close()
