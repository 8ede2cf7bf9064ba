"""Budgeted masks: cost model, analytic/calibrated MiniLM costs, greedy vs brute force."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rgft_jax as rgft
from rgft_jax._src.budget import (
    ComponentCosts,
    analytic_costs,
    budget_threshold,
    budget_threshold_exact,
    calibrate,
)
from rgft_jax.components import Partition, Rule
from rgft_jax.models import bert

D, H, DH, F, L, V = 384, 12, 32, 1536, 6, 30522  # all-MiniLM-L6-v2
BATCH, SEQ = 32, 64
MINILM_SHAPE = dict(tokens=BATCH * SEQ, seq_len=SEQ, batch=BATCH, num_layers=L, hidden=D,
                    num_heads=H)


def _sds(shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def minilm_ours():
    """The param tree of rgft_jax.models' BERT classifier for all-MiniLM-L6-v2 (abstract)."""
    return bert.abstract_params(bert.BertConfig.minilm_l6_h384(), num_labels=3)


_MINILM = {}


def minilm():
    """(partition, analytic costs) of MiniLM with bert(12) and the classifier excluded."""
    if not _MINILM:
        part = Partition.build(
            minilm_ours(), [Rule(r"^classifier/", exclude=True), *rgft.components.bert(H)])
        _MINILM["part"] = part
        _MINILM["costs"] = analytic_costs(part, **MINILM_SHAPE)
    return _MINILM["part"], _MINILM["costs"]


_THRESHOLDS = {}


def minilm_threshold(budget):
    """A jitted budget_threshold per budget (built and compiled once per test session)."""
    if budget not in _THRESHOLDS:
        _THRESHOLDS[budget] = jax.jit(budget_threshold(minilm()[1], budget))
    return _THRESHOLDS[budget]


def _value(mask, r):
    return float(np.asarray(r, np.float64)[np.asarray(mask)].sum())


# ---------------------------------------------------------------------------- cost model
def test_step_cost_semantics():
    c = ComponentCosts(dw=[1.0, 2.0, 4.0, 8.0, 0.0], layer=np.array([-1, 0, 1, 2, 1]),
                       dx=[10.0, 20.0], fixed=100.0)
    assert c.full == 100 + 30 + 15
    assert c.step_cost([0, 0, 0, 0, 0]) == 100  # nothing active: no backprop
    assert c.step_cost([0, 0, 0, 1, 0]) == 108  # layer L only: no dx
    assert c.step_cost([0, 0, 1, 0, 0]) == 100 + 20 + 4  # lowest layer 1
    assert c.step_cost([0, 0, 0, 0, 1]) == 100 + 20  # free component of layer 1
    assert c.step_cost([0, 1, 0, 1, 0]) == 100 + 30 + 10
    assert c.step_cost([1, 0, 0, 0, 0]) == 100 + 30 + 1  # below every layer: all dx
    assert c.step_cost(np.ones(5, bool)) == c.full
    assert c.forward == c.fixed and c.num_layers == 2 and c.num_components == 5
    with pytest.raises(ValueError, match=r"mask has shape \(4,\)"):
        c.step_cost(np.ones(4, bool))


