# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The generic safetensors -> NNX loader: transforms, error collection, partial init."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from rgft_jax.models import Projection, Rule, _hf_config, load_checkpoint, path_str
from rgft_jax.models._layers import layer_norm
from rgft_jax.models._loading import (
    Concat,
    Conv1D,
    ConvOIHW,
    TorchLinear,
    Unflatten,
    read_safetensors,
)
from rgft_jax.models.bert import BertConfig
from rgft_jax.models.gpt2 import GPT2Config


class Toy(nnx.Module):
    """Tiny model: fused-qkv-style pair, a multi-axis output projection, a norm, a head."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.query = Projection(4, (2, 3), rngs=rngs)
        self.key = Projection(4, (2, 3), rngs=rngs)
        self.out = Projection((2, 3), 4, rngs=rngs)
        self.norm = layer_norm(4, epsilon=1e-6, rngs=rngs)
        self.head = Projection(4, 2, rngs=rngs)


RULES = [
    Rule(r"qk\.weight", ("query/kernel", "key/kernel"), Concat(in_ndim=1)),
    Rule(r"qk\.bias", ("query/bias", "key/bias"), Concat(in_ndim=0)),
    Rule(r"o\.weight", "out/kernel", TorchLinear(in_ndim=2)),
    Rule(r"o\.bias", "out/bias"),
    Rule(r"ln\.weight", "norm/scale"),
    Rule(r"ln\.bias", "norm/bias"),
    Rule(r"head\.weight", "head/kernel", TorchLinear()),
    Rule(r"head\.bias", "head/bias", Unflatten()),
]


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "qk.weight": rng.normal(size=(4, 12)).astype(np.float32),  # Conv1D layout [in, 2*6]
        "qk.bias": rng.normal(size=(12,)).astype(np.float32),
        "o.weight": rng.normal(size=(4, 6)).astype(np.float32),  # torch Linear [out, in]
        "o.bias": rng.normal(size=(4,)).astype(np.float32),
        "ln.weight": rng.normal(size=(4,)).astype(np.float32),
        "ln.bias": rng.normal(size=(4,)).astype(np.float32),
        "head.weight": rng.normal(size=(2, 4)).astype(np.float32),
        "head.bias": rng.normal(size=(2,)).astype(np.float32),
        "position_ids": np.arange(8, dtype=np.int64),
    }


def _abstract() -> Toy:
    return nnx.eval_shape(lambda: Toy(rngs=nnx.Rngs(0)))


def test_transforms_place_values_correctly():
    t = _tensors()
    result = load_checkpoint(_abstract(), t, RULES, ignore=[r"position_ids"])
    m = result.model
    np.testing.assert_array_equal(m.query.kernel[...], t["qk.weight"][:, :6].reshape(4, 2, 3))
    np.testing.assert_array_equal(m.key.kernel[...], t["qk.weight"][:, 6:].reshape(4, 2, 3))
    np.testing.assert_array_equal(m.key.bias[...], t["qk.bias"][6:].reshape(2, 3))
    np.testing.assert_array_equal(m.out.kernel[...], t["o.weight"].T.reshape(2, 3, 4))
    np.testing.assert_array_equal(m.head.kernel[...], t["head.weight"].T)
    assert result.ignored == ("position_ids",)
    assert result.loaded["key/kernel"] == "qk.weight"
    assert isinstance(m.norm.scale[...], jax.Array)
    # Output projection computes exactly the torch Linear on the flattened heads.
    x = np.random.default_rng(1).normal(size=(5, 2, 3)).astype(np.float32)
    with jax.default_matmul_precision("float32"):
        got = np.asarray(m.out(x))
    np.testing.assert_allclose(got, x.reshape(5, 6) @ t["o.weight"].T + t["o.bias"], atol=1e-5)


def test_abstract_model_is_left_untouched():
    abstract = _abstract()
    load_checkpoint(abstract, _tensors(), RULES, ignore=[r"position_ids"])
    assert isinstance(abstract.query.kernel.get_value(), jax.ShapeDtypeStruct)


def test_all_problems_are_collected_in_one_error():
    t = _tensors()
    del t["ln.bias"]  # missing
    t["o.weight"] = t["o.weight"].T  # wrong shape [6, 4] instead of [4, 6]
    t["head.bias"] = np.array([1, 2], np.int32)  # wrong dtype
    t["extra.weight"] = np.zeros(3, np.float32)  # unexpected
    rules = RULES + [Rule(r"ghost\.weight", "ghost/kernel")]
    t["ghost.weight"] = np.zeros(3, np.float32)  # rule target absent from the model
    with pytest.raises(ValueError) as err:
        load_checkpoint(_abstract(), t, rules)  # position_ids not ignored: unexpected too
    msg = str(err.value)
    assert "cannot load checkpoint into Toy: 6 problem(s)" in msg
    assert "parameter 'norm/bias' (4,) not in checkpoint" in msg
    assert "shape mismatch for 'o.weight': checkpoint (6, 4), expected (4, 6)" in msg
    assert "dtype mismatch for 'head.bias': checkpoint int32, model float32" in msg
    assert "unexpected checkpoint key 'extra.weight'" in msg
    assert "unexpected checkpoint key 'position_ids'" in msg
    assert "'ghost.weight' maps to ['ghost/kernel'], not in the model" in msg


def test_shape_check_precedes_reshape():
    """A tensor with the right size but wrong layout must not be silently reshaped."""
    t = _tensors()
    t["qk.weight"] = t["qk.weight"].reshape(12, 4)
    with pytest.raises(ValueError, match=r"shape mismatch for 'qk.weight': checkpoint \(12, 4\)"):
        load_checkpoint(_abstract(), t, RULES, ignore=[r"position_ids"])


def test_allow_missing_initialises_from_init_fn():
    t = {k: v for k, v in _tensors().items() if not k.startswith("head.")}
    build = lambda: Toy(rngs=nnx.Rngs(3))  # noqa: E731
    result = load_checkpoint(
        _abstract(),
        t,
        RULES,
        ignore=[r"position_ids"],
        allow_missing=[r"head/.*"],
        init_fn=build,
    )
    assert set(result.initialized) == {"head/kernel", "head/bias"}
    np.testing.assert_allclose(result.model.head.kernel[...], build().head.kernel[...], atol=1e-7)
    with pytest.raises(ValueError, match="need init_fn"):
        load_checkpoint(_abstract(), t, RULES, ignore=[r"position_ids"], allow_missing=[r"head/.*"])


def test_float_casts_are_reported():
    t = _tensors()
    t["ln.weight"] = t["ln.weight"].astype(np.float16)
    result = load_checkpoint(_abstract(), t, RULES, ignore=[r"position_ids"])
    assert result.cast == ("ln.weight: float16 -> float32",)
    assert result.model.norm.scale[...].dtype == np.float32


def test_shardings_by_path_and_callable():
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    result = load_checkpoint(
        _abstract(), _tensors(), RULES, ignore=[r"position_ids"], shardings={"out/kernel": dev}
    )
    assert result.model.out.kernel[...].sharding == dev
    seen = []
    load_checkpoint(
        _abstract(),
        _tensors(),
        RULES,
        ignore=[r"position_ids"],
        shardings=lambda path, a: seen.append((path, a.shape)) or dev,
    )
    assert ("out/kernel", (2, 3, 4)) in seen


def test_conv_transform():
    x = np.arange(2 * 3 * 4 * 5).reshape(5, 3, 2, 4).astype(np.float32)  # [O, I, kh, kw]
    assert ConvOIHW().source_shape([(2, 4, 3, 5)]) == (5, 3, 2, 4)
    (y,) = ConvOIHW()(x, [(2, 4, 3, 5)])
    assert y.shape == (2, 4, 3, 5) and y[1, 2, 0, 4] == x[4, 0, 1, 2]
    assert Conv1D(in_ndim=2).source_shape([(2, 3, 4)]) == (6, 4)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        _hf_config.checkpoint_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        _hf_config.checkpoint_files(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="config.json"):
        BertConfig.from_hf(tmp_path)


def test_sharded_checkpoint_files(tmp_path):
    from safetensors.numpy import save_file

    t = _tensors()
    keys = sorted(t)
    save_file({k: t[k] for k in keys[:4]}, os.fspath(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: t[k] for k in keys[4:]}, os.fspath(tmp_path / "model-00002-of-00002.safetensors"))
    index = {
        "weight_map": {
            k: f"model-0000{1 + (i >= 4)}-of-00002.safetensors" for i, k in enumerate(keys)
        }
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    files = _hf_config.checkpoint_files(tmp_path)
    assert len(files) == 2
    result = load_checkpoint(_abstract(), files, RULES, ignore=[r"position_ids"])
    np.testing.assert_array_equal(result.model.norm.bias[...], t["ln.bias"])


def test_config_from_json_file_and_wrong_family(tmp_path):
    cfg = {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert BertConfig.from_hf(tmp_path / "config.json").hidden_size == 64
    with pytest.raises(
        ValueError, match=r"GPT2Config: unsupported HF config value model_type='bert'"
    ):
        GPT2Config.from_hf(tmp_path)
    with pytest.raises(TypeError, match="path_or_dict"):
        BertConfig.from_hf(42)  # type: ignore[arg-type]


def test_projection_rejects_wrong_input_shape():
    proj = Projection((2, 3), 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"in_features=\(2, 3\)"):
        proj(np.zeros((5, 6), np.float32))
    assert path_str(("layers", 0, "kernel")) == "layers/0/kernel"


def test_a_new_family_config_only_declares_fields_and_rejections():
    """What a Llama-family config needs: fields, presets, what it rejects (nothing else)."""
    import dataclasses

    from rgft_jax.models._hf_config import HFConfig

    @dataclasses.dataclass(frozen=True)
    class LlamaLike(HFConfig):
        HF_MODEL_TYPES = frozenset({"llama"})
        HF_REQUIRE = (("attention_bias", {False}, False),)
        ACTIVATION = "hidden_act"
        POSITIVE = ("hidden_size", "num_attention_heads", "num_key_value_heads")
        DIVIDES = (("num_key_value_heads", "num_attention_heads"),)
        PROBABILITIES = ("attention_dropout",)
        hidden_size: int = 576
        num_attention_heads: int = 9
        num_key_value_heads: int = 3
        hidden_act: str = "silu"
        attention_dropout: float = 0.0

    hf = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
          "num_key_value_heads": 2, "rope_theta": 1e4}
    assert LlamaLike.from_hf(hf) == LlamaLike(64, 4, 2)
    with pytest.raises(ValueError, match=r"LlamaLike: unsupported HF config value "
                                         r"attention_bias=True; allowed: \[False\]"):
        LlamaLike.from_hf({**hf, "attention_bias": True})
    with pytest.raises(ValueError, match=r"LlamaLike.hidden_act='mish' is not supported"):
        LlamaLike(hidden_act="mish")
    with pytest.raises(ValueError, match="num_key_value_heads=2 must divide "
                                         "num_attention_heads=3"):
        LlamaLike(num_attention_heads=3, num_key_value_heads=2)
    with pytest.raises(ValueError, match=r"LlamaLike.attention_dropout=1.0 must be in \[0, 1\)"):
        LlamaLike(attention_dropout=1.0)


@pytest.mark.parametrize("cls, field", [("BertConfig", "hidden_size"), ("GPT2Config", "n_embd"),
                                        ("ViTConfig", "hidden_size")])
def test_every_family_config_checks_the_same_way(cls, field):
    from rgft_jax.models import bert, gpt2, vit
    from rgft_jax.models._hf_config import HFConfig

    config_cls = {"BertConfig": bert.BertConfig, "GPT2Config": gpt2.GPT2Config,
                  "ViTConfig": vit.ViTConfig}[cls]
    assert issubclass(config_cls, HFConfig)
    with pytest.raises(ValueError, match=rf"{cls}.{field}=0 must be a positive int"):
        config_cls(**{field: 0})
