# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures for the reference-model tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import pytest


@pytest.fixture
def f32_matmul() -> Iterator[None]:
    """Runs the test with full float32 matmuls, so parity with PyTorch holds at ~1e-5."""
    with jax.default_matmul_precision("float32"):
        yield


def _perturb(torch_model: Any, seed: int = 0, scale: float = 0.05) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in torch_model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return torch_model


@pytest.fixture(scope="session")
def perturb() -> Callable[..., Any]:
    """Adds noise to every torch parameter so LayerNorm scales/biases are not trivially 1/0."""
    return _perturb
