"""Checkpoint path mapping (synthetic layouts) and a real checkpoint of the flat RGFT state."""

import os
import shutil

import jax
import numpy as np
import pytest

import rgft_jax as rgft
from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training._checkpoint import path_names, source_paths

from .conftest import NUM_CLASSES, NUM_HEADS, batches, bert

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _p(*paths):
    return [tuple(p.split("/")) for p in paths]


def test_same_layout_maps_to_itself():
    paths = _p("params/w", "opt_state/tracker/mask", "opt_state/inner_state/0/mu/w")
    assert source_paths(paths, paths) == paths


def test_value_wrapped_leaves_are_found_one_level_deeper():
    target = _p("params/w", "opt_state/mu/w")
    disk = _p("params/w/value", "opt_state/mu/w/value")
    assert source_paths(target, disk) == disk


def test_tracker_fields_are_found_flat_in_older_checkpoints():
    target = _p("opt_state/tracker/count", "opt_state/tracker/mask", "opt_state/inner_state/0/mu/w",
                "params/w")
    disk = _p("opt_state/count", "opt_state/mask", "opt_state/inner_state/0/mu/w/value",
              "params/w/value")
    assert source_paths(target, disk) == disk


def test_the_new_layout_wins_when_both_exist():
    target = _p("opt/tracker/mask")
    assert source_paths(target, _p("opt/mask", "opt/tracker/mask")) == target


def test_other_optional_components_can_be_named():
    assert source_paths(_p("a/state/b"), _p("a/b"), optional=("state",)) == _p("a/b")
    with pytest.raises(ValueError, match="1 leaves missing, e.g. a/state/b"):
        source_paths(_p("a/state/b"), _p("a/b"))


def test_missing_leaves_are_reported():
    with pytest.raises(ValueError, match=r"2 leaves missing, e.g. opt/x, opt/y\); was it written"):
        source_paths(_p("params/w", "opt/x", "opt/y"), _p("params/w"))


def test_path_names_of_named_tuples_lists_and_dicts():
    state = rgft.ErrorMap(*[np.zeros(1)] * 5)
    assert path_names({"a": [state.mask, {"b": 1}]}) == [("a", "0"), ("a", "1", "b")]
    assert path_names(state)[:2] == [("residuals",), ("mask",)]


def test_legacy_rgft_checkpoint_restores_with_the_engine(tmp_path):
    # Written by the engine at commit 6bad5ed (tests/training/fixtures/make_legacy_rgft_ckpt.py):
    # ResidualGuidedState held count/residuals/mask/lr_scale/skipped flat.
    expected = np.load(os.path.join(FIXTURES, "legacy_rgft_expected.npz"))
    shutil.copytree(os.path.join(FIXTURES, "legacy_rgft_ckpt"),
                    tmp_path / "checkpoints" / "legacy")
    method = methods.rgft(name="legacy", learning_rate=1e-2, components="leaves",
                          update_every=2, gamma=0.0, threshold=("percentile", 25))
    tr = Trainer(bert(1), method, TrainConfig(steps=4, progress=False, log_every=1),
                 num_heads=NUM_HEADS, num_layers=1, num_classes=NUM_CLASSES, workdir=tmp_path)
    assert tr.restore() == {"epoch": 0, "step": 3}
    assert tr.step == 3 == int(tr.state.step) == int(expected["step"])
    flat = {"params/" + "/".join(p): np.asarray(x) for p, x in
            zip(path_names(tr.state.params), jax.tree.leaves(tr.state.params))}
    assert sorted(flat) == sorted(k for k in expected.files if k.startswith("params/"))
    for k, x in flat.items():
        np.testing.assert_array_equal(x, expected[k], err_msg=k)
    em = rgft.error_map(tr.state.opt_state)
    np.testing.assert_array_equal(em.residuals, expected["residuals"])
    np.testing.assert_array_equal(em.mask, expected["mask"])
    assert int(em.step) == int(expected["count"])
    assert tr.accounting.summary()["steps"] == 3 and len(tr.history) == 3
    # The restored state trains on (the error map and the moments are usable).
    m = tr.train_step(batches(1, seed=5)[0])
    assert np.isfinite(m["loss"]) and tr.step == 4
    tr.close()
