"""methods.searched: the searched configuration in the one loop, and the probes agree with it.

A probe of a single switch (masked updates on a full step) and the engine's run of that
configuration (fixed mask, sparse steps, adapters) are the same optimisation: AdamW is
element-wise and a hard-masked component neither moves nor decays. So the probe's accuracy
and loss equal the engine's on the same batches, seeds and schedule.
"""

import jax
import numpy as np
import pytest

from rgft_jax import search
from rgft_jax._src import components as comp_lib
from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training import _components as parts
from tests.training.conftest import BATCH, NUM_CLASSES, NUM_HEADS, batches, bert, host

STEPS, LR = 3, 1e-2
CANDS = ("off", "sparse", "lora2")


def _nodes(layers=2):
    params = _params(layers)
    part = comp_lib.Partition.build(params, _rules(params))
    return search.layer_nodes(part)


def _params(layers):
    from flax import nnx

    _, p, _ = nnx.split(bert(layers), nnx.Param, ...)
    return nnx.to_pure_dict(p)


def _rules(params):
    return parts.component_rules("heads", "component", NUM_HEADS, params)


def _trainer(choice, nodes, **kw):
    m = methods.searched(choice, nodes, candidates=CANDS, learning_rate=LR, **kw)
    return Trainer(bert(2), m, TrainConfig(steps=STEPS, progress=False, log_every=1),
                   num_heads=NUM_HEADS, num_layers=2, num_classes=NUM_CLASSES)


def test_registered_and_validated():
    nodes = _nodes()
    assert "searched" in methods.names()
    assert methods.get("searched")([1, 0], nodes, candidates=CANDS).describe() == (
        "layer 0: sparse, layer 1: off")
    with pytest.raises(ValueError, match="choice"):
        methods.searched([1], nodes, candidates=CANDS)
    with pytest.raises(ValueError, match="choice"):
        methods.searched([1, 3], nodes, candidates=CANDS)
    with pytest.raises(ValueError, match="'off'"):
        methods.searched([1, 0], nodes, candidates=("sparse", "off"))


@pytest.fixture(scope="module")
def probes():
    """All single switches of the 2-layer model, 2 repeats (repeat 0: the engine's seed)."""
    opt = methods.full(learning_rate=LR).base_optimizer(STEPS)
    return search.probe(lambda s: bert(2, seed=s), _nodes(), rules=_rules(_params(2)),
                        optimizer=opt, train_batches=lambda r: iter(DATA), eval_batches=EVALS,
                        steps=STEPS, repeats=2, candidates=CANDS)


DATA, EVALS = batches(STEPS, seed=4), batches(2, seed=9)


def _moved(p0, p1):
    flat = lambda p: {comp_lib.key_path_to_str(k): v
                      for k, v in jax.tree_util.tree_flatten_with_path(p)[0]}
    f0, f1 = flat(p0), flat(p1)
    return {k: not np.array_equal(v, f1[k]) for k, v in f0.items()}


# (1, 0): sparse layer 0; (2, 0): LoRA on layer 0; (1, 2): both kinds in one run. (A LoRA
# switch on layer 1 alone would draw its adapters' A first, while the probe model draws layer
# 0's first: same method, other initialisation, so only layer-0 switches are compared.)
@pytest.mark.parametrize("choice", [(1, 0), (2, 0), (1, 2)])
def test_engine_run_trains_the_choice_and_equals_its_probe(choice, probes):
    nodes = _nodes()
    tr = _trainer(choice, nodes)
    p0 = host(tr.state.params)
    tr.fit(iter(DATA))
    for path, moved in _moved(p0, host(tr.state.params)).items():
        layer = comp_lib.layer_of(path)[0]
        if path.startswith("classifier/") or "/lora_" in path:
            want = True  # the head, and adapters (they exist only on the LoRA nodes)
        elif layer >= 0:
            want = CANDS[choice[layer]] == "sparse"
        else:
            want = False  # embeddings: in no node
        assert moved == want, (path, choice)
    # Steps after the first (probe) step differentiate no leaf of an 'off' layer.
    pattern, probe = tr.next_pattern()
    assert not probe
    for b, s in zip(pattern, tr.partition.leaves):
        if any(CANDS[c] == "off" and f"layers/{i}/" in s.path for i, c in enumerate(choice)):
            assert b is False, s.path
    assert tr.summary()["update_ratio"] < 1.0

    assert probes.accuracy.shape == probes.loss.shape == (2, 2, 3)
    np.testing.assert_array_equal(probes.loss[:, :, 0], 0.0)
    on = [(i, c) for i, c in enumerate(choice) if c]
    if len(on) != 1:
        return  # a single switch only: the probes measure nothing else
    (node, cand), = on
    s_loss = s_correct = n = 0.0
    for b in EVALS:
        lo, co, c = search.classification_eval(tr.model, jax.tree.map(np.asarray, b))
        s_loss, s_correct, n = s_loss + float(lo), s_correct + float(co), n + float(c)
    assert n == 2 * BATCH
    np.testing.assert_allclose(probes.base_loss[0] + probes.loss[0, node, cand], s_loss / n,
                               rtol=1e-4)
    np.testing.assert_allclose(probes.base_accuracy[0] + probes.accuracy[0, node, cand],
                               s_correct / n, atol=1e-6)
    # First order: one gradient; the sparse and LoRA cells are estimated (loss decreases).
    assert np.all(probes.first_order_loss[:, 0] == 0)
    assert np.all(probes.first_order_loss[:, 1:] < 0)


