# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Fine-tuning methods: one constructor per kind, and a registry of them by name.

>>> from rgft_jax.training import methods
>>> methods.rgft(budget=0.4, learning_rate=1e-3).label
'rgft'
>>> methods.get('top_layers')(2).trainable_regex(4)
'(?:(?:^|/)layers/(?:2|3)/|final_norm/|(?:classifier|head|pooler)/)'
>>> 'lora' in methods.names()
True
"""

from rgft_jax.training._anchors import LISA as LISA
from rgft_jax.training._anchors import AutoFreeze as AutoFreeze
from rgft_jax.training._anchors import BAdam as BAdam
from rgft_jax.training._anchors import DropBP as DropBP
from rgft_jax.training._anchors import GreenTrainer as GreenTrainer
from rgft_jax.training._anchors import RandomLayers as RandomLayers
from rgft_jax.training._anchors import autofreeze as autofreeze
from rgft_jax.training._anchors import badam as badam
from rgft_jax.training._anchors import dropbp as dropbp
from rgft_jax.training._anchors import green_trainer as green_trainer
from rgft_jax.training._anchors import lisa as lisa
from rgft_jax.training._anchors import random_layers as random_layers
from rgft_jax.training._methods import RGFT as RGFT
from rgft_jax.training._methods import BitFit as BitFit
from rgft_jax.training._methods import Full as Full
from rgft_jax.training._methods import Layers as Layers
from rgft_jax.training._methods import LoRA as LoRA
from rgft_jax.training._methods import MagnitudeMask as MagnitudeMask
from rgft_jax.training._methods import Method as Method
from rgft_jax.training._methods import Modules as Modules
from rgft_jax.training._methods import Plan as Plan
from rgft_jax.training._methods import RandomMask as RandomMask
from rgft_jax.training._methods import RGFTChain as RGFTChain
from rgft_jax.training._methods import TopLayers as TopLayers
from rgft_jax.training._methods import bitfit as bitfit
from rgft_jax.training._methods import full as full
from rgft_jax.training._methods import get as get
from rgft_jax.training._methods import layers as layers
from rgft_jax.training._methods import lora as lora
from rgft_jax.training._methods import magnitude_mask as magnitude_mask
from rgft_jax.training._methods import modules as modules
from rgft_jax.training._methods import names as names
from rgft_jax.training._methods import random_mask as random_mask
from rgft_jax.training._methods import register as register
from rgft_jax.training._methods import rgft as rgft
from rgft_jax.training._methods import rgft_chain as rgft_chain
from rgft_jax.training._methods import top_layers as top_layers
from rgft_jax.training._searched import Searched as Searched
from rgft_jax.training._searched import searched as searched

register("searched", searched)

__all__ = [
    "LISA",
    "RGFT",
    "AutoFreeze",
    "BAdam",
    "DropBP",
    "GreenTrainer",
    "RandomLayers",
    "autofreeze",
    "badam",
    "dropbp",
    "green_trainer",
    "lisa",
    "random_layers",
    "BitFit",
    "Full",
    "Layers",
    "LoRA",
    "MagnitudeMask",
    "Method",
    "Modules",
    "Plan",
    "RGFTChain",
    "RandomMask",
    "Searched",
    "TopLayers",
    "bitfit",
    "full",
    "get",
    "layers",
    "lora",
    "magnitude_mask",
    "modules",
    "names",
    "random_mask",
    "register",
    "rgft",
    "rgft_chain",
    "searched",
    "top_layers",
]

# The RGFT variants register themselves (rgft_depth, rgft_front, rgft_layers).
from rgft_jax.training import _rgft_variants as _rgft_variants  # noqa: E402
