"""The search space on a model: nodes from a partition, candidate names, probe validation."""

import jax.numpy as jnp
import numpy as np
import pytest

from rgft_jax import search
from rgft_jax.components import Partition, Rule
from rgft_jax.search import _space


def _part():
    params = {"layers": [{"q": {"kernel": jnp.ones((4, 2, 2))},
                          "up": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones((8,))}}] * 2,
              "embed": jnp.ones((5, 4)), "classifier": {"kernel": jnp.ones((4, 3))}}
    return Partition.build(params, [Rule("classifier", exclude=True),
                                    Rule("q/kernel", kind="head", axis=1, groups=2),
                                    Rule("up/kernel", kind="neuron", axis=-1, width=4),
                                    Rule("up/bias", kind="neuron", axis=0, width=4)])


def test_layer_nodes_cover_each_layer_and_name_its_matrices():
    part = _part()
    nodes = search.layer_nodes(part)
    assert [n.name for n in nodes] == ["layer 0", "layer 1"]
    assert nodes[1].matrices == ("layers/1/q", "layers/1/up")
    assert set(nodes[0].components) == {c.name for c in part.components if c.layer == 0}
    assert "embed" not in [c for n in nodes for c in n.components]


def test_module_nodes_group_components_by_label():
    part = _part()
    labels = np.array([c.layer % 2 if c.layer >= 0 else 2 for c in part.components])
    labels[[c.index for c in part.components if c.kind == "head"]] = 3
    nodes = search.module_nodes(part, labels, min_size=2)
    by = {n.name: n for n in nodes}
    assert by["module 3"].matrices == ("layers/0/q", "layers/1/q")
    assert "module 2" not in by  # the embedding alone: below min_size
    with pytest.raises(ValueError, match="labels has shape"):
        search.module_nodes(part, labels[:-1])


@pytest.mark.parametrize("name,want", [("off", ("off", 0)), ("sparse", ("sparse", 0)),
                                       ("lora16", ("lora", 16))])
def test_candidate_kind(name, want):
    assert search.candidate_kind(name) == want


@pytest.mark.parametrize("bad", ["lora", "lora0", "dense", 3])
def test_candidate_kind_rejects(bad):
    with pytest.raises(ValueError, match="allowed"):
        search.candidate_kind(bad)


@pytest.mark.parametrize("cands", [("sparse", "off"), ("off", "off"), ()])
def test_candidates_must_start_with_off_and_be_distinct(cands):
    with pytest.raises(ValueError, match="'off'"):
        _space.check_candidates(cands)


def test_component_indices_lists_missing_names():
    part = _part()
    with pytest.raises(ValueError, match="not in the partition"):
        _space.component_indices(part, ["layers/0/head/0", "nope"], "who")


@pytest.mark.parametrize("kw,match", [(dict(steps=0), "steps"), (dict(repeats=1), "repeats"),
                                      (dict(lora_scale=0.0), "lora_scale"),
                                      (dict(eval_batches=[]), "eval_batches")])
def test_probe_validates_before_building_anything(kw, match):
    node = search.Node("layer 0", ("layers/0/head/0",), ("layers/0/q",))
    args = dict(rules=(), optimizer=None, train_batches=lambda r: iter(()),
                eval_batches=[{"x": np.zeros(1)}], steps=1, repeats=2)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        search.probe(lambda s: None, [node], **args)