def test_analytic_costs_by_hand():
    d, h, dh, f, n_layers, t, b, s = 8, 2, 4, 16, 2, 12, 3, 4
    layer = {"attention": {"query": {"kernel": _sds((d, h, dh)), "bias": _sds((h, dh))}},
             "mlp": {"up": {"kernel": _sds((d, f))}}, "norm": {"scale": _sds((d,))}}
    tree = {"embeddings": {"word": {"embedding": _sds((50, d))}, "norm": {"scale": _sds((d,))}},
            "layers": [layer] * n_layers, "classifier": {"kernel": _sds((d, 3))}}
    part = Partition.build(tree, [Rule(r"query/kernel$", kind="head", axis=1, groups=h),
                                  Rule(r"query/bias$", kind="head", axis=0, groups=h),
                                  Rule(r"up/kernel$", kind="neuron", axis=1, width=8)])
    costs = analytic_costs(part, tokens=t, seq_len=s, batch=b, num_layers=n_layers, hidden=d,
                           num_heads=h)
    by_name = dict(zip(part.names, costs.dw, strict=True))
    lay = dict(zip(part.names, costs.layer, strict=True))
    assert by_name["embeddings/word/embedding"] == 0  # scatter: free
    assert by_name["embeddings/norm/scale"] == t * d
    assert by_name["layers/0/head/1"] == 2 * t * d * dh + t * dh  # kernel slice + bias slice
    assert by_name["layers/1/neuron/0"] == 2 * t * d * 8
    assert by_name["layers/1/norm/scale"] == t * d
    assert by_name["classifier/kernel"] == 2 * b * d * 3  # pooled rows
    assert lay["embeddings/word/embedding"] == -1 and lay["embeddings/norm/scale"] == -1
    assert lay["classifier/kernel"] == n_layers and lay["layers/1/head/0"] == 1
    # Attention: Q K^T and P V forward (4 B s^2 D), two gradient matmuls each backward.
    matrices = 2 * t * (d * h * dh + d * f)
    np.testing.assert_array_equal(costs.dx, [matrices + 8 * b * s * s * d] * n_layers)
    forward = n_layers * (matrices + 4 * b * s * s * d) + 2 * b * d * 3
    assert costs.fixed == costs.forward == forward
    # The full step: forward + dx of every layer + every dw.
    assert costs.full == pytest.approx(costs.fixed + costs.dx.sum() + costs.dw.sum(), rel=0)


def test_excluded_leaves_are_always_trained():
    layer = {"q": {"kernel": _sds((8, 2, 4))}, "norm": {"scale": _sds((8,))}}
    tree = {"layers": [layer] * 3}
    rules = [Rule(r"q/kernel$", kind="head", axis=1, groups=2)]
    kw = dict(tokens=10, seq_len=5, batch=2, num_layers=3, hidden=8, num_heads=2)
    plain = analytic_costs(Partition.build(tree, rules), **kw)
    # norm of layer 1 excluded: always trained, so every step backprops through layers 1, 2.
    part = Partition.build(tree, [Rule(r"layers/1/norm", exclude=True), *rules])
    costs = analytic_costs(part, **kw)
    assert costs.dx[0] == plain.dx[0] and (costs.dx[1:] == 0).all()
    assert costs.fixed == plain.fixed + plain.dx[1:].sum() + 10 * 8
    assert costs.full == pytest.approx(plain.full)
    assert costs.forward == plain.forward


# ---------------------------------------------------------------------------- MiniLM numbers
def test_minilm_analytic_ratios_match_xla_measurements():
    part, costs = minilm()
    assert costs.num_components == len(part) and costs.num_layers == L
    # NOTES.md (XLA cost analysis): forward 46, full 136, top 2 layers + head 74 GFLOP.
    assert costs.fixed / costs.full == pytest.approx(46 / 136, rel=0.15)
    top2 = costs.layer >= L - 2
    assert costs.step_cost(top2) / costs.full == pytest.approx(74 / 136, rel=0.15)
    assert costs.fixed / 1e9 == pytest.approx(46, rel=0.15)
    assert costs.full / 1e9 == pytest.approx(136, rel=0.15)
    # Head components cost twice a 32-neuron group (4 D x 32 matrices vs 2).
    kinds = np.array([c.kind for c in part.components])
    head, neuron = costs.dw[kinds == "head"], costs.dw[kinds == "neuron"]
    assert np.ptp(head) == 0 and np.ptp(neuron) == 0
    assert head[0] / neuron[0] == pytest.approx(2.0, rel=0.01)


