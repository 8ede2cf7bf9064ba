"""Spectral embedding (LOBPCG) and static spectral clustering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _dsca_helpers import planted_dense, principal_angle_max
from jax.experimental import sparse as jsparse

from rgft_jax import dsca


def _normalized(a):
    d = a.sum(1)
    return a / np.sqrt(np.outer(d, d))


@pytest.mark.parametrize("m,k,r", [(200, 4, 4), (300, 6, 6), (240, 4, 8)])
def test_lobpcg_subspace_matches_numpy_eigh(m, k, r):
    a, _ = planted_dense(m, k, 0.3, 0.02, seed=m)
    a = a + 0.05 * np.random.default_rng(1).random(a.shape).astype(np.float32)
    a = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(_normalized(a.astype(np.float64)))
    ref = v[:, ::-1][:, :r]
    theta, u, it = dsca.spectral_embedding(jnp.asarray(a), r, max_iters=300, residual_tol=1e-6)
    assert principal_angle_max(u, ref) <= 1e-3
    np.testing.assert_allclose(np.asarray(theta), w[::-1][:r], atol=1e-4)
    assert 0 < int(it) <= 300


def test_bcoo_and_dense_give_the_same_subspace():
    a, _ = planted_dense(300, 5, 0.3, 0.02, seed=3)
    u_d = dsca.spectral_embedding(jnp.asarray(a), 5, max_iters=300, residual_tol=1e-6)[1]
    u_s = dsca.spectral_embedding(
        jsparse.BCOO.fromdense(jnp.asarray(a)), 5, max_iters=300, residual_tol=1e-6
    )[1]
    assert principal_angle_max(u_d, u_s) <= 1e-3


def test_warm_start_needs_fewer_iterations_than_cold():
    a, _ = planted_dense(396, 6, 0.25, 0.03, seed=0)
    rng = np.random.default_rng(0)
    noise = (rng.random(a.shape) < 0.01).astype(np.float32)
    b = np.clip(a + np.triu(noise, 1) + np.triu(noise, 1).T, 0, 1)  # a slightly perturbed graph
    _, u_a, _ = dsca.spectral_embedding(jnp.asarray(a), 6, max_iters=300, residual_tol=1e-5)
    _, _, cold = dsca.spectral_embedding(
        jnp.asarray(b), 6, max_iters=300, residual_tol=1e-5, key=jax.random.PRNGKey(3)
    )
    _, _, warm = dsca.spectral_embedding(
        jnp.asarray(b), 6, x0=u_a, max_iters=300, residual_tol=1e-5
    )
    assert int(warm) < int(cold), (int(warm), int(cold))


def test_spectral_clustering_recovers_planted_partition_dense_and_bcoo():
    a, truth = planted_dense(600, 6, 0.2, 0.01, seed=1)
    lab = dsca.spectral_clustering(jnp.asarray(a), 6, n_components=6)
    assert lab.dtype == jnp.int32 and lab.shape == (600,)
    assert float(dsca.adjusted_rand_index(truth, lab)) >= 0.95
    lab_s = dsca.spectral_clustering(jsparse.BCOO.fromdense(jnp.asarray(a)), 6, n_components=6)
    assert float(dsca.adjusted_rand_index(truth, lab_s)) >= 0.95


def test_spectral_clustering_matches_sklearn_on_small_graph():
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    a, truth = planted_dense(300, 3, 0.2, 0.03, seed=5)
    ours = np.asarray(dsca.spectral_clustering(jnp.asarray(a), 3, n_components=3))
    ref = SpectralClustering(3, affinity="precomputed", random_state=0).fit_predict(a)
    assert adjusted_rand_score(ref, ours) >= 0.95
    assert abs(adjusted_rand_score(truth, ours) - adjusted_rand_score(truth, ref)) <= 0.02


def _noisy(a, level, seed=0):
    """``a`` plus weak dense background noise ``level * U(0, 1)`` (symmetric, zero diagonal)."""
    n = np.triu(level * np.random.default_rng(seed).random(a.shape, dtype=np.float32), 1)
    return a + n + n.T


@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_default_krylov_path_recovers_planted_partition(noise):
    """The defaults (``n_components = n_clusters``, block Krylov) on clean and noisy graphs."""
    a, truth = planted_dense(720, 6, 0.2, 0.01, seed=11)
    a = _noisy(a, noise) if noise else a
    lab = dsca.spectral_clustering(jnp.asarray(a), 6)
    assert float(dsca.adjusted_rand_index(truth, lab)) >= 0.98
    # the default n_components is n_clusters
    same = dsca.spectral_clustering(jnp.asarray(a), 6, n_components=6)
    np.testing.assert_array_equal(np.asarray(lab), np.asarray(same))
    # the former solver still works and agrees
    old = dsca.spectral_clustering(jnp.asarray(a), 6, solver="lobpcg")
    assert float(dsca.adjusted_rand_index(lab, old)) >= 0.98


def test_default_path_matches_sklearn_on_noisy_graph():
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    a, truth = planted_dense(400, 4, 0.15, 0.02, seed=2)
    a = _noisy(a, 0.02, seed=3)
    ours = np.asarray(dsca.spectral_clustering(jnp.asarray(a), 4))
    ref = SpectralClustering(4, affinity="precomputed", random_state=0).fit_predict(a)
    assert abs(adjusted_rand_score(truth, ours) - adjusted_rand_score(truth, ref)) <= 0.02


@pytest.mark.parametrize("exact", [False, True])
def test_block_krylov_top_subspace_matches_numpy_eigh(exact):
    from rgft_jax.dsca import _spectral

    if exact:  # 5 disconnected cliques: the Krylov space becomes invariant after one product
        a = np.kron(np.eye(5), np.ones((60, 60))).astype(np.float32)
    else:
        a, _ = planted_dense(300, 5, 0.3, 0.02, seed=4)
        a = _noisy(a, 0.05, seed=5)
    w, v = np.linalg.eigh(_normalized(a.astype(np.float64)))
    mv, _ = _spectral.normalized_matvec(jnp.asarray(a), 1e-6)
    theta, u, products = jax.jit(
        lambda x0: _spectral.top_block_krylov(
            mv, x0, 5, jax.random.PRNGKey(1), max_blocks=3, max_products=60, tol=1e-4
        )
    )(jax.random.normal(jax.random.PRNGKey(0), (300, 8)))
    np.testing.assert_allclose(np.asarray(theta), w[::-1][:5], atol=1e-4)
    u = np.asarray(u)
    np.testing.assert_allclose(u.T @ u, np.eye(5), atol=1e-4)
    if not exact:  # (a multiple eigenvalue 1 when exact: any basis of its space is right)
        assert principal_angle_max(u, v[:, ::-1][:, :5]) <= 5e-3
    else:
        assert principal_angle_max(u, v[:, ::-1][:, :5]) <= 1e-3
    assert 1 <= int(products) <= 60


def test_spectral_clustering_rejects_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        dsca.spectral_clustering(jnp.ones((4, 5)), 2)
    with pytest.raises(ValueError, match="n_clusters"):
        dsca.spectral_clustering(jnp.ones((10, 10)), 11)
    with pytest.raises(ValueError, match="n_components"):
        dsca.spectral_clustering(jnp.ones((10, 10)), 2, n_components=10)
    with pytest.raises(ValueError, match="float"):
        dsca.spectral_clustering(jnp.ones((10, 10), jnp.int32), 2)
    with pytest.raises(ValueError, match="solver"):
        dsca.spectral_clustering(jnp.ones((10, 10)), 2, solver="arpack")
    with pytest.raises(ValueError, match="oversample"):
        dsca.spectral_clustering(jnp.ones((10, 10)), 2, oversample=-1)


def test_subspace_drift_formula():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(50, 6)))
    u, v = q[:, :3], q[:, 3:]
    assert float(dsca.subspace_drift(jnp.asarray(u), jnp.asarray(u))) < 1e-3
    np.testing.assert_allclose(
        float(dsca.subspace_drift(jnp.asarray(u), jnp.asarray(v))),
        np.linalg.norm(u @ u.T - v @ v.T),
        rtol=1e-5,
    )
