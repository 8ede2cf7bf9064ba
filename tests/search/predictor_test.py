"""The additive predictor: fit from noisy probes, predict configurations, score predictions."""

import numpy as np
import pytest
from scipy import stats

from rgft_jax import search


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_additive_coefficients_from_noisy_probes(seed):
    rng = np.random.default_rng(seed)
    reps, m, n, noise = 40, 6, 4, 0.05
    acc_true, loss_true = rng.normal(size=(m, n)), rng.normal(size=(m, n))
    acc = acc_true + noise * rng.normal(size=(reps, m, n))
    loss = loss_true + 2 * noise * rng.normal(size=(reps, m, n))
    p = search.fit_predictor(acc, loss)
    assert p.repeats == reps and p.accuracy.shape == (m, n)
    se_a, se_l = noise / np.sqrt(reps), 2 * noise / np.sqrt(reps)
    # Standard errors estimate the noise level (within 40 % for 40 repeats)...
    np.testing.assert_allclose(p.accuracy_sigma, se_a, rtol=0.4)
    np.testing.assert_allclose(p.loss_sigma, se_l, rtol=0.4)
    # ...and the means sit within 5 standard errors of the truth.
    assert np.all(np.abs(p.accuracy - acc_true) < 5 * se_a)
    assert np.all(np.abs(p.loss - loss_true) < 5 * se_l)
    # Predicting a batch of configurations is the additive sum of the true coefficients.
    choices = rng.integers(0, n, size=(20, m))
    pred = search.predict(p, choices, base_accuracy=0.7, base_loss=1.5)
    true_acc = 0.7 + acc_true[np.arange(m), choices].sum(1)
    assert np.all(np.abs(pred.accuracy - true_acc) < 5 * np.sqrt(m) * se_a)
    np.testing.assert_allclose(pred.accuracy_sigma,
                               np.sqrt((p.accuracy_sigma[np.arange(m), choices] ** 2).sum(1)))
    assert pred.loss.shape == (20,)


def test_fit_matches_hand_computed_mean_and_standard_error():
    acc = np.array([[[1.0, 2.0]], [[3.0, 2.0]], [[5.0, 2.0]]])  # 3 repeats, 1 node, 2 cands
    p = search.fit_predictor(acc, 2 * acc)
    assert p.accuracy.tolist() == [[3.0, 2.0]]
    # std(ddof=1) of (1, 3, 5) is 2; / sqrt(3).
    np.testing.assert_allclose(p.accuracy_sigma, [[2 / np.sqrt(3), 0.0]], rtol=1e-12)
    np.testing.assert_allclose(p.loss_sigma, [[4 / np.sqrt(3), 0.0]], rtol=1e-12)


def test_predict_single_configuration_and_range_check():
    p = search.LinearPredictor(np.array([[0.0, 1.0], [0.0, 10.0]]), np.ones((2, 2)),
                               np.zeros((2, 2)), np.zeros((2, 2)), 2)
    out = search.predict(p, np.array([1, 1]))
    assert out.accuracy.shape == () and float(out.accuracy) == 11.0 and float(out.loss) == 2.0
    with pytest.raises(ValueError, match=r"candidate indices must lie in \[0, 2\)"):
        search.predict(p, [[0, 2]])
    with pytest.raises(ValueError, match=r"int \[b, 2\] or \[2\] array"):
        search.predict(p, [[0.0, 1.0]])