def test_first_order_alone_equals_the_probes_estimate(probes):
    fo = search.first_order(lambda s: bert(2, seed=s), _nodes(), rules=_rules(_params(2)),
                            batches=DATA, candidates=CANDS, steps=STEPS, lr=1.0, seed=0)
    np.testing.assert_allclose(fo.loss, probes.first_order_loss, rtol=1e-6)
    assert fo.loss.shape == (2, 3) and fo.nodes == _nodes() and fo.candidates == CANDS
    # One model (the LoRA-2 one also gives the sparse cells), one gradient per batch.
    assert fo.flops > 0 and fo.seconds > 0
    with pytest.raises(ValueError, match="batches is empty"):
        search.first_order(lambda s: bert(2, seed=s), _nodes(), rules=_rules(_params(2)),
                           batches=[], candidates=CANDS)
    with pytest.raises(ValueError, match="lr=0"):
        search.first_order(lambda s: bert(2, seed=s), _nodes(), rules=_rules(_params(2)),
                           batches=DATA, candidates=CANDS, lr=0)


def test_first_order_carries_the_partition_and_shapes_of_its_adapted_model():
    """What node_costs and the cost model read: the probed model carrying the largest LoRA
    rank's adapters on every node's matrices (no need to build it again)."""
    from flax import nnx

    from rgft_jax.adapters import add_lora

    nodes = _nodes(3)
    cands = ("off", "sparse", "lora2", "lora4")
    fo = search.first_order(lambda s: bert(3, seed=s), nodes, rules=_rules(_params(3)),
                            batches=DATA, candidates=cands)
    model = bert(3)
    add_lora(model, targets=search._space.anchored([m for n in nodes for m in n.matrices]),
             rank=4, alpha=8.0)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert fo.lora_rank == 4
    assert [c.name for c in fo.partition.components] == [
        c.name for c in comp_lib.Partition.build(params, _rules(params)).components]
    assert jax.tree.map(lambda x: (x.shape, x.dtype), fo.params) == jax.tree.map(
        lambda x: (x.shape, x.dtype), params)
    expect = parts.costs_for(comp_lib.Partition.build(params, _rules(params)), params,
                             NUM_HEADS, 3, (BATCH, 8), "test")
    got = parts.costs_for(fo.partition, fo.params, NUM_HEADS, 3, (BATCH, 8), "test")
    np.testing.assert_array_equal(got.dw, expect.dw)
    plain = search.first_order(lambda s: bert(3, seed=s), nodes, rules=_rules(_params(3)),
                               batches=DATA, candidates=("off", "sparse"))
    assert plain.lora_rank is None and len(plain.partition) == len(
        comp_lib.Partition.build(_params(3), _rules(_params(3))))


def test_node_costs_match_the_component_cost_model():
    """A sparse choice's step cost is the cost model's for the mask of its layers' blocks;
    a LoRA choice costs its adapters' weight gradients and the backward from its layer."""
    from rgft_jax.adapters import add_lora

    nodes = _nodes(3)
    model = bert(3)
    add_lora(model, targets=search._space.anchored([m for n in nodes for m in n.matrices]),
             rank=4, alpha=8.0)
    from flax import nnx

    _, p, _ = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(p)
    part = comp_lib.Partition.build(params, _rules(params))
    costs = parts.costs_for(part, params, NUM_HEADS, 3, (BATCH, 8), "test")
    cands = ("off", "sparse", "lora2", "lora4")
    nc = search.node_costs(part, costs, nodes, cands, lora_rank=4)
    assert nc.dw.shape == nc.lowest.shape == (3, 4) and nc.tail.shape == (4,)
    np.testing.assert_array_equal(nc.lowest[:, 0], 3)
    np.testing.assert_array_equal(nc.lowest[:, 1], [0, 1, 2])
    for choice in [(0, 1, 1), (0, 0, 1), (1, 0, 0), (0, 0, 0)]:
        mask = np.zeros(len(part), bool)
        for node, c in zip(nodes, choice):
            if c:
                mask[search._space.component_indices(part, node.components, "t")] = True
        np.testing.assert_allclose(nc.step_cost(choice), costs.step_cost(mask), rtol=1e-12)
    lora = np.zeros(len(part), bool)
    lora[search._space.lora_component_indices(part, nodes[1].matrices)] = True
    np.testing.assert_allclose(nc.step_cost((0, 3, 0)), costs.step_cost(lora), rtol=1e-12)
    np.testing.assert_allclose(nc.dw[1, 2], nc.dw[1, 3] / 2)  # rank 2 = half of rank 4
    with pytest.raises(ValueError, match="lora_rank=None"):
        search.node_costs(part, costs, nodes, cands)
