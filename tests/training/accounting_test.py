"""Accounting of a run: FLOPs per pattern, timed intervals, update ratio, JSON round trip."""

import math

import pytest

from rgft_jax.training._accounting import Accounting

SHAPES = (("input_ids", (8, 16)), ("label", (8,)))
PROBE = ((True, True), True, SHAPES)
SPARSE = ((True, False), False, SHAPES)


def _run() -> Accounting:
    acc = Accounting(total_params=1000.0)
    acc.record_compile(PROBE, flops=10e9, matmul=8e9, peak=500)
    acc.record_compile(SPARSE, flops=4e9, matmul=3e9, peak=300)
    for key, ratio in [(PROBE, 1.0), (SPARSE, 0.5), (SPARSE, 0.5), (PROBE, 1.0)]:
        acc.record_step(key, ratio)
    acc.record_interval(1, 9.0, fresh=True)  # first run of the probe step: compile warm-up
    acc.record_interval(1, 3.0, fresh=True)  # first run of the sparse step
    acc.record_interval(2, 2.0, fresh=False)  # two steps timed together: 1 s each
    return acc


def test_summary_averages_over_the_steps_that_ran():
    s = _run().summary()
    assert s["steps"] == 4 and s["probe_steps"] == 2
    assert s["gflops_per_step"] == pytest.approx((2 * 10 + 2 * 4) / 4)
    assert s["matmul_gflops_per_step"] == pytest.approx((2 * 8 + 2 * 3) / 4)
    assert s["gflops_max_step"] == pytest.approx(10.0)
    assert s["update_ratio"] == pytest.approx(0.75)
    assert s["peak_step_bytes"] == 500 and s["compilations"] == 2
    # Fresh intervals are left out of the means; the total keeps everything.
    assert s["step_time_s"] == pytest.approx(1.0) and s["median_step_time_s"] == 1.0
    assert s["train_time_s"] == pytest.approx(14.0)


def test_fresh_intervals_count_when_nothing_else_ran():
    acc = Accounting(10.0)
    acc.record_step(PROBE, 1.0)
    acc.record_interval(1, 2.5, fresh=True)
    assert acc.summary()["step_time_s"] == 2.5


def test_per_step_views_expand_intervals():
    acc = _run()
    assert acc.step_times == [9.0, 3.0, 1.0, 1.0]
    assert acc.fresh_steps == [True, True, False, False]


def test_empty_run():
    s = Accounting(10.0).summary()
    assert s["steps"] == 0 and s["update_ratio"] == 1.0
    assert math.isnan(s["step_time_s"]) and math.isnan(s["gflops_max_step"])


def test_json_round_trip_and_older_per_step_times():
    acc = _run()
    back = Accounting(1000.0)
    back.load_json(acc.to_json())
    assert back.summary() == acc.summary()
    assert back.pattern_steps == acc.pattern_steps and back.intervals == acc.intervals
    # Checkpoints written before timed intervals hold one time per step.
    old = {k: v for k, v in acc.to_json().items() if k != "intervals"}
    old.update(step_times=[9.0, 3.0, 1.0, 1.0], fresh_steps=[True, True, False, False])
    legacy = Accounting(1000.0)
    legacy.load_json(old)
    assert legacy.summary()["step_time_s"] == pytest.approx(1.0)
    assert legacy.step_times == acc.step_times
