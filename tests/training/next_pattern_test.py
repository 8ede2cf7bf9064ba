"""The pure pattern policy: probe steps on refreshes, sparse steps otherwise, fixed masks."""

from typing import NamedTuple

import numpy as np
import pytest

from rgft_jax.components import Partition, Rule
from rgft_jax.training import methods
from rgft_jax.training._patterns import mask_may_change, next_pattern

# Two matrices of 4 head-groups each, a bias (one whole-leaf component) and an excluded head.
TREE = {"a": {"kernel": np.zeros((8, 4, 2))}, "b": {"kernel": np.zeros((8, 4, 2))},
        "bias": np.zeros((3,)), "classifier": {"kernel": np.zeros((8, 3))}}
RULES = (Rule(r"^classifier/", exclude=True),
         Rule(r"kernel$", kind="head", axis=1, groups=4), Rule(r"bias$"))
PART = Partition.build(TREE, RULES)
# Leaf order of the flattened tree: a/kernel, b/kernel, bias, classifier/kernel.
BASE = (True, True, True, True)


class Map(NamedTuple):  # what next_pattern reads of an ErrorMap
    mask: np.ndarray
    step: int


def _mask(a=(), b=(), bias=False):
    m = np.zeros(len(PART), np.float32)
    ids = [s.component_ids for s in PART.leaves]  # a/kernel, b/kernel, bias, classifier
    m[[ids[0][i] for i in a]] = 1
    m[[ids[1][i] for i in b]] = 1
    if bias:
        m[list(ids[2])] = 1
    return m


def test_partition_has_the_expected_components():
    assert len(PART) == 9 and [s.path for s in PART.leaves] == [
        "a/kernel", "b/kernel", "bias", "classifier/kernel"]


@pytest.mark.parametrize("count, probe", [(0, False), (1, False), (2, True), (3, False),
                                          (4, False), (5, True), (6, False)])
def test_rgft_probes_exactly_before_refreshes(count, probe):
    # First refresh at count 3 (warmup_steps=3), then every 3: counts 3, 6, 9, ...
    method = methods.rgft(update_every=3, warmup_steps=3)
    em = Map(_mask(a=(0,), b=(0, 1, 2, 3)), count)
    pattern, observe = next_pattern(em, method, PART, base_pattern=BASE)
    assert observe is probe
    if probe:
        assert pattern == BASE
    else:
        # a: 1 of 4 groups active (rounded up to 1 of levels=4); b: all; bias: none.
        assert pattern == (1, True, False, True)


def test_all_active_mask_is_a_probe_and_hard_zero_leaves_are_frozen():
    method = methods.rgft(update_every=10)
    assert next_pattern(Map(np.ones(len(PART)), 3), method, PART, base_pattern=BASE) == (
        BASE, True)
    pattern, observe = next_pattern(Map(_mask(b=(1,), bias=True), 3), method, PART,
                                    base_pattern=BASE)
    assert not observe and pattern == (False, 1, True, True)


def test_group_leaves_restrict_group_sparse_gradients():
    method = methods.rgft(update_every=10)
    em = Map(_mask(a=(0, 1), b=(2,)), 1)
    pattern, _ = next_pattern(em, method, PART, base_pattern=BASE, group_leaves={"b/kernel"})
    assert pattern == (True, 1, False, True)  # a/kernel: not a projection -> dense


def test_base_pattern_keeps_untrained_leaves_frozen():
    method = methods.rgft(update_every=10)
    base = (True, False, True, True)
    pattern, _ = next_pattern(Map(_mask(a=(0,), b=(0,), bias=True), 1), method, PART,
                              base_pattern=base)
    assert pattern == (1, False, True, True)


@pytest.mark.parametrize("make", [lambda: methods.random_mask(0.5),
                                  lambda: methods.modules([True] + [False] * 8)])
def test_fixed_masks_never_probe_once_installed(make):
    method = make()
    # Not installed yet (the tracker's initial all-active mask): the first update installs
    # it, and that step differentiates everything.
    assert next_pattern(Map(np.ones(len(PART)), 0), method, PART, base_pattern=BASE) == (
        BASE, True)
    em = Map(_mask(a=(0,)), 0)  # installed before the first step (the Trainer does)
    for count in (0, 1, 2, 25, 50):  # never a probe, whatever the count
        assert next_pattern(Map(em.mask, count), method, PART, base_pattern=BASE) == (
            (1, False, False, True), False)
    # An all-active fixed mask is still a sparse step (nothing to observe).
    assert next_pattern(Map(np.ones(len(PART)), 3), method, PART, base_pattern=BASE)[1] is False


def test_methods_without_sparse_steps_always_probe_with_their_base_pattern():
    base = (False, False, True, True)
    for method in (methods.full(), methods.rgft_chain(), methods.rgft(sparse=False)):
        assert next_pattern(None if not method.uses_mask else Map(_mask(), 1), method, PART,
                            base_pattern=base) == (base, True)


def test_compact_state_probes_its_first_step():
    method = methods.rgft(update_every=10, capacity=0.5)
    assert next_pattern(Map(np.ones(len(PART)), 0), method, PART, base_pattern=BASE)[1]
    assert not next_pattern(Map(_mask(a=(1,)), 1), method, PART, base_pattern=BASE)[1]


def test_memo_reuses_patterns_without_changing_them():
    method = methods.rgft(update_every=10)
    memo = {}
    em = Map(_mask(a=(0, 1, 2), b=(3,)), 1)
    first = next_pattern(em, method, PART, base_pattern=BASE, memo=memo)
    assert list(memo) == [em.mask.tobytes()]
    assert next_pattern(Map(em.mask, 2), method, PART, base_pattern=BASE, memo=memo) == first
    assert first == next_pattern(em, method, PART, base_pattern=BASE)


def test_a_lagging_tracker_count_moves_the_probe():
    # A skipped non-finite step leaves the tracker's count one behind the trainer's step:
    # the probe follows the tracker's count (the transform refreshes on it), not the step.
    method = methods.rgft(update_every=4)
    em = Map(_mask(a=(0,)), 2)
    assert not next_pattern(em, method, PART, base_pattern=BASE)[1]
    assert next_pattern(Map(em.mask, 3), method, PART, base_pattern=BASE)[1]


@pytest.mark.parametrize("make, changing", [
    (lambda: methods.rgft(update_every=3), {2, 5, 8}),
    (lambda: methods.rgft(update_every=3, warmup_steps=1), {0, 3, 6, 9}),
    (lambda: methods.rgft(update_every=4, capacity=0.5), {0, 3, 7}),
    (lambda: methods.magnitude_mask(0.3), {0}),
    (lambda: methods.rgft_chain(update_every=3), {2, 5, 8}),
    (lambda: methods.full(), set()),
    (lambda: methods.lora(), set()),
])
def test_mask_may_change_follows_the_refresh_schedule(make, changing):
    method = make()
    assert {c for c in range(10) if mask_may_change(method, c)} == changing
