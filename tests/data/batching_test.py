# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Seeded grain batching, exact checkpoint/restore of the position, padded eval batches."""

from __future__ import annotations

import numpy as np
import pytest

from rgft_jax import data as rdata

SOURCE = [{"x": np.int64(i), "label": np.int64(i % 3)} for i in range(23)]


def _ids(batches) -> list[list[int]]:
    return [b["x"].tolist() for b in batches]


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_same_seed_same_batches_different_seed_different():
    a = _ids(_take(rdata.TrainIterator(SOURCE, batch_size=4, seed=1), 12))
    b = _ids(_take(rdata.TrainIterator(SOURCE, batch_size=4, seed=1, num_threads=0), 12))
    c = _ids(_take(rdata.TrainIterator(SOURCE, batch_size=4, seed=2), 12))
    assert a == b
    assert a != c


def test_epochs_are_permutations_and_reshuffled():
    it = rdata.TrainIterator(SOURCE, batch_size=4, seed=0)
    assert it.steps_per_epoch == 5  # 23 // 4, remainder dropped
    epoch0 = sum(_ids(_take(it, 5)), [])
    assert it.get_state() == {"epoch": 0, "step": 5}
    epoch1 = sum(_ids(_take(it, 5)), [])
    assert it.get_state() == {"epoch": 1, "step": 5}
    for epoch in (epoch0, epoch1):
        assert len(set(epoch)) == 20 and set(epoch) <= set(range(23))
    assert epoch0 != epoch1


def test_keep_remainder_and_num_epochs():
    it = rdata.TrainIterator(SOURCE, batch_size=4, seed=0, drop_remainder=False, num_epochs=2)
    batches = list(it)
    assert len(batches) == 12 and [len(b["x"]) for b in batches[:6]] == [4] * 5 + [3]
    assert sorted(sum(_ids(batches[:6]), [])) == list(range(23))
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("stop_after", [0, 3, 5, 7, 11])
def test_restore_resumes_with_identical_batches(stop_after):
    reference = _take(rdata.TrainIterator(SOURCE, batch_size=4, seed=5), 14)
    it = rdata.TrainIterator(SOURCE, batch_size=4, seed=5)
    _take(it, stop_after)
    # The state is plain ints; as it comes back from an orbax checkpoint (numpy scalars).
    state = {k: np.asarray(v) for k, v in it.get_state().items()}
    resumed = rdata.TrainIterator(SOURCE, batch_size=4, seed=5)
    resumed.set_state(state)
    rest = _take(resumed, 14 - stop_after)
    for got, want in zip(rest, reference[stop_after:], strict=True):
        np.testing.assert_array_equal(got["x"], want["x"])
        np.testing.assert_array_equal(got["label"], want["label"])


def test_tokenised_batches_resume_exactly(tokenizer_dir):
    words = ["the cat sat", "a dog", "good movie", "bad movie", "hello world", "one two three"]
    source = [{"text": w.encode(), "label": np.int64(i % 2)} for i, w in enumerate(words * 3)]
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=8)
    kwargs = dict(batch_size=4, seed=0, batch_fn=rdata.ClassificationBatcher(tok))
    reference = _take(rdata.TrainIterator(source, **kwargs), 9)
    it = rdata.TrainIterator(source, **kwargs)
    _take(it, 6)
    resumed = rdata.TrainIterator(source, **kwargs)
    resumed.set_state(it.get_state())
    for got, want in zip(_take(resumed, 3), reference[6:], strict=True):
        assert got["input_ids"].shape == (4, 8) and got["input_ids"].dtype == np.int32
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_set_state_and_constructor_errors():
    it = rdata.TrainIterator(SOURCE, batch_size=4, seed=0)
    with pytest.raises(ValueError, match=r"lacks keys \['step'\]"):
        it.set_state({"epoch": 0})
    with pytest.raises(ValueError, match="out of range"):
        it.set_state({"epoch": 0, "step": 6})
    with pytest.raises(ValueError, match="batch_size=0 must be a positive integer"):
        rdata.TrainIterator(SOURCE, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="seed=-1 must be a non-negative integer"):
        rdata.TrainIterator(SOURCE, batch_size=2, seed=-1)
    with pytest.raises(ValueError, match="leaves no batch in a source of 23 examples"):
        rdata.TrainIterator(SOURCE, batch_size=24, seed=0)


def test_eval_batches_pad_with_validity_mask():
    batches = list(rdata.eval_batches(SOURCE, batch_size=10))
    assert len(batches) == 3
    for b in batches:
        assert b["x"].shape == (10,) and b["valid"].dtype == np.bool_
    assert batches[-1]["valid"].tolist() == [True] * 3 + [False] * 7
    assert (batches[-1]["x"][3:] == 0).all()
    kept = np.concatenate([b["x"][b["valid"]] for b in batches])
    np.testing.assert_array_equal(kept, np.arange(23))  # fixed order, every example once
    # An exact metric: mean label over the valid rows equals the true mean.
    total = sum(float((b["label"] * b["valid"]).sum()) for b in batches)
    count = sum(int(b["valid"].sum()) for b in batches)
    assert count == 23 and total / count == pytest.approx(np.mean([i % 3 for i in range(23)]))


def test_eval_batches_tokenised(tokenizer_dir):
    tok = rdata.TextTokenizer.from_pretrained(tokenizer_dir, max_length=6)
    source = [{"text": b"the cat", "label": np.int64(1)}] * 5
    batches = list(
        rdata.eval_batches(source, batch_size=4, batch_fn=rdata.ClassificationBatcher(tok))
    )
    assert [b["valid"].sum() for b in batches] == [4, 1]
    last = batches[-1]
    assert last["input_ids"].shape == (4, 6) and last["input_ids"].dtype == np.int32
    assert not last["attention_mask"][1:].any() and last["label"].tolist() == [1, 0, 0, 0]


def test_position_round_trips_through_orbax_checkpoint(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    reference = _take(rdata.TrainIterator(SOURCE, batch_size=4, seed=9), 8)
    it = rdata.TrainIterator(SOURCE, batch_size=4, seed=9)
    _take(it, 6)  # into the second epoch
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(6, args=ocp.args.StandardSave({"data": it.get_state()}))
        manager.wait_until_finished()
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        target = {"data": {"epoch": 0, "step": 0}}
        restored = manager.restore(6, args=ocp.args.StandardRestore(target))
    resumed = rdata.TrainIterator(SOURCE, batch_size=4, seed=9)
    resumed.set_state(restored["data"])
    assert resumed.get_state() == {"epoch": 1, "step": 1}
    for got, want in zip(_take(resumed, 2), reference[6:], strict=True):
        np.testing.assert_array_equal(got["x"], want["x"])