def test_calibrate_hits_measured_numbers_exactly():
    _, costs = minilm()
    cal = calibrate(costs, full_flops=136e9, forward_flops=46e9)
    assert cal.full == pytest.approx(136e9, rel=1e-12)
    assert cal.forward == 46e9
    k = (136e9 - 46e9) / (costs.full - costs.forward)
    np.testing.assert_allclose(cal.dw, costs.dw * k, rtol=1e-15)
    np.testing.assert_allclose(cal.dx, costs.dx * k, rtol=1e-15)
    # The always-trained classifier's backward is scaled with the rest.
    assert cal.fixed == pytest.approx(46e9 + k * (costs.fixed - costs.forward), rel=1e-15)
    np.testing.assert_array_equal(cal.layer, costs.layer)
    plain = ComponentCosts(dw=[1.0, 3.0], layer=np.array([0, 0]), dx=[2.0], fixed=4.0)
    cal = calibrate(plain, full_flops=30.0, forward_flops=12.0)
    assert cal.fixed == 12.0 and cal.full == pytest.approx(30.0, rel=1e-15)
    np.testing.assert_allclose(cal.dw, [3.0, 9.0])


def test_minilm_budget_04_uniform_residuals_trains_the_top_layer():
    part, costs = minilm()
    c = len(part)
    mask = np.asarray(minilm_threshold(0.4)(jnp.full((c,), 1.0 / c)))
    assert costs.step_cost(mask) <= 0.4 * costs.full
    assert mask.any() and set(costs.layer[mask].tolist()) == {L - 1}
    kinds = np.array([x.kind for x in part.components])
    # Neuron groups cost half a head: with equal residuals they come first.
    assert mask[kinds == "head"].sum() == 0
    assert 5 <= mask[kinds == "neuron"].sum() <= 48


@pytest.mark.parametrize("budget", [0.4, 0.6, 0.8])
def test_uniform_residuals_prefer_upper_layers(budget):
    part, costs = minilm()
    c = len(part)
    mask = np.asarray(minilm_threshold(budget)(jnp.full((c,), 1.0 / c)))
    assert costs.step_cost(mask) <= budget * costs.full
    per_layer = [int(mask[costs.layer == lay].sum()) for lay in range(L)]
    assert per_layer == sorted(per_layer)  # top-heavy
    assert per_layer[-1] > 0 and not mask[costs.layer == -1].any()
    # Starting one layer lower than chosen would cost its dx for the same number of picks:
    lowest = int(costs.layer[mask].min())
    assert per_layer[lowest] > 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0.34, 0.4, 0.5, 0.7, 1.0]), st.integers(0, 2**31 - 1),
       st.sampled_from(["uniform", "lognormal", "sparse"]))
def test_minilm_never_exceeds_budget(budget, seed, dist):
    part, costs = minilm()
    rng = np.random.default_rng(seed)
    c = len(part)
    r = {"uniform": rng.uniform(size=c), "lognormal": rng.lognormal(0, 2, size=c),
         "sparse": rng.uniform(size=c) * (rng.uniform(size=c) < 0.05)}[dist]
    r = (r / max(r.sum(), 1e-30)).astype(np.float32)
    mask = np.asarray(minilm_threshold(budget)(r))
    assert costs.step_cost(mask) <= budget * costs.full
    # 0.34 leaves less than one layer's dx above the forward pass: nothing fits.
    assert mask.any() == (budget > 0.34)
    if budget == 1.0 and dist != "sparse":  # sparse: zero-mass embeddings are left out
        assert mask.all()


def test_minilm_budget_of_top2_layers_selects_them_exactly():
    part, costs = minilm()
    top2 = costs.layer >= L - 2
    budget = costs.step_cost(top2) / costs.full  # the budget hits this cost exactly
    mask = np.asarray(budget_threshold(costs, budget)(jnp.full((len(part),), 1.0)))
    np.testing.assert_array_equal(mask, top2)


def test_minilm_budget_at_the_minimum():
    _, costs = minilm()
    b = costs.fixed / costs.full * (1 + 1e-12)
    mask = np.asarray(budget_threshold(costs, b)(jnp.ones(costs.num_components)))
    assert costs.step_cost(mask) <= b * costs.full
    # Only (nearly) free components above all dx can fit: none exist here.
    assert not mask.any()


