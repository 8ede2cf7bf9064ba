"""Stopping after a checkpoint and resuming in a fresh Trainer is bit-exact."""

import os

import jax
import numpy as np
import pytest

import rgft_jax as rgft

from .conftest import (
    CHECKPOINT_EVERY,
    RESUME_STEPS,
    assert_bitwise_equal,
    host,
    resume_trainer,
    train_iterator,
)


@pytest.mark.parametrize("kind", ["full", "rgft"])
def test_resume_from_checkpoint_is_bit_exact(kind, resume_runs):
    straight = resume_runs(kind)  # 6 steps, checkpoints at 3 and 6
    assert int(straight.trainer.state.step) == RESUME_STEPS
    ckpt_dir = straight.trainer.checkpoint_dir
    assert ckpt_dir.startswith(os.path.abspath(straight.workdir))
    assert sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) == [3, 6]
    # The data position saved at step 3 is mid-epoch 1 (2 batches per epoch).
    assert straight.data_states[CHECKPOINT_EVERY] == {"epoch": 1, "step": 1}

    resumed = resume_trainer(kind, straight.workdir)  # same method, config and model init
    position = resumed.restore(CHECKPOINT_EVERY)
    assert position == straight.data_states[CHECKPOINT_EVERY]
    assert int(resumed.state.step) == CHECKPOINT_EVERY
    # The restored state is the straight run's state after step 3, bit for bit.
    assert_bitwise_equal(host(resumed.state.params),
                         straight.steps[CHECKPOINT_EVERY]["params_before"])
    assert_bitwise_equal(host(resumed.state.opt_state),
                         straight.steps[CHECKPOINT_EVERY]["opt_before"])

    it = train_iterator()
    it.set_state(position)
    resumed.fit(it)
    assert int(resumed.state.step) == RESUME_STEPS
    a, b = host(straight.trainer.state), host(resumed.state)
    assert_bitwise_equal(a.params, b.params)
    assert_bitwise_equal(a.opt_state, b.opt_state)  # the error map is in here for rgft
    assert_bitwise_equal(a.rng, b.rng)
    assert int(a.step) == int(b.step)
    # The logged history too, to the last bit (cumulative FLOPs included: summed in whole
    # FLOPs, the restored total equals the running one).
    def untimed(history):
        return [{k: v for k, v in h.items() if not k.endswith("time_s")} for h in history]
    assert untimed(resumed.history) == untimed(straight.trainer.history)
    assert resumed.history[-1]["gflops_cum"] > 0
    if kind == "rgft":
        ea, eb = rgft.error_map(a.opt_state), rgft.error_map(b.opt_state)
        np.testing.assert_array_equal(ea.residuals, eb.residuals)
        np.testing.assert_array_equal(ea.mask, eb.mask)
        assert int(eb.step) == RESUME_STEPS
        # The resumed run took the same probe / sparse steps as the straight one, and its
        # accounting (restored from the checkpoint) covers the whole run.
        assert resumed.accounting.pattern_steps == straight.trainer.accounting.pattern_steps
        assert len(resumed.error_history) == len(straight.trainer.error_history)
        summ_a, summ_b = straight.trainer.summary(), resumed.summary()
        for k in ("steps", "probe_steps", "gflops_per_step", "update_ratio"):
            assert summ_a[k] == pytest.approx(summ_b[k]), k
    # And it really trained: the final params are not the step-3 params.
    assert any(not np.array_equal(x, y) for x, y in zip(
        jax.tree.leaves(straight.steps[CHECKPOINT_EVERY]["params_before"]),
        jax.tree.leaves(b.params)))
    resumed.close()


def test_restore_without_workdir_is_an_error():
    trainer = resume_trainer("full", None)
    with pytest.raises(ValueError, match="workdir"):
        trainer.restore()


def test_checkpoints_of_the_variable_layout_still_restore(tmp_path):
    """Before the loop kept params as plain dicts, params-shaped leaves (params, Adam's
    moments) were nnx Variables, stored one level deeper under ``value``."""
    import optax

    old = resume_trainer("full", tmp_path)
    old.fit(train_iterator())
    wrap = lambda x: {"value": x}
    legacy = old.state._replace(
        params=jax.tree.map(wrap, old.state.params),
        opt_state=optax.tree_utils.tree_map_params(old.tx, wrap, old.state.opt_state))
    old._checkpointer().save(99, legacy, {"epoch": 7}, old._host_state())
    new = resume_trainer("full", tmp_path)
    assert new.restore(99) == {"epoch": 7}
    assert_bitwise_equal(host(new.state.params), host(old.state.params))
    assert_bitwise_equal(host(new.state.opt_state), host(old.state.opt_state))
    old.close()
    new.close()


def test_a_checkpoint_of_another_run_is_refused_by_name(tmp_path):
    full = resume_trainer("full", tmp_path)
    full.save()
    other = resume_trainer("rgft", tmp_path)  # the same workdir, another state
    os.makedirs(os.path.dirname(other.checkpoint_dir), exist_ok=True)
    os.replace(full.checkpoint_dir, other.checkpoint_dir)
    # The saved run fingerprint names what differs before any array is read.
    with pytest.raises(ValueError, match=r"belongs to another run \(method: checkpoint 'full', "
                                         r"this run 'rgft'\)"):
        other.restore()
    full.close()
    other.close()
