# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reading HF ``config.json`` files and rejecting what a reference model does not implement.

:class:`HFConfig` is the base of every family's frozen config dataclass: it validates the
fields and builds the config from a HF ``config.json`` from a few class-level declarations,
so a new family writes only its fields, its presets and what it rejects.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, TypeVar

from rgft_jax.models._layers import SUPPORTED_ACTIVATIONS

__all__ = ["HFConfig", "checkpoint_files", "config_kwargs", "read_config", "require"]

C = TypeVar("C", bound="HFConfig")


def read_config(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Returns a HF config as a dict.

    Args:
        path_or_dict: a model directory holding ``config.json``, the path of a JSON file, or
            an already-parsed mapping (e.g. ``transformers.PretrainedConfig.to_dict()``).

    Returns:
        The config dictionary (a copy).

    Raises:
        FileNotFoundError: if no config file exists at the given location.
        TypeError: if ``path_or_dict`` is neither a path nor a mapping.
    """
    if isinstance(path_or_dict, Mapping):
        return dict(path_or_dict)
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise TypeError(
            f"path_or_dict must be a path or a mapping, got {type(path_or_dict).__name__}"
        )
    path = os.fspath(path_or_dict)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"HF config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def require(
    config: Mapping[str, Any],
    attribute: str,
    allowed: Collection[Any],
    default: Any,
    *,
    owner: str,
) -> Any:
    """Returns ``config[attribute]`` (or ``default``) after checking it is in ``allowed``.

    Args:
        config: HF config dictionary.
        attribute: the attribute name.
        allowed: the values the reference implementation supports.
        default: value assumed when the attribute is absent (HF's default).
        owner: name of the config class, used in the error message.

    Returns:
        The attribute value.

    Raises:
        ValueError: naming the attribute, its value and the allowed set.
    """
    value = config.get(attribute, default)
    if value is None:
        value = default
    if value not in allowed:
        raise ValueError(
            f"{owner}: unsupported HF config value {attribute}={value!r}; "
            f"allowed: {sorted(allowed, key=repr)}"
        )
    return value


def checkpoint_files(local_dir: str | os.PathLike[str]) -> list[str]:
    """Returns the safetensors file(s) of a local HF model directory.

    Handles both ``model.safetensors`` and sharded checkpoints described by
    ``model.safetensors.index.json``.

    Args:
        local_dir: the model directory.

    Returns:
        The list of safetensors files.

    Raises:
        FileNotFoundError: if the directory or its weights do not exist.
    """
    d = os.fspath(local_dir)
    if not os.path.isdir(d):
        raise FileNotFoundError(f"model directory not found: {d}")
    single = os.path.join(d, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        return [os.path.join(d, name) for name in sorted(set(weight_map.values()))]
    raise FileNotFoundError(
        f"no model.safetensors or model.safetensors.index.json in {d} "
        "(PyTorch .bin checkpoints are not supported; re-save with safe_serialization=True)"
    )


def config_kwargs(cls: type, hf: Mapping[str, Any], **resolved: Any) -> dict[str, Any]:
    """Keyword arguments of the dataclass ``cls`` from an HF config dict.

    Every field takes the HF value of the same name, or the dataclass default when the
    config lacks it; ``resolved`` values (already validated, e.g. the activation) win.
    """
    defaults = cls()
    out = {f.name: hf.get(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)}
    out.update(resolved)
    return out


class HFConfig:
    """Base of the reference models' frozen config dataclasses (field names follow HF).

    A subclass is a ``@dataclasses.dataclass(frozen=True)`` that declares, as class
    variables, what to check and what HF attributes it rejects:

    Attributes:
        HF_MODEL_TYPES: the accepted HF ``model_type`` values.
        HF_REQUIRE: ``(attribute, allowed values, HF default)`` of every HF attribute that
            must hold one of the values this implementation supports.
        ACTIVATION: the field holding the activation name (checked against
            ``SUPPORTED_ACTIVATIONS``), or ``None``.
        POSITIVE: int fields that must be ``> 0``.
        OPTIONAL_POSITIVE: int fields that may also be ``None``.
        PROBABILITIES: dropout fields, in ``[0, 1)``.
        DIVIDES: ``(divisor, dividend)`` field pairs, e.g. heads dividing the width.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class TinyConfig(HFConfig):
        ...     HF_MODEL_TYPES = frozenset({"tiny"})
        ...     POSITIVE = ("hidden_size", "num_heads")
        ...     DIVIDES = (("num_heads", "hidden_size"),)
        ...     hidden_size: int = 8
        ...     num_heads: int = 2
        >>> TinyConfig.from_hf({"model_type": "tiny", "hidden_size": 16})
        TinyConfig(hidden_size=16, num_heads=2)
    """

    HF_MODEL_TYPES: ClassVar[frozenset[str]] = frozenset()
    HF_REQUIRE: ClassVar[tuple[tuple[str, Collection[Any], Any], ...]] = ()
    ACTIVATION: ClassVar[str | None] = None
    POSITIVE: ClassVar[tuple[str, ...]] = ()
    OPTIONAL_POSITIVE: ClassVar[tuple[str, ...]] = ()
    PROBABILITIES: ClassVar[tuple[str, ...]] = ()
    DIVIDES: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in self.POSITIVE:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{owner}.{name}={value!r} must be a positive int")
        for name in self.OPTIONAL_POSITIVE:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{owner}.{name}={value!r} must be None or a positive int")
        for divisor, dividend in self.DIVIDES:
            d, n = getattr(self, divisor), getattr(self, dividend)
            if n % d:
                raise ValueError(f"{owner}.{divisor}={d} must divide {dividend}={n}")
        if self.ACTIVATION is not None:
            act = getattr(self, self.ACTIVATION)
            if act not in SUPPORTED_ACTIVATIONS:
                raise ValueError(
                    f"{owner}.{self.ACTIVATION}={act!r} is not supported; "
                    f"allowed: {sorted(SUPPORTED_ACTIVATIONS)}"
                )
        for name in self.PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{owner}.{name}={value!r} must be in [0, 1)")

    @classmethod
    def from_hf(cls: type[C], path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> C:
        """Builds the config from a HF ``config.json`` (directory, file, or dict).

        Every field takes the HF attribute of the same name (or its default).

        Args:
            path_or_dict: model directory, path to ``config.json``, or a parsed dict.

        Returns:
            The config.

        Raises:
            ValueError: if the HF config asks for something this model does not implement
                (a ``model_type`` outside ``HF_MODEL_TYPES``, an ``HF_REQUIRE`` attribute
                outside its allowed set, an unknown activation); the message names the
                attribute, its value and the allowed set.
        """
        hf = read_config(path_or_dict)
        owner = cls.__name__
        require(hf, "model_type", cls.HF_MODEL_TYPES, None, owner=owner)
        for attribute, allowed, default in cls.HF_REQUIRE:
            require(hf, attribute, allowed, default, owner=owner)
        resolved = {}
        if cls.ACTIVATION is not None:
            default = {f.name: f.default for f in dataclasses.fields(cls)}[cls.ACTIVATION]
            resolved[cls.ACTIVATION] = require(
                hf, cls.ACTIVATION, SUPPORTED_ACTIVATIONS, default, owner=owner)
        return cls(**config_kwargs(cls, hf, **resolved))
