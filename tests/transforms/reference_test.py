"""The transforms equal a plain NumPy implementation of the formulas, step by step."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rgft_jax as rgft
from rgft_jax.components import Partition, Rule


def _tree(rng):
    return {
        "layers": [
            {"q": rng.normal(size=(6, 4, 3)).astype(np.float32),
             "up": rng.normal(size=(6, 8)).astype(np.float32)}
            for _ in range(2)
        ],
        "head": rng.normal(size=(6, 3)).astype(np.float32),
        "bias": rng.normal(size=(3,)).astype(np.float32),
    }


RULES = (
    Rule(r"/q$", kind="head", axis=1, groups=4),
    Rule(r"/up$", kind="neuron", axis=1, width=2),
)


def _np_norms(tree):
    """Component norms written out by hand, independent of Partition's reshapes."""
    out = []
    out.append(np.linalg.norm(tree["bias"]))
    out.append(np.linalg.norm(tree["head"]))
    for layer in tree["layers"]:
        for h in range(4):
            out.append(np.linalg.norm(layer["q"][:, h, :]))
        for g in range(4):
            out.append(np.linalg.norm(layer["up"][:, 2 * g: 2 * g + 2]))
    return np.array(out, np.float64)


def _np_scale(tree, factor):
    t = jax.tree.map(np.array, tree)
    t["bias"] = t["bias"] * factor[0]
    t["head"] = t["head"] * factor[1]
    for i, layer in enumerate(t["layers"]):
        base = 2 + 8 * i
        for h in range(4):
            layer["q"][:, h, :] *= factor[base + h]
        for g in range(4):
            layer["up"][:, 2 * g: 2 * g + 2] *= factor[base + 4 + g]
    return t


def _np_active(r, threshold):
    c = len(r)
    if threshold == "median":
        return r >= np.percentile(r, 50)
    kind, v = threshold
    if kind == "percentile":
        return r >= np.percentile(r, v)
    k = v if kind == "top_k" else math.ceil(round(v * c, 9))
    order = np.argsort(-r, kind="stable")
    act = np.zeros(c, bool)
    act[order[:k]] = True
    return act


class NumpyRGFT:
    """The formulas of the design card, in float64 NumPy."""

    def __init__(self, c, alpha, threshold, gamma, beta, update_every, warmup, min_lr):
        self.r = np.full(c, 1.0 / c)
        self.mask = np.ones(c)
        self.lr = np.ones(c)
        self.count = 0
        self.skipped = 0
        self.cfg = (alpha, threshold, gamma, beta, update_every, warmup, min_lr)

    def step(self, grads):
        alpha, threshold, gamma, beta, every, warmup, min_lr = self.cfg
        n = _np_norms(grads)
        if not np.all(np.isfinite(n)):
            self.skipped += 1
            return
        if n.sum() > 0:
            self.r = alpha * self.r + (1 - alpha) * n / n.sum()
        self.count += 1
        first = warmup if warmup > 0 else every
        if self.count >= first and (self.count - first) % every == 0:
            act = _np_active(self.r, threshold)
            self.mask = np.where(act, 1.0, gamma)
            std = self.r.std()
            z = (self.r - self.r.mean()) / std if std > 0 else np.zeros_like(self.r)
            self.lr = np.maximum(1 + beta * z, min_lr) if beta else np.ones_like(self.r)


CASES = [
    dict(threshold="median", gamma=0.0, beta=0.5, update_every=3, warmup_steps=0),
    dict(threshold=("percentile", 70), gamma=0.25, beta=1.0, update_every=2, warmup_steps=5),
    dict(threshold=("top_k", 5), gamma=0.0, beta=0.0, update_every=4, warmup_steps=0),
    dict(threshold=("top_fraction", 0.3), gamma=0.1, beta=2.0, update_every=1, warmup_steps=3),
    dict(threshold=("percentile", 25), gamma=0.0, beta=3.0, update_every=5, warmup_steps=0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["threshold"]))
@pytest.mark.parametrize("form", ["mask", "guided_sgd"])
def test_matches_numpy_over_many_steps(case, form):
    rng = np.random.default_rng(0)
    params = _tree(rng)
    part = Partition.build(params, RULES)
    assert part.num_components == 18
    kw = dict(alpha=0.8, min_lr_scale=0.2, **case)
    if form == "mask":
        tx = rgft.residual_mask(RULES, **kw)
    else:
        tx = rgft.residual_guided(optax.sgd(1.0), RULES, **kw)
    ref = NumpyRGFT(18, 0.8, case["threshold"], case["gamma"], case["beta"],
                    case["update_every"], case["warmup_steps"], 0.2)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t in range(24):
        # Uneven scales so residuals differ; every 7th step all zeros, step 11 non-finite.
        scales = rng.uniform(0.1, 3.0, size=4)
        grads = _tree(rng)
        grads["layers"][0]["q"] *= scales[0]
        grads["layers"][1]["up"] *= scales[1]
        grads["head"] *= scales[2]
        if t % 7 == 6:
            grads = jax.tree.map(np.zeros_like, grads)
        if t == 11:
            grads["bias"][0] = np.nan
        updates, state = update(grads, state, params)
        ref.step(grads)
        em = rgft.error_map(state)
        np.testing.assert_allclose(em.residuals, ref.r, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(em.mask), ref.mask.astype(np.float32))
        np.testing.assert_allclose(em.lr_scale, ref.lr, rtol=1e-5, atol=1e-6)
        assert int(em.step) == ref.count and int(em.skipped) == ref.skipped
        if t != 11:
            sign = -1.0 if form == "guided_sgd" else 1.0
            want = _np_scale(grads, ref.mask * ref.lr)
            jax.tree.map(
                lambda a, b, sign=sign: np.testing.assert_allclose(
                    a, sign * b, rtol=1e-5, atol=1e-6
                ),
                updates, want,
            )
    assert ref.skipped == 1 and ref.count == 23


def test_all_zero_gradient_leaves_residuals_unchanged():
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = rgft.residual_mask(update_every=1)
    s0 = tx.init(params)
    _, s1 = tx.update({"a": jnp.ones(3), "b": jnp.zeros(2)}, s0)
    _, s2 = tx.update({"a": jnp.zeros(3), "b": jnp.zeros(2)}, s1)
    np.testing.assert_array_equal(s1.residuals, s2.residuals)
    assert int(s2.count) == 2


def test_non_finite_gradient_leaves_state_unchanged_and_counts():
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = rgft.residual_guided(optax.adam(0.1), update_every=1)
    s0 = tx.init(params)
    _, s1 = tx.update({"a": jnp.ones(3), "b": jnp.ones(2)}, s0, params)
    _, s2 = tx.update({"a": jnp.array([1.0, jnp.inf, 0.0]), "b": jnp.ones(2)}, s1, params)
    for f in ("count", "residuals", "mask", "lr_scale"):
        np.testing.assert_array_equal(getattr(s1.tracker, f), getattr(s2.tracker, f))
    assert int(s2.tracker.skipped) == 1
