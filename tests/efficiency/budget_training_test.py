"""Budgeted RGFT in the training loop: sparse steps stay within the FLOPs budget (XLA's count)."""

import numpy as np
import pytest
from flax import nnx

from rgft_jax.components import Partition, Rule
from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification
from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training._patterns import sparse_pattern

CFG = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=256)


def _batches(seed=0):
    rng = np.random.default_rng(seed)
    while True:
        ids = rng.integers(1, 100, size=(8, 16)).astype(np.int32)
        yield {"input_ids": ids, "attention_mask": np.ones_like(ids),
               "token_type_ids": np.zeros_like(ids), "label": (ids[:, 0] % 3).astype(np.int32)}


@pytest.mark.parametrize("budget", [0.5])
def test_sparse_steps_within_budget_by_xla_count(budget):
    model = BertForSequenceClassification(CFG, 3, rngs=nnx.Rngs(0))
    tr = Trainer(model, methods.rgft(budget=budget, update_every=3, learning_rate=1e-3),
                 TrainConfig(steps=6, progress=False), num_heads=4, num_layers=4, num_classes=3,
                 batch_shape=(8, 16))
    tr.fit(_batches())
    full = max(tr.accounting.flops_by_pattern.values())
    sparse = [f for (_, observe, _), f in tr.accounting.flops_by_pattern.items() if not observe]
    assert sparse, "no sparse step ran"
    # The cost model is analytic; XLA's count also holds the optimizer and the loss. Allow 5%.
    assert max(sparse) <= (budget + 0.05) * full, (max(sparse) / full, budget)
    assert tr.summary()["gflops_per_step"] < full / 1e9


def test_budget_needs_batch_shape():
    model = BertForSequenceClassification(CFG, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"batch_shape=\(batch, seq_len\)"):
        Trainer(model, methods.rgft(threshold=("budget", 0.5)), TrainConfig(steps=2),
                num_heads=4, num_layers=4, num_classes=3)
    with pytest.raises(ValueError, match=r"budget=1.5"):
        methods.rgft(threshold=("budget", 1.5))


def test_sparse_pattern_rounds_active_groups_up_to_quarter_levels():
    tree = {"layers": [{"attention": {"query": {"kernel": np.zeros((8, 12, 2))}},
                        "w": np.zeros((3,))}]}
    part = Partition.build(tree, [Rule("query/kernel$", kind="head", axis=1, groups=12)])
    heads = [c.index for c in part.components if c.kind == "head"]
    mask = np.zeros(len(part))
    for k, want in [(0, False), (1, 3), (3, 3), (4, 6), (9, 9), (10, True), (12, True)]:
        mask[:] = 0
        mask[heads[:k]] = 1
        pattern = sparse_pattern(part, mask)
        leaf = [s.path for s in part.leaves].index("layers/0/attention/query/kernel")
        assert pattern[leaf] == want, (k, pattern[leaf])
