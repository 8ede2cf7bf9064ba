"""The seed's diagnostics over steps: kappa(r) of the gradient covariance, Pi_r drift,
gradient / update residuals, per-module stability, Laplacian change, centroid drift."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _dsca_helpers import planted_sketches

from rgft_jax import dsca
from rgft_jax.dsca import _graph, _subspace

M, S, K = 90, 16, 3
TRUTH = np.repeat(np.arange(K), M // K)


def _cfg(**kw):
    return dsca.DSCAConfig(**{**dict(num_blocks=M, num_modules=K, embed_dim=3, sketch_dim=S,
                                     kappa_rank=2, subspace_window=8, subspace_dim=256), **kw})


def _run(cfg, xs, us=None):
    update = jax.jit(dsca.dsca_update, static_argnames=("config",))
    state = dsca.dsca_init(M, config=cfg)
    libs, states = [], [state]
    for t, x in enumerate(xs):
        u = None if us is None else jnp.asarray(us[t])
        state, lib = update(state, jnp.asarray(x), config=cfg, update_sketches=u)
        libs.append(lib)
        states.append(state)
    return states, libs


def _low_rank_gradients(n, rank, noise, seed=0, basis=None):
    """Gradients (as block sketches) in a fixed ``rank``-dim subspace, plus noise; each keeps
    the planted modules (block i's sketch is its module centre times a coefficient)."""
    rng = np.random.default_rng(seed)
    if basis is None:
        basis = [planted_sketches(TRUTH, S, 0.05, seed=100 + j) for j in range(rank)]
    xs = [sum(rng.normal() * b for b in basis) + noise * rng.normal(size=(M, S))
          for _ in range(n)]
    return [x.astype(np.float32) for x in xs], basis


def test_kappa_is_near_one_for_low_rank_gradients_and_low_for_isotropic_ones():
    cfg = _cfg()
    xs, _ = _low_rank_gradients(10, 2, 0.01)
    _, libs = _run(cfg, xs)
    kap = [float(lib.kappa) for lib in libs]
    assert all(np.isnan(kap[:2])) and all(np.isfinite(kap[2:]))  # window must exceed r = 2
    assert min(kap[2:]) > 0.99
    rng = np.random.default_rng(1)
    iso = [rng.normal(size=(M, S)).astype(np.float32) for _ in range(10)]
    _, libs = _run(cfg, iso)
    # Isotropic: 8 nearly orthogonal gradients in 256 sketched coordinates; top 2 of 8.
    assert 0.2 < float(libs[-1].kappa) < 0.45


def test_kappa_equals_the_top_r_share_of_the_window_second_moment():
    cfg = _cfg()
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(M, S)).astype(np.float32) * (1 + 3 * (i % 2)) for i in range(5)]
    states, libs = _run(cfg, xs)
    g = np.stack([np.asarray(_subspace.flatten(jnp.asarray(x), states[0].sketch_seed, 256))
                  for x in xs])
    ev = np.linalg.eigvalsh(g.T.astype(np.float64) @ g)[::-1]  # p x p covariance (sum)
    np.testing.assert_allclose(float(libs[-1].kappa), ev[:2].sum() / ev.sum(), rtol=1e-4)
    # The flattening sketch preserves inner products in expectation.
    dots = [float(np.vdot(xs[0], xs[1])), float(g[0] @ g[1])]
    assert abs(dots[0] - dots[1]) < 0.25 * np.linalg.norm(xs[0]) * np.linalg.norm(xs[1])


