# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Llama weights from a HF safetensors directory or a GGUF file -> NNX parameter paths.

Both formats go through the one rule-table loader (:func:`~rgft_jax.models.load_checkpoint`):

* **HF** (``config.json`` + ``model.safetensors``): ``model.layers.{i}.self_attn.q_proj.weight``
  ``[H*Dh, D]`` etc., PyTorch ``Linear`` layout, transposed and reshaped to the head axes.
* **GGUF** (llama.cpp; e.g. SmolLM2-135M-Instruct in Q4_1/Q8_0): every tensor is dequantised
  to float32 with the ``gguf`` package (``gguf.quants.dequantize``; the result is ``[out, in]``
  like PyTorch). llama.cpp's converter stores the query/key rows of every head permuted for
  its interleaved rotary layout (per head ``[2, Dh/2] -> [Dh/2, 2]``); :class:`GGUFRotary`
  undoes that, so the half-split rotary of :mod:`modeling` (and of HF) applies. The config
  comes from the ``llama.*`` metadata, and tied embeddings are detected by the absence of
  ``output.weight``.

Fine-tuning a dequantised 4-bit checkpoint is legitimate (QLoRA-style pipelines start there),
but the weights are the quantised ones, not the original bfloat16 release.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rgft_jax.models import _hf_config
from rgft_jax.models._loading import (
    LoadResult,
    Rule,
    Shape,
    ShardingSpec,
    TorchLinear,
    Unflatten,
    load_checkpoint,
    log_loaded,
)
from rgft_jax.models.llama.modeling import LlamaConfig, LlamaForCausalLM

__all__ = [
    "GGUFRotary",
    "config_from_gguf",
    "from_pretrained",
    "gguf_rules",
    "hf_rules",
    "load",
    "load_tokenizer",
    "read_gguf",
]

_P = r"(?:model\.)?"
_L = _P + r"layers\.(\d+)\."

#: HF checkpoint keys that are not parameters (rotary buffers of old checkpoints).
HF_IGNORED: tuple[str, ...] = (_L + r"self_attn\.rotary_emb\.inv_freq",)


def hf_rules(config: LlamaConfig) -> list[Rule]:
    """The HF ``LlamaForCausalLM`` rule table (``model.`` prefix optional)."""
    layer, attn = "layers/{0}/", "layers/{0}/attention/"
    rules = [
        Rule(_P + r"embed_tokens\.weight", "embeddings/word/embedding"),
        Rule(_L + r"input_layernorm\.weight", layer + "attention_norm/scale"),
        Rule(_L + r"post_attention_layernorm\.weight", layer + "mlp_norm/scale"),
        Rule(_L + r"self_attn\.o_proj\.weight", attn + "out/kernel", TorchLinear(in_ndim=2)),
        Rule(_L + r"self_attn\.o_proj\.bias", attn + "out/bias"),
        Rule(_L + r"mlp\.(gate|up|down)_proj\.weight", layer + "mlp/{1}/kernel", TorchLinear()),
        Rule(_L + r"mlp\.(gate|up|down)_proj\.bias", layer + "mlp/{1}/bias"),
        Rule(_P + r"norm\.weight", "final_norm/scale"),
    ]
    for letter, name in (("q", "query"), ("k", "key"), ("v", "value")):
        rules += [
            Rule(_L + rf"self_attn\.{letter}_proj\.weight", attn + f"{name}/kernel",
                 TorchLinear()),
            Rule(_L + rf"self_attn\.{letter}_proj\.bias", attn + f"{name}/bias", Unflatten()),
        ]
    if not config.tie_word_embeddings:
        rules.append(Rule(r"lm_head\.weight", "lm_head/kernel", TorchLinear()))
    return rules


# --------------------------------------------------------------------------- GGUF