# ---------------------------------------------------------------------------- random costs
@st.composite
def costs_and_residuals(draw, max_c=10, equal_dw=False):
    # Few shapes: the traced selection compiles once per (L, C).
    n_layers = draw(st.sampled_from([0, 2, 3]))
    c = draw(st.sampled_from([1, 4, max_c]))
    layer = np.array(draw(st.lists(st.integers(-1, n_layers), min_size=c, max_size=c)))
    if equal_dw:
        w = draw(st.floats(0.01, 10.0))
        dw = [0.0 if draw(st.booleans()) and draw(st.booleans()) else w for _ in range(c)]
    else:
        dw = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.01, 10.0)), min_size=c,
                           max_size=c))
    dx = draw(st.lists(st.floats(0.0, 10.0), min_size=n_layers, max_size=n_layers))
    fixed = draw(st.floats(0.1, 20.0))
    costs = ComponentCosts(dw=dw, layer=layer, dx=dx, fixed=fixed)
    r = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 1.0, width=32)),
                               min_size=c, max_size=c)), np.float32)
    lo = costs.fixed / costs.full if costs.full > 0 else 1.0
    u = draw(st.floats(0.01, 1.0))
    budget = min(1.0, lo + u * (1.0 - lo))
    return costs, r, budget


def _check_against_exact(costs, r, budget, mask):
    allowed = budget * costs.full
    assert costs.step_cost(mask) <= allowed
    upper = _value(budget_threshold_exact(costs, budget, r), r)
    # The greedy's integer arithmetic keeps a 1e-9 slack: compare with a slightly smaller budget.
    shrunk = max(budget * (1 - 1e-7), costs.fixed / costs.full)
    opt = budget_threshold_exact(costs, shrunk, r)
    lower = _value(opt, r)
    got = _value(mask, r)
    assert got <= upper + 1e-5
    singles = [i for i in range(costs.num_components)
               if costs.step_cost(np.arange(costs.num_components) == i) <= allowed]
    if singles:
        assert mask.any()  # at least one component whenever one fits
    return got, lower, opt


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(costs_and_residuals())
def test_random_costs_within_budget_and_greedy_bound(data):
    costs, r, budget = data
    mask = np.asarray(budget_threshold(costs, budget)(r))
    got, lower, opt = _check_against_exact(costs, r, budget, mask)
    if opt.any():
        m = int(costs.layer[opt].min())
        eligible_max = float(r[costs.layer >= m].max())
        assert got >= lower - eligible_max - 1e-5  # classic greedy bound
    assert got >= lower / 2 - 1e-5  # with the single-component fallback


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(costs_and_residuals(equal_dw=True))
def test_equal_dw_greedy_is_optimal(data):
    costs, r, budget = data
    mask = np.asarray(budget_threshold(costs, budget)(r))
    got, lower, _ = _check_against_exact(costs, r, budget, mask)
    assert got >= lower - 1e-5


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0, 2, 3]), st.sampled_from([4, 9]), st.sampled_from([1, 3, 2048, 10**9]),
       st.integers(0, 2**31 - 1))
def test_integer_costs_are_exact_at_the_boundary(n_layers, c, unit, seed):
    """Integer FLOPs (analytic costs): a budget equal to a set's cost is met exactly."""
    rng = np.random.default_rng(seed)
    dw = np.where(rng.uniform(size=c) < 0.8, 2.0 * unit, 0.0)  # equal dw: greedy is optimal
    costs = ComponentCosts(dw=dw, layer=rng.integers(-1, n_layers + 1, size=c),
                           dx=rng.integers(0, 4, size=n_layers) * float(unit),
                           fixed=float(rng.integers(1, 6) * unit))
    budget = costs.step_cost(rng.uniform(size=c) < 0.5) / costs.full
    r = (rng.lognormal(0, 2, size=c) * (rng.uniform(size=c) < 0.8)).astype(np.float32)
    mask = np.asarray(budget_threshold(costs, budget)(r))
    assert costs.step_cost(mask) <= budget * costs.full
    exact = budget_threshold_exact(costs, budget, r)
    assert _value(mask, r) >= _value(exact, r) * (1 - 1e-6) - 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_heads_only_model_matches_brute_force(n_layers, heads, seed, u):
    """All components are heads of equal shape: the greedy is exactly optimal."""
    if n_layers * heads > 12:
        n_layers = 12 // heads
    d = 4 * heads
    tree = {"layers": [{"q": {"kernel": _sds((d, heads, 4))}}] * n_layers,
            "classifier": {"kernel": _sds((d, 2))}}
    part = Partition.build(tree, [Rule(r"^classifier/", exclude=True),
                                  Rule(r"q/kernel$", kind="head", axis=1, groups=heads)])
    costs = analytic_costs(part, tokens=16, seq_len=4, batch=4, num_layers=n_layers, hidden=d,
                           num_heads=heads)
    rng = np.random.default_rng(seed)
    r = rng.dirichlet(np.ones(len(part))).astype(np.float32)
    lo = costs.fixed / costs.full
    budget = lo + max(u, 0.01) * (1 - lo)
    mask = np.asarray(budget_threshold(costs, budget)(r))
    got, lower, _ = _check_against_exact(costs, r, budget, mask)
    assert got >= lower - 1e-5