def test_fit_rejects_bad_probes():
    with pytest.raises(ValueError, match=r"1 repeat\(s\); the standard error needs repeats >= 2"):
        search.fit_predictor(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"accuracy_probes has shape \(2, 2, 2\) and "
                                         r"loss_probes \(2, 2, 3\)"):
        search.fit_predictor(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    bad = np.zeros((2, 2, 2))
    bad[1, 0, 1] = np.inf
    with pytest.raises(ValueError, match=r"loss_probes\[1, 0, 1\]=inf"):
        search.fit_predictor(np.zeros((2, 2, 2)), bad)


def test_evaluate_predictor_against_hand_computed_values():
    pred, true = [1.0, 2.0, 3.0, 7.0], [2.0, 2.0, 4.0, 4.0]
    s = search.evaluate_predictor(pred, true)
    # MAE: (1 + 0 + 1 + 3) / 4. SS_res = 1 + 0 + 1 + 9 = 11, SS_tot (mean 3) = 1+1+1+1 = 4.
    assert s.mae == pytest.approx(1.25)
    assert s.r2 == pytest.approx(1 - 11 / 4)
    # Ranks: pred (1, 2, 3, 4), true (1.5, 1.5, 3.5, 3.5): Pearson of the ranks.
    rp, rt = np.array([1, 2, 3, 4.0]), np.array([1.5, 1.5, 3.5, 3.5])
    assert s.spearman == pytest.approx(np.corrcoef(rp, rt)[0, 1])
    assert s.spearman == pytest.approx(stats.spearmanr(pred, true).statistic)


def test_evaluate_predictor_constant_inputs_give_nan_not_warnings():
    s = search.evaluate_predictor([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert s.mae == pytest.approx(3.0) and np.isnan(s.r2) and np.isnan(s.spearman)
    with pytest.raises(ValueError, match="1-D arrays of one length >= 2"):
        search.evaluate_predictor([1.0, 2.0], [1.0, 2.0, 3.0])


def test_probe_fit_search_pipeline_on_a_weakly_interacting_model():
    # A synthetic "network": additive per-node effects plus a weak pairwise interaction (the
    # seed's epsilon_int). Probes switch one node at a time (4 noisy repeats); the predictor is
    # then scored on 40 "trained" configurations and drives the search.
    rng = np.random.default_rng(7)
    m, n, reps = 6, 3, 4
    eff_a, eff_l = rng.normal(size=(m, n)), 0.1 * rng.normal(size=(m, n))
    eff_a[:, 0] = eff_l[:, 0] = 0.0  # candidate 0: the base network
    inter = 0.02 * rng.normal(size=(m, n, m, n))
    rows = np.arange(m)

    def true(c):
        pair = inter[rows[:, None], c[:, None], rows[None], c[None]].sum()
        return 0.5 + eff_a[rows, c].sum() + pair, 2.0 + eff_l[rows, c].sum() - 0.1 * pair

    base_acc, base_loss = true(np.zeros(m, int))
    acc_p = np.zeros((reps, m, n))
    loss_p = np.zeros((reps, m, n))
    for i in range(m):
        for j in range(n):
            c = np.zeros(m, int)
            c[i] = j
            a, l = true(c)
            acc_p[:, i, j] = a - base_acc + 0.01 * rng.normal(size=reps)
            loss_p[:, i, j] = l - base_loss + 0.001 * rng.normal(size=reps)
    p = search.fit_predictor(acc_p, loss_p)
    configs = rng.integers(0, n, size=(40, m))
    pred = search.predict(p, configs, base_accuracy=base_acc, base_loss=base_loss)
    truth = np.array([true(c) for c in configs])
    acc_s = search.evaluate_predictor(pred.accuracy, truth[:, 0])
    loss_s = search.evaluate_predictor(pred.loss, truth[:, 1])
    print(f"accuracy {acc_s}\nloss {loss_s}")
    assert acc_s.r2 > 0.9 and acc_s.spearman > 0.9 and loss_s.r2 > 0.9
    r = search.solve(p.accuracy, p.loss, base_loss=base_loss, loss_limit=base_loss,
                     sigma=p.accuracy_sigma, tau=2.0, method="ilp")
    # The chosen network beats every sampled configuration whose predicted loss is feasible.
    ok = pred.loss <= base_loss
    assert true(r.choice)[0] >= truth[ok, 0].max()
