"""Damaged checkpoints fall back to the previous good step (logged); another run's is an error.

A 4-step run checkpointed at steps 2 and 4 is trained once per session; each test copies its
checkpoints, damages the copy and resumes a fresh Trainer from it.
"""

import gc
import logging
import os
import shutil
import types

import jax
import pytest
from training.conftest import NUM_CLASSES, NUM_HEADS, assert_bitwise_equal, bert, host
from training.conftest import train_iterator as _iterator

from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training._checkpoint import MANIFEST, DamagedCheckpointError, RunMismatchError

STEPS = 4


def make_trainer(workdir, kind="rgft", steps=STEPS, layers=1, seed=0, dsca=None):
    method = (methods.rgft(learning_rate=1e-2, update_every=2, threshold=("percentile", 25))
              if kind == "rgft" else methods.full(learning_rate=1e-2))
    config = TrainConfig(steps=steps, progress=False, log_every=1, checkpoint_every=2,
                         keep_checkpoints=3, seed=seed)
    return Trainer(bert(layers), method, config, num_heads=NUM_HEADS, num_layers=layers,
                   num_classes=NUM_CLASSES, workdir=workdir, dsca=dsca)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A finished 4-step RGFT run with checkpoints at 2 and 4, and its state after step 2."""
    # Module-scoped fixtures run before the function-scoped cheap_codegen: compile the same
    # way as the tests (another LLVM optimisation level differs in the last bit).
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    workdir = tmp_path_factory.mktemp("straight")
    tr = make_trainer(workdir)
    it = _iterator()
    tr.fit(it, checkpoint_data_state=it.get_state)
    tr.close()
    at2 = make_trainer(workdir)
    at2.restore(2)
    jax.config.update("jax_disable_most_optimizations", previous)
    return workdir, host(at2.state), host(tr.state)


@pytest.fixture
def copy(straight, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(straight[0], workdir)
    return workdir


def _step_dir(workdir, step):
    return os.path.join(workdir, "checkpoints", "rgft", str(step))


def _biggest_file(folder):
    files = [os.path.join(r, n) for r, _, ns in os.walk(folder) for n in ns if n != MANIFEST]
    return max(files, key=os.path.getsize)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def zero(path):
    open(path, "wb").close()


def flip(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x10]))


def empty_dir(folder):
    shutil.rmtree(folder)
    os.makedirs(folder)


DAMAGE = {
    "truncated": lambda d: truncate(_biggest_file(d)),
    "zero_length": lambda d: zero(_biggest_file(d)),
    "bit_flipped": lambda d: flip(_biggest_file(d)),
    "bit_flipped_host_json": lambda d: flip(os.path.join(d, "host", "metadata")),
    "file_deleted": lambda d: os.remove(_biggest_file(d)),
    "empty_step_folder": empty_dir,
    "manifest_and_data_truncated": lambda d: (truncate(_biggest_file(d)),
                                              os.remove(os.path.join(d, MANIFEST))),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_step_falls_back_to_the_previous_good_step(damage, straight, copy,
                                                                   caplog):
    DAMAGE[damage](_step_dir(copy, 4))
    tr = make_trainer(copy)
    with caplog.at_level(logging.WARNING):
        position = tr.restore()
    assert "checkpoint step 4 is damaged" in caplog.text
    assert "falling back to step 2" in caplog.text
    # A failed orbax read abandons its other reads; nothing (not the log records) may keep
    # them alive, or they report "Event loop is closed" in whatever code runs next.
    gc.collect()
    assert not [o for o in gc.get_objects()
                if type(o) is types.CoroutineType and "orbax" in o.cr_code.co_filename]
    assert int(tr.state.step) == 2 and position is not None
    assert_bitwise_equal(host(tr.state), straight[1])  # exactly the state saved at step 2
    # The damaged step is set aside, so the resumed run can write step 4 again.
    assert os.path.isdir(os.path.join(copy, "checkpoints", "rgft", "damaged-4"))
    if damage != "bit_flipped":
        return  # (training on costs a compile per case; one case is enough)
    it = _iterator()
    it.set_state(position)
    tr.fit(it, checkpoint_data_state=it.get_state)
    assert_bitwise_equal(host(tr.state), straight[2])  # and it finishes as the straight run


def test_every_step_damaged_is_an_error(copy):
    for s in (2, 4):
        truncate(_biggest_file(_step_dir(copy, s)))
    with pytest.raises(DamagedCheckpointError, match="every checkpoint under .* is damaged"):
        make_trainer(copy).restore()


def test_a_half_written_step_is_never_listed(copy):
    # What SIGKILL during a write leaves: orbax's temporary folder, never a step folder.
    tmp = os.path.join(copy, "checkpoints", "rgft", "6.orbax-checkpoint-tmp-123")
    shutil.copytree(_step_dir(copy, 4), tmp)
    truncate(_biggest_file(tmp))
    tr = make_trainer(copy)
    assert tr._checkpointer().all_steps() == [2, 4]
    tr.restore()
    assert int(tr.state.step) == 4
    assert not os.path.exists(tmp)  # cleaned up by the next manager


@pytest.mark.parametrize("other, match", [
    (dict(kind="full"), r"another method|method: checkpoint 'rgft', this run 'full'"),
    (dict(layers=2), "does not hold this run's state|params: checkpoint"),
    (dict(steps=6), "steps: checkpoint 4, this run 6"),
    (dict(seed=1), "seed: checkpoint 0, this run 1"),
])
def test_a_checkpoint_of_another_run_is_a_clear_error(other, match, copy):
    if other.get("kind") == "full":  # same folder name as the rgft run's
        os.rename(os.path.join(copy, "checkpoints", "rgft"),
                  os.path.join(copy, "checkpoints", "full"))
    with pytest.raises(RunMismatchError, match=match):
        make_trainer(copy, **other).restore()
    # Nothing was moved aside: a mismatch is not damage.
    assert not any(n.startswith("damaged") for _, ds, _ in os.walk(copy) for n in ds)


def test_other_data_is_a_clear_error(copy):
    tr = make_trainer(copy)
    tr.run_info["data"] = {"train": "other.csv", "examples": 99}
    with pytest.raises(RunMismatchError, match=r"data: checkpoint None, this run \{'train'"):
        tr.restore()
    assert jax.tree.leaves(tr.state)  # the fresh state is untouched
