# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Thresholds: callables ``residuals float32[C] -> bool[C]`` that pick the active components.

Every threshold is validated when it is built (a clear ``ValueError`` naming the argument and
the allowed values) and, through :meth:`Threshold.check`, against the number of components
when the transform is initialised. The shorthand forms of ``threshold=`` (``'median'``,
``('percentile', p)``, ``('top_k', k)``, ``('top_fraction', f)``) map onto the same callables
(:func:`as_threshold`), so there is one code path for all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Threshold",
    "as_threshold",
    "budget",
    "median",
    "percentile",
    "threshold_mask",
    "top_fraction",
    "top_k",
]

_ALLOWED = (
    "'median', ('percentile', p) with 0 < p < 100, ('top_k', k) with k >= 1, "
    "('top_fraction', f) with 0 < f <= 1, a rgft_jax.thresholds callable, or a callable "
    "residuals -> threshold / bool mask"
)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _ranks(residuals: jax.Array) -> jax.Array:
    """Rank of every entry by decreasing value, ties towards the lower index (no scatter)."""
    order = jnp.argsort(-residuals, stable=True)
    return jnp.argsort(order, stable=True).astype(jnp.int32)


class Threshold:
    """Base of the built-in thresholds: a callable ``residuals float32[C] -> bool[C]``."""

    def __call__(self, residuals: jax.Array) -> jax.Array:
        raise NotImplementedError

    def check(self, num_components: int) -> None:
        """Raises ``ValueError`` when this threshold cannot select from ``num_components``."""
        del num_components


@dataclasses.dataclass(frozen=True)
class _Percentile(Threshold):
    p: float

    def __call__(self, residuals):
        r = jnp.asarray(residuals, jnp.float32)
        return r >= jnp.percentile(r, self.p)


@dataclasses.dataclass(frozen=True)
class _TopK(Threshold):
    k: int
    label: str = "top_k"

    def check(self, num_components):
        if self.k > num_components:
            raise ValueError(
                f"{self.label}: k must be in [1, C] and the partition has "
                f"C={num_components} components.")

    def __call__(self, residuals):
        r = jnp.asarray(residuals, jnp.float32)
        self.check(r.shape[0])
        return _ranks(r) < self.k


