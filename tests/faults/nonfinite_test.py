"""Non-finite steps in the loop: NaN loss, Inf gradient and a bad batch in a 100-step run.

The faults come from the test hook ``rgft_jax.training._step.FAULTS`` (loss, gradients) and
from a batch with a label outside the classes (its cross-entropy is NaN). Every such step is
skipped: params, optimizer state (the tracker) and DSCA state stay finite, the skipped
steps are counted in the metrics, the summary and the checkpoint, and the run finishes.
"""

import jax
import numpy as np
import pytest
from training.conftest import NUM_CLASSES, NUM_HEADS, batches, bert

import rgft_jax as rgft
from rgft_jax.training import TrainConfig, Trainer, _step, methods

STEPS = 100
LOSS_FAULTS, GRAD_FAULTS, BAD_BATCH = (10, 11, 50), (20, 71), 35  # 0-based step indices


def _finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(x).dtype, np.inexact))


@pytest.mark.parametrize("kind", ["rgft"])
def test_nonfinite_steps_are_skipped_counted_and_the_run_finishes(kind, monkeypatch, tmp_path):
    monkeypatch.setattr(_step, "FAULTS", {"loss": LOSS_FAULTS, "grads": GRAD_FAULTS})
    method = (methods.rgft(learning_rate=1e-2, update_every=5, threshold=("percentile", 25))
              if kind == "rgft" else methods.full(learning_rate=1e-2))
    dsca = {"num_modules": 2, "embed_dim": 2, "sketch_dim": 8} if kind == "rgft" else None
    tr = Trainer(bert(1), method, TrainConfig(steps=STEPS, progress=False, log_every=1,
                                              checkpoint_every=STEPS),
                 num_heads=NUM_HEADS, num_layers=1, num_classes=NUM_CLASSES, dsca=dsca,
                 workdir=tmp_path)
    data = batches(STEPS, seed=2)
    data[BAD_BATCH]["label"][3] = 99  # a corrupt batch: a label outside the 3 classes
    history = tr.fit(iter(data), checkpoint_data_state=lambda: {"epoch": 0, "step": STEPS})
    assert tr.step == STEPS  # the run finished

    bad = {s + 1 for s in (*LOSS_FAULTS, *GRAD_FAULTS, BAD_BATCH)}  # 1-based history steps
    rows = {int(r["step"]): r for r in history[:-1]}
    assert {s for s, r in rows.items() if r["skipped"]} == bad
    assert all(np.isfinite(r["loss"]) for s, r in rows.items() if s not in bad)
    assert not np.isfinite(rows[LOSS_FAULTS[0] + 1]["loss"])
    assert not np.isfinite(rows[GRAD_FAULTS[0] + 1]["grad_norm"])
    assert tr.summary()["skipped_steps"] == len(bad) == tr.skipped_steps

    state = jax.device_get(tr.state)
    assert _finite(state.params) and _finite(state.opt_state) and _finite(state.dsca)
    if kind == "rgft":
        em = rgft.error_map(state.opt_state)
        assert np.all(np.isfinite(em.residuals)) and np.all(np.isfinite(em.mask))
        assert int(em.step) > 0
        assert all(np.all(np.isfinite(r)) for _, r, _ in tr.error_history)
        # (the first probe has no earlier labels to compare with: its ARI is NaN by design)
        assert len(tr.module_history) > 1
        assert all(np.isfinite(h["ari"]) for h in tr.module_history[1:])
    # The count survives a resume.
    tr.close()
    again = Trainer(bert(1), method, tr.config, num_heads=NUM_HEADS, num_layers=1,
                    num_classes=NUM_CLASSES, dsca=dsca, workdir=tmp_path)
    again.restore()
    assert again.skipped_steps == len(bad)


def test_a_skipped_step_changes_nothing_but_the_counter(monkeypatch):
    """One step with a NaN loss: params and optimizer state are the previous ones, bit for
    bit; the next (finite) step trains as usual."""
    monkeypatch.setattr(_step, "FAULTS", {"loss": (1,)})
    tr = Trainer(bert(1), methods.full(learning_rate=1e-2), TrainConfig(
        steps=3, progress=False, log_every=1), num_heads=NUM_HEADS, num_layers=1,
        num_classes=NUM_CLASSES)
    data = batches(3)
    tr.train_step(data[0])
    before = jax.device_get((tr.state.params, tr.state.opt_state))
    m = tr.train_step(data[1])
    after = jax.device_get((tr.state.params, tr.state.opt_state))
    assert m["skipped"] == 1.0 and np.isnan(m["loss"])
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    assert int(tr.state.step) == 2
    m = tr.train_step(data[2])
    assert m["skipped"] == 0.0 and np.isfinite(m["loss"])
    assert not np.array_equal(jax.tree.leaves(after[0])[0],
                              jax.device_get(jax.tree.leaves(tr.state.params)[0]))
