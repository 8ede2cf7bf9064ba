"""Method names of the savings benchmarks: what they build, and what they refuse."""

import argparse

import pytest

from recipes import bench_savings as bs


def _args(**kw):
    base = dict(learning_rate=1e-4, update_every=20, warmup_steps=1, capacity=0.25)
    return argparse.Namespace(**{**base, **kw})


def test_names_build_the_methods_they_say():
    m = bs.make_method("rgft_budget40_compact@3e-4", _args(), top_k=2)
    assert (m.kind, m.budget, m.capacity, m.learning_rate, m.warmup_steps) == (
        "rgft", 0.4, 0.25, 3e-4, 1)
    m = bs.make_method("rgft_top25_embfrozen", _args(), top_k=2)
    assert (m.threshold, m.embeddings, m.learning_rate) == (("top_fraction", 0.25), "freeze",
                                                             1e-4)
    assert bs.make_method("rgft_median", _args(), 2).threshold == "median"
    assert bs.make_method("lora", _args(), 2).learning_rate == pytest.approx(5e-4)
    assert bs.make_method("bitfit@2e-3", _args(), 2).learning_rate == 2e-3
    m = bs.make_method("top_layers", _args(), top_k=3)
    assert (m.kind, m.k, m.label) == ("top_layers", 3, "top_layers")
    m = bs.make_method("top_layers2@3e-4", _args(), top_k=3)
    assert (m.kind, m.k, m.learning_rate) == ("top_layers", 2, 3e-4)
    for name in bs.METHODS:  # the defaults all parse
        bs.make_method(name, _args(), 1)


@pytest.mark.parametrize("text, match", [
    ("full,rgft_budget0", "'rgft_budget0' is not a method"),
    ("rgft_budget140", "is not a method"),
    ("top_layers0", "is not a method"),
    ("fulll", "'fulll' is not a method"),
    ("full@abc", "number > 0, got 'abc'"),
    ("full@-1e-4", "number > 0"),
    ("full@inf", "finite number"),
    ("full,lora,full", "full named twice"),
    (",", "no method"),
])
def test_bad_names_are_refused_with_the_syntax(text, match):
    with pytest.raises(ValueError, match=match):
        bs.parse_methods(text)


def test_top_layers_matched_to_budget_by_the_cost_model():
    from rgft_jax.models import bert

    cfg = bert.BertConfig.minilm_l6_h384()
    k, frac = bs.top_layers_k(cfg, 3, (32, 64), 0.6)
    # More layers would not fit; k layers do (and the fallback k = 1 only when nothing fits).
    assert k >= 1 and frac <= 0.6
    k_more, frac_more = bs.top_layers_k(cfg, 3, (32, 64), 1.0)
    assert k_more == cfg.num_hidden_layers and frac < frac_more <= 1.0
