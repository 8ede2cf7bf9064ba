"""The Trainer's steps donate their state, never the caller's arrays."""

import jax
import numpy as np
from flax import nnx

from rgft_jax.training import TrainConfig, Trainer, methods

from .conftest import NUM_CLASSES, NUM_HEADS, batches, bert


def test_the_callers_model_survives_training():
    model = bert(1)
    before = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    shared = nnx.to_pure_dict(nnx.state(model, nnx.Param))  # the same arrays as the model
    trainer = Trainer(model, methods.full(learning_rate=1e-2), TrainConfig(steps=2,
                      progress=False), num_heads=NUM_HEADS, num_layers=1,
                      num_classes=NUM_CLASSES)
    trainer.fit(iter(batches(2)))
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, shared))
    b = batches(1)[0]
    assert model(b["input_ids"], b["attention_mask"]).shape == (len(b["label"]), NUM_CLASSES)
    moved = jax.tree.map(lambda a, c: float(np.abs(np.asarray(a) - c).max()),
                         trainer.state.params, before)
    assert max(jax.tree.leaves(moved)) > 0  # the trainer's own copy did train


def _old_moment_deleted(method, donate):
    trainer = Trainer(bert(1), method, TrainConfig(steps=4, progress=False,
                      donate_optimizer_state=donate), num_heads=NUM_HEADS, num_layers=1,
                      num_classes=NUM_CLASSES)
    old = jax.tree.leaves(trainer.state.opt_state)
    trainer.train_step(batches(1)[0])
    return any(x.is_deleted() for x in old)


def test_optimizer_state_donation_follows_the_config():
    # Default: donated for full fine-tuning; not for RGFT, whose moment freeze would make XLA
    # copy every donated moment (docs/results.md). Both can be forced.
    assert _old_moment_deleted(methods.full(), None)
    assert not _old_moment_deleted(methods.rgft(), None)
    assert _old_moment_deleted(methods.rgft(), True)
    assert not _old_moment_deleted(methods.full(), False)
