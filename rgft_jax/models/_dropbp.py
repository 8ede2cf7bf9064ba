# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""DropBP's switch: drop a residual branch's *backward* pass, keep its forward.

DropBP (Woo et al., NeurIPS 2024) computes ``x + f(x)`` as usual but, for a dropped branch,
backpropagates only through the identity: ``f``'s weights get no gradient and ``f``'s
backward is never computed. The models call :func:`branch` around each residual branch
(attention = 0, MLP = 1) inside :func:`layer` scopes; outside a :func:`drop_backward`
context :func:`branch` is the plain call, so models without DropBP are unchanged.

``flags`` is ``bool[L, 2]`` (layer, branch): Python / NumPy values pick the branch
statically (XLA's FLOPs count then drops); a traced array picks it with ``lax.cond`` (one
compiled step for every drop pattern; the skipped backward is skipped at run time, but a
static FLOPs count of the conditional cannot show it).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

__all__ = ["ATTENTION", "MLP", "branch", "drop_backward", "layer"]

ATTENTION, MLP = 0, 1
_FLAGS: contextvars.ContextVar[Any] = contextvars.ContextVar("dropbp_flags", default=None)
_LAYER: contextvars.ContextVar[int | None] = contextvars.ContextVar("dropbp_layer",
                                                                    default=None)


@contextlib.contextmanager
def drop_backward(flags: Any) -> Iterator[None]:
    """Within the context, branch ``b`` of layer ``l`` drops its backward iff
    ``flags[l, b]``."""
    token = _FLAGS.set(flags)
    try:
        yield
    finally:
        _FLAGS.reset(token)


@contextlib.contextmanager
def layer(index: int) -> Iterator[None]:
    """Marks the residual branches called inside as those of layer ``index``."""
    token = _LAYER.set(index)
    try:
        yield
    finally:
        _LAYER.reset(token)


def branch(which: int, fn: Callable[..., jax.Array], *args: Any) -> jax.Array:
    """``fn(*args)``, with its backward dropped when the current flags say so."""
    flags, index = _FLAGS.get(), _LAYER.get()
    if flags is None or index is None:
        return fn(*args)
    if isinstance(flags, (np.ndarray, list, tuple)):
        drop = bool(np.asarray(flags)[index, which])
        return jax.lax.stop_gradient(fn(*args)) if drop else fn(*args)
    return jax.lax.cond(flags[index, which], lambda *a: jax.lax.stop_gradient(fn(*a)), fn,
                        *args)
