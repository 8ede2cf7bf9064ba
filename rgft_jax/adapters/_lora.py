# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""LoRA on :class:`rgft_jax.models.Projection` modules, and the BitFit trainable set.

.. math::

  y = x W + b + \\frac{\\alpha}{r} (x A) B, \\quad A \\in \\mathbb{R}^{d_{in} \\times r},\\;
  B \\in \\mathbb{R}^{r \\times d_{out}},\\; B_0 = 0

References:
  Hu et al, `LoRA: Low-Rank Adaptation of Large Language Models
  <https://arxiv.org/abs/2106.09685>`_, 2021. Ben Zaken et al, `BitFit
  <https://arxiv.org/abs/2106.10199>`_, 2021.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rgft_jax.models import Projection
from rgft_jax.models._layers import iter_children, replace_child

__all__ = ["BITFIT_TRAINABLE", "LORA_TRAINABLE", "LoRAProjection", "add_lora", "merge_lora"]

#: Trainable-leaf regex of LoRA fine-tuning: the adapters and the task head.
LORA_TRAINABLE = r"(?:/lora_[ab]$|^classifier/|^head/)"
#: Trainable-leaf regex of BitFit: every bias and the task head.
BITFIT_TRAINABLE = r"(?:/bias$|^classifier/|^head/)"


class LoRAProjection(nnx.Module):
    """A :class:`Projection` plus a rank-``r`` update; keeps ``kernel``/``bias`` paths.

    Args:
      base: the projection to adapt (its parameters are reused, not copied).
      rank: adapter rank ``r >= 1``.
      alpha: scale numerator (the update is multiplied by ``alpha / rank``).
      rngs: random streams for ``A`` (``B`` starts at zero, so the model is unchanged).
    """

    def __init__(self, base: Projection, rank: int, alpha: float, *, rngs: nnx.Rngs):
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"LoRA rank={rank!r}: must be an int >= 1.")
        if not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"LoRA alpha={alpha!r}: must be a number > 0.")
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.precision = base.precision
        self.kernel = base.kernel
        self.bias = base.bias
        self.rank = rank
        self.scale = float(alpha) / rank
        d_in = math.prod(self.in_features)
        dtype = base.kernel[...].dtype
        self.lora_a = nnx.Param(
            jax.random.normal(rngs.params(), self.in_features + (rank,), dtype) / math.sqrt(d_in)
        )
        self.lora_b = nnx.Param(jnp.zeros((rank,) + self.out_features, dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_features)
        y = jnp.tensordot(x, self.kernel[...], axes=n_in, precision=self.precision)
        low = jnp.tensordot(x, self.lora_a[...], axes=n_in, precision=self.precision)
        y = y + self.scale * jnp.tensordot(low, self.lora_b[...], axes=1, precision=self.precision)
        if self.bias is not None:
            y = y + self.bias[...]
        return y

    def delta(self) -> jax.Array:
        """The dense update ``alpha/r * A B`` with the kernel's shape."""
        return self.scale * jnp.tensordot(self.lora_a[...], self.lora_b[...], axes=1)


def add_lora(
    model: nnx.Module,
    *,
    targets: str | Sequence[str] = (r"attention/query$", r"attention/value$"),
    rank: int = 8,
    alpha: float = 16.0,
    seed: int = 0,
) -> list[str]:
    """Replaces (in place) every :class:`Projection` whose path matches ``targets``.

    Args:
      model: the NNX model.
      targets: regexes searched in the module path (e.g. ``encoder/layers/0/attention/query``).
      rank: adapter rank.
      alpha: LoRA scale numerator.
      seed: seed of the ``A`` initialisation.

    Returns:
      The adapted module paths.

    Raises:
      ValueError: when no projection matches (lists the projection paths there are).
    """
    pats = [targets] if isinstance(targets, str) else list(targets)
    rx = [re.compile(p) for p in pats]
    rngs = nnx.Rngs(seed)
    found, seen = [], []
    for parent, key, child, path in list(iter_children(model)):
        if not isinstance(child, Projection):
            continue
        seen.append(path)
        if any(r.search(path) for r in rx):
            replace_child(parent, key, LoRAProjection(child, rank, alpha, rngs=rngs))
            found.append(path)
    if not found:
        raise ValueError(
            f"add_lora: targets={pats!r} match no Projection; projections: {seen[:12]}"
        )
    return found


def _abstract_projection(in_features, out_features, use_bias: bool) -> Projection:
    # The Rngs must be created inside nnx.eval_shape's trace: one made outside would be
    # mutated from a different trace level (flax TraceContextError).
    return Projection(in_features, out_features, use_bias=use_bias, rngs=nnx.Rngs(0))


def merge_lora(model: nnx.Module) -> int:
    """Folds every adapter into its kernel and restores plain projections (in place).

    Returns:
      The number of merged adapters. The merged model computes the same function.
    """
    n = 0
    for parent, key, child, _ in list(iter_children(model)):
        if isinstance(child, LoRAProjection):
            child.kernel[...] = child.kernel[...] + child.delta().astype(child.kernel[...].dtype)
            plain = nnx.eval_shape(functools.partial(
                _abstract_projection, child.in_features, child.out_features,
                child.bias is not None))
            plain.kernel = child.kernel
            plain.bias = child.bias
            plain.precision = child.precision
            replace_child(parent, key, plain)
            n += 1
    return n
