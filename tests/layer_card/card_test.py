# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Layer Card of a tiny BERT: the probe leaves the model alone, the card renders, the
placements are what brute force says."""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import rgft_jax.layer_card as lc
from rgft_jax.models import Projection
from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification

LAYERS, HEADS, SEQ, BATCH = 3, 2, 8, 8


def _model():
    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=LAYERS,
                     num_attention_heads=HEADS, intermediate_size=32, max_position_embeddings=16)
    return BertForSequenceClassification(cfg, 3, rngs=nnx.Rngs(0))


def _batches(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(1, 40, size=(BATCH, SEQ)).astype(np.int32)
        mask = np.ones((BATCH, SEQ), np.int32)
        mask[:, -2:] = 0  # padding rows must not enter the covariances
        out.append({"input_ids": ids, "attention_mask": mask, "label": ids[:, 0] % 3})
    return out


def _loss(model, batch):
    logits = model(batch["input_ids"], batch["attention_mask"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


@pytest.fixture(scope="module")
def card():
    return lc.compute(_model(), _batches(), _loss, num_heads=HEADS, batch_shape=(BATCH, SEQ),
                      micro_batch=2, lora_rank=2, name="tiny-bert")


def test_probe_does_not_change_the_model_or_its_outputs():
    model = _model()
    before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    b = _batches(1)[0]
    logits = model(b["input_ids"], b["attention_mask"])
    pr = lc.probe(model, [b], _loss, micro_batch=4)
    assert all(isinstance(n, Projection) for p, n in nnx.iter_graph(model)
               if p and p[-1] in ("query", "key", "value", "out", "up", "down"))
    jax.tree.map(np.testing.assert_array_equal, before,
                 nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    np.testing.assert_array_equal(logits, model(b["input_ids"], b["attention_mask"]))
    # 6 projections per layer; rows = unpadded tokens; the value's gradient is the model's.
    assert len(pr.matrices) == 6 * LAYERS and pr.layers == list(range(LAYERS))
    assert pr.tokens == BATCH * (SEQ - 2)
    g = jax.grad(lambda m: _loss(m, b))(model)
    v = next(m for m in pr.matrices if m.path == "encoder/layers/1/attention/value")
    np.testing.assert_allclose(v.grad, np.reshape(g.encoder.layers[1].attention.value.kernel[...],
                                                  (16, 16)), rtol=1e-5, atol=1e-7)


def test_card_fields_and_costs(card):
    assert card.layers == (0, 1, 2)
    for name in ("res", "grad_norm", "energy", "condition", "effective_rank", "train_cost",
                 "lora_cost", "lora_params"):
        v = getattr(card, name)
        assert v.shape == (LAYERS,) and np.all(np.isfinite(v)) and np.all(v > 0), name
    # Lower layers need deeper backprop: training them costs more; LoRA costs less than training.
    assert np.all(np.diff(card.train_cost) < 0) and np.all(card.lora_cost < card.train_cost)
    assert np.all(card.train_cost <= 1.0 + 1e-9) and card.forward < card.lora_cost.min()
    assert card.set_cost([0, 2], "train") > card.set_cost([0], "train")
    assert card.set_cost([1, 2]) == pytest.approx(card.lora_cost[1] + card.lora_dw[2])
    assert card.rho.shape == (LAYERS, LAYERS) and np.all(np.diag(card.rho) == 0)
    assert card.meta["sketch_samples"] == 3 * BATCH // 2
    assert 0 <= card.meta["rho_null"] < 1


def test_what_the_card_costs_is_counted(card):
    # XLA's count of the probe's steps (3 batches: the batch gradient, the micro-batch
    # gradients of the sketch, the covariances) plus the eigendecompositions at the end.
    m = card.meta
    tail = sum(2.0 * r["d_in"] ** 3 + r["d_in"] ** 2 * r["d_out"] for r in card.matrices)
    steps = (m["probe_flops"] - tail) / m["full_step_flops"]
    assert np.isfinite(m["probe_flops"]) and tail > 0
    # Two gradients of every row per batch (the batch's, then the micro-batches'): at least
    # about two full steps per batch, and not wildly more.
    assert 3 * 1.8 < steps < 3 * 6, steps


def test_a_card_without_coupling_or_spectrum_costs_less_and_says_so(card, tmp_path):
    # The placement card: Res and costs as the full card's, no micro-batch sketches, no
    # eigenvalues; what was not measured is NaN and 'spread' refuses it.
    cheap = lc.compute(_model(), _batches(), _loss, num_heads=HEADS, batch_shape=(BATCH, SEQ),
                       micro_batch=3, lora_rank=2, coupling=False, spectrum=False)
    np.testing.assert_allclose(cheap.res, card.res, rtol=1e-5)
    np.testing.assert_allclose(cheap.energy, card.energy, rtol=1e-5)
    np.testing.assert_array_equal(cheap.train_cost, card.train_cost)
    assert np.all(np.isnan(cheap.condition)) and np.all(np.isnan(cheap.effective_rank))
    assert not cheap.has_coupling and card.has_coupling and np.isnan(cheap.coupling)
    assert np.all(np.diag(cheap.rho) == 0) and cheap.meta["sketch_samples"] == 0
    # One gradient per batch instead of two (at this toy size the covariances and the
    # embeddings weigh more than on a real model: MiniLM's card drops by about a full step
    # per batch), and no eigenvalues at the end.
    m, full = cheap.meta, card.meta
    steps = m["probe_flops"] / m["full_step_flops"]
    assert 3 * 0.8 < steps < full["probe_flops"] / full["full_step_flops"] - 3 * 0.4, steps
    tail = sum(r["d_in"] ** 3 / 3 + r["d_in"] ** 2 * r["d_out"] for r in cheap.matrices)
    assert m["probe_flops"] > tail
    a, b = lc.place(cheap, "max_quality", k=2), lc.place(card, "max_quality", k=2)
    assert a.layers == b.layers and a.gain == pytest.approx(b.gain, rel=1e-5)
    assert np.isnan(a.coupled_gain)
    with pytest.raises(ValueError, match="objective='spread' needs the card's coupling"):
        lc.place(cheap, "spread", k=2)
    assert "Coupling: not measured" in cheap.to_markdown()
    back = lc.LayerCard.from_json(cheap.to_json(tmp_path / "cheap.json"))
    assert not back.has_coupling and np.all(np.isnan(back.condition))
    with open(cheap.plot(tmp_path / "cheap.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="coupling='no' must be True or False"):
        lc.compute(_model(), _batches(1), _loss, num_heads=HEADS, batch_shape=(BATCH, SEQ),
                   coupling="no")


def test_card_renders(card, tmp_path):
    text = card.to_json(tmp_path / "card.json")
    d = json.loads(text)
    assert d["layers"] == [0, 1, 2] and len(d["matrices"]) == 18
    back = lc.LayerCard.from_json(tmp_path / "card.json")
    np.testing.assert_allclose(back.res, card.res)
    assert back.set_cost([1]) == pytest.approx(card.set_cost([1]))
    assert back.set_cost([1], hit_rate=0.5) == pytest.approx(card.set_cost([1], hit_rate=0.5))
    # A card written before layer_forward was recorded still reads; the cache needs it.
    del d["layer_forward"]
    old = lc.LayerCard.from_json(json.dumps(d))
    assert old.layer_forward is None and old.set_cost([1]) == pytest.approx(card.set_cost([1]))
    with pytest.raises(ValueError, match="hit_rate=0.5 needs the card's layer_forward"):
        old.set_cost([1], hit_rate=0.5)
    md = card.to_markdown()
    assert sum(line.startswith("| ") for line in md.splitlines()) == LAYERS + 1
    assert "Coupling: global" in md
    png = card.plot(tmp_path / "card.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _card(res, rho, layers=None):
    n = len(res)
    zeros = np.zeros(n)
    return lc.LayerCard(
        layers=tuple(range(n)) if layers is None else tuple(layers), res=np.asarray(res, float),
        grad_norm=zeros + 1, energy=zeros + 1, condition=zeros + 1, effective_rank=zeros + 1,
        train_cost=zeros, lora_cost=zeros, lora_params=zeros, inference_flops=zeros,
        rho=np.asarray(rho, float), coupling=0.0, matrices=(), meta={},
        dx_tail=np.linspace(0.5, 0.1, n), forward=0.3, dw=np.full(n, 0.05),
        lora_dw=np.full(n, 0.01))


def test_cached_costs_skip_the_forward_below_the_set(card):
    # The expected step cost with the activation cache: the forward of the layers below the
    # set's lowest layer is not run on the hit_rate of steps that read the cache.
    lf = card.layer_forward
    assert lf.shape == (LAYERS,) and np.all(lf > 0) and lf.sum() < card.forward
    for s in ([2], [1, 2], [0], [0, 2], []):
        low = min(s) if s else LAYERS
        for h in (0.0, 0.5, 1.0):
            assert card.set_cost(s, "train", hit_rate=h) == pytest.approx(
                card.set_cost(s, "train") - h * lf[:low].sum()), (s, h)
    # The same expected costs the budgeted masks use (ComponentCosts.with_cache).
    from rgft_jax import analytic_costs
    from rgft_jax._src import components as comp_lib
    from rgft_jax._src import presets

    params = nnx.to_pure_dict(nnx.split(_model(), nnx.Param, ...)[1])
    part = comp_lib.Partition.build(params, presets.by_layer())
    costs = analytic_costs(part, tokens=BATCH * SEQ, seq_len=SEQ, batch=BATCH,
                           num_layers=LAYERS, hidden=16, num_heads=HEADS)
    for s in ([2], [1, 2]):  # the set's layers and the task head (cost-model layer L)
        mask = np.isin(costs.layer, [*s, LAYERS])
        want = costs.with_cache(0.75).step_cost(mask) / costs.full
        assert card.set_cost(s, "train", hit_rate=0.75) == pytest.approx(want, rel=1e-9)
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="hit_rate="):
            card.set_cost([2], hit_rate=bad)


def test_any_size_placement_is_the_best_set_within_budget():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = 6
        res = rng.random(n)
        c = _card(res, np.zeros((n, n)))
        c = lc.LayerCard(**{**c.__dict__, "layer_forward": np.full(n, 0.04)})
        budget, h = float(rng.uniform(0.35, 0.7)), float(rng.choice([0.0, 0.5, 2 / 3]))
        sets = [s for k in range(1, n + 1) for s in itertools.combinations(range(n), k)
                if c.set_cost(s, hit_rate=h) <= budget]
        if not sets:
            with pytest.raises(ValueError, match="any number of"):
                lc.place(c, k=None, budget=budget, hit_rate=h)
            continue
        best = max(sets, key=lambda s: sum(0.5 * res[list(s)] ** 2))
        got = lc.place(c, "max_quality", k=None, budget=budget, hit_rate=h)
        assert got.layers == best and got.hit_rate == h
        assert got.cost == pytest.approx(c.set_cost(best, hit_rate=h)) and got.cost <= budget


def test_placements_match_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 6
        res = rng.random(n)
        a = rng.random((n, n)) * 0.8
        rho = np.triu(a, 1) + np.triu(a, 1).T
        c = _card(res, rho)
        budget = float(rng.uniform(0.4, 0.7))
        k = int(rng.integers(1, 4))
        sets = [s for s in itertools.combinations(range(n), k) if c.set_cost(s) <= budget]
        if not sets:
            with pytest.raises(ValueError, match="cheapest"):
                lc.place(c, k=k, budget=budget)
            continue
        best = max(sets, key=lambda s: sum(0.5 * res[list(s)] ** 2))
        assert lc.place(c, "max_quality", k=k, budget=budget).layers == best
        sp = lc.place(c, "spread", k=k, budget=budget)
        assert sp.coupled_gain == pytest.approx(max(lc.coupled_gain(c, s) for s in sets))
        assert sp.cost <= budget


def test_spread_avoids_coupled_layers_and_min_cost_is_cheaper():
    # Layers 2 and 3 have the largest residuals but are strongly coupled with each other.
    rho = np.zeros((4, 4))
    rho[2, 3] = rho[3, 2] = 0.95
    c = _card([0.5, 0.8, 1.0, 0.99], rho)
    assert lc.place(c, "max_quality", k=2).layers == (2, 3)
    assert lc.place(c, "spread", k=2).layers == (1, 2)
    q = lc.place(c, "max_quality", k=2)
    mc = lc.place(c, "min_cost", k=2, target=0.5)
    assert mc.cost <= q.cost and mc.gain >= 0.5 * q.gain
    assert lc.coupled_gain(c, [2, 3]) < 0.5 * (1.0 + 0.99**2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(objective="best"), "objective='best'"),
    (dict(k=0), "k=0"),
    (dict(k=5), r"k=5 must be an int in \[1, 4\] or None"),
    (dict(hit_rate=0.5), "needs the card's layer_forward"),
    (dict(hit_rate=2.0), "hit_rate=2.0"),
    (dict(budget=-1.0), "budget=-1.0"),
    (dict(cost="adapter"), "cost='adapter'"),
    (dict(target=1.5), "target=1.5"),
])
def test_place_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lc.place(_card([1, 2, 3, 4], np.zeros((4, 4))), **kwargs)


def test_compute_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_shape"):
        lc.compute(_model(), _batches(1), _loss, num_heads=HEADS, batch_shape=(8,))
    with pytest.raises(ValueError, match="match no Projection"):
        lc.probe(_model(), _batches(1), _loss, targets="nothing_here")
    with pytest.raises(ValueError, match="micro_batch=3 does not divide"):
        lc.probe(_model(), _batches(1), _loss, micro_batch=3)
    with pytest.raises(ValueError, match="batches is empty"):
        lc.probe(_model(), [], _loss)


def test_greedy_placement_on_a_deep_card_is_not_spent_on_one_low_layer():
    # 30 layers (2^30 sets: the greedy path). Res falls with depth as on SmolLM2; the backprop
    # from a low layer costs most of the budget, so the one layer of largest Res that fits
    # is a poor answer next to a block of upper layers.
    n = 30
    res = np.linspace(30.0, 5.0, n)
    zeros = np.zeros(n)
    c = lc.LayerCard(
        layers=tuple(range(n)), res=res, grad_norm=zeros + 1, energy=zeros + 1,
        condition=zeros + 1, effective_rank=zeros + 1, train_cost=zeros, lora_cost=zeros,
        lora_params=zeros, inference_flops=zeros, rho=np.zeros((n, n)), coupling=0.0,
        matrices=(), meta={}, dx_tail=np.linspace(0.6, 0.02, n), forward=0.3,
        dw=np.full(n, 0.01), lora_dw=np.full(n, 0.002))
    got = lc.place(c, "max_quality", k=None, budget=0.45, cost="train")
    assert not got.exact and got.cost <= 0.45 + 1e-12
    single = max((i for i in range(n) if c.set_cost((i,), "train") <= 0.45),
                 key=lambda i: res[i])  # what the plain greedy chose
    assert got.gain > 1.5 * 0.5 * res[single] ** 2
    # Against the best set of each lowest layer (exact here: every layer above it costs the
    # same, so the top-gain layers above it are optimal for that lowest layer).
    best = 0.0
    for low in range(n):
        s = [low]
        for layer in sorted(range(low + 1, n), key=lambda i: -res[i]):
            if c.set_cost(tuple(sorted(s + [layer])), "train") <= 0.45:
                s.append(layer)
        if c.set_cost(tuple(sorted(s)), "train") <= 0.45:
            best = max(best, float(sum(0.5 * res[s] ** 2)))
    assert got.gain == pytest.approx(best)
