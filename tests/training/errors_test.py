"""Bad arguments fail early with messages that name the argument and its value."""

import re

import pytest

from rgft_jax.training import TrainConfig, Trainer, methods

from .conftest import NUM_HEADS, bert

NUM_LAYERS = 1


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: methods.get("nope"), ValueError, "method 'nope' is not registered; allowed: full"),
    (lambda: methods.full(learning_rate=0), ValueError, "full: learning_rate=0; allowed"),
    (lambda: methods.full(learning_rate=-1e-3), ValueError, "learning_rate=-0.001"),
    (lambda: methods.rgft(alpha=1.0), ValueError, "alpha=1.0"),
    (lambda: methods.rgft(update_every=0), ValueError, "rgft: update_every=0; allowed: an int"),
    (lambda: methods.rgft(budget=1.5), ValueError, "rgft: budget=1.5; allowed"),
    (lambda: methods.rgft(threshold=("budget", 0.4), budget=0.4), ValueError, "one of them"),
    (lambda: methods.top_layers(0), ValueError, "top_layers: k=0; allowed: an int >= 1"),
    (lambda: methods.random_mask(0.0), ValueError, "random_mask: update_ratio=0.0"),
    (lambda: methods.modules([False, False]), ValueError, "modules: mask=[False, False]"),
    (lambda: methods.lora(rank=0), ValueError, "lora: rank=0"),
    (lambda: methods.rgft(components="rows"), ValueError, "components='rows'"),
    (lambda: methods.register("full", methods.full), ValueError, "name='full' is taken"),
    (lambda: methods.register("not a name", methods.full), ValueError, "identifier"),
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
        Trainer(bert(), methods.full(), TrainConfig(progress=False), num_heads=NUM_HEADS,
                num_layers=NUM_LAYERS, num_classes=1)
    with pytest.raises(ValueError, match=re.escape("num_classes=None")):
        Trainer(bert(), methods.full(), TrainConfig(progress=False), num_heads=NUM_HEADS,
                num_layers=NUM_LAYERS)


@pytest.mark.parametrize("method, config", [
    ("full", TrainConfig(progress=False)),
    (methods.full(), {"steps": 2}),
])
def test_trainer_type_errors(method, config):
    with pytest.raises(TypeError, match=r"(method|config)=.*; allowed: a (Method|TrainConfig)"):
        Trainer(bert(), method, config, num_heads=NUM_HEADS, num_layers=NUM_LAYERS,
                num_classes=3)


def test_lora_targets_matching_nothing():
    method = methods.lora(targets=(r"attention/nothing$",))
    with pytest.raises(ValueError, match=r"targets=.*attention/nothing\$.*match no Projection"):
        Trainer(bert(), method, TrainConfig(progress=False), num_heads=NUM_HEADS,
                num_layers=NUM_LAYERS, num_classes=3)


@pytest.mark.parametrize("method", [methods.random_mask(0.5), methods.magnitude_mask(0.5)])
def test_dsca_with_a_fixed_mask_that_never_probes(method):
    # A fixed mask is installed before the first step: no probe step ever feeds DSCA.
    with pytest.raises(ValueError, match=r"Trainer: dsca=\{'num_modules': 2\}.*never probes; "
                                         r"allowed: dsca=None"):
        Trainer(bert(), method, TrainConfig(progress=False), num_heads=NUM_HEADS,
                num_layers=NUM_LAYERS, num_classes=3, dsca={"num_modules": 2})
    # Dense steps (sparse=False) observe every gradient: allowed.
    Trainer(bert(), methods.random_mask(0.5, sparse=False), TrainConfig(progress=False),
            num_heads=NUM_HEADS, num_layers=NUM_LAYERS, num_classes=3,
            dsca={"num_modules": 2, "embed_dim": 2, "sketch_dim": 8})
