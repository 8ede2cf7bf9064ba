"""ARI / NMI against scikit-learn."""

import jax
import numpy as np
import pytest
from sklearn import metrics

from rgft_jax import dsca


@pytest.mark.parametrize("seed", range(6))
def test_ari_nmi_match_sklearn_random(seed):
    rng = np.random.default_rng(seed)
    n, ka, kb = rng.integers(5, 400), rng.integers(1, 9), rng.integers(1, 9)
    a = rng.integers(0, ka, n)
    b = np.where(rng.random(n) < 0.6, a % kb, rng.integers(0, kb, n))
    ari = dsca.adjusted_rand_index(a, b, num_true=int(ka), num_pred=int(kb))
    nmi = dsca.normalized_mutual_info(a, b, num_true=int(ka), num_pred=int(kb))
    np.testing.assert_allclose(float(ari), metrics.adjusted_rand_score(a, b), atol=2e-5)
    np.testing.assert_allclose(float(nmi), metrics.normalized_mutual_info_score(a, b), atol=2e-5)


@pytest.mark.parametrize(
    "a,b",
    [
        ([0, 0, 0, 0], [1, 1, 1, 1]),  # one cluster each: 1 and 1
        ([0, 1, 2, 3], [3, 2, 1, 0]),  # every point alone: 1 and 1
        ([0, 0, 1, 1], [0, 1, 0, 1]),  # independent: ARI < 0, NMI 0
        ([0, 0, 1, 1], [0, 0, 0, 0]),  # one side trivial
        ([0, 0, 1, 1, 2, 2], [1, 1, 2, 2, 0, 0]),  # permutation: 1 and 1
    ],
)
def test_ari_nmi_degenerate_cases_match_sklearn(a, b):
    a, b = np.array(a), np.array(b)
    np.testing.assert_allclose(
        float(dsca.adjusted_rand_index(a, b)), metrics.adjusted_rand_score(a, b), atol=1e-6
    )
    np.testing.assert_allclose(
        float(dsca.normalized_mutual_info(a, b)),
        metrics.normalized_mutual_info_score(a, b),
        atol=1e-6,
    )


def test_ari_large_n_float32_accuracy_and_jit():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 16, 200_000)
    b = np.where(rng.random(a.size) < 0.9, a, rng.integers(0, 16, a.size))
    f = jax.jit(lambda x, y: dsca.adjusted_rand_index(x, y, num_true=16, num_pred=16))
    np.testing.assert_allclose(float(f(a, b)), metrics.adjusted_rand_score(a, b), atol=1e-5)


def test_num_labels_required_under_jit():
    with pytest.raises(ValueError, match="num_true"):
        jax.jit(dsca.adjusted_rand_index)(np.zeros(4, np.int32), np.zeros(4, np.int32))
