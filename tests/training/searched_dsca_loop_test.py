"""Trainer(dsca_adjust=True): MFTC appendix D.3's closed loop acts during training.

(Without ``dsca_adjust`` nothing acts: tests/training/host_sync_test.py's DSCA run.)
"""

import numpy as np
import pytest

from rgft_jax.training import TrainConfig, Trainer, methods
from tests.training.conftest import NUM_CLASSES, NUM_HEADS, batches, bert


def _run(steps=3, **dsca):
    tr = Trainer(bert(1), methods.full(learning_rate=1e-2),
                 TrainConfig(steps=steps, progress=False, log_every=1), num_heads=NUM_HEADS,
                 num_layers=1, num_classes=NUM_CLASSES, dsca_adjust=True,
                 dsca={"num_modules": 2, "embed_dim": 2, "sketch_dim": 8, **dsca})
    tr.fit(iter(batches(steps)))
    assert [x["step"] for x in tr.module_history] == list(range(1, steps + 1))
    return tr


def test_low_kappa_raises_r_while_training():
    # kappa_min > 1 can never be met: r doubles (re-initialising the state) whenever kappa(r)
    # is defined, i.e. once the kept gradient window holds more than r probe gradients.
    tr = _run(steps=6, kappa_min=1.5, stability_min=0.0, drift_max=10.0)
    acts = [x["actions"] for x in tr.module_history]
    assert acts == [[], [], ["embed_dim 2 -> 4"], [], ["embed_dim 4 -> 8"], []]
    kappas = [x.get("kappa") for x in tr.module_history]
    r = tr.dsca_config.embed_dim
    assert r == 8 and not tr.dsca_fallback
    assert np.asarray(tr.state.dsca.embedding).shape == (len(tr.dsca_partition), r)
    # The window survived both re-initialisations: all six gradients are held.
    assert int(np.sum(np.any(np.asarray(tr.state.dsca.grad_window) != 0, axis=1))) == 6
    del kappas


def test_instability_raises_alpha_while_training():
    tr = _run(kappa_min=0.0, stability_min=1.5, alpha=0.8)
    acts = [x["actions"] for x in tr.module_history]
    assert acts[0] == []  # the first update has no stability (NaN)
    assert acts[1:] == [["alpha 0.8 -> 0.85"], ["alpha 0.85 -> 0.9"]]
    assert tr.dsca_config.alpha == pytest.approx(0.9)
    assert tr.dsca_config.embed_dim == 2 and not tr.dsca_fallback
