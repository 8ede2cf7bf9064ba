"""Count sketches of component gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgft_jax import dsca
from rgft_jax.components import Partition, Rule


def _tree(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        "layers": [
            {"q": jax.random.normal(k[0], (16, 32)), "o": jax.random.normal(k[1], (32, 16))},
            {"q": jax.random.normal(k[2], (16, 32)), "o": jax.random.normal(k[3], (32, 16))},
        ],
        "head": jnp.arange(10.0),
    }


RULES = [Rule(r"q$", kind="head", axis=1, groups=4), Rule(r"o$", kind="head", axis=0, groups=4)]


def _block_vectors(part, tree):
    """Reference: each component's entries in (role, local index) coordinates."""
    vecs = {}
    for spec, x in zip(part.leaves, jax.tree_util.tree_leaves(tree), strict=True):
        x = np.asarray(x)
        role = dsca._sketch.role_of(spec.path)
        if spec.axis is None:
            parts = [x.reshape(-1)]
        else:
            a = spec.axis
            split = x.reshape(spec.shape[:a] + (spec.n_groups, -1) + spec.shape[a + 1 :])
            parts = [np.take(split, g, axis=a).reshape(-1) for g in range(spec.n_groups)]
        for cid, p in zip(spec.component_ids, parts, strict=True):
            vecs.setdefault(cid, {})[role] = p
    return vecs


def _dot(va, vb):
    return sum(float(va[r] @ vb[r]) for r in va if r in vb and va[r].shape == vb[r].shape)


def test_shape_dtype_and_reproducible():
    tree = _tree()
    part = Partition.build(tree, RULES)
    s1 = jax.jit(lambda g: dsca.sketch(part, g, dim=32, seed=3))(tree)
    s2 = dsca.sketch(part, tree, dim=32, seed=3)
    s3 = dsca.sketch(part, tree, dim=32, seed=4)
    assert s1.shape == (part.num_components, 32) and s1.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    assert not np.allclose(np.asarray(s1), np.asarray(s3))


def test_linear_in_grads():
    part = Partition.build(_tree(), RULES)
    a, b = _tree(1), _tree(2)
    lhs = dsca.sketch(part, jax.tree_util.tree_map(lambda x, y: 2 * x - y, a, b), dim=16, seed=0)
    rhs = 2 * dsca.sketch(part, a, dim=16, seed=0) - dsca.sketch(part, b, dim=16, seed=0)
    np.testing.assert_allclose(np.asarray(lhs), np.asarray(rhs), atol=1e-4)


def test_inner_products_preserved_in_expectation():
    tree = _tree()
    part = Partition.build(tree, RULES)
    vecs = _block_vectors(part, tree)
    f = jax.jit(jax.vmap(lambda s: dsca.sketch(part, tree, dim=64, seed=s)))
    sk = np.asarray(f(jnp.arange(400, dtype=jnp.uint32)), np.float64)  # [400, C, dim]
    gram = np.einsum("tad,tbd->tab", sk, sk)
    mean, se = gram.mean(0), gram.std(0) / np.sqrt(gram.shape[0])
    c = part.num_components
    exact = np.array([[_dot(vecs[a], vecs[b]) for b in range(c)] for a in range(c)])
    # Unbiased: within 5 standard errors (plus float slack) for every pair.
    assert np.all(np.abs(mean - exact) <= 5 * se + 1e-3 * np.abs(exact) + 1e-3)
    # Norms are preserved exactly in expectation and well per draw at dim=64.
    np.testing.assert_allclose(np.diag(mean), np.diag(exact), rtol=0.05)


def test_components_spanning_several_leaves_add_up():
    tree = _tree()
    part = Partition.build(tree, RULES)
    only_q = jax.tree_util.tree_map_with_path(
        lambda p, x: x if "q" in jax.tree_util.keystr(p) else jnp.zeros_like(x), tree
    )
    only_o = jax.tree_util.tree_map_with_path(
        lambda p, x: x if "'o'" in jax.tree_util.keystr(p) else jnp.zeros_like(x), tree
    )
    s = dsca.sketch(part, tree, dim=16, seed=1)
    sq = dsca.sketch(part, only_q, dim=16, seed=1)
    so = dsca.sketch(part, only_o, dim=16, seed=1)
    head = part.index("head")
    mask = np.ones(part.num_components, bool)
    mask[head] = False
    np.testing.assert_allclose(np.asarray(s)[mask], np.asarray(sq + so)[mask], atol=1e-4)


def test_bad_arguments():
    tree = _tree()
    part = Partition.build(tree, RULES)
    with pytest.raises(ValueError, match="dim"):
        dsca.sketch(part, tree, dim=0)
    with pytest.raises(ValueError, match="align"):
        dsca.sketch(part, tree, dim=8, align="global")
    with pytest.raises(ValueError, match="grads"):
        dsca.sketch(part, {"x": jnp.ones(3)}, dim=8)
