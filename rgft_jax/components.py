# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Component partitions of params pytrees: the partition type, its rules and presets.

>>> import rgft_jax as rgft
>>> rules = rgft.components.bert(num_heads=12)   # heads + 32-neuron groups + whole leaves
"""

from rgft_jax._src.components import Component as Component
from rgft_jax._src.components import LeafSpec as LeafSpec
from rgft_jax._src.components import Partition as Partition
from rgft_jax._src.components import Rule as Rule
from rgft_jax._src.components import key_path_to_str as key_path_to_str
from rgft_jax._src.components import layer_of as layer_of
from rgft_jax._src.components import resolve as resolve
from rgft_jax._src.presets import bert as bert
from rgft_jax._src.presets import by_layer as by_layer
from rgft_jax._src.presets import gpt2 as gpt2
from rgft_jax._src.presets import llama as llama
from rgft_jax._src.presets import transformer as transformer
from rgft_jax._src.presets import vit as vit

__all__ = [
    "Component",
    "LeafSpec",
    "Partition",
    "Rule",
    "bert",
    "by_layer",
    "gpt2",
    "key_path_to_str",
    "layer_of",
    "llama",
    "resolve",
    "transformer",
    "vit",
]