@dataclasses.dataclass(frozen=True)
class GGUFRotary:
    """A GGUF (llama.cpp) query/key weight ``[N*Dh, D]`` to a kernel ``[D, N, Dh]``.

    llama.cpp's converter permutes each head's rows from HF's half-split rotary layout
    ``[2, Dh/2]`` to the interleaved ``[Dh/2, 2]``; this undoes it, then transposes like
    :class:`~rgft_jax.models._loading.TorchLinear`. ``N`` and ``Dh`` come from the target.
    """

    def source_shape(self, targets: Sequence[Shape]) -> Shape:
        (d, n, dh), = targets
        return (n * dh, d)

    def __call__(self, x: np.ndarray, targets: Sequence[Shape]) -> list[np.ndarray]:
        (d, n, dh), = targets
        hf = x.reshape(n, dh // 2, 2, d).swapaxes(1, 2).reshape(n * dh, d)
        return [hf.T.reshape(d, n, dh)]


def gguf_rules(config: LlamaConfig) -> list[Rule]:
    """The GGUF (llama.cpp ``llama`` architecture) rule table."""
    layer, attn = "layers/{0}/", "layers/{0}/attention/"
    b = r"blk\.(\d+)\."
    rules = [
        Rule(r"token_embd\.weight", "embeddings/word/embedding"),
        Rule(b + r"attn_norm\.weight", layer + "attention_norm/scale"),
        Rule(b + r"ffn_norm\.weight", layer + "mlp_norm/scale"),
        Rule(b + r"attn_q\.weight", attn + "query/kernel", GGUFRotary()),
        Rule(b + r"attn_k\.weight", attn + "key/kernel", GGUFRotary()),
        Rule(b + r"attn_v\.weight", attn + "value/kernel", TorchLinear()),
        Rule(b + r"attn_output\.weight", attn + "out/kernel", TorchLinear(in_ndim=2)),
        Rule(b + r"ffn_gate\.weight", layer + "mlp/gate/kernel", TorchLinear()),
        Rule(b + r"ffn_up\.weight", layer + "mlp/up/kernel", TorchLinear()),
        Rule(b + r"ffn_down\.weight", layer + "mlp/down/kernel", TorchLinear()),
        Rule(r"output_norm\.weight", "final_norm/scale"),
    ]
    if not config.tie_word_embeddings:
        rules.append(Rule(r"output\.weight", "lm_head/kernel", TorchLinear()))
    return rules


#: GGUF tensors that are not parameters of the model (precomputed rotary tables).
GGUF_IGNORED: tuple[str, ...] = (r"rope_freqs\.weight", r"rope_factors_(?:long|short)\.weight")


def _field_value(field: Any) -> Any:
    value = field.contents()
    return value.tolist() if isinstance(value, np.ndarray) else value


def read_gguf(
    path: str | os.PathLike[str], *, tensors: bool = True
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads a GGUF file: metadata and (optionally) every tensor dequantised to float32.

    Args:
        path: the ``.gguf`` file.
        tensors: also dequantise the tensors (``False``: metadata only).

    Returns:
        ``(metadata, tensors)``: metadata key -> Python value (strings, numbers, lists);
        tensor name -> float32 array in PyTorch layout (``[out, in]`` for matrices).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
    """
    import gguf  # Lazy: only needed for GGUF files.

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    reader = gguf.GGUFReader(path)
    metadata = {
        k: _field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")
    }
    out: dict[str, np.ndarray] = {}
    if tensors:
        for t in reader.tensors:
            # `t.shape` is innermost-first (ggml order); the dequantised array is row-major.
            arr = gguf.quants.dequantize(t.data, t.tensor_type)
            out[t.name] = np.asarray(arr, np.float32).reshape(tuple(reversed(t.shape.tolist())))
    return metadata, out


def _decimal(value: float) -> float:
    # GGUF stores these as float32: 1e-5 reads back as 9.99999974e-06. The shortest decimal
    # that rounds to the same float32 is the value the converter was given.
    return float(repr(np.float32(value)).removeprefix("np.float32(").removesuffix(")"))


def config_from_gguf(metadata: Mapping[str, Any], tensor_names: Sequence[str]) -> LlamaConfig:
    """Builds the :class:`LlamaConfig` from GGUF ``llama.*`` metadata.

    Args:
        metadata: as returned by :func:`read_gguf`.
        tensor_names: the file's tensor names (``output.weight`` absent = tied embeddings).

    Returns:
        The config.

    Raises:
        ValueError: for another architecture, rotary scaling, mixture-of-experts, or a
            missing required key, naming the key, the value and what is allowed.
    """
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF general.architecture={arch!r} is not supported; allowed: 'llama'")
    scaling = metadata.get("llama.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise ValueError(f"GGUF llama.rope.scaling.type={scaling!r} is not supported; "
                         "allowed: 'none'")
    experts = metadata.get("llama.expert_count", 0)
    if experts:
        raise ValueError(f"GGUF llama.expert_count={experts!r} is not supported; allowed: 0")
    required = ("llama.embedding_length", "llama.feed_forward_length", "llama.block_count",
                "llama.attention.head_count")
    missing = [k for k in required if k not in metadata]
    if missing:
        raise ValueError(f"GGUF metadata lacks {missing}")
    heads = int(metadata["llama.attention.head_count"])
    hidden = int(metadata["llama.embedding_length"])
    head_dim = metadata.get(
        "llama.attention.key_length", metadata.get("llama.rope.dimension_count"))
    vocab = metadata.get("llama.vocab_size")
    if vocab is None:
        vocab = len(metadata["tokenizer.ggml.tokens"])
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(metadata["llama.feed_forward_length"]),
        num_hidden_layers=int(metadata["llama.block_count"]),
        num_attention_heads=heads,
        num_key_value_heads=int(metadata.get("llama.attention.head_count_kv", heads)),
        head_dim=None if head_dim is None else int(head_dim),
        max_position_embeddings=int(metadata.get("llama.context_length", 2048)),
        rms_norm_eps=_decimal(metadata.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=_decimal(metadata.get("llama.rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in tensor_names,
    )


# --------------------------------------------------------------------------- entry points


def _is_gguf(path: str) -> bool:
    return os.path.isfile(path) and path.endswith(".gguf")


def load(
    path: str | os.PathLike[str],
    *,
    param_dtype: jnp.dtype = jnp.float32,
    shardings: ShardingSpec = None,
) -> LoadResult[LlamaForCausalLM]:
    """Loads a :class:`LlamaForCausalLM` from a HF directory or a GGUF file.

    Args:
        path: a directory with ``config.json`` and safetensors weights, or a ``.gguf`` file.
        param_dtype: ``float32`` or ``bfloat16`` parameters (and activations).
        shardings: optional target shardings, see
            :func:`~rgft_jax.models._loading.load_checkpoint`.

    Returns:
        The load result (``cast`` lists the dtype conversions, e.g. to bfloat16).

    Raises:
        FileNotFoundError: if ``path`` is neither a ``.gguf`` file nor a directory.
    """
    path = os.fspath(path)
    if _is_gguf(path):
        metadata, tensors = read_gguf(path)
        config = config_from_gguf(metadata, list(tensors))
        rules, ignore, source = gguf_rules(config), GGUF_IGNORED, tensors
    elif os.path.isdir(path):
        config = LlamaConfig.from_hf(path)
        rules, ignore = hf_rules(config), HF_IGNORED
        source = _hf_config.checkpoint_files(path)
        if config.tie_word_embeddings:
            ignore = ignore + (r"lm_head\.weight",)  # a copy of the embedding, if saved
    else:
        raise FileNotFoundError(
            f"path={path!r} is neither a .gguf file nor a HF model directory")
    abstract = nnx.eval_shape(
        lambda: LlamaForCausalLM(config, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    return load_checkpoint(abstract, source, rules, ignore=ignore, shardings=shardings)


def from_pretrained(
    path: str | os.PathLike[str],
    *,
    param_dtype: jnp.dtype = jnp.float32,
    shardings: ShardingSpec = None,
) -> LlamaForCausalLM:
    """Builds a :class:`LlamaForCausalLM` from a HF directory or a GGUF file (no network).

    Args:
        path: a HF Llama directory (``config.json`` + safetensors) or a ``.gguf`` file
            (e.g. ``recipes.assets.smollm2_gguf()``).
        param_dtype: ``float32`` or ``bfloat16``.
        shardings: optional target shardings.

    Returns:
        The model.
    """
    return log_loaded(path, load(path, param_dtype=param_dtype, shardings=shardings))


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The ``tokenizers.Tokenizer`` of a ``.gguf`` file or of a HF directory's tokenizer.json."""
    import tokenizers  # Lazy: only needed for text.

    from rgft_jax.models.llama import tokenizer as gguf_tokenizer

    path = os.fspath(path)
    if _is_gguf(path):
        metadata, _ = read_gguf(path, tensors=False)
        return gguf_tokenizer.tokenizer_from_gguf(metadata)
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no tokenizer.json at {path!r}")
    return tokenizers.Tokenizer.from_file(file)
