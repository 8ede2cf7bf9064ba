"""Bad arguments fail early with messages that name the argument and its value."""

import re

import pytest

from rgft_jax.training import Method, TrainConfig, Trainer

from .conftest import NUM_HEADS, bert

NUM_LAYERS = 1


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: Method(kind="nope"), ValueError, "kind='nope'"),
    (lambda: Method("full", learning_rate=0), ValueError, "learning_rate=0"),
    (lambda: Method("full", learning_rate=-1e-3), ValueError, "learning_rate=-0.001"),
    (lambda: Method("rgft", alpha=1.0), ValueError, "alpha=1.0"),
    (lambda: Method("rgft", update_every=0), ValueError, "update_every=0"),
    (lambda: Method("top_layers", top_layers=0), ValueError, "top_layers=0"),
    (lambda: Method("random_mask", update_ratio=0.0), ValueError, "update_ratio=0.0"),
    (lambda: TrainConfig(steps=0), ValueError, "steps=0"),
    (lambda: TrainConfig(steps=2.5), ValueError, "steps=2.5"),
    (lambda: TrainConfig(task="x"), ValueError, "task='x'"),
    (lambda: TrainConfig(max_compiled=0), ValueError, "max_compiled=0"),
    (lambda: TrainConfig(checkpoint_every=-1), ValueError, "checkpoint_every=-1"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_config_errors(make, exc, pattern):
    with pytest.raises(exc, match=re.escape(pattern)):
        make()


def test_trainer_needs_two_classes():
    with pytest.raises(ValueError, match=re.escape("num_classes=1")):
        Trainer(bert(), Method("full"), TrainConfig(progress=False), num_heads=NUM_HEADS,
                num_layers=NUM_LAYERS, num_classes=1)
    with pytest.raises(ValueError, match=re.escape("num_classes=None")):
        Trainer(bert(), Method("full"), TrainConfig(progress=False), num_heads=NUM_HEADS,
                num_layers=NUM_LAYERS)


@pytest.mark.parametrize("method, config", [
    ("full", TrainConfig(progress=False)),
    (Method("full"), {"steps": 2}),
])
def test_trainer_type_errors(method, config):
    with pytest.raises(TypeError, match="must be a (Method|TrainConfig), got"):
        Trainer(bert(), method, config, num_heads=NUM_HEADS, num_layers=NUM_LAYERS,
                num_classes=3)


def test_lora_targets_matching_nothing():
    method = Method("lora", lora_targets=(r"attention/nothing$",))
    with pytest.raises(ValueError, match=r"targets=.*attention/nothing\$.*match no Projection"):
        Trainer(bert(), method, TrainConfig(progress=False), num_heads=NUM_HEADS,
                num_layers=NUM_LAYERS, num_classes=3)
