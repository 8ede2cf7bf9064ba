"""Every method on a tiny random Llama (GQA, tied head) through the one loop.

Each method trains a few steps on causal-LM rows (``targets``, ``loss_mask``,
``segment_ids``); the loss falls, and what the method does not train stays bit-identical.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgft_jax._src import residual
from rgft_jax.data import eval_batches
from rgft_jax.models.llama import LlamaConfig, LlamaForCausalLM
from rgft_jax.training import TrainConfig, Trainer, methods
from rgft_jax.training import _components as parts
from rgft_jax.training._step import forward, loss_and_stats

CFG = LlamaConfig.tiny()  # 2 layers, width 32, 4 query / 2 KV heads, vocab 99, tied
B, T = 4, 16
LORA_ALL = ("attention/query$", "attention/key$", "attention/value$", "attention/out$",
            "mlp/gate$", "mlp/up$", "mlp/down$")


def _model(seed=0, dtype=jnp.float32):
    return LlamaForCausalLM(CFG, param_dtype=dtype, rngs=nnx.Rngs(seed))


def _rows(n, seed=0, packed=True):
    """Rows of two packed documents each (or one padded one) with a learnable pattern."""
    rng = np.random.default_rng(seed)
    out = {k: np.zeros((n, T), np.int32) for k in ("input_ids", "targets", "loss_mask",
                                                    "segment_ids")}
    for r in range(n):
        lengths = (9, 7) if packed else (int(rng.integers(8, T + 1)),)
        t = 0
        for s, length in enumerate(lengths, start=1):
            start = int(rng.integers(1, CFG.vocab_size - 20))
            doc = (start + np.arange(length + 1)) % CFG.vocab_size  # counting: learnable
            out["input_ids"][r, t:t + length] = doc[:-1]
            out["targets"][r, t:t + length] = doc[1:]
            out["loss_mask"][r, t:t + length] = 1
            out["segment_ids"][r, t:t + length] = s
            t += length
    return out


def _train(method, steps=4, task="lm", **config):
    trainer = Trainer(_model(), method, TrainConfig(steps=steps, task=task, progress=False,
                                                    log_every=1, **config),
                      num_heads=CFG.num_attention_heads, num_layers=CFG.num_hidden_layers,
                      num_classes=3 if task == "instruct" else None, batch_shape=(B, T))
    params0 = jax.tree.map(np.asarray, trainer.state.params)
    batch = _rows(B)
    losses = [trainer.train_step(batch)["loss"] for _ in range(steps)]
    return trainer, params0, losses


def _flat(tree):
    from rgft_jax.components import key_path_to_str

    return {key_path_to_str(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


METHODS = {
    "full": (methods.full(learning_rate=1e-2), None),
    "lora": (methods.lora(rank=4, targets=LORA_ALL, learning_rate=3e-2), r"/lora_[ab]$"),
    "bitfit": (methods.bitfit(learning_rate=5e-2), r"norm/scale$"),
    "top_layers": (methods.top_layers(k=1, learning_rate=1e-2), r"^layers/1/|^final_norm/"),
    "layers": (methods.layers((0,), learning_rate=1e-2), r"^layers/0/|^final_norm/"),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_dense_methods_train_and_keep_the_rest_bit_identical(name):
    method, trained = METHODS[name]
    trainer, params0, losses = _train(method)
    assert all(math.isfinite(x) for x in losses)
    # Norm scales alone move a random model's loss little in 3 steps (step 1 has LR 0).
    assert losses[-1] < losses[0] - (0.005 if name == "bitfit" else 0.05), losses
    after = _flat(trainer.state.params)
    before = _flat(params0)
    if name == "lora":  # the adapters train, every base weight stays
        assert any(k.endswith("lora_a") for k in after)
        assert {k.rsplit("/", 2)[-2] for k in after if "lora" in k} >= {
            "query", "key", "value", "out", "gate", "up", "down"}
    import re

    for path, x in after.items():
        if trained is None:
            continue
        if re.search(trained, path):
            continue
        np.testing.assert_array_equal(x, before[path], err_msg=path)
    if trained is not None:
        assert any(not np.array_equal(x, before[p]) for p, x in after.items()
                   if re.search(trained, p))


def test_gqa_heads_preset_splits_query_and_kv_heads():
    params = nnx.to_pure_dict(nnx.state(_model(), nnx.Param))
    rules = parts.component_rules("heads", "component", CFG.num_attention_heads, params)
    from rgft_jax.components import Partition

    part = Partition.build(params, rules)
    kinds = {}
    for c in part.components:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    assert kinds["head"] == CFG.num_hidden_layers * CFG.num_attention_heads
    assert kinds["kv_head"] == CFG.num_hidden_layers * CFG.num_kv_heads
    assert parts.kv_heads(params) == CFG.num_kv_heads
    assert parts.output_head(params) == parts.TIED_HEAD_REGEX


@pytest.mark.parametrize("capacity", [None, 0.5])
def test_budgeted_rgft_sparse_steps_freeze_inactive_components(capacity):
    """Budgeted RGFT (heads + KV heads + neuron groups): after the first refresh, inactive
    components do not move (moment freeze), with dense or compact optimizer state."""
    method = methods.rgft(learning_rate=1e-2, budget=0.8, warmup_steps=1, update_every=100,
                          capacity=capacity)
    trainer = Trainer(_model(), method, TrainConfig(steps=5, task="lm", progress=False,
                                                    log_every=1),
                      num_heads=CFG.num_attention_heads, num_layers=CFG.num_hidden_layers,
                      batch_shape=(B, T))
    batch = _rows(B)
    losses = [trainer.train_step(batch)["loss"]]
    after_probe = jax.tree.map(np.asarray, trainer.state.params)
    losses += [trainer.train_step(batch)["loss"] for _ in range(4)]
    assert losses[-1] < losses[0] - 0.05, losses
    mask = np.asarray(residual.error_map(trainer.state.opt_state).mask) > 0
    assert 0 < mask.sum() < len(mask)
    part = trainer.partition
    moved = np.asarray(part.reduce(jax.tree.map(lambda a, b: jnp.abs(a - b), trainer.state.params,
                                                after_probe), lambda x: x))
    assert np.all(moved[~mask] == 0)
    assert np.any(moved[mask] > 0)
    # Sparse steps really ran: some compiled step differentiated less than everything.
    assert len(trainer.accounting.flops_by_pattern) >= 2


def test_dsca_blocks_on_llama():
    trainer = Trainer(_model(), methods.full(learning_rate=1e-2),
                      TrainConfig(steps=2, task="lm", progress=False, log_every=1),
                      num_heads=CFG.num_attention_heads, num_layers=CFG.num_hidden_layers,
                      dsca={"num_modules": 3}, batch_shape=(B, T))
    batch = _rows(B)
    for _ in range(2):
        trainer.train_step(batch)
    assert len(trainer.module_history) == 2
    assert len(trainer.module_history[-1]["labels"]) == len(trainer.dsca_partition)


def test_packed_rows_score_like_documents_alone():
    """The step's forward on packed rows gives each document the NLL it has alone."""
    model = _model()
    packed = _rows(2)
    loss, stats = loss_and_stats(forward(model, packed, "lm", True, None), packed, "lm")
    total = 0.0
    for r in range(2):
        for s in (1, 2):
            sel = packed["segment_ids"][r] == s
            alone = {k: v[r][sel][None] for k, v in packed.items()}
            alone["segment_ids"] = np.ones_like(alone["segment_ids"])
            _, st = loss_and_stats(forward(model, alone, "lm", True, None), alone, "lm")
            total += float(st["nll_sum"])
    assert float(stats["nll_sum"]) == pytest.approx(total, rel=1e-5)
    assert float(stats["tokens"]) == packed["loss_mask"].sum()
    assert float(loss) == pytest.approx(total / packed["loss_mask"].sum(), rel=1e-5)