def test_gradient_subspace_drift_and_residuals_track_a_change_of_subspace():
    cfg = _cfg()
    before, _ = _low_rank_gradients(8, 2, 0.01, seed=0)
    after, _ = _low_rank_gradients(8, 2, 0.01, seed=1,
                                   basis=[planted_sketches(TRUTH, S, 0.05, seed=200 + j)
                                          for j in range(2)])
    # Updates: inside the gradient subspace before the switch, random after.
    rng = np.random.default_rng(3)
    us = [x * 0.1 for x in before] + [rng.normal(size=(M, S)).astype(np.float32)] * 8
    _, libs = _run(cfg, before + after, us)
    drift = np.array([float(lib.grad_drift) for lib in libs])
    assert np.all(np.isnan(drift[:3])) and np.all(drift[3:8] < 0.05)
    # Pi_r turns to the new subspace once its gradients carry more of the window's energy.
    assert np.nanmax(drift[8:]) > 0.5
    res = np.array([float(lib.grad_residual) for lib in libs])
    assert np.isnan(res[0]) and np.all(res[3:8] < 0.05) and res[8] > 0.9
    upd = np.array([float(lib.update_residual) for lib in libs])
    assert np.all(upd[3:8] < 0.05) and np.all(upd[8:] > 0.5)
    _, no_updates = _run(cfg, before[:3])
    assert np.isnan(float(no_updates[-1].update_residual))


def test_stable_modules_have_stability_one_and_centroids_move_less_than_rows():
    cfg = _cfg()
    xs = [planted_sketches(TRUTH, S, 0.3, seed=0) + 0.05 * np.random.default_rng(t).normal(
        size=(M, S)).astype(np.float32) for t in range(4)]
    _, libs = _run(cfg, xs)
    assert np.all(np.isnan(np.asarray(libs[0].module_stability)))
    for lib in libs[1:]:
        np.testing.assert_array_equal(np.asarray(lib.module_stability), 1.0)
        # Equation 5 with unchanged members: a centroid is a mean of rows, so it moves at
        # most as far as the farthest-moving row.
        assert np.all(np.asarray(lib.centroid_drift) <= float(lib.row_drift) + 1e-5)
        assert float(lib.row_drift) > 0


def test_module_stability_is_the_jaccard_overlap_per_module():
    prev = jnp.array([0, 0, 0, 1, 1, 2])
    now = jnp.array([0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(_subspace.module_stability(prev, now, 4)[:3],
                               [2 / 3, 2 / 4, 0.0])
    assert np.isnan(float(_subspace.module_stability(prev, now, 4)[3]))


@pytest.mark.parametrize("graph", ["dense", "sparse"])
def test_laplacian_change_equals_the_spectral_norm_of_the_difference(graph):
    kw = dict(graph="sparse", knn=8, embed_dim=3) if graph == "sparse" else {}
    cfg = _cfg(**kw)
    xs = [planted_sketches(TRUTH, S, 0.8, seed=t) for t in range(3)]
    states, libs = _run(cfg, xs)
    assert np.isnan(float(libs[0].laplacian_change))

    def an(st):
        w = st.graph_w if graph == "dense" else _graph.knn_to_bcoo(st.graph_idx, st.graph_w)
        a, _ = _graph.normalized_adjacency(w, cfg.degree_floor)
        return np.asarray(a.todense() if hasattr(a, "todense") else a, np.float64)

    for t in (1, 2):
        want = np.abs(np.linalg.eigvalsh(an(states[t + 1]) - an(states[t]))).max()
        np.testing.assert_allclose(float(libs[t].laplacian_change), want, rtol=2e-2)
        assert want > 0
    assert float(libs[2].degree_min) > 0


def test_bad_subspace_settings_fail_at_construction():
    with pytest.raises(ValueError, match=r"subspace_window=4; allowed: an int > kappa_rank"):
        _cfg(kappa_rank=4, subspace_window=4)
    with pytest.raises(ValueError, match=r"kappa_rank=0; allowed: None or an int >= 1"):
        _cfg(kappa_rank=0)
    with pytest.raises(ValueError, match=r"subspace_dim=0; allowed: an int >= 1"):
        _cfg(subspace_dim=0)
    with pytest.raises(ValueError, match="update_sketches must have shape"):
        cfg = _cfg()
        dsca.dsca_update(dsca.dsca_init(M, config=cfg), jnp.ones((M, S)), config=cfg,
                         update_sketches=jnp.ones((M, S + 1)))
