"""A sparse step's gradients are the dense gradient's entries (zeros where not differentiated)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import rgft_jax as rgft
from rgft_jax import dsca
from rgft_jax.components import key_path_to_str
from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training._step import make_train_step

from .conftest import _RGFT_SMOKE, NUM_CLASSES, NUM_HEADS, batches, bert


class _Captured(NamedTuple):
    inner: Any  # the trainer's real optimizer state (the step may read the mask from it)
    grads: Any  # the gradient tree the step handed to the optimizer


def _capturing_tx() -> optax.GradientTransformationExtraArgs:
    """An "optimizer" that stores the gradient it is given and leaves params unchanged."""

    def init(params):
        raise AssertionError("not used: the state is built by hand")

    def update(grads, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(jnp.zeros_like, grads), _Captured(state.inner, grads)

    return optax.GradientTransformationExtraArgs(init, update)


def _step_gradients(trainer, pattern, observe, batch):
    """Runs the trainer's own step function for ``pattern`` and returns the gradient tree."""
    step = jax.jit(make_train_step(trainer.graphdef, trainer.rest, _capturing_tx(), pattern,
                                   observe, task="classification", dropout=False,
                                   partition=trainer.partition))
    state = trainer.state._replace(opt_state=_Captured(
        trainer.state.opt_state, jax.tree.map(jnp.zeros_like, trainer.state.params)))
    out = step(state, trainer._put_batch(batch))  # (new state, metrics, ...)
    new_state, metrics = out[0], out[1]
    return jax.device_get(new_state.opt_state.grads), jax.device_get(metrics)


def _dense_gradients(trainer, batch):
    """Plain ``jax.grad`` of the mean cross-entropy over every parameter."""

    def loss(params):
        model = nnx.merge(trainer.graphdef, params, trainer.rest)
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(trainer.state.params)
    return float(value), jax.device_get(grads)


def test_sparse_step_gradients_equal_dense_gradient_slices(smoke_runs):
    _check_sparse_step(smoke_runs("rgft").trainer)  # 2 steps, update_every=2: just refreshed


def test_sparse_step_on_head_blocks_equals_dense_gradient_slices():
    """DSCA blocks inside heads (merged [H, Dh] axes): group-sparse grads stay exact."""
    rules = dsca.dsca_rules(NUM_HEADS, block_width=4, attention="block")
    trainer = Trainer(bert(1), methods.rgft(learning_rate=1e-2, components=rules, **_RGFT_SMOKE),
                      TrainConfig(steps=2, progress=False, log_every=1),
                      num_heads=NUM_HEADS, num_layers=1, num_classes=NUM_CLASSES)
    assert any(s.merge == 2 for s in trainer.partition.leaves)
    trainer.fit(iter(batches(2)))
    merged = _check_sparse_step(trainer)
    assert merged, "no merged-axis leaf took group-sparse gradients"


def _check_sparse_step(trainer) -> int:
    """Checks one sparse step against dense gradients; returns how many group-sparse leaves
    had merged split axes."""
    pattern, probe = trainer.next_pattern()
    assert not probe, "the step after a refresh should be a sparse step"
    assert any(t is False for t in pattern), "some leaves should be frozen"
    assert any(not isinstance(t, bool) for t in pattern), "some matrices should be partly active"
    mask = np.asarray(rgft.error_map(trainer.state.opt_state).mask)
    active = jax.tree.leaves(trainer.partition.broadcast(jnp.asarray(mask > 0), fill=True))
    batch = batches(1, seed=11)[0]

    sparse, metrics = _step_gradients(trainer, pattern, False, batch)
    loss, dense = _dense_gradients(trainer, batch)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)

    flat = jax.tree_util.tree_flatten_with_path(dense)[0]
    assert len(flat) == len(pattern) == len(jax.tree.leaves(sparse))
    part = trainer.partition
    for i, ((path, d), s, t, a) in enumerate(zip(flat, jax.tree.leaves(sparse), pattern, active)):
        name, d, s, a = key_path_to_str(path), np.asarray(d), np.asarray(s), np.asarray(a)
        assert s.shape == d.shape and s.dtype == d.dtype, name
        if not isinstance(t, bool):
            # K rounds up to a level: the step computes the active groups, then the first
            # inactive ones (in group order) to fill K; those get real gradients too.
            ids = np.asarray(part.leaves[i].component_ids)
            chosen = ids[np.argsort(mask[ids] <= 0, kind="stable")[:t]]
            assert np.isin(ids[mask[ids] > 0], chosen).all(), name
            on = np.isin(np.arange(len(mask)), chosen)
            a = np.asarray(jax.tree.leaves(part.broadcast(jnp.asarray(on), fill=True))[i])
        if t is False:  # not differentiated: exact zeros
            np.testing.assert_array_equal(s, np.zeros_like(s), err_msg=name)
        elif t is True:  # differentiated densely
            np.testing.assert_allclose(s, d, rtol=0, atol=1e-5, err_msg=name)
        else:  # an int K: the K computed groups get the dense values, the others exact zeros
            assert 0 < t and not a.all() and a.any(), (name, t)
            np.testing.assert_allclose(s[a], d[a], rtol=0, atol=1e-5, err_msg=name)
            np.testing.assert_array_equal(s[~a], 0.0, err_msg=name)
        if t is not False:
            # Differentiated entries are real gradients, not zeros (so the check can fail).
            sel = d if t is True else d[a]
            assert np.abs(sel).max() > 0, name
    return sum(1 for t, s in zip(pattern, trainer.partition.leaves)
               if not isinstance(t, bool) and s.merge > 1)
