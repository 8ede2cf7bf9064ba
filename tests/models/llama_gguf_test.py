# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""GGUF loading on tiny files written with the ``gguf`` package like llama.cpp's converter.

A random HF ``LlamaForCausalLM`` is written as GGUF with the converter's q/k permutation
(``permute`` in llama.cpp's ``convert_hf_to_gguf.py``), in float32 and with quantised
(Q8_0 / Q4_1) tensors. Our loader must undo the permutation: the float32 file must give
the PyTorch model's logits, the quantised file transformers' own GGUF reading of it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _llama_twins import transformers_gguf_twin

from rgft_jax.models import llama
from rgft_jax.models.llama import params as llama_params

gguf = pytest.importorskip("gguf")

HF_CONFIG = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=64,  # a multiple of 32: every matrix can be block-quantised
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_theta=500.0,
)
Q = gguf.GGMLQuantizationType


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: HF half-split rows -> interleaved rows per head."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf.split(".", 3)
    module = rest.rsplit(".", 1)[0]
    return f"blk.{i}.{_NAMES[module]}.weight"


def write_gguf(path: str, model, qtypes: dict[str, object] | None = None) -> None:
    """Writes ``model`` (HF torch Llama) as a llama.cpp-style GGUF file."""
    c = model.config
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = tensor.detach().numpy().astype(np.float32)
        if name.endswith("q_proj.weight"):
            data = _permute(data, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, c.num_key_value_heads)
        gname = _gguf_name(name)
        qtype = (qtypes or {}).get(gname.split(".", 2)[-1] if gname.startswith("blk") else gname)
        if qtype is None or data.ndim == 1:
            w.add_tensor(gname, data)
        else:
            w.add_tensor(gname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def hf_llama(request, tmp_path_factory, perturb):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    config = transformers.LlamaConfig(**HF_CONFIG, tie_word_embeddings=request.param)
    model = perturb(transformers.LlamaForCausalLM(config)).eval()
    model.set_attn_implementation("eager")
    path = tmp_path_factory.mktemp("gguf")
    model.save_pretrained(path / "hf", safe_serialization=True)
    return path, model


def _torch_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids).long()).logits.numpy()


IDS = np.random.default_rng(0).integers(0, 99, size=(2, 11)).astype(np.int32)


def test_f32_gguf_matches_torch_and_hf_loading(hf_llama, f32_matmul):
    path, model = hf_llama
    file = os.fspath(path / "f32.gguf")
    write_gguf(file, model)
    result = llama.load(file)
    assert result.model.config == llama.LlamaConfig.from_hf(path / "hf")
    assert ("lm_head/kernel" in result.loaded) != model.config.tie_word_embeddings
    np.testing.assert_allclose(
        np.asarray(llama.forward(result.model, IDS)), _torch_logits(model, IDS), rtol=0,
        atol=1e-5)
    # Same parameters as the safetensors route, leaf by leaf (the permutation is undone).
    hf = llama.load(path / "hf").model
    from flax import nnx

    for (p, a), (_, b) in zip(nnx.to_flat_state(nnx.state(result.model)),
                              nnx.to_flat_state(nnx.state(hf)), strict=True):
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(p))


def test_quantised_gguf_matches_transformers_gguf_reading(hf_llama, f32_matmul):
    path, model = hf_llama
    qtypes = {"attn_q.weight": Q.Q8_0, "attn_k.weight": Q.Q4_1, "attn_v.weight": Q.Q4_1,
              "attn_output.weight": Q.Q4_1, "ffn_gate.weight": Q.Q4_1, "ffn_up.weight": Q.Q4_1,
              "ffn_down.weight": Q.Q4_1, "token_embd.weight": Q.Q8_0, "output.weight": Q.Q8_0}
    file = os.fspath(path / "quant.gguf")
    write_gguf(file, model, qtypes)
    reader = gguf.GGUFReader(file)
    assert {t.tensor_type for t in reader.tensors} >= {Q.Q8_0, Q.Q4_1, Q.F32}
    ref = transformers_gguf_twin(file)
    got = np.asarray(llama.forward(llama.from_pretrained(file), IDS))
    np.testing.assert_allclose(got, _torch_logits(ref, IDS), rtol=0, atol=1e-5)
    # Quantisation moved the weights: the float32 model differs (the check is not vacuous).
    assert np.abs(got - _torch_logits(model, IDS)).max() > 1e-3


def test_gguf_rotary_undoes_llama_cpp_permutation():
    rng = np.random.default_rng(0)
    n, dh, d = 3, 8, 5
    hf = rng.normal(size=(n * dh, d)).astype(np.float32)
    (kernel,) = llama_params.GGUFRotary()(_permute(hf, n), [(d, n, dh)])
    np.testing.assert_array_equal(kernel, hf.T.reshape(d, n, dh))


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"general.architecture": "gemma"}, "general.architecture='gemma'"),
        ({"llama.rope.scaling.type": "linear"}, "llama.rope.scaling.type='linear'"),
        ({"llama.expert_count": 8}, "llama.expert_count=8"),
    ],
)
def test_unsupported_gguf_metadata_is_rejected(update, match):
    metadata = {"general.architecture": "llama", "llama.embedding_length": 32,
                "llama.feed_forward_length": 64, "llama.block_count": 2,
                "llama.attention.head_count": 4, "llama.vocab_size": 99, **update}
    with pytest.raises(ValueError, match=match):
        llama_params.config_from_gguf(metadata, [])


# --------------------------------------------------------------------------- tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. 1234 apples!",
    "@united my flight was delayed 3 hours :( #fail",
    "  spaces\tand\nnewlines  ",
    "naïve café 😀 <|endoftext|> after",
] * 5


@pytest.fixture(scope="module")
def trained_bpe(tmp_path_factory):
    """A byte-level BPE trained here, and the GGUF file that carries it as llama.cpp would."""
    import tokenizers

    ref = tokenizers.ByteLevelBPETokenizer()
    ref.train_from_iterator(TEXTS, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    vocab = ref.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = [m if isinstance(m, str) else " ".join(m)
              for m in json.loads(ref.to_str())["model"]["merges"]]
    path = os.fspath(tmp_path_factory.mktemp("tok") / "tok.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
    w.add_eos_token_id(vocab["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref, path


def test_tokenizer_from_gguf_matches_the_trained_tokenizer(trained_bpe):
    ref, path = trained_bpe
    tok = llama.load_tokenizer(path)
    assert tok.get_vocab_size() == ref.get_vocab_size()
    for text in TEXTS[:4] + ["unseen words: zebra 987"]:
        assert tok.encode(text).ids == ref.encode(text).ids, text
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
    special = tok.encode("a<|endoftext|>b").tokens
    assert "<|endoftext|>" in special  # a control token stays whole


def test_smollm_pre_tokenizer_splits_digits(trained_bpe):
    _, path = trained_bpe
    metadata, _ = llama_params.read_gguf(path, tensors=False)
    tok = llama.tokenizer_from_gguf({**metadata, "tokenizer.ggml.pre": "smollm"})
    assert [t for t in tok.encode("1234").tokens] == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="tokenizer.ggml.pre='qwen2'"):
        llama.tokenizer_from_gguf({**metadata, "tokenizer.ggml.pre": "qwen2"})


def test_load_names_what_it_accepts(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a .gguf file nor a HF model directory"):
        llama.load(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        llama.load_tokenizer(tmp_path)
