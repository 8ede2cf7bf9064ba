# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Every method of the demo (and DSCA, compact state) resumes bit-exactly in process: a run
stopped after its step-3 checkpoint and continued in a fresh Trainer ends where the
uninterrupted run ends. The kill -9 harness (kill9_test.py) does the same through real
SIGKILLs for a representative subset; this covers every method cheaply."""

from __future__ import annotations

import numpy as np
import pytest

from recipes import demo
from rgft_jax.training import TrainConfig, Trainer, methods
from tests.training.conftest import (
    BATCH,
    NUM_CLASSES,
    NUM_HEADS,
    assert_bitwise_equal,
    bert,
    host,
    train_iterator,
)

STEPS, EVERY = 6, 3
#: Knobs that make each schedule change within 6 steps (the papers' defaults are for
#: thousands of steps).
KNOBS = {
    "lisa": dict(interval=2), "random_layers": dict(n_layers=1, interval=2),
    "badam": dict(switch_every=2, order="random"), "autofreeze": dict(num_intervals=3),
    "green_trainer": dict(rho=0.7), "rgft": dict(update_every=2, warmup_steps=1),
    "rgft_compact": dict(update_every=2, warmup_steps=1, capacity=0.5),
    "rgft_dsca": dict(update_every=2, warmup_steps=1),
}
CASES = [*demo.DEMO_METHODS, "rgft_compact", "rgft_dsca"]


def _steps(trainer):
    out = {}
    for (pattern, observe, shapes), n in trainer.accounting.pattern_steps.items():
        key = (pattern, observe, tuple(x for x in shapes if not x[0].startswith("cache")))
        out[key] = out.get(key, 0) + n
    return out


def _method(name):
    kind = {"rgft_compact": "rgft", "rgft_dsca": "rgft"}.get(name, name)
    return methods.get(kind)(learning_rate=1e-2, **KNOBS.get(name, {}))


def _trainer(name, workdir):
    cfg = TrainConfig(steps=STEPS, progress=False, log_every=1, checkpoint_every=EVERY,
                      keep_checkpoints=3)
    dsca = ({"num_modules": 2, "embed_dim": 2, "sketch_dim": 8} if name == "rgft_dsca"
            else None)
    return Trainer(bert(2), _method(name), cfg, num_heads=NUM_HEADS, num_layers=2,
                   num_classes=NUM_CLASSES, workdir=workdir, dsca=dsca, batch_shape=(BATCH, 8))


@pytest.mark.slow  # 2 runs of a tiny model per method, each compiling its steps
@pytest.mark.parametrize("name", CASES)
def test_every_method_resumes_bit_exactly(name, tmp_path):
    straight = _trainer(name, tmp_path / "a")
    positions = {}
    it = train_iterator()

    def data_state():
        positions[straight.step] = it.get_state()
        return positions[straight.step]

    straight.fit(it, checkpoint_data_state=data_state)
    resumed = _trainer(name, tmp_path / "a")
    position = resumed.restore(EVERY)
    assert position == positions[EVERY] and resumed.step == EVERY
    it2 = train_iterator()
    it2.set_state(position)
    resumed.fit(it2)
    a, b = host(straight.state), host(resumed.state)
    assert_bitwise_equal(a.params, b.params)
    assert_bitwise_equal(a.opt_state, b.opt_state)
    if a.dsca is not None:
        assert_bitwise_equal(a.dsca, b.dsca)
    # The same steps ran (the activation cache is dropped on restore and refilled, so which
    # steps filled or hit it may differ; the params above show that does not matter).
    a_steps, b_steps = _steps(straight), _steps(resumed)
    if a_steps != b_steps:  # say which leaves the differing patterns train
        show = lambda d: sorted((tuple(i for i, t in enumerate(k[0]) if t), k[1], n)
                                for k, n in d.items())
        raise AssertionError(f"{name}: straight {show(a_steps)} != resumed {show(b_steps)}")
    sa, sb = straight.summary(), resumed.summary()
    assert sa["update_ratio"] == pytest.approx(sb["update_ratio"]), name
    assert np.isfinite(sb["update_ratio"])
    straight.close()
    resumed.close()
