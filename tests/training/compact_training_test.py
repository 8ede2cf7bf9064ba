"""The Trainer with the compact optimizer state and with frozen embeddings."""

import jax
import numpy as np
import pytest

import rgft_jax as rgft
from rgft_jax.training import TrainConfig, Trainer, methods

from .conftest import NUM_CLASSES, NUM_HEADS, batches, bert, host


def _trainer(**method):
    return Trainer(bert(1), methods.rgft(learning_rate=1e-2, update_every=2, **method),
                   TrainConfig(steps=4, progress=False, log_every=1), num_heads=NUM_HEADS,
                   num_layers=1, num_classes=NUM_CLASSES)


def test_compact_state_trains_with_less_optimizer_memory():
    dense, comp = _trainer(), _trainer(capacity=0.3, threshold="median")
    probes = []
    for batch in batches(4):
        dense.train_step(batch)
        before = host(comp.state.params)
        probes.append(comp.next_pattern()[1])
        comp.train_step(batch)
        mask = np.asarray(rgft.error_map(comp.state.opt_state).mask)
        # Components outside the admitted mask did not move (exact), the admitted fit.
        changed = comp.partition.norms(jax.tree.map(
            lambda a, b: np.asarray(a) - np.asarray(b), host(comp.state.params), before))
        assert np.all(np.asarray(changed)[mask == 0] == 0)
    assert probes[0], "the compact state's first step is a probe (it refreshes the mask)"
    s_dense, s_comp = dense.summary(), comp.summary()
    assert s_comp["opt_state_bytes"] < 0.45 * s_dense["opt_state_bytes"]
    assert s_comp["peak_step_bytes"] > 0
    assert s_comp["update_ratio"] < 0.5


def test_frozen_embeddings_never_move_and_are_not_differentiated():
    tr = _trainer(embeddings="freeze", threshold=("top_fraction", 0.5))
    emb = [i for i, s in enumerate(tr.partition.leaves) if "embeddings" in s.path
           and not s.path.endswith(("scale", "bias"))]
    assert emb and not any(tr.base_pattern[i] for i in emb)
    before = jax.tree.leaves(host(tr.state.params))
    for batch in batches(3):
        tr.train_step(batch)
    after = jax.tree.leaves(host(tr.state.params))
    for i in emb:
        np.testing.assert_array_equal(before[i], after[i])


@pytest.mark.parametrize("make, exc, match", [
    (lambda: methods.rgft(embeddings="sometimes"), ValueError, "embeddings='sometimes'"),
    (lambda: methods.full(capacity=0.5), TypeError, "capacity"),
    (lambda: methods.rgft_chain(capacity=0.5), ValueError, "rgft_chain: moments=None, capa"),
    (lambda: methods.rgft(capacity=2.0), ValueError, "capacity=2.0"),
    (lambda: methods.random_mask(moments="forget"), ValueError, "moments='forget'"),
])
def test_method_state_options_are_validated(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