@dataclasses.dataclass(frozen=True)
class _TopFraction(Threshold):
    f: float

    def k(self, num_components: int) -> int:
        # ceil(f * C) without float noise (0.28 * 25 = 7.000000000000001 must give 7).
        return max(1, math.ceil(round(self.f * num_components, 9)))

    def __call__(self, residuals):
        r = jnp.asarray(residuals, jnp.float32)
        return _ranks(r) < self.k(r.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class _Budget(Threshold):
    costs: Any
    f: float
    fn: Callable[[jax.Array], jax.Array]

    def check(self, num_components):
        c = self.costs.num_components
        if c != num_components:
            raise ValueError(
                f"budget(costs, {self.f!r}): the costs are for C={c} components but the "
                f"partition has C={num_components}; build the costs from the same partition.")

    def __call__(self, residuals):
        return self.fn(residuals)


@dataclasses.dataclass(frozen=True, eq=False)
class _Custom(Threshold):
    """A user callable returning a scalar threshold ``tau`` or a boolean active set."""

    fn: Callable[[jax.Array], Any]

    def __call__(self, residuals):
        r = jnp.asarray(residuals, jnp.float32)
        c = r.shape[0]
        out = jnp.asarray(self.fn(r))
        if out.shape == ():
            return r >= out
        if out.shape != (c,):
            raise ValueError(
                f"threshold callable returned shape {out.shape}; expected () (a threshold) "
                f"or ({c},) (an active set).")
        return out.astype(bool)


def _percentile(p: Any, label: str) -> Threshold:
    if not _is_real(p) or not 0 < p < 100:
        raise ValueError(f"{label}: p must be a number in (0, 100), got {p!r}.")
    return _Percentile(float(p))


def _top_k(k: Any, label: str) -> Threshold:
    if not _is_int(k) or k < 1:
        raise ValueError(f"{label}: k must be an int >= 1, got {k!r}.")
    return _TopK(int(k), label)


def _top_fraction(f: Any, label: str) -> Threshold:
    if not _is_real(f) or not 0 < f <= 1:
        raise ValueError(f"{label}: f must be a number in (0, 1], got {f!r}.")
    return _TopFraction(float(f))


def median() -> Threshold:
    """Components whose residual is at least the median are active.

    Returns:
      A threshold callable ``residuals float32[C] -> bool[C]`` (``percentile(50)``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from rgft_jax import thresholds
      >>> thresholds.median()(jnp.array([0.1, 0.4, 0.2, 0.3])).tolist()
      [False, True, False, True]
    """
    return _Percentile(50.0)


def percentile(p: float) -> Threshold:
    """Components whose residual is at least the ``p``-th percentile are active.

    The percentile is linearly interpolated (``jnp.percentile``), so ties at the threshold
    are all active.

    Args:
      p: the percentile, in ``(0, 100)``.

    Returns:
      A threshold callable ``residuals float32[C] -> bool[C]``.

    Raises:
      ValueError: when ``p`` is not a number in ``(0, 100)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rgft_jax import thresholds
      >>> thresholds.percentile(75)(jnp.array([0.1, 0.4, 0.2, 0.3])).tolist()
      [False, True, False, False]
    """
    return _percentile(p, f"percentile({p!r})")


def top_k(k: int) -> Threshold:
    """Exactly the ``k`` components with the largest residuals are active.

    Ties are broken towards the lower component index. ``k`` is checked against the
    number of components when the transform is initialised.

    Args:
      k: the number of active components, an int ``>= 1`` (and ``<= C``).

    Returns:
      A threshold callable ``residuals float32[C] -> bool[C]``.

    Raises:
      ValueError: when ``k`` is not an int ``>= 1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rgft_jax import thresholds
      >>> thresholds.top_k(2)(jnp.array([0.3, 0.4, 0.3, 0.0])).tolist()
      [True, True, False, False]
    """
    return _top_k(k, f"top_k({k!r})")


def top_fraction(f: float) -> Threshold:
    """The top ``ceil(f * C)`` components by residual are active (at least one).

    ``f * C`` is rounded to 9 decimals before the ceiling, so float noise never adds a
    component (``0.28 * 25`` gives 7, not 8).

    Args:
      f: the active fraction, in ``(0, 1]``.

    Returns:
      A threshold callable ``residuals float32[C] -> bool[C]``.

    Raises:
      ValueError: when ``f`` is not a number in ``(0, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rgft_jax import thresholds
      >>> thresholds.top_fraction(0.5)(jnp.array([0.1, 0.4, 0.2, 0.3])).tolist()
      [False, True, False, True]
    """
    return _top_fraction(f, f"top_fraction({f!r})")


def budget(costs: Any, f: float) -> Threshold:
    """The components worth most residual mass per FLOP that fit ``f`` of a full step.

    Wraps :func:`rgft_jax.budget_threshold` (see there for the selection rule and its
    guarantees); the number of components of ``costs`` is checked against the partition
    when the transform is initialised.

    Args:
      costs: a :class:`rgft_jax.ComponentCosts` of the partition the transform uses.
      f: the fraction of ``costs.full`` one step may cost, in ``(0, 1]``.

    Returns:
      A threshold callable ``residuals float32[C] -> bool[C]``.

    Raises:
      TypeError: when ``costs`` is not a ``ComponentCosts``.
      ValueError: when ``f`` is not in ``(0, 1]`` or nothing fits the budget.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rgft_jax import ComponentCosts, thresholds
      >>> costs = ComponentCosts(dw=[1.0, 1.0, 1.0], layer=[0, 0, 0], dx=[1.0], fixed=1.0)
      >>> thresholds.budget(costs, 0.8)(jnp.array([0.2, 0.5, 0.3])).tolist()
      [False, True, True]
    """
    from rgft_jax._src.budget import budget_threshold

    return _Budget(costs, f, budget_threshold(costs, f))


def as_threshold(threshold: Any) -> Threshold:
    """The :class:`Threshold` a ``threshold=`` argument stands for (validated).

    Args:
      threshold: a :class:`Threshold`, ``'median'``, ``('percentile', p)``, ``('top_k', k)``,
        ``('top_fraction', f)``, or any callable ``residuals -> tau | bool[C]``.

    Returns:
      The threshold callable.

    Raises:
      ValueError: on an unknown form or an out-of-range value.
    """
    if isinstance(threshold, Threshold):
        return threshold
    if callable(threshold):
        return _Custom(threshold)
    if isinstance(threshold, str) and threshold == "median":
        return median()
    if isinstance(threshold, (tuple, list)) and len(threshold) == 2:
        kind, v = threshold
        label = f"threshold=({kind!r}, {v!r})"
        if kind == "percentile":
            return _percentile(v, label)
        if kind == "top_k":
            return _top_k(v, label)
        if kind == "top_fraction":
            return _top_fraction(v, label)
    raise ValueError(f"threshold={threshold!r} is not a known threshold; allowed: {_ALLOWED}.")


def threshold_mask(residuals: jax.Array, threshold: Any) -> jax.Array:
    """The boolean active set ``[C]`` selected by ``threshold`` from ``residuals``.

    ``'median'`` / ``('percentile', p)``: active iff ``r_i >= tau`` with ``tau`` the
    (linearly interpolated) percentile. ``('top_k', k)``: exactly ``k`` active, ties broken
    towards the lower index. ``('top_fraction', f)``: top ``ceil(f*C)``. A callable returns
    either a scalar ``tau`` or a boolean ``[C]`` active set.

    Args:
      residuals: ``float[C]``.
      threshold: any form :func:`as_threshold` accepts.

    Returns:
      ``bool[C]``.

    Examples:
      >>> import jax.numpy as jnp, rgft_jax as rgft
      >>> rgft.threshold_mask(jnp.array([0.5, 0.1, 0.4]), ('top_k', 2)).tolist()
      [True, False, True]
    """
    return as_threshold(threshold)(jnp.asarray(residuals, jnp.float32))