def test_loss_counts_only_masked_targets():
    model = _model()
    rows = _rows(2, packed=False)
    logits = forward(model, rows, "lm", True, None)
    _, base = loss_and_stats(logits, rows, "lm")
    changed = dict(rows, targets=np.where(rows["loss_mask"] > 0, rows["targets"], 5))
    _, same = loss_and_stats(logits, changed, "lm")
    assert float(same["nll_sum"]) == float(base["nll_sum"])
    assert float(base["tokens"]) == rows["loss_mask"].sum()


def test_perplexity_is_exact_over_padded_batches():
    trainer = Trainer(_model(), methods.full(learning_rate=1e-2),
                      TrainConfig(steps=2, task="lm", progress=False),
                      num_heads=CFG.num_attention_heads, num_layers=CFG.num_hidden_layers)
    rows = _rows(7, seed=3, packed=False)
    exs = [{k: v[i] for k, v in rows.items()} for i in range(7)]
    padded = trainer.evaluate(eval_batches(exs, batch_size=3))  # 3 + 3 + 1 (2 padding rows)
    whole = trainer.evaluate([rows])
    assert padded["tokens"] == whole["tokens"] == rows["loss_mask"].sum()
    assert padded["nll"] == pytest.approx(whole["nll"], rel=1e-6)
    assert padded["perplexity"] == pytest.approx(math.exp(whole["nll"]), rel=1e-6)


