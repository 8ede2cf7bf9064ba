"""The error-map figure outlines the smaller of the masked / active sets of drawn components."""

import numpy as np
import pytest
from flax import nnx

import rgft_jax as rgft
from rgft_jax import reporting
from rgft_jax.models import bert


@pytest.fixture(scope="module")
def components():
    cfg = bert.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64)
    tree = nnx.to_pure_dict(bert.abstract_params(cfg, 3))
    return rgft.components.Partition.build(tree, rgft.components.bert(4)).components


def _mask(components, masked):
    return np.array([0.0 if masked(c) else 1.0 for c in components])


def test_outlines_masked_heads_when_most_are_trained(components):
    m = _mask(components, lambda c: c.kind == "head" and c.layer == 0 and c.group == 1)
    assert reporting._outline_choice(reporting._drawn(components, "head"), [m, m]) == "masked"


def test_outlines_trained_heads_when_most_are_masked(components):
    # A budgeted mask that trains only one head of the top layer (and no other head).
    m = _mask(components, lambda c: c.kind == "head" and (c.layer, c.group) != (1, 2))
    heads = reporting._drawn(components, "head")
    assert len(heads) == 8 and all(c.kind == "head" and c.layer >= 0 for c in heads)
    assert reporting._outline_choice(heads, [m]) == "active"
    # Half masked is not "most": the masked ones stay outlined.
    half = _mask(components, lambda c: c.kind == "head" and c.layer == 0)
    assert reporting._outline_choice(heads, [half]) == "masked"


def test_plot_writes_a_png_with_the_mask_strip(components, tmp_path):
    rng = np.random.default_rng(0)
    history = []
    for step in (1, 5, 9):
        r = rng.random(len(components))
        history.append((step, r / r.sum(), _mask(components, lambda c: c.kind == "head")))
    path = reporting.plot_error_map(history, components, tmp_path / "em.png", title="t")
    assert path and (tmp_path / "em.png").stat().st_size > 10_000
