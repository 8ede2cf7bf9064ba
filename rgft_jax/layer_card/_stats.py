# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""The Layer Card's quantities as pure functions (jax + numpy only).

For one adaptable matrix :math:`W \in \mathbb{R}^{d_{in} \times d_{out}}` with inputs
:math:`x` and output gradients :math:`\delta = \partial L / \partial y`:

.. math::

  \Sigma = \mathbb{E}[x x^\top], \qquad G = \mathbb{E}[x \delta^\top] = \nabla_W L, \qquad
  \mathrm{Res} = \| \Sigma_\lambda^{-1/2} G \|_F, \quad
  \Sigma_\lambda = \Sigma + \lambda \tfrac{\mathrm{tr}\,\Sigma}{d_{in}} I

(the *projected residual norm*, the covariance-normalised gradient). For squared loss and a
linear adapter :math:`\Delta W` on that matrix, :math:`\tfrac12 \mathrm{Res}^2` is exactly the
loss the best adapter removes (seed 002, Theorem 3.3; tested in
``tests/layer_card/stats_test.py``). Activation energy is read off the spectrum of
:math:`\Sigma` (trace, condition number, effective rank). Coupling between layers is the
whitened off-diagonal block of a gradient second-moment (empirical Fisher) estimate:

.. math::

  \rho_{\ell m} = \| F_{\ell\ell}^{-1/2} F_{\ell m} F_{mm}^{-1/2} \|_2,

the largest canonical correlation of the two layers' gradients, estimated from random
sketches of per-micro-batch gradients (:func:`sketch_matrix`); see :func:`coupling`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

__all__ = [
    "MomentState",
    "activation_energy",
    "coupling",
    "moments_init",
    "moments_update",
    "projected_residual_norm",
    "sketch_matrix",
    "whitened_coupling_matrix",
]


class MomentState(NamedTuple):
    """Streaming second moment ``E[x x^T]`` of a matrix's inputs."""

    count: jax.Array  # float32 []: (weighted) rows seen
    xx: jax.Array  # float32 [d_in, d_in]: sum of x x^T


def moments_init(d_in: int) -> MomentState:
    """An empty :class:`MomentState` for inputs of width ``d_in``."""
    if not isinstance(d_in, (int, np.integer)) or d_in < 1:
        raise ValueError(f"moments_init: d_in={d_in!r} must be an int >= 1.")
    return MomentState(jnp.zeros([], jnp.float32), jnp.zeros((d_in, d_in), jnp.float32))


def moments_update(state: MomentState, x: jax.Array, weights: jax.Array | None = None):
    """Adds the rows of ``x`` ``[..., d_in]`` (optionally weighted ``[...]``, e.g. a padding
    mask) to ``state``. One ``[d_in, d_in]`` buffer, whatever the number of rows."""
    d = state.xx.shape[0]
    x = jnp.reshape(x, (-1, d)).astype(jnp.float32)
    if weights is None:
        w = jnp.ones((x.shape[0],), jnp.float32)
    else:
        w = jnp.reshape(weights, (-1,)).astype(jnp.float32)
    xx = jnp.einsum("n,ni,nj->ij", w, x, x, precision=jax.lax.Precision.HIGHEST)
    return MomentState(state.count + jnp.sum(w), state.xx + xx)


def _covariance(state_or_sigma: Any) -> jax.Array:
    if isinstance(state_or_sigma, MomentState):
        return state_or_sigma.xx / jnp.maximum(state_or_sigma.count, 1.0)
    return jnp.asarray(state_or_sigma, jnp.float32)


def _ridged(sigma: jax.Array, ridge: float) -> jax.Array:
    """``Σ + ridge · tr(Σ)/d · I`` (symmetrised)."""
    d = sigma.shape[0]
    sigma = 0.5 * (sigma + sigma.T)
    lam = jnp.maximum(ridge * jnp.trace(sigma) / d, 1e-30)
    return sigma + lam * jnp.eye(d, dtype=sigma.dtype)


def projected_residual_norm(grad: jax.Array, sigma: Any, *, ridge: float = 1e-3) -> jax.Array:
    r"""``Res = ||Σ_λ^{-1/2} G||_F`` for ``grad`` ``G`` ``[d_in, d_out]``.

    Args:
      grad: the loss gradient of the matrix, its input axes first (``[d_in, d_out]``; a
        kernel of any shape reshaped so).
      sigma: ``Σ = E[x x^T]`` ``[d_in, d_in]`` or a :class:`MomentState`.
      ridge: relative ridge ``λ``: ``λ · tr(Σ)/d_in`` is added to the diagonal.

    Returns:
      A float32 scalar.

    Computed as ``||L^{-1} G||_F`` with ``Σ_λ = L L^T`` (Cholesky): the same norm, since
    ``G^T Σ_λ^{-1} G = (L^{-1} G)^T (L^{-1} G)``, at ``d^3 / 3 + d^2 d_out`` FLOPs instead of
    an eigendecomposition's ``~11 d^3`` (the card's cost at ``d = 1536``).
    """
    sigma = _covariance(sigma)
    g = jnp.asarray(grad, jnp.float32)
    if g.ndim != 2 or g.shape[0] != sigma.shape[0]:
        raise ValueError(f"projected_residual_norm: grad of shape {g.shape} does not match "
                         f"sigma {sigma.shape}; expected [d_in={sigma.shape[0]}, d_out].")
    chol = jnp.linalg.cholesky(_ridged(sigma, ridge))
    return jnp.linalg.norm(jax.scipy.linalg.solve_triangular(chol, g, lower=True))