def test_free_components_taken_when_eligible():
    c = ComponentCosts(dw=[0.0, 0.0, 5.0, 5.0], layer=np.array([2, -1, 1, 1]), dx=[10.0, 10.0],
                       fixed=10.0)
    # Budget for layer 1 + one component (+ a bit): the free layer-2 one comes along, the
    # free embedding (needs dx[0]) does not.
    b = (10 + 10 + 5 + 1) / c.full
    mask = np.asarray(budget_threshold(c, b)(np.array([0.1, 0.5, 0.3, 0.2], np.float32)))
    assert mask.tolist() == [True, False, True, False]
    # Budget 1 and positive residuals: everything.
    assert np.asarray(budget_threshold(c, 1.0)(np.full(4, 0.1, np.float32))).all()
    # Zero residuals: ties go to the cheapest candidate (only the free layer-L component).
    mask = np.asarray(budget_threshold(c, 1.0)(np.zeros(4, np.float32)))
    assert mask.tolist() == [True, False, False, False]


def test_ties_pick_the_cheaper_candidate():
    # Layer 0 and layer 1 components of equal residual and dw: layer 1 saves dx[0].
    c = ComponentCosts(dw=[1.0, 1.0], layer=np.array([0, 1]), dx=[3.0, 3.0], fixed=1.0)
    b = (1 + 6 + 1) / c.full  # enough for either alone, with full backprop
    mask = np.asarray(budget_threshold(c, b)(np.array([0.5, 0.5], np.float32)))
    assert mask.tolist() == [False, True]
    assert c.step_cost(mask) == 1 + 3 + 1


def test_single_fallback_when_greedy_prefix_is_empty():
    # The best ratio does not fit; the prefix greedy would return nothing.
    c = ComponentCosts(dw=[1.0, 100.0], layer=np.array([0, 0]), dx=[0.0], fixed=0.0)
    b = 50.0 / c.full
    r = np.array([0.0, 1.0], np.float32)  # only the big one has mass, and it does not fit
    mask = np.asarray(budget_threshold(c, b)(r))
    assert mask.tolist() == [True, False]
    r = np.array([0.5, 0.5], np.float32)
    mask = np.asarray(budget_threshold(c, b)(r))
    assert mask.tolist() == [True, False]


def test_nonfinite_residuals_count_as_zero():
    c = ComponentCosts(dw=[1.0, 1.0, 1.0], layer=np.array([0, 0, 0]), dx=[1.0], fixed=0.0)
    th = budget_threshold(c, 3.0 / c.full)
    mask = np.asarray(th(np.array([np.nan, 0.2, np.inf], np.float32)))
    # Room for two: the 0.2 one, then the zero-mass ones by index.
    assert mask.tolist() == [True, True, False]
    assert c.step_cost(mask) <= 3.0


