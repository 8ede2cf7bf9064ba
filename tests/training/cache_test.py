# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Frozen-prefix activation caching in the loop: same params as without it, cheaper hit
steps, invalidation when a lower layer is updated, exact resume, storage tiers."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from rgft_jax import data as rdata
from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training import _anchors as anchors
from rgft_jax.training import _cache as cache_lib
from rgft_jax.training import _patterns as patterns
from rgft_jax.training._accounting import Accounting, cache_mode
from tests.training.conftest import BATCH, NUM_CLASSES, NUM_HEADS, bert, examples, host

LAYERS, N_EX = 3, 16  # 2 batches per epoch, every example in every epoch


def _iter(seed=3):
    return rdata.TrainIterator(examples(N_EX, seed=1), batch_size=BATCH, seed=seed,
                               num_threads=0, prefetch=0)


def _trainer(method, steps, cache, workdir=None, **cfg):
    config = TrainConfig(steps=steps, progress=False, log_every=1, activation_cache=cache,
                         **cfg)
    return Trainer(bert(LAYERS), method, config, num_heads=NUM_HEADS, num_layers=LAYERS,
                   num_classes=NUM_CLASSES, workdir=workdir)


def _close(a, b, atol=1e-6):
    for (path, x), (_, y) in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                                 jax.tree_util.tree_flatten_with_path(b)[0]):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))


def test_example_ids_ride_with_every_batch_and_can_be_left_out():
    src = [{"x": np.int64(10 * i)} for i in range(10)]
    batch = next(rdata.TrainIterator(src, batch_size=4, seed=0, num_threads=0))
    np.testing.assert_array_equal(batch["x"], 10 * batch[rdata.EXAMPLE_ID])
    assert batch[rdata.EXAMPLE_ID].dtype == np.int64
    assert rdata.EXAMPLE_ID == cache_lib.EXAMPLE_ID
    plain = next(rdata.TrainIterator(src, batch_size=4, seed=0, example_ids=False))
    assert set(plain) == {"x"}


