# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""ViT: parity with HF PyTorch ``ViTForImageClassification`` on a tiny random config, naming."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from rgft_jax.models import path_str, vit

HF_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    image_size=16,
    patch_size=4,
    num_channels=3,
    num_labels=5,
)


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory, perturb):
    """A tiny random HF ViTForImageClassification saved as safetensors; returns (dir, model)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**HF_CONFIG))
    model = perturb(model).eval()
    model.set_attn_implementation("eager")
    path = tmp_path_factory.mktemp("vit")
    model.save_pretrained(path, safe_serialization=True)
    return path, model


def test_logits_match_torch(hf_vit, f32_matmul):
    import torch

    path, model = hf_vit
    result = vit.load(path)
    assert result.initialized == ()
    images = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)  # NCHW
    with torch.no_grad():
        ref = model(pixel_values=torch.from_numpy(images)).logits.numpy()
    ours = vit.forward(result.model, images.transpose(0, 2, 3, 1))  # NHWC
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=1e-5)


def test_fresh_head(hf_vit, f32_matmul):
    path, _ = hf_vit
    result = vit.load(path, num_labels=7, seed=3)
    assert set(result.initialized) == {"head/kernel", "head/bias"}
    assert set(result.ignored) == {"classifier.weight", "classifier.bias"}
    images = np.zeros((1, 16, 16, 3), np.float32)
    assert vit.forward(result.model, images).shape == (1, 7)


def test_param_paths_follow_naming_contract():
    config = vit.ViTConfig.tiny()
    model = nnx.eval_shape(lambda: vit.ViTForImageClassification(config, 5, rngs=nnx.Rngs(0)))
    shapes = {
        path_str(p): tuple(v.get_value().shape)
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    d, h, dh, f = 32, 4, 8, 37
    expected = {
        "embeddings/patch/kernel": (4, 4, 3, d),
        "embeddings/patch/bias": (d,),
        "embeddings/cls_token": (1, 1, d),
        "embeddings/position": (1, 17, d),
        "final_norm/scale": (d,),
        "final_norm/bias": (d,),
        "head/kernel": (d, 5),
        "head/bias": (5,),
    }
    for i in range(2):
        layer = f"layers/{i}/"
        for name in ("query", "key", "value"):
            expected[layer + f"attention/{name}/kernel"] = (d, h, dh)
            expected[layer + f"attention/{name}/bias"] = (h, dh)
        expected[layer + "attention/out/kernel"] = (h, dh, d)
        expected[layer + "attention/out/bias"] = (d,)
        expected[layer + "mlp/up/kernel"] = (d, f)
        expected[layer + "mlp/up/bias"] = (f,)
        expected[layer + "mlp/down/kernel"] = (f, d)
        expected[layer + "mlp/down/bias"] = (d,)
        for norm in ("attention_norm", "mlp_norm"):
            expected[layer + f"{norm}/scale"] = (d,)
            expected[layer + f"{norm}/bias"] = (d,)
    assert shapes == expected


def test_config_rejections():
    with pytest.raises(ValueError, match=r"model_type='deit'.*allowed: \['vit'\]"):
        vit.ViTConfig.from_hf({"model_type": "deit", **HF_CONFIG})
    with pytest.raises(ValueError, match="patch_size=5 must divide image_size=16"):
        vit.ViTConfig(image_size=16, patch_size=5)
