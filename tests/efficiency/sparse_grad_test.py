"""Group-sparse weight gradients: exact on active groups, zero elsewhere, fewer FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgft_jax.ops import group_sparse_tensordot

CASES = [  # x shape, kernel shape, n_in, group axis, groups
    ((2, 5, 8), (8, 4, 3), 1, 1, 4),  # query: [D, H, Dh], heads on an output axis
    ((2, 5, 4, 3), (4, 3, 8), 2, 0, 4),  # out: [H, Dh, D], heads on an input axis
    ((2, 5, 8), (8, 12), 1, 1, 3),  # mlp up: neuron groups on the output axis
    ((2, 5, 12), (12, 8), 1, 0, 3),  # mlp down: neuron groups on the input axis
]


@pytest.mark.parametrize("xs,ks,n_in,axis,groups", CASES)
def test_gradients_equal_dense_slices(xs, ks, n_in, axis, groups):
    kx, kw = jax.random.split(jax.random.key(0))
    x, w = jax.random.normal(kx, xs), jax.random.normal(kw, ks)
    idx = jnp.array([2, 0] if groups > 2 else [1], jnp.int32)

    def dense(x, w):
        return jnp.sum(jnp.sin(jnp.tensordot(x, w, n_in)))

    def sparse(x, w):
        return jnp.sum(jnp.sin(group_sparse_tensordot(x, w, idx, n_in, axis, groups)))

    np.testing.assert_allclose(dense(x, w), sparse(x, w), rtol=1e-6)
    dx0, dw0 = jax.grad(dense, (0, 1))(x, w)
    dx1, dw1 = jax.jit(jax.grad(sparse, (0, 1)))(x, w)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-5, atol=1e-5)
    split = ks[:axis] + (groups, ks[axis] // groups) + ks[axis + 1:]
    d0, d1 = np.asarray(dw0).reshape(split), np.asarray(dw1).reshape(split)
    for g in range(groups):
        sl = (slice(None),) * axis + (g,)
        if g in np.asarray(idx):
            np.testing.assert_allclose(d1[sl], d0[sl], rtol=1e-5, atol=1e-5)
        else:
            assert np.all(d1[sl] == 0)


def test_fewer_weight_gradient_flops_and_no_recompile_for_new_indices():
    x = jnp.ones((8, 64, 384))
    w = jnp.ones((384, 12, 32))

    def grad_w(idx):
        return jax.grad(lambda w: jnp.sum(group_sparse_tensordot(x, w, idx, 1, 1, 12)))(w)

    def dense_grad_w():
        return jax.grad(lambda w: jnp.sum(jnp.tensordot(x, w, 1)))(w)

    def flops(f, *args):
        cost = jax.jit(f).lower(*args).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    dense = flops(dense_grad_w)
    sparse = flops(grad_w, jnp.arange(3, dtype=jnp.int32))
    # forward + dW: dense 2 matmuls; sparse 1 + 3/12 of one.
    assert sparse < 0.7 * dense, (sparse, dense)
    f = jax.jit(grad_w)
    f(jnp.array([0, 1, 2], jnp.int32))
    f(jnp.array([5, 7, 11], jnp.int32))
    assert f._cache_size() == 1