def activation_energy(sigma: Any, *, ridge: float = 1e-3) -> dict[str, jax.Array]:
    """Spectral summary of ``Σ``: trace (the energy), condition number of the ridged ``Σ``,
    effective rank ``exp(H(p))`` with ``p`` the normalised eigenvalues, and the eigenvalues
    (descending)."""
    sigma = _covariance(sigma)
    d = sigma.shape[0]
    evals = jnp.clip(jnp.linalg.eigvalsh(0.5 * (sigma + sigma.T)), 0.0)[::-1]
    trace = jnp.sum(evals)
    lam = ridge * trace / d
    p = evals / jnp.where(trace > 0, trace, 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {
        "trace": trace,
        "condition": (evals[0] + lam) / jnp.maximum(evals[-1] + lam, 1e-30),
        "effective_rank": jnp.exp(entropy),
        "eigenvalues": evals,
    }


def sketch_matrix(key: jax.Array, shape: tuple[int, ...], width: int) -> tuple[jax.Array, ...]:
    """Random Gaussian factors ``(R [d_in, w], C [d_out, w])`` that sketch a gradient
    ``G [d_in, d_out]`` as ``vec(R^T G C) / sqrt(d_in d_out)`` (``w^2`` numbers).

    The same factors must be used for every micro-batch of a probe, so coupling compares
    like with like; a sketch preserves inner products between gradients in expectation.
    """
    if len(shape) != 2:
        raise ValueError(f"sketch_matrix: shape={shape!r} must be (d_in, d_out).")
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"sketch_matrix: width={width!r} must be an int >= 1.")
    k1, k2 = jax.random.split(key)
    return (jax.random.normal(k1, (shape[0], width), jnp.float32),
            jax.random.normal(k2, (shape[1], width), jnp.float32))


def whitened_coupling_matrix(sketches: Any, *, ridge: float = 1e-2) -> np.ndarray:
    r"""Pairwise coupling ``ρ [L, L]`` from per-sample gradient sketches.

    Args:
      sketches: ``[N, L, k]``: for each of ``N`` samples (micro-batch gradients), a
        ``k``-dimensional sketch of each of ``L`` layers' gradients.
      ridge: relative ridge on each layer's block ``F_ll`` (keeps the whitening finite when
        ``N`` is small).

    Returns:
      ``ρ`` with ``ρ[l, m] = ||F_ll^{-1/2} F_lm F_mm^{-1/2}||_2`` (uncentred second moments,
      i.e. the empirical Fisher of the sketches) and ``ρ[l, l] = 0``.

    .. note::
      With ``N`` samples and ``k`` dimensions per layer, sample canonical correlations are
      biased upwards by about ``sqrt(2k / N)`` for independent layers; use ``N >> k`` (the
      probe defaults to ``N >= 4k``) and read small values as "no detectable coupling".
    """
    s = np.asarray(sketches, np.float64)
    if s.ndim != 3:
        raise ValueError(f"whitened_coupling_matrix: sketches of shape {s.shape}; expected "
                         "[samples, layers, k].")
    n, L, k = s.shape
    if n < 2:
        raise ValueError(f"whitened_coupling_matrix: {n} samples; need at least 2.")
    whites = []
    for i in range(L):
        x = s[:, i, :]
        f = x.T @ x / n
        lam = ridge * np.trace(f) / k + 1e-30
        evals, evecs = np.linalg.eigh(f + lam * np.eye(k))
        whites.append(x @ (evecs / np.sqrt(evals)) @ evecs.T)  # rows whitened
    rho = np.zeros((L, L))
    for i in range(L):
        for j in range(i + 1, L):
            cross = whites[i].T @ whites[j] / n
            rho[i, j] = rho[j, i] = np.linalg.norm(cross, 2)
    return rho


def coupling(rho: Any) -> float:
    r"""The global coupling ``||D^{-1/2} E D^{-1/2}||_2`` of a whitened pairwise matrix.

    With every block whitened, ``D = I`` and ``E`` has the pairwise couplings off the diagonal,
    so the global value is the spectral norm of ``ρ`` with a zero diagonal (an upper bound on
    the true block norm, since each ``ρ[l, m]`` is the norm of a whole block).
    """
    r = np.asarray(rho, np.float64).copy()
    np.fill_diagonal(r, 0.0)
    return float(np.linalg.norm(r, 2)) if r.size else 0.0