def test_instruct_task_scores_label_words():
    """``'instruct'``: trains on answer tokens; evaluates accuracy / macro-F1 by the label
    word with the highest log-likelihood."""
    trainer = Trainer(_model(), methods.full(learning_rate=1e-2),
                      TrainConfig(steps=2, task="instruct", progress=False),
                      num_heads=CFG.num_attention_heads, num_layers=CFG.num_hidden_layers,
                      num_classes=3)
    rng = np.random.default_rng(0)
    n, words = 5, (7, 8, 9)
    ch = {k: np.zeros((n, 3, T), np.int32) for k in ("input_ids", "targets", "loss_mask",
                                                     "segment_ids")}
    labels = rng.integers(0, 3, n).astype(np.int32)
    for i in range(n):
        prompt = rng.integers(10, 90, 6)
        for c, w in enumerate(words):
            ids = np.concatenate([prompt, [w]])
            ch["input_ids"][i, c, :6] = ids[:-1]
            ch["targets"][i, c, :6] = ids[1:]
            ch["loss_mask"][i, c, 5] = 1
            ch["segment_ids"][i, c, :6] = 1
    ch["label"] = labels
    exs = [{k: v[i] for k, v in ch.items()} for i in range(n)]
    out = trainer.evaluate(eval_batches(exs, batch_size=2))
    # The reference: the summed answer log-likelihood per choice, by hand.
    logits = trainer.model(ch["input_ids"].reshape(-1, T),
                           segment_ids=ch["segment_ids"].reshape(-1, T))
    logp = jax.nn.log_softmax(logits, -1)
    ll = np.take_along_axis(np.asarray(logp), ch["targets"].reshape(-1, T)[..., None], -1)[..., 0]
    ll = (ll * ch["loss_mask"].reshape(-1, T)).sum(-1).reshape(n, 3)
    pred = ll.argmax(-1)
    assert out["accuracy"] == pytest.approx(float(np.mean(pred == labels)))
    assert 0.0 <= out["macro_f1"] <= 1.0
    assert out["tokens"] == n  # the gold answer's one token per example
    assert out["nll"] == pytest.approx(-ll[np.arange(n), labels].mean(), rel=1e-4)


def test_bfloat16_compute_keeps_float32_masters():
    trainer = Trainer(_model(dtype=jnp.bfloat16), methods.full(learning_rate=1e-2),
                      TrainConfig(steps=3, task="lm", progress=False, log_every=1,
                                  compute_dtype="bfloat16"),
                      num_heads=CFG.num_attention_heads, num_layers=CFG.num_hidden_layers)
    assert {x.dtype for x in jax.tree.leaves(trainer.state.params)} == {jnp.dtype(jnp.float32)}
    batch = _rows(B)
    losses = [trainer.train_step(batch)["loss"] for _ in range(3)]
    assert losses[-1] < losses[0]
    assert {x.dtype for x in jax.tree.leaves(trainer.state.params)} == {jnp.dtype(jnp.float32)}
    mu = [x for x in jax.tree.leaves(trainer.state.opt_state) if x.ndim > 0]
    assert mu and all(x.dtype == jnp.float32 for x in mu)
    ppl = trainer.evaluate([batch])["perplexity"]
    assert math.isfinite(ppl)
