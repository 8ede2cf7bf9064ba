"""Frozen parameters really stay frozen: fixed-trainable methods, RGFT's hard mask, LoRA merge."""

import re

import jax
import numpy as np
import pytest
from flax import nnx

import rgft_jax as rgft
from rgft_jax.adapters import LoRAProjection, merge_lora
from rgft_jax.components import key_path_to_str

from .conftest import batches, bits

#: Trainable leaves of each method on the tiny BERT, written out independently of the library.
EXPECTED_TRAINABLE = {
    "bitfit": r"(/bias$|^classifier/)",
    "lora": r"(/lora_[ab]$|^classifier/)",
    "top_layers": r"(^encoder/layers/1/|^classifier/)",  # top_layers=1 of 2 layers
}


def _flat(tree):
    return {key_path_to_str(p): np.asarray(x) for p, x in
            jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("kind", sorted(EXPECTED_TRAINABLE))
def test_leaves_outside_trainable_set_are_bit_identical(kind, smoke_runs):
    run = smoke_runs(kind)
    before, after = _flat(run.params0), _flat(run.trainer.state.params)
    assert before.keys() == after.keys()
    rx = re.compile(EXPECTED_TRAINABLE[kind])
    trainable = {k for k in before if rx.search(k)}
    frozen = set(before) - trainable
    assert trainable and frozen
    # The trainer differentiates exactly this set.
    paths = list(before)
    assert {p for p, t in zip(paths, run.trainer.base_pattern) if t} == trainable
    for k in sorted(frozen):
        np.testing.assert_array_equal(bits(before[k]), bits(after[k]), err_msg=k)
    # ... and the trainable ones moved, so the comparison above could have failed.
    assert not np.array_equal(before["classifier/kernel"], after["classifier/kernel"])
    if kind == "lora":
        assert all(np.any(after[k] != 0) for k in trainable if k.endswith("lora_b"))
    moved = [k for k in trainable if not np.array_equal(before[k], after[k])]
    assert len(moved) >= len(trainable) // 2, (sorted(trainable), moved)


def _fully_masked_leaves(partition, mask):
    mask = np.asarray(mask)
    return [i for i, s in enumerate(partition.leaves)
            if s.n_groups and np.all(mask[list(s.component_ids)] == 0)]


def test_rgft_hard_mask_freezes_masked_leaves_across_sparse_steps(resume_runs):
    run = resume_runs("rgft")
    trainer = run.trainer
    assert trainer.method.gamma == 0.0
    sparse_steps = [r for r in run.steps if not r["key"][1]]
    assert len(sparse_steps) >= 2
    names = [key_path_to_str(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(run.params0)[0]]
    for rec in sparse_steps:
        em_before, em_after = rgft.error_map(rec["opt_before"]), rgft.error_map(rec["opt_after"])
        # A sparse step follows a refresh and precedes the next: the mask is the one in force.
        np.testing.assert_array_equal(em_before.mask, em_after.mask)
        assert set(np.unique(em_before.mask)) <= {0.0, 1.0}  # hard mask
        masked = _fully_masked_leaves(trainer.partition, em_before.mask)
        assert masked, "the refresh masked no whole leaf; the check would be vacuous"
        pattern = rec["key"][0]
        assert [i for i, t in enumerate(pattern) if t is False] == masked
        before = jax.tree.leaves(rec["params_before"])
        after = jax.tree.leaves(rec["params_after"])
        for i in masked:
            np.testing.assert_array_equal(bits(before[i]), bits(after[i]), err_msg=names[i])
        active = [i for i in range(len(before)) if i not in masked]
        assert all(not np.array_equal(before[i], after[i]) for i in active
                   if names[i].endswith("kernel")), "active kernels should move"
        # Sparse steps do not observe the error map: the residuals are kept as they were.
        np.testing.assert_array_equal(bits(em_before.residuals), bits(em_after.residuals))


def _adam_states(opt_state):
    found = []
    jax.tree_util.tree_map(lambda x: found.append(x) if hasattr(x, "mu") else None, opt_state,
                           is_leaf=lambda x: hasattr(x, "mu"))
    return found


def test_rgft_hard_mask_freezes_adam_moments_of_masked_leaves(resume_runs):
    run = resume_runs("rgft")
    n = len(jax.tree.leaves(run.params0))
    for rec in (r for r in run.steps if not r["key"][1]):
        masked = _fully_masked_leaves(run.trainer.partition,
                                      rgft.error_map(rec["opt_before"]).mask)
        (before,), (after,) = _adam_states(rec["opt_before"]), _adam_states(rec["opt_after"])
        for name in ("mu", "nu"):
            lb, la = jax.tree.leaves(getattr(before, name)), jax.tree.leaves(getattr(after, name))
            assert len(lb) == len(la) == n
            for i in masked:
                np.testing.assert_array_equal(bits(lb[i]), bits(la[i]), err_msg=f"{name}[{i}]")
            assert any(not np.array_equal(lb[i], la[i]) for i in range(n) if i not in masked)


def test_lora_merge_gives_the_same_logits(smoke_runs):
    run = smoke_runs("lora")
    trainer = run.trainer
    batch = batches(1, seed=7)[0]
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    model = trainer.model
    adapters = [p for p, m in nnx.iter_modules(model) if isinstance(m, LoRAProjection)]
    layers = len(model.encoder.layers)
    assert len(adapters) == len(trainer.lora_paths) == 2 * layers  # query, value per layer
    logits = np.asarray(model(*args))
    deltas = [np.asarray(m.delta()) for _, m in nnx.iter_modules(model)
              if isinstance(m, LoRAProjection)]
    assert max(np.abs(d).max() for d in deltas) > 1e-4  # the adapters are not trivially zero
    assert merge_lora(model) == 2 * layers
    assert not any(isinstance(m, LoRAProjection) for _, m in nnx.iter_modules(model))
    merged = np.asarray(model(*args))
    np.testing.assert_allclose(merged, logits, rtol=0, atol=1e-5)
    # The trainer's own state is untouched by the in-place merge of its model view.
    assert any(isinstance(m, LoRAProjection) for _, m in nnx.iter_modules(trainer.model))
