"""fit() waits for the device only where the host needs device values."""

from rgft_jax.training import TrainConfig, Trainer, methods

from .conftest import NUM_CLASSES, NUM_HEADS, batches, bert


def _counting(tr, name, log):
    inner = getattr(tr, name)

    def wrapped(*args):
        log.append(tr.step)
        return inner(*args)

    setattr(tr, name, wrapped)


def test_fit_reads_the_error_map_only_around_refreshes():
    method = methods.rgft(learning_rate=1e-2, components="leaves", update_every=4, gamma=0.0,
                          threshold=("percentile", 50))
    tr = Trainer(bert(1), method, TrainConfig(steps=8, progress=False, log_every=0),
                 num_heads=NUM_HEADS, num_layers=1, num_classes=NUM_CLASSES)
    syncs, drains = [], []
    _counting(tr, "_sync_tracker", syncs)
    _counting(tr, "_drain", drains)
    tr.fit(iter(batches(8)))
    # The refresh is at count 4 (and 8): the host reads the mask before step 1 (nothing
    # known), before step 4 (confirm the count: a refresh is due), after it (the new mask)
    # and before step 8. Steps 2, 3, 5, 6, 7 are dispatched without waiting.
    assert syncs == [0, 3, 4, 7]
    assert drains == [8]  # no log points: the metrics are fetched once, at the end
    probes = [h for h in tr.error_history]
    assert [s for s, _, _ in probes] == [1, 2, 3, 4, 8]  # all active until the refresh at 4
    s = tr.summary()
    assert s["steps"] == 8 and s["probe_steps"] == 5 and s["compilations"] == 2
    # Timed intervals cover every step once; the first run of each compiled step alone.
    assert sum(n for n, _, _ in tr.accounting.intervals) == 8
    assert [n for n, _, f in tr.accounting.intervals if f] == [1, 1]
    assert all(sec > 0 for _, sec, _ in tr.accounting.intervals)


def test_train_step_times_every_step_alone():
    tr = Trainer(bert(1), methods.full(learning_rate=1e-2),
                 TrainConfig(steps=3, progress=False, log_every=1), num_heads=NUM_HEADS,
                 num_layers=1, num_classes=NUM_CLASSES)
    ms = [tr.train_step(b) for b in batches(3)]
    assert [n for n, _, _ in tr.accounting.intervals] == [1, 1, 1]
    assert [m["step"] for m in ms] == [1, 2, 3] == [h["step"] for h in tr.history]
    assert [m["step_time_s"] for m in ms] == tr.step_times
    assert tr.fresh_steps == [True, False, False]


def test_dsca_on_probe_steps_is_fetched_with_the_metrics():
    # Full fine-tuning probes every step: each one updates the module library.
    tr = Trainer(bert(1), methods.full(learning_rate=1e-2),
                 TrainConfig(steps=2, progress=False, log_every=0), num_heads=NUM_HEADS,
                 num_layers=1, num_classes=NUM_CLASSES,
                 dsca={"num_modules": 2, "embed_dim": 2, "sketch_dim": 8})
    tr.fit(iter(batches(2)))
    assert [h["step"] for h in tr.module_history] == [1, 2]
    assert all(h["labels"].shape == (len(tr.dsca_partition),) for h in tr.module_history)
    assert int(tr.state.dsca.count) == 2
