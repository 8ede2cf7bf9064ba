"""Shared fixtures for the DSCA tests: planted graphs and sketches."""

import numpy as np


def planted_dense(m: int, k: int, p_in: float, p_out: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(k), m // k)
    p = np.where(truth[:, None] == truth[None, :], p_in, p_out)
    a = (rng.random((m, m)) < p).astype(np.float32)
    a = np.triu(a, 1)
    return a + a.T, truth


def planted_sketches(truth, s: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(truth.max() + 1, s))
    return (centers[truth] + noise * rng.normal(size=(truth.size, s))).astype(np.float32)


def principal_angle_max(u, v) -> float:
    """Largest principal angle between the column spans of ``u`` and ``v`` (radians)."""
    qu, _ = np.linalg.qr(np.asarray(u, np.float64))
    qv, _ = np.linalg.qr(np.asarray(v, np.float64))
    s = np.linalg.svd(qu.T @ qv, compute_uv=False)
    return float(np.arccos(np.clip(s.min(), -1.0, 1.0)))
