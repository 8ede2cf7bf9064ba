"""Malformed inputs raise ValueError/TypeError at construction or init, naming the value."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rgft_jax as rgft
from rgft_jax.components import Partition, Rule

P = {"a": jnp.ones((4, 6)), "b": jnp.ones(3)}

CONSTRUCTION = [
    (dict(alpha=1.0), ValueError, r"alpha=1\.0"),
    (dict(alpha=-0.1), ValueError, r"alpha=-0\.1"),
    (dict(alpha="0.9"), ValueError, r"alpha='0\.9'"),
    (dict(gamma=1.0), ValueError, r"gamma=1\.0"),
    (dict(gamma=-0.5), ValueError, r"gamma=-0\.5"),
    (dict(threshold=("percentile", 0)), ValueError, r"\('percentile', 0\)"),
    (dict(threshold=("percentile", 100)), ValueError, r"\('percentile', 100\)"),
    (dict(threshold=("top_k", 0)), ValueError, r"\('top_k', 0\)"),
    (dict(threshold=("top_k", 2.5)), ValueError, r"\('top_k', 2\.5\)"),
    (dict(threshold=("top_fraction", 1.5)), ValueError, r"\('top_fraction', 1\.5\)"),
    (dict(threshold="mean"), ValueError, r"threshold='mean'.*allowed"),
    (dict(threshold=("quantile", 0.5)), ValueError, r"threshold=\('quantile', 0\.5\)"),
    (dict(update_every=0), ValueError, r"update_every=0"),
    (dict(update_every=-3), ValueError, r"update_every=-3"),
    (dict(update_every=2.0), ValueError, r"update_every=2\.0"),
    (dict(beta=-1.0), ValueError, r"beta=-1\.0"),
    (dict(beta=float("inf")), ValueError, r"beta=inf"),
    (dict(warmup_steps=-1), ValueError, r"warmup_steps=-1"),
    (dict(min_lr_scale=0.0), ValueError, r"min_lr_scale=0\.0"),
    (dict(partition=[]), ValueError, r"partition=\[\]"),
    (dict(partition=["not a rule"]), TypeError, r"'not a rule'"),
    (dict(partition=42), TypeError, r"partition=42"),
]


@pytest.mark.parametrize("kwargs,exc,match", CONSTRUCTION, ids=[str(c[0]) for c in CONSTRUCTION])
@pytest.mark.parametrize("factory", ["mask", "guided"])
def test_construction_errors(factory, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        if factory == "mask":
            rgft.residual_mask(**kwargs)
        else:
            rgft.residual_guided(optax.sgd(1.0), **kwargs)


def test_guided_rejects_non_optimizer():
    with pytest.raises(TypeError, match="inner must be an optax"):
        rgft.residual_guided("adam")


def test_top_k_larger_than_components_fails_at_init():
    tx = rgft.residual_mask(threshold=("top_k", 3))
    with pytest.raises(ValueError, match=r"\('top_k', 3\).*C=2"):
        tx.init(P)


def test_partition_for_another_tree_fails_at_init():
    other = Partition.build({"x": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"another tree.*missing.*'x'.*unexpected.*'a'"):
        rgft.residual_mask(other).init(P)
    wrong_shape = Partition.build({"a": jnp.ones((4, 5)), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"a: partition \(4, 5\) vs params \(4, 6\)"):
        rgft.residual_guided(optax.adam(1.0), wrong_shape).init(P)


def test_indivisible_split_fails_at_init_naming_leaf_and_sizes():
    tx = rgft.residual_mask([Rule("a", axis=1, width=4)])
    with pytest.raises(ValueError, match=r"a: axis 1 has size 6, not divisible by width=4"):
        tx.init(P)
    with pytest.raises(ValueError, match=r"groups=4"):
        Partition.build(P, [Rule("a", axis=1, groups=4)])


def test_axis_out_of_range_and_inconsistent_groups_collected_once():
    tree = {"layers": [{"q": jnp.ones((4, 6)), "k": jnp.ones((4, 6)), "v": jnp.ones(3)}]}
    rules = [Rule("q", kind="head", axis=1, groups=3), Rule("k", kind="head", axis=1, groups=2),
             Rule("v", axis=2, groups=1)]
    with pytest.raises(ValueError) as e:
        Partition.build(tree, rules)
    msg = str(e.value)
    assert "layers/0/q: 3 groups of kind 'head' but layers/0/k" in msg
    assert "layers/0/v: axis=2 out of range" in msg


def test_empty_partition():
    with pytest.raises(ValueError, match="no component"):
        Partition.build(P, [Rule(".*", exclude=True)])
    with pytest.raises(ValueError, match="no component"):
        rgft.residual_mask().init({})


@pytest.mark.parametrize("kwargs,match", [
    (dict(pattern="("), r"pattern='\(' is not a valid regex"),
    (dict(pattern="a", groups=2), r"groups/width need axis="),
    (dict(pattern="a", axis=0), r"axis=0 given without groups"),
    (dict(pattern="a", axis=0, groups=2, width=3), r"not both"),
    (dict(pattern="a", axis=0, groups=0), r"groups must be an int >= 1, got 0"),
    (dict(pattern="a", kind="a/b"), r"kind must be"),
    (dict(pattern="a", axis=0, groups=2, exclude=True), r"exclude=True takes no"),
])
def test_rule_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Rule(**kwargs)


def test_partition_build_argument_errors():
    with pytest.raises(ValueError, match=r"unmatched='drop'"):
        Partition.build(P, unmatched="drop")
    with pytest.raises(TypeError, match="Rule objects"):
        Partition.build(P, ["a"])
    with pytest.raises(ValueError, match=r"values must have shape \(2,\)"):
        Partition.build(P).broadcast(jnp.ones(3))


def test_callable_threshold_with_wrong_shape():
    tx = rgft.residual_mask(threshold=lambda r: jnp.ones(5, bool), update_every=1)
    state = tx.init(P)
    with pytest.raises(ValueError, match=r"returned shape \(5,\)"):
        tx.update(P, state)


def test_uncalled_preset_and_non_int_axis():
    with pytest.raises(TypeError, match=r"partition=bert: a preset must be called"):
        rgft.residual_mask(rgft.components.bert)
    with pytest.raises(ValueError,
                       match=r"axis must be an int or a tuple of consecutive ints, got 1.5"):
        Rule("a", axis=1.5, groups=2)
    assert Rule("a", axis=np.int64(1), groups=np.int64(2)).groups == 2
