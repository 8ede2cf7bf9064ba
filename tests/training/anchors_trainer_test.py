# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Every anchor trains a tiny BERT in the one Trainer; what it does not select stays still."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from rgft_jax._src import components as comp_lib
from rgft_jax.training import TrainConfig, Trainer, methods
from tests.training.conftest import BATCH, NUM_CLASSES, NUM_HEADS, SEQ, batches, bert, bits, host

LAYERS, STEPS = 2, 4
ANCHORS = {
    "lisa": dict(n_layers=1, interval=2),
    "random_layers": dict(n_layers=1, interval=2),
    "badam": dict(switch_every=2, order="descending"),
    "autofreeze": dict(eval_every=1, percentile=100),
    "green_trainer": dict(rho=0.6),
}


def _trainer(name: str, **kw) -> Trainer:
    m = methods.get(name)(learning_rate=1e-2, **{**ANCHORS[name], **kw})
    return Trainer(bert(LAYERS), m, TrainConfig(steps=STEPS, progress=False, log_every=1),
                   num_heads=NUM_HEADS, num_layers=LAYERS, num_classes=NUM_CLASSES,
                   batch_shape=(BATCH, SEQ))


def _leaves(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {comp_lib.key_path_to_str(p): x for p, x in flat}


@pytest.fixture(scope="module")
def runs():
    out = {}
    for name in ANCHORS:
        tr = _trainer(name)
        steps = []
        for b in batches(STEPS):
            pattern, probe = tr.next_pattern()
            mask = np.array(tr._tracker.mask)
            before = host(tr.state.params)
            tr.train_step(b)
            steps.append(dict(pattern=pattern, probe=probe, mask=mask, before=before,
                              after=host(tr.state.params)))
        out[name] = (tr, steps)
    return out


@pytest.mark.parametrize("name", list(ANCHORS))
def test_unselected_components_stay_bit_identical(runs, name):
    tr, steps = runs[name]
    part = tr.partition
    moved_any = False
    for rec in steps:
        before, after = _leaves(rec["before"]), _leaves(rec["after"])
        for s in part.leaves:
            if s.n_groups == 0:
                if s.frozen:
                    np.testing.assert_array_equal(bits(before[s.path]), bits(after[s.path]))
                continue
            active = rec["mask"][list(s.component_ids)] > 0
            if not active.any():
                np.testing.assert_array_equal(bits(before[s.path]), bits(after[s.path]),
                                              err_msg=s.path)
            elif not rec["probe"]:
                moved_any |= not np.array_equal(before[s.path], after[s.path])
    assert moved_any
    assert all(np.isfinite(h["loss"]) for h in tr.history)


@pytest.mark.parametrize("name", ["lisa", "random_layers", "badam"])
def test_layer_schedules_select_one_layer_and_skip_its_undifferentiated_leaves(runs, name):
    tr, steps = runs[name]
    for rec in steps:
        sched = tr.schedule
        active = [i for i, ids in enumerate(sched.layer_ids) if rec["mask"][ids].all()]
        assert len(active) == 1
        # leaves of inactive layers are not differentiated at all
        for s, t in zip(tr.partition.leaves, rec["pattern"]):
            if s.n_groups and not (rec["mask"][list(s.component_ids)] > 0).any():
                assert t is False


def test_badam_descending_starts_at_the_top_layer_and_saves_backprop(runs):
    tr, steps = runs["badam"]
    sched = tr.schedule
    firsts = [[i for i, ids in enumerate(sched.layer_ids) if r["mask"][ids].all()][0]
              for r in steps]
    assert firsts == [1, 1, 0, 0]
    # Steps training only the top layer cost less than those that reach layer 0.
    by_key = tr.accounting.summary()
    assert by_key["gflops_per_step"] > 0
    full = Trainer(bert(LAYERS), methods.full(learning_rate=1e-2),
                   TrainConfig(steps=2, progress=False), num_heads=NUM_HEADS,
                   num_layers=LAYERS, num_classes=NUM_CLASSES)
    full.train_step(batches(1)[0])
    assert by_key["gflops_per_step"] < full.summary()["gflops_per_step"]


def test_green_trainer_probes_once_then_trains_its_selection(runs):
    tr, steps = runs["green_trainer"]
    # Step 0 trains everything (its learning rate is the warm-up's 0), step 1 is the probe
    # whose weight change gives the importance, the selection trains from step 2 on.
    assert [r["probe"] for r in steps] == [False, True, False, False]
    assert steps[0]["mask"].all() and steps[1]["mask"].all()
    sel = steps[2]["mask"]
    assert 0 < sel.sum() < len(sel)
    assert np.array_equal(steps[3]["mask"], sel)
    assert [s["step"] for s in tr.schedule.selections] == [2]


def test_autofreeze_freezes_a_prefix_in_the_trainer(runs):
    # percentile=100 and one-step intervals: from the second evaluation the threshold is
    # the largest change, so every layer below the most-changing one freezes.
    tr, steps = runs["autofreeze"]
    prefix = tr.schedule.frozen_prefix
    assert 1 <= prefix <= LAYERS - 1
    last = steps[-1]["mask"]
    assert not last[tr.schedule.layer_ids[0]].any()
    assert last[tr.schedule.layer_ids[-1]].all()


def test_autofreeze_resumes_bit_exactly_with_its_host_state(tmp_path):
    """The frozen prefix and the previous norms are saved with the checkpoint: a run
    resumed after step 2 takes the same masks and ends bit-identical."""
    from tests.training.conftest import assert_bitwise_equal

    def trainer(workdir):
        m = methods.autofreeze(learning_rate=1e-2, eval_every=1, percentile=100)
        return Trainer(bert(LAYERS), m,
                       TrainConfig(steps=STEPS, progress=False, log_every=1,
                                   checkpoint_every=2, keep_checkpoints=3),
                       num_heads=NUM_HEADS, num_layers=LAYERS, num_classes=NUM_CLASSES,
                       workdir=workdir)

    data = batches(STEPS)
    straight = trainer(tmp_path / "a")
    straight.fit(iter(data))
    resumed = trainer(tmp_path / "a")
    resumed.restore(2)
    assert resumed.schedule.state_dict()["prev"] is not None
    resumed.fit(iter(data[2:]))
    assert resumed.schedule.state_dict() == straight.schedule.state_dict()
    assert_bitwise_equal(host(resumed.state.params), host(straight.state.params))
    straight.close()
    resumed.close()
