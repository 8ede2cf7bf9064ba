"""The loop's probe steps fall exactly on the transform's mask refreshes."""

import numpy as np
import pytest

import rgft_jax as rgft
from rgft_jax._src.residual import refreshes
from rgft_jax.training import TrainConfig, Trainer, methods

from .conftest import NUM_CLASSES, NUM_HEADS, batches, bert, scrambled_threshold

STEPS = 9


@pytest.mark.parametrize("update_every, warmup, capacity", [
    (3, 0, None), (3, 1, None), (3, 5, None), (4, 8, None), (2, 3, None), (3, 1, 0.5)])
def test_every_refresh_is_a_probe_and_sparse_steps_keep_the_mask(update_every, warmup,
                                                                 capacity):
    method = methods.rgft(learning_rate=1e-2, components="leaves", gamma=0.0,
                          threshold=scrambled_threshold, update_every=update_every,
                          warmup_steps=warmup, capacity=capacity)
    tr = Trainer(bert(1), method, TrainConfig(steps=STEPS, progress=False, log_every=0),
                 num_heads=NUM_HEADS, num_layers=1, num_classes=NUM_CLASSES)
    masks = [np.asarray(rgft.error_map(tr.state.opt_state).mask)]
    probes = []
    for batch in batches(STEPS):
        probes.append(bool(tr.train_step(batch)["probe"]))
        masks.append(np.asarray(rgft.error_map(tr.state.opt_state).mask))
    for t in range(STEPS):
        count = t + 1  # the tracker's count after step t (every gradient is finite here)
        refresh = bool(refreshes(count, update_every, warmup)) or (
            capacity is not None and count == 1)
        changed = not np.array_equal(masks[t], masks[t + 1])
        if refresh:
            assert probes[t], f"step {t}: refresh on a sparse step"
        if changed:
            assert refresh, f"step {t}: the mask changed without a refresh"
        if not refresh and not np.all(masks[t] > 0):
            assert not probes[t], f"step {t}: a needless probe"
    assert any(probes) and not all(probes)


@pytest.mark.parametrize("update_every, warmup, expected", [
    (3, 0, [3, 6, 9, 12]), (3, 1, [1, 4, 7, 10]), (3, 5, [5, 8, 11]), (20, 9, [9]),
    (20, 0, []), (1, 0, list(range(1, 13)))])
def test_refresh_schedule(update_every, warmup, expected):
    got = [c for c in range(1, 13) if refreshes(c, update_every, warmup)]
    assert got == expected