def test_cut_follows_the_pattern():
    params = host(_trainer(methods.full(), 4, False).state.params)
    blocks = cache_lib.leaf_blocks(params, LAYERS)
    paths = [cache_lib.key_path_to_str(p)
             for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for path, b in zip(paths, blocks):
        if "embeddings" in path:
            assert b == -1, path
        elif "layers/" in path:
            assert b == int(path.split("layers/")[1].split("/")[0]), path
        else:
            assert b == LAYERS, path  # classifier
    for trainable, cut in ((r"layers/2/", 2), (r"layers/1/|layers/2/", 1), (r"classifier", 3),
                           (r"layers/0/", 0), (r"embeddings/word", 0), (r"layers/2/|word", 0)):
        pattern = patterns.trainable_pattern(params, trainable)
        assert cache_lib.step_cut(pattern, blocks, LAYERS) == cut, trainable


@pytest.mark.parametrize("k, tier", [(1, "device"), (2, "host")])
def test_top_layers_same_params_and_hit_steps_cost_less(k, tier):
    steps = 6  # 3 epochs: the first fills, the last two hit
    runs = {}
    for cache in (False, True):
        tr = _trainer(methods.top_layers(k=k, learning_rate=1e-2), steps, cache,
                      cache_device_bytes=1 << 20 if tier == "device" else 0)
        tr.fit(_iter())
        runs[cache] = tr
    _close(host(runs[True].state.params), host(runs[False].state.params))
    on, off = runs[True].summary(), runs[False].summary()
    assert (on["cache_fill_steps"], on["cache_hit_steps"]) == (2, 4)
    assert off["cache_hit_steps"] == 0 and "cache_rows" not in off
    assert on["cache_rows"] == N_EX and on[f"cache_{tier}_bytes"] > 0
    assert on["gflops_per_hit_step"] < off["gflops_per_step"]
    # The prefix's forward is gone: the hit step costs less than the full forward + the
    # same backward by at least the cut layers' matmuls.
    for h_on, h_off in zip(runs[True].history, runs[False].history):
        np.testing.assert_allclose(h_on["loss"], h_off["loss"], rtol=1e-5)




def test_invalidated_when_a_lower_layer_is_updated():
    cache = cache_lib.ActivationCache((-1, 0, 1, 2, 3), 3, device_bytes=1 << 20,
                                      host_bytes=0)
    top = (False, False, False, True, True)  # cut 2
    hidden = jax.numpy.ones((2, 4, 5))
    ids = np.array([7, 9])
    assert cache.cut(top) == 2
    cache.put(ids, hidden, 2, version=0)
    cache.advance(top, 0)
    assert cache.lookup(ids, 2) is not None  # only layers >= 2 changed
    assert cache.lookup(ids, 1) is None  # another cut: not this entry
    cache.advance((False, True, False, False, True), 1)  # step 1 updates layer 0
    assert cache.lookup(ids, 2) is None
    cache.put(ids, 2 * hidden, 2, version=2)
    np.testing.assert_array_equal(cache.lookup(ids, 2), 2 * np.ones((2, 4, 5)))
    cache.advance((True,) * 5, 2)  # a probe step: everything
    assert cache.lookup(ids, 2) is None


@pytest.mark.parametrize("tiers", ["device", "host", "disk", "mixed"])
def test_storage_tiers_return_the_stored_rows(tiers, tmp_path):
    row_bytes = 4 * 5 * 4
    budgets = {"device": (1 << 20, 0), "host": (0, 1 << 20), "disk": (0, 0),
               "mixed": (3 * row_bytes, 0)}[tiers]  # 3 rows on the device, 9 on disk
    cache = cache_lib.ActivationCache((-1, 0, 1), 1, device_bytes=budgets[0],
                                      host_bytes=budgets[1], disk_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    rows = {}
    for b in range(3):
        ids = np.arange(4 * b, 4 * b + 4)
        h = rng.normal(size=(4, 4, 5)).astype(np.float32)
        rows.update(zip(ids.tolist(), h))
        cache.put(ids, jax.numpy.asarray(h), 1, version=0)
    ids = np.array([11, 0, 5, 3, 8])
    got = np.asarray(cache.lookup(ids, 1))
    np.testing.assert_array_equal(got, np.stack([rows[i] for i in ids]))
    s = cache.stats()
    assert s["cache_rows"] == 12
    assert (s["cache_device_bytes"] > 0) == (tiers in ("device", "mixed"))
    assert (s["cache_host_bytes"] > 0) == (tiers == "host")
    assert (s["cache_disk_bytes"] > 0) == (tiers in ("disk", "mixed"))
    cache.close()


class _Scripted(Trainer):
    """RGFT's optimizer (it zeroes the leaves a step's pattern leaves out, moments and decay
    included) under a scripted pattern per step: the frozen prefix grows and shrinks."""

    schedule: list = []

    def next_pattern(self):
        return self.schedule[self._step], False


SCHEDULE = [  # (trainable regex, steps): expected cache mode of each step
    (r"layers/2/|classifier", 2),  # cut 2: fill
    (r"layers/2/|classifier", 2),  # cut 2: hit
    (r"layers/[12]/|classifier", 2),  # cut 1: fill (no cut-1 entries)
    (r"layers/2/|classifier", 2),  # cut 2: fill (layer 1 changed)
    (r"layers/[02]/|classifier", 2),  # cut 0: no cache (layer 0 changes)
    (r"layers/2/|classifier", 2),  # cut 2: fill (layer 0 changed)
    (r"layers/2/|classifier", 2),  # cut 2: hit
]


def _scripted(cache):
    steps = sum(n for _, n in SCHEDULE)
    method = methods.rgft(learning_rate=1e-2, components="leaves", update_every=10_000,
                          threshold=lambda r: r >= 0)
    config = TrainConfig(steps=steps, progress=False, log_every=1, activation_cache=cache)
    tr = _Scripted(bert(LAYERS), method, config, num_heads=NUM_HEADS, num_layers=LAYERS,
                   num_classes=NUM_CLASSES)
    params = host(tr.state.params)
    tr.schedule = [patterns.trainable_pattern(params, rx) for rx, n in SCHEDULE
                   for _ in range(n)]
    tr.fit(_iter())
    return tr


def test_changing_prefix_same_params_with_invalidation():
    on, off = _scripted(True), _scripted(False)
    _close(host(on.state.params), host(off.state.params))
    s = on.summary()
    assert (s["cache_fill_steps"], s["cache_hit_steps"]) == (8, 4)
    modes = [cache_mode(k) for k in on.accounting.pattern_steps]
    assert {"fill", "hit", None} == set(modes)


def test_resume_with_a_cache_equals_the_uninterrupted_run(tmp_path):
    method = methods.top_layers(k=1, learning_rate=1e-2)
    steps, stop = 6, 3  # stop inside epoch 1: the uninterrupted run hits there, the
    # resumed one starts with an empty cache and refills

    def make(workdir):
        return _trainer(method, steps, True, workdir=workdir, checkpoint_every=stop)

    straight = make(tmp_path / "a")
    it = _iter()
    straight.fit(it, checkpoint_data_state=it.get_state)

    first = make(tmp_path / "b")
    it = _iter()
    for _ in range(stop):
        first.train_step(next(it))
    first.save(it.get_state())
    first.close()
    resumed = make(tmp_path / "b")
    it = _iter()
    it.set_state(resumed.restore())
    assert resumed.step == stop and resumed.activation_cache.stats()["cache_rows"] == 0
    resumed.fit(it, checkpoint_data_state=it.get_state)
    _close(host(resumed.state.params), host(straight.state.params), atol=0)
    s, r = straight.summary(), resumed.summary()
    assert s["cache_hit_steps"] == 4 and r["cache_fill_steps"] > s["cache_fill_steps"]


def test_accounting_counts_cache_steps_and_round_trips_them():
    acc = Accounting(10.0)
    plain = ((True,), False, (("input_ids", (8, 4)),))
    fill = (plain[0], False, (*plain[2], ("cache_fill", (2,))))
    hit = (plain[0], False, (("cached_hidden", (8, 4, 3)), *plain[2], ("cache_hit", (2,))))
    for key, flops, n in ((plain, 9e9, 1), (fill, 9e9, 2), (hit, 3e9, 3)):
        acc.record_compile(key, flops, flops, 0)
        for _ in range(n):
            acc.record_step(key, 0.5)
    acc.record_interval(6, 3.0, False)
    s = acc.summary()
    assert (s["cache_fill_steps"], s["cache_hit_steps"]) == (2, 3)
    assert s["gflops_per_hit_step"] == pytest.approx(3.0)
    assert s["matmul_gflops_per_hit_step"] == pytest.approx(3.0)
    assert [cache_mode(k) for k in (plain, fill, hit)] == [None, "fill", "hit"]
    back = Accounting(10.0)
    back.load_json(acc.to_json())
    assert back.summary() == s and back.pattern_steps == acc.pattern_steps


def test_default_is_on_only_when_the_data_repeats():
    on = _trainer(methods.top_layers(k=1, learning_rate=1e-2), 4, None)
    on.fit(_iter())  # 2 epochs
    one = _trainer(methods.top_layers(k=1, learning_rate=1e-2), 2, None)
    one.fit(_iter())  # 1 epoch: rows would never be read
    assert on.summary()["cache_fill_steps"] == 2 and on.summary()["cache_hit_steps"] == 2
    assert one.summary()["cache_fill_steps"] == 0 and one.summary()["cache_rows"] == 0


def test_default_is_off_with_dropout_and_errors_name_the_setting():
    tr = _trainer(methods.top_layers(k=1), 4, None, dropout=True)
    assert tr.activation_cache is None
    assert _trainer(methods.top_layers(k=1), 4, None).activation_cache is not None
    with pytest.raises(ValueError, match="activation_cache=True with dropout=True"):
        TrainConfig(activation_cache=True, dropout=True)
    with pytest.raises(ValueError, match="activation_cache='yes'"):
        TrainConfig(activation_cache="yes")
    with pytest.raises(ValueError, match="cache_host_bytes=-1"):
        TrainConfig(cache_host_bytes=-1)


@pytest.mark.parametrize("cache", [("skip", 1), ("hit", -1), ("fill", True), "hit"])
def test_make_train_step_rejects_a_bad_cache_mode(cache):
    from rgft_jax.training._step import make_train_step

    with pytest.raises(ValueError, match="cache="):
        make_train_step(None, None, None, (True,), False, task="classification", dropout=False,
                        cache=cache)


@pytest.mark.parametrize("name, knobs", [
    ("autofreeze", dict(num_intervals=4, percentile=50.0)),
    ("badam", dict(switch_every=3, order="descending")),
])
def test_schedule_anchors_same_params_with_the_cache(name, knobs):
    """AutoFreeze's growing frozen prefix and BAdam's rotating block use the cache exactly:
    a layer a step does not train does not move (no momentum, no weight decay), so cached
    prefix outputs stay valid until the schedule trains a lower layer again."""
    steps = 12  # 6 epochs of 2 batches
    runs = {}
    for cache in (False, True):
        tr = _trainer(methods.get(name)(learning_rate=1e-2, **knobs), steps, cache)
        tr.fit(_iter())
        runs[cache] = tr
    _close(host(runs[True].state.params), host(runs[False].state.params))
    # BAdam's lower blocks are frozen half the time: the cache must be read. Whether
    # AutoFreeze freezes within 12 steps depends on its gradient-norm history; when it does,
    # the hits must follow.
    if name == "badam" or runs[True].schedule.frozen_prefix >= 1:
        assert runs[True].summary()["cache_hit_steps"] > 0


def test_rgft_probes_invalidate_only_what_their_hard_mask_updates():
    """A probe step differentiates every leaf, but under RGFT's hard mask only the masked-in
    leaves move: the cache is invalidated by the mask the probe applied (read back after
    it), so refreshes every other step no longer throw the prefix rows away. The mask moves
    inside layer 2 (its components at or above their mean residual), so probes do change
    it; params equal the uncached run's."""
    params = host(_trainer(methods.full(), 2, False).state.params)
    part = methods.rgft().partition(params, NUM_HEADS)
    top = np.array([c.layer == LAYERS - 1 for c in part.components])
    assert 0 < top.sum() < len(top)

    def in_layer_2(r):
        t = jax.numpy.asarray(top)
        mean = jax.numpy.where(t, r, 0.0).sum() / t.sum()
        return t & (r >= mean)

    steps = 10  # 5 epochs of 2 batches; refreshes (full probe steps) at 0, 2, 4, 6, 8
    runs = {}
    for cache in (False, True):
        tr = _trainer(methods.rgft(threshold=in_layer_2, update_every=2, warmup_steps=1,
                                   learning_rate=1e-2), steps, cache)
        tr.fit(_iter())
        runs[cache] = tr
    _close(host(runs[True].state.params), host(runs[False].state.params))
    on = runs[True].summary()
    masks = {tuple(m > 0) for _, _, m in runs[True].error_history}
    assert len(masks) > 1, "the mask should change between refreshes"
    assert [h["probe"] for h in runs[True].history] == [1.0, 0.0] * 5  # refresh, sparse
    # Sparse steps 1, 3, 5, 7, 9 (each epoch's second, reshuffled batch): a batch with an
    # example that has no row at this cut fills, the others hit. Probes fill the rows they
    # lack at the cut of the mask they refresh (their forward passes it), so examples first
    # seen in a probe do not make later batches miss. With the probes' full invalidation no
    # sparse step would hit; without probe fills 2 of them do.
    steps_by = runs[True].accounting.pattern_steps
    probe_fills = sum(n for k, n in steps_by.items() if k[1] and cache_mode(k) == "fill")
    sparse = sum(n for k, n in steps_by.items() if not k[1])
    assert probe_fills >= 1 and sparse == 5
    assert on["cache_hit_steps"] >= 3, on
    for h_on, h_off in zip(runs[True].history, runs[False].history):
        np.testing.assert_allclose(h_on["loss"], h_off["loss"], rtol=1e-5)


def test_a_fixed_mask_is_installed_before_the_first_step():
    """A fixed mask (modules, searched, random / magnitude masks) is known before the first
    step: the Trainer installs it, so the run has no probe step and its first step fills the
    cache at the mask's cut (it hits as often as top-k on the same layer); params equal the
    uncached run's."""
    params = host(_trainer(methods.full(), 2, False).state.params)
    part = methods.modules(mask=[True]).partition(params, NUM_HEADS)
    top = [c.layer == LAYERS - 1 for c in part.components]
    steps = 6  # 3 epochs of 2 batches
    runs = {}
    for cache in (False, True):
        tr = _trainer(methods.modules(mask=top, learning_rate=1e-2), steps, cache)
        tr.fit(_iter())
        runs[cache] = tr
    _close(host(runs[True].state.params), host(runs[False].state.params))
    on = runs[True].summary()
    assert on["probe_steps"] == 0
    assert (on["cache_fill_steps"], on["cache_hit_steps"]) == (2, 4)


@pytest.mark.parametrize("make", [lambda top: methods.modules(mask=top, learning_rate=1e-2),
                                  lambda top: methods.random_mask(0.3, learning_rate=1e-2)])
def test_installing_a_fixed_mask_first_changes_the_cost_not_the_update(make):
    """Before: the first update (a probe differentiating everything) installed the fixed
    mask. Installed by the Trainer, the first step is sparse: the same params after it, at a
    sparse step's FLOPs instead of a full step's."""
    params = host(_trainer(methods.full(), 2, False).state.params)
    part = methods.modules(mask=[True]).partition(params, NUM_HEADS)
    top = [c.layer == LAYERS - 1 for c in part.components]
    runs = {}
    for installed in (True, False):
        tr = _trainer(make(top), 2, False)
        if not installed:  # the tracker's initial state: all active, the device installs
            tr.state = tr.state._replace(opt_state=anchors.install_mask(
                tr.state.opt_state, np.ones(len(tr.partition), np.float32)))
            tr._tracker, tr._stale = None, True
        tr.fit(_iter())
        runs[installed] = tr
    _close(host(runs[True].state.params), host(runs[False].state.params))
    on, off = runs[True].summary(), runs[False].summary()
    assert (on["probe_steps"], off["probe_steps"]) == (0, 1)
    assert on["gflops_per_step"] < off["gflops_per_step"]
