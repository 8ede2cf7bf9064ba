"""The arena's statistics against hand-computed values."""

import math

import numpy as np
import pytest

from rgft_jax import reporting

EVALS = [{"step": 10, "gflops_cum": 100.0, "train_time_s": 5.0, "accuracy": 0.5},
         {"step": 20, "gflops_cum": 200.0, "train_time_s": 10.0, "accuracy": 0.7},
         {"step": 30, "gflops_cum": 300.0, "train_time_s": 15.0, "accuracy": 0.9}]


def test_mean_std_is_the_sample_std():
    m, s = reporting.mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    assert s == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, over n - 1 = 3
    assert math.isnan(reporting.mean_std([0.7])[1])
    assert all(math.isnan(v) for v in reporting.mean_std([]))


def test_paired_ttest_against_the_closed_form():
    # d = [0.02, 0.02, 0.05]: mean 0.03, sd sqrt(0.0003), t = 0.03 / (sd / sqrt 3) = 3.
    # Student t with 2 dof: p = 1 - t / sqrt(t^2 + 2) = 1 - 3 / sqrt(11).
    t, p = reporting.paired_ttest([0.80, 0.82, 0.85], [0.78, 0.80, 0.80])
    assert t == pytest.approx(3.0)
    assert p == pytest.approx(1 - 3 / math.sqrt(11))
    t, p = reporting.paired_ttest([0.78, 0.80, 0.80], [0.80, 0.82, 0.85])
    assert t == pytest.approx(-3.0) and p == pytest.approx(1 - 3 / math.sqrt(11))


def test_paired_ttest_edge_cases():
    assert reporting.paired_ttest([0.5, 0.6], [0.5, 0.6]) == (0.0, 1.0)
    assert reporting.paired_ttest([0.6, 0.7], [0.5, 0.6]) == (math.inf, 0.0)
    assert all(math.isnan(v) for v in reporting.paired_ttest([0.5], [0.4]))
    with pytest.raises(ValueError, match="equal lengths"):
        reporting.paired_ttest([0.5, 0.6], [0.5])


@pytest.mark.parametrize("target, expected", [
    (0.8, {"gflops_cum": 250.0, "train_time_s": 12.5, "step": 25.0}),  # halfway 20 -> 30
    (0.6, {"gflops_cum": 150.0, "train_time_s": 7.5, "step": 15.0}),
    (0.75, {"gflops_cum": 225.0, "train_time_s": 11.25, "step": 22.5}),
    (0.5, {"gflops_cum": 100.0, "train_time_s": 5.0, "step": 10.0}),  # the first evaluation
    (0.3, {"gflops_cum": 100.0, "train_time_s": 5.0, "step": 10.0}),
    (0.9, {"gflops_cum": 300.0, "train_time_s": 15.0, "step": 30.0}),
])
def test_time_to_quality_interpolates_linearly(target, expected):
    got = reporting.time_to_quality(EVALS, target)
    assert got == pytest.approx(expected)


def test_time_to_quality_not_reached_and_first_crossing():
    assert reporting.time_to_quality(EVALS, 0.95) is None
    assert reporting.time_to_quality([], 0.5) is None
    # Crosses, dips, crosses again: the first crossing counts.
    ev = [{"step": 1, "accuracy": 0.4}, {"step": 2, "accuracy": 0.8},
          {"step": 3, "accuracy": 0.5}, {"step": 4, "accuracy": 0.9}]
    assert reporting.time_to_quality(ev, 0.6, keys=("step",)) == {"step": pytest.approx(1.5)}


def test_value_at_equal_gflops():
    assert reporting.value_at(EVALS, 150.0) == pytest.approx(0.6)
    assert reporting.value_at(EVALS, 300.0) == pytest.approx(0.9)
    assert reporting.value_at(EVALS, 350.0) is None  # never spent that much
    assert reporting.value_at(EVALS, 50.0) is None
    # The mean of equal totals can round one ulp past the last evaluation: still its value.
    assert reporting.value_at(EVALS, 300.0 * (1 + 1e-15)) == pytest.approx(0.9)
    g = [0.1 + 0.2] * 3
    ev = [{"gflops_cum": 0.0, "accuracy": 0.1}, {"gflops_cum": g[0], "accuracy": 0.5}]
    assert reporting.value_at(ev, float(np.mean(g)) + 1e-17) == pytest.approx(0.5)