def test_a_component_too_big_alone_does_not_block_the_prefix():
    # Best ratio (10 / 100) but 100 > the 50 left: the prefix goes on with the small ones.
    c = ComponentCosts(dw=[100.0, 1.0, 1.0], layer=np.array([0, 0, 0]), dx=[0.0], fixed=0.0)
    mask = np.asarray(budget_threshold(c, 50.0 / c.full)(np.array([10.0, 0.05, 0.05])))
    assert mask.tolist() == [False, True, True]


# ---------------------------------------------------------------------------- inside transforms
def _toy():
    layer = {"q": {"kernel": jnp.zeros((8, 4, 2))}, "up": {"kernel": jnp.zeros((8, 16))}}
    params = {"layers": [jax.tree.map(lambda x, i=i: x + i, layer) for i in range(3)],
              "classifier": {"kernel": jnp.zeros((8, 2))}}
    part = Partition.build(params, [Rule(r"^classifier/", exclude=True),
                                    Rule(r"q/kernel$", kind="head", axis=1, groups=4),
                                    Rule(r"up/kernel$", kind="neuron", axis=1, width=4)])
    costs = analytic_costs(part, tokens=32, seq_len=2, batch=16, num_layers=3, hidden=8,
                           num_heads=4)
    return params, part, costs


def test_jit_vmap_and_no_retrace():
    _, part, costs = _toy()
    th = budget_threshold(costs, 0.75)
    traces = []

    def f(r):
        traces.append(1)
        return th(r)

    jf = jax.jit(f)
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(5):
        r = rng.lognormal(0, 2, size=len(part)).astype(np.float32)
        m = np.asarray(jf(r))
        assert costs.step_cost(m) <= 0.75 * costs.full
        np.testing.assert_array_equal(m, np.asarray(th(r)))
        masks.append(m)
    assert len(traces) == 1
    assert len({m.tobytes() for m in masks}) > 1
    batch = rng.uniform(size=(3, len(part))).astype(np.float32)
    vm = np.asarray(jax.vmap(th)(batch))
    for row, r in zip(vm, batch, strict=True):
        np.testing.assert_array_equal(row, np.asarray(th(r)))


def test_inside_residual_guided_without_recompiling():
    params, part, costs = _toy()
    budget = 0.75
    opt = rgft.residual_guided(optax.adamw(1e-3), part, threshold=budget_threshold(costs, budget),
                               update_every=1, alpha=0.0)
    state = opt.init(params)
    traces = []

    def step(g, s, p):
        traces.append(1)
        return opt.update(g, s, p)

    jstep = jax.jit(step)
    rng = np.random.default_rng(1)
    masks = []
    for _ in range(6):
        g = jax.tree.map(
            lambda x: jnp.asarray(rng.normal(size=x.shape) * rng.lognormal(0, 2), jnp.float32),
            params)
        updates, state = jstep(g, state, params)
        params = optax.apply_updates(params, updates)
        active = np.asarray(rgft.error_map(state).mask) > 0
        assert costs.step_cost(active) <= budget * costs.full
        assert active.any()
        # Inactive components get exactly zero updates.
        zero = np.asarray(part.sq_norms(updates)) == 0
        assert (zero | active).all() and not zero[active].all()
        masks.append(active)
    assert len(traces) == 1 and jstep._cache_size() == 1
    assert len({m.tobytes() for m in masks}) > 1


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("budget", [0, 0.0, -0.1, 1.5, math.nan, True, "0.5", None])
def test_budget_out_of_range(budget):
    _, _, costs = _toy()
    with pytest.raises(ValueError, match=r"budget=.*\(0, 1\]"):
        budget_threshold(costs, budget)


def test_budget_below_minimum_names_it():
    _, _, costs = _toy()
    lo = costs.fixed / costs.full
    with pytest.raises(ValueError, match=rf"budget=0\.01.*minimum budget is fixed/full = "
                                         rf"{lo:.6g}"):
        budget_threshold(costs, 0.01)
    with pytest.raises(ValueError, match=r"budget=0\.01.*minimum budget"):
        budget_threshold_exact(costs, 0.01, np.ones(costs.num_components))


