# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Weight gradients for active groups only: ``tensordot`` with a group-sparse backward pass.

A projection ``y = x . W`` whose kernel is split into ``G`` groups along one axis (heads, neuron
groups) needs, on an RGFT sparse step, the weight gradient of its ``K`` active groups only.
:func:`group_sparse_tensordot` computes the forward pass and the input gradient exactly, and
the weight gradient as a ``K``-group contraction scattered into zeros: ``K/G`` of the dense
weight-gradient FLOPs. ``K`` is static (one compilation per budget), the group indices are
dynamic (changing which heads are active never recompiles).

The projections of :mod:`rgft_jax.models` look themselves up in :func:`group_grads` (a
context set by the training loop while it traces the loss), so the models stay ordinary
modules with no RGFT-specific arguments.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["GroupGrad", "active_group_spec", "group_grads", "group_sparse_dot",
           "group_sparse_tensordot"]


class GroupGrad(NamedTuple):
    """Which groups of a kernel get weight gradients."""

    idx: jax.Array  # int32 [K]: active group indices (dynamic)
    axis: int  # kernel axis split into groups (static)
    n_groups: int  # G (static)
    merge: int = 1  # kernel axes axis .. axis + merge - 1 split as one (row-major; static)


_ACTIVE: contextvars.ContextVar[Mapping[int, GroupGrad] | None] = contextvars.ContextVar(
    "rgft_group_grads", default=None)


@contextlib.contextmanager
def group_grads(mapping: Mapping[int, GroupGrad]) -> Iterator[None]:
    """Within the block, the projection objects whose ``id`` is a key use group-sparse grads."""
    token = _ACTIVE.set(dict(mapping))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_group_spec(module: Any) -> GroupGrad | None:
    """The :class:`GroupGrad` registered for ``module`` in the current context, if any."""
    active = _ACTIVE.get()
    return None if active is None else active.get(id(module))


def _split(x: jax.Array, axis: int, g: int) -> jax.Array:
    return x.reshape(x.shape[:axis] + (g, x.shape[axis] // g) + x.shape[axis + 1 :])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def group_sparse_tensordot(
    x: jax.Array, kernel: jax.Array, idx: jax.Array, n_in: int, axis: int, n_groups: int
) -> jax.Array:
    """``tensordot(x, kernel, n_in)`` whose kernel gradient covers only groups ``idx``.

    Args:
      x: ``[..., *in_features]``.
      kernel: ``in_features + out_features``.
      idx: int32 ``[K]`` active groups along ``axis`` of the kernel.
      n_in: number of contracted (input) axes.
      axis: kernel axis split into ``n_groups`` equal groups.
      n_groups: ``G``.

    Returns:
      ``[..., *out_features]``, exactly the dense result. The kernel cotangent is exact on
      the active groups and zero elsewhere; the input cotangent is exact.
    """
    return jnp.tensordot(x, kernel, axes=n_in)


def _fwd(x, kernel, idx, n_in, axis, n_groups):
    return jnp.tensordot(x, kernel, axes=n_in), (x, kernel, idx)


def _bwd(n_in, axis, n_groups, res, dy):
    x, kernel, idx = res
    n_out = kernel.ndim - n_in
    nb = x.ndim - n_in  # batch axes of x (and of dy)
    # dx = dy . kernel^T over the output axes.
    dx = jnp.tensordot(dy, kernel, axes=(list(range(nb, nb + n_out)),
                                         list(range(n_in, n_in + n_out))))
    batch = list(range(nb))
    if axis >= n_in:  # groups on an output axis: gather dy's groups
        ya = nb + axis - n_in
        dy_sel = jnp.take(_split(dy, ya, n_groups), idx, axis=ya)  # [..., K, s, ...]
        dw_sel = jnp.tensordot(x, dy_sel, axes=(batch, batch))  # in + out(split, K)
    else:  # groups on an input axis: gather x's groups
        xa = nb + axis
        x_sel = jnp.take(_split(x, xa, n_groups), idx, axis=xa)
        dw_sel = jnp.tensordot(x_sel, dy, axes=(batch, batch))
    zeros = jnp.zeros(_split(kernel, axis, n_groups).shape, dw_sel.dtype)
    dw = zeros.at[(slice(None),) * axis + (idx,)].set(dw_sel).reshape(kernel.shape)
    return dx.astype(x.dtype), dw.astype(kernel.dtype), None


group_sparse_tensordot.defvjp(_fwd, _bwd)


def group_sparse_dot(x: jax.Array, kernel: jax.Array, spec: GroupGrad, n_in: int) -> jax.Array:
    """:func:`group_sparse_tensordot` for a :class:`GroupGrad`, merged split axes included.

    Merged axes (``spec.merge > 1``, e.g. the ``[H, Dh]`` output axes of a query kernel
    split into per-head blocks) are read as one axis of a reshaped view of the kernel (and
    of ``x`` when they are input axes); the result has the unmerged shape.
    """
    a, k = spec.axis, spec.merge
    if k == 1:
        return group_sparse_tensordot(x, kernel, spec.idx, n_in, a, spec.n_groups)
    if a < n_in < a + k:
        raise ValueError(f"group_sparse_dot: split axes {tuple(range(a, a + k))} of a kernel "
                         f"{kernel.shape} straddle its {n_in} input axes; merged axes must be "
                         "all input or all output axes.")
    merged = kernel.shape[:a] + (-1,) + kernel.shape[a + k:]
    kv = kernel.reshape(merged)
    if a < n_in:  # merged input axes: merge x's matching trailing axes too
        nb = x.ndim - n_in
        xv = x.reshape(x.shape[:nb + a] + (-1,) + x.shape[nb + a + k:])
        return group_sparse_tensordot(xv, kv, spec.idx, n_in - k + 1, a, spec.n_groups)
    y = group_sparse_tensordot(x, kv, spec.idx, n_in, a, spec.n_groups)
    nb = x.ndim - n_in
    return y.reshape(y.shape[:nb] + kernel.shape[n_in:])