def test_ema_is_debiased():
    np.testing.assert_allclose(reporting.ema([1.0, 1.0, 1.0]), [1.0, 1.0, 1.0])
    # s = [0, 0.5], normalisers [0.5, 0.75]: [0, 2/3].
    np.testing.assert_allclose(reporting.ema([0.0, 1.0], 0.5), [0.0, 2 / 3])
    np.testing.assert_allclose(reporting.ema([2.0, np.nan, 4.0], 0.0), [2.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="weight"):
        reporting.ema([1.0], 1.0)


def test_pareto_front():
    pts = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (2.5, 0.8), (0.5, 0.4)]
    assert reporting.pareto_front(pts) == [4, 0, 1, 3]


def _record(method, budget, seed, acc, gflops, evals=None):
    return {"regime": "low", "method": method, "budget": budget, "seed": seed,
            "accuracy": acc, "gflops_total": gflops, "train_time_s": gflops / 10,
            "evals": evals or []}


def test_arena_summary_hand_computed():
    full = [0.80, 0.82, 0.85]  # target = mean - 0.01 = 0.8133...
    top = [0.78, 0.80, 0.80]
    rg = [0.81, 0.815, 0.84]
    ev = lambda a: [{"step": 5, "gflops_cum": 50.0, "train_time_s": 5.0, "accuracy": 0.6},
                    {"step": 10, "gflops_cum": 100.0, "train_time_s": 10.0, "accuracy": a}]
    recs = ([_record("full", None, s, a, 200.0, ev(a)) for s, a in enumerate(full)]
            + [_record("top_layers", 0.45, s, a, 90.0, ev(a)) for s, a in enumerate(top)]
            + [_record("rgft", 0.45, s, a, 100.0, ev(a)) for s, a in enumerate(rg)])
    rows = reporting.arena_summary(recs, heuristics=("top_layers",))
    by = {r["method"]: r for r in rows}
    assert by["full"]["accuracy"] == pytest.approx(np.mean(full))
    assert by["full"]["accuracy_std"] == pytest.approx(np.std(full, ddof=1))
    assert by["top_layers"]["p_full"] == pytest.approx(1 - 3 / math.sqrt(11))
    assert by["rgft"]["vs_heuristic"] == "top_layers@0.45"
    assert by["rgft"]["p_heuristic"] == pytest.approx(
        reporting.paired_ttest(rg, top)[1])
    assert "p_heuristic" not in by["top_layers"]  # a heuristic is not tested against itself
    assert "p_anchor" not in by["rgft"]  # no anchors named: no anchor column
    # Anchors: BAdam (no budget: counts at every budget) beats GreenTrainer@0.45 on the mean,
    # so it is the best anchor of rgft; GreenTrainer@0.3 is another budget and never counts.
    gt, badam = [0.70, 0.71, 0.75], [0.79, 0.80, 0.82]
    recs2 = (recs + [_record("green_trainer", 0.45, s, a, 80.0) for s, a in enumerate(gt)]
             + [_record("green_trainer", 0.3, s, 0.99, 60.0) for s in range(3)]
             + [_record("badam", None, s, a, 120.0) for s, a in enumerate(badam)])
    by2 = {(r["method"], r["budget"]): r for r in reporting.arena_summary(
        recs2, heuristics=("top_layers", "green_trainer", "badam"),
        anchors=("green_trainer", "badam"))}
    assert by2["rgft", 0.45]["vs_anchor"] == "badam"
    assert by2["rgft", 0.45]["p_anchor"] == pytest.approx(reporting.paired_ttest(rg, badam)[1])
    assert by2["top_layers", 0.45]["vs_anchor"] == "badam"  # heuristics face the anchors too
    assert "vs_anchor" not in by2["badam", None]  # an anchor is not tested against anchors
    assert "p_anchor" not in by2["full", None]
    assert by["rgft"]["gflops_ratio"] == pytest.approx(0.5)
    target = np.mean(full) - 0.01
    assert by["rgft"]["target"] == pytest.approx(target)
    # top_layers never reaches 0.8133; rgft seeds 1 and 2 do (0.815, 0.84), seed 0 does not.
    assert by["top_layers"]["ttq_reached"] == 0
    assert by["rgft"]["ttq_reached"] == 2
    expect = np.mean([50 + (target - 0.6) / (a - 0.6) * 50 for a in rg[1:]])
    assert by["rgft"]["ttq_gflops"] == pytest.approx(expect)
    # Equal GFLOPs: the regime's smallest total (top_layers, 90): everyone at 90 GFLOPs.
    assert by["full"]["acc_eq"] == pytest.approx(np.mean([0.6 + 0.8 * (a - 0.6) for a in full]))
    table = reporting.arena_table(rows)
    assert "not reached" in table and "(2/3)" in table and "top_layers@0.45" in table
    assert table.splitlines()[0].startswith("| regime | method | budget")