def test_residuals_shape_and_exact_size_errors():
    _, part, costs = _toy()
    with pytest.raises(ValueError, match=rf"shape \(3,\).*C={len(part)}"):
        budget_threshold(costs, 0.9)(jnp.ones(3))
    big = ComponentCosts(dw=np.ones(17), layer=np.zeros(17, int), dx=[1.0], fixed=1.0)
    with pytest.raises(ValueError, match=r"C=17.*C <= 16"):
        budget_threshold_exact(big, 1.0, np.ones(17))
    with pytest.raises(TypeError, match="ComponentCosts"):
        budget_threshold(object(), 0.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dw=[1.0, -1.0], layer=np.array([0, 0]), dx=[1.0], fixed=1.0), r"dw\[1\]=-1\.0"),
    (dict(dw=[1.0, np.nan], layer=np.array([0, 0]), dx=[1.0], fixed=1.0), r"dw\[1\]=nan"),
    (dict(dw=[], layer=np.array([], int), dx=[1.0], fixed=1.0), "non-empty"),
    (dict(dw=[1.0], layer=np.array([2]), dx=[1.0], fixed=1.0), r"layer\[0\]=2.*\[-1, L=1\]"),
    (dict(dw=[1.0], layer=np.array([0.5]), dx=[1.0], fixed=1.0), "int array"),
    (dict(dw=[1.0, 2.0], layer=np.array([0]), dx=[1.0], fixed=1.0), r"shape \(2,\)"),
    (dict(dw=[1.0], layer=np.array([0]), dx=[[1.0]], fixed=1.0), "dx must be 1-D"),
    (dict(dw=[1.0], layer=np.array([0]), dx=[-2.0], fixed=1.0), r"dx\[0\]=-2\.0"),
    (dict(dw=[1.0], layer=np.array([0]), dx=[1.0], fixed=-1.0), "fixed=-1.0"),
    (dict(dw=[1.0], layer=np.array([0]), dx=[1.0], fixed=1.0, forward=2.0),
     r"forward=2\.0.*\[0, fixed=1\.0\]"),
])
def test_component_costs_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ComponentCosts(**kwargs)


def test_component_costs_are_read_only():
    c = ComponentCosts(dw=[1.0], layer=np.array([0]), dx=[1.0], fixed=1.0)
    with pytest.raises(ValueError):
        c.dw[0] = 5.0
    with pytest.raises(AttributeError):
        c.fixed = 3.0


def test_analytic_costs_errors():
    part, _ = minilm()
    with pytest.raises(ValueError, match=r"tokens=0; must be an int >= 1"):
        analytic_costs(part, **{**MINILM_SHAPE, "tokens": 0})
    with pytest.raises(ValueError, match=r"hidden=384 is not divisible by num_heads=5"):
        analytic_costs(part, **{**MINILM_SHAPE, "num_heads": 5})
    with pytest.raises(ValueError, match=r"leaf .encoder/layers/4/.* is in layer 4 but "
                                         r"num_layers=4; .*\[0, 3\]"):
        analytic_costs(part, **{**MINILM_SHAPE, "num_layers": 4})
    with pytest.raises(ValueError, match=r"head_rows=-1"):
        analytic_costs(part, **MINILM_SHAPE, head_rows=-1)
    with pytest.raises(TypeError, match="Partition"):
        analytic_costs(rgft.components.bert(12), **MINILM_SHAPE)


def test_calibrate_errors():
    _, costs = minilm()
    with pytest.raises(ValueError, match=r"forward_flops=136000000000\.0 must be < full_flops"):
        calibrate(costs, full_flops=46e9, forward_flops=136e9)
    with pytest.raises(ValueError, match=r"full_flops=-1\.0; must be a finite number > 0"):
        calibrate(costs, full_flops=-1.0, forward_flops=1.0)
    with pytest.raises(ValueError, match=r"forward_flops=inf"):
        calibrate(costs, full_flops=1.0, forward_flops=math.inf)
    frozen = ComponentCosts(dw=[0.0], layer=np.array([0]), dx=[0.0], fixed=1.0)
    with pytest.raises(ValueError, match="no backward FLOPs"):
        calibrate(frozen, full_flops=2.0, forward_flops=1.0)
