# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Layer Card's quantities against exact computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rgft_jax.layer_card as lc
from rgft_jax.models import Projection


def _linear_problem(n=200, d_in=6, d_out=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_in)) @ rng.normal(size=(d_in, d_in))  # correlated inputs
    w = rng.normal(size=(d_in, d_out))
    t = x @ rng.normal(size=(d_in, d_out)) + 0.3 * rng.normal(size=(n, d_out))
    return x, w, t


def test_theorem_3_3_projected_residual_equals_best_adapter_gain():
    # Squared loss, linear adapter dW on W: L(dW) = ||T - X (W + dW)||^2 / (2N).
    # 0.5 * ||Σ^{-1/2} G||_F^2 must equal L(0) - min L, computed by least squares.
    x, w, t = _linear_problem()
    n = x.shape[0]
    r = t - x @ w
    best, *_ = np.linalg.lstsq(x, r, rcond=None)
    gain = (np.sum(r**2) - np.sum((r - x @ best) ** 2)) / (2 * n)
    grad = -(x.T @ r) / n  # dL/dW at dW = 0
    sigma = x.T @ x / n
    res = float(lc.projected_residual_norm(grad, sigma, ridge=1e-9))
    np.testing.assert_allclose(0.5 * res**2, gain, rtol=1e-4)
    # The identity is specific to the covariance normalisation: the raw gradient norm is not it.
    assert abs(0.5 * np.linalg.norm(grad) ** 2 - gain) > 0.1 * gain


class _Linear(nnx.Module):
    def __init__(self, d_in, d_out):
        self.layers = nnx.List([nnx.Dict(proj=Projection(d_in, d_out, use_bias=False,
                                                         rngs=nnx.Rngs(0)))])

    def __call__(self, x):
        return self.layers[0]["proj"](x)


def test_probe_on_a_model_reproduces_theorem_3_3():
    # The same identity through the probe: G from jax.grad, Σ from the tapped inputs.
    x, w, t = _linear_problem()
    model = _Linear(x.shape[1], t.shape[1])
    model.layers[0]["proj"].kernel[...] = jnp.asarray(w, jnp.float32)

    def loss_fn(m, batch):
        return 0.5 * jnp.mean(jnp.sum((batch["t"] - m(batch["x"])) ** 2, -1))

    batches = [{"x": x[i:i + 50].astype(np.float32), "t": t[i:i + 50].astype(np.float32)}
               for i in range(0, 200, 50)]
    pr = lc.probe(model, batches, loss_fn, micro_batch=10)
    (m,) = pr.matrices
    assert (m.path, m.layer, m.d_in, m.d_out) == ("layers/0/proj", 0, 6, 3)
    r = t - x @ w
    np.testing.assert_allclose(m.grad, -(x.T @ r) / 200, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m.moments.xx) / float(m.moments.count),
                               x.T @ x / 200, rtol=2e-4, atol=1e-4)
    best, *_ = np.linalg.lstsq(x, r, rcond=None)
    gain = (np.sum(r**2) - np.sum((r - x @ best) ** 2)) / 400
    res = float(lc.projected_residual_norm(m.grad, m.moments, ridge=1e-7))
    np.testing.assert_allclose(0.5 * res**2, gain, rtol=2e-3)
    assert pr.sketches.shape == (20, 1, 4)  # 200 rows / micro-batches of 10; w = 2 -> 4


def test_streaming_moments_equal_batch_moments_and_skip_padding():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = (rng.random((4, 5)) > 0.3).astype(np.float32)
    s = lc.moments_init(3)
    for i in range(4):
        s = lc.moments_update(s, x[i:i + 1], mask[i:i + 1])
    rows = x.reshape(-1, 3)[mask.reshape(-1) > 0]
    np.testing.assert_allclose(np.asarray(s.xx), rows.T @ rows, rtol=1e-5, atol=1e-5)
    assert float(s.count) == len(rows)
    with pytest.raises(ValueError, match="d_in=0"):
        lc.moments_init(0)


def test_activation_energy_on_a_known_spectrum():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    evals = np.array([8.0, 4.0, 2.0, 2.0])
    e = lc.activation_energy(q @ np.diag(evals) @ q.T, ridge=1e-12)
    np.testing.assert_allclose(float(e["trace"]), 16.0, rtol=1e-5)
    np.testing.assert_allclose(float(e["condition"]), 4.0, rtol=1e-4)
    p = evals / 16
    np.testing.assert_allclose(float(e["effective_rank"]), np.exp(-(p * np.log(p)).sum()),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(e["eigenvalues"]), evals, rtol=1e-4)


def test_coupling_of_shared_and_independent_gradients():
    rng = np.random.default_rng(0)
    n, k = 4000, 3
    z = rng.normal(size=(n, k))
    a = z + 0.2 * rng.normal(size=(n, k))  # layer 0
    b = z @ rng.normal(size=(k, k)) + 0.2 * rng.normal(size=(n, k))  # layer 1: same signal
    c = rng.normal(size=(n, k))  # layer 2: independent
    rho = lc.whitened_coupling_matrix(np.stack([a, b, c], 1), ridge=1e-6)
    assert rho.shape == (3, 3) and np.all(np.diag(rho) == 0)
    assert rho[0, 1] > 0.9 and rho[1, 0] == rho[0, 1]
    assert rho[0, 2] < 0.1 and rho[1, 2] < 0.1  # sampling bias ~ sqrt(2k/n) = 0.04
    # Canonical correlation of a 1-D pair is |corr|.
    x = rng.normal(size=n)
    y = 0.6 * x + 0.8 * rng.normal(size=n)
    r1 = lc.whitened_coupling_matrix(np.stack([x, y], 1)[:, :, None], ridge=1e-9)
    np.testing.assert_allclose(r1[0, 1], abs(np.mean(x * y)) / np.sqrt(
        np.mean(x * x) * np.mean(y * y)), rtol=1e-6)
    np.testing.assert_allclose(lc.coupling(rho), np.linalg.norm(rho, 2))
    with pytest.raises(ValueError, match="samples, layers, k"):
        lc.whitened_coupling_matrix(np.zeros((5, 3)))


def test_projected_residual_norm_checks_shapes():
    with pytest.raises(ValueError, match=r"d_in=3"):
        lc.projected_residual_norm(np.zeros((4, 2)), np.eye(3))


def test_stats_are_jittable():
    f = jax.jit(lambda g, s: lc.projected_residual_norm(g, s))
    assert f(jnp.ones((3, 2)), jnp.eye(3)).shape == ()
    upd = jax.jit(lc.moments_update)
    s = upd(lc.moments_init(3), jnp.ones((2, 4, 3)), jnp.ones((2, 4)))
    assert float(s.count) == 8.0
