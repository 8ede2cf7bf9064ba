"""Every method kind trains 2 steps on a tiny BERT; a tiny GPT-2 trains and evaluates as an LM."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from rgft_jax.data import eval_batches
from rgft_jax.models.gpt2.modeling import GPT2Config, GPT2LMHeadModel
from rgft_jax.training import TrainConfig, Trainer, methods

#: The method kinds that need nothing beyond a model (``modules`` needs a component mask).
KINDS = ("full", "rgft", "rgft_chain", "lora", "bitfit", "random_mask", "magnitude_mask",
         "top_layers")


def test_kinds_exist():
    assert set(KINDS) <= set(methods.names())


@pytest.mark.parametrize("kind", KINDS)
def test_two_step_smoke_run(kind, smoke_runs):
    run = smoke_runs(kind)
    trainer = run.trainer
    assert int(trainer.state.step) == 2
    train_points = [h for h in run.history if "loss" in h]
    assert [h["step"] for h in train_points] == [1, 2]
    for h in train_points:
        assert math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]), h
        assert 0.0 <= h["accuracy"] <= 1.0
    assert run.history[-1] == {"final_eval": {}}
    for leaf in jax.tree.leaves(trainer.state.params):
        assert np.all(np.isfinite(np.asarray(leaf)))

    s = trainer.summary()
    assert s["kind"] == kind and s["steps"] == 2
    assert s["gflops_per_step"] > 0
    assert s["gflops_per_step"] <= s["gflops_max_step"] * (1 + 1e-9)
    assert s["compilations"] >= 1
    assert s["compilations"] == len(trainer.accounting.flops_by_pattern)  # no evictions
    assert 0.0 < s["update_ratio"] <= 1.0
    assert s["total_params"] > 0 and s["opt_state_bytes"] > 0
    assert sum(trainer.accounting.pattern_steps.values()) == 2
    # The run moved something (step 0 has LR 0 under warm-up; step 1 has the peak LR).
    moved = [not np.array_equal(a, np.asarray(b)) for a, b in zip(
        jax.tree.leaves(run.params0), jax.tree.leaves(trainer.state.params))]
    assert any(moved)


GPT2 = GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=4, n_inner=64)


def _lm_examples(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(1, GPT2.vocab_size, size=8).astype(np.int32)
        mask = np.ones(8, np.int32)
        mask[rng.integers(5, 9):] = 0  # some right padding inside rows
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def test_lm_smoke_run_and_perplexity():
    trainer = Trainer(GPT2LMHeadModel(GPT2, rngs=nnx.Rngs(0)), methods.full(learning_rate=1e-2),
                      TrainConfig(steps=2, task="lm", progress=False, log_every=1),
                      num_heads=4, num_layers=1)
    exs = _lm_examples(16, 0)
    train = [{k: np.stack([e[k] for e in exs[i:i + 8]]) for k in exs[0]} for i in (0, 8)]
    history = trainer.fit(iter(train))
    assert int(trainer.state.step) == 2
    assert all(math.isfinite(h["loss"]) for h in history if "loss" in h)
    assert "accuracy" not in history[0]
    assert trainer.summary()["gflops_per_step"] > 0

    # 11 held-out sequences in batches of 8: the last batch has 5 padding rows (valid=False).
    held_out = _lm_examples(11, 1)
    padded = trainer.evaluate(eval_batches(held_out, batch_size=8))
    assert math.isfinite(padded["perplexity"]) and padded["perplexity"] > 1.0
    assert padded["perplexity"] == pytest.approx(math.exp(padded["nll"]))
    # Tokens that are predicted: positions 1.. of each row where the mask is 1.
    assert padded["tokens"] == sum(int(e["attention_mask"][1:].sum()) for e in held_out)
    # The same examples unpadded, in one batch: the same corpus NLL.
    whole = trainer.evaluate([{k: np.stack([e[k] for e in held_out]) for k in held_out[0]}])
    assert whole["tokens"] == padded["tokens"]
    assert whole["nll"] == pytest.approx(padded["nll"], rel=1e-5)
