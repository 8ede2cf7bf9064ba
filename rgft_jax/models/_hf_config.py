# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reading HF ``config.json`` files and rejecting what a reference model does not implement."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["checkpoint_files", "read_config", "require"]


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
