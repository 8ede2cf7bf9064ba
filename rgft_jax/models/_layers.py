# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Building blocks shared by the reference models (BERT, GPT-2, ViT).

Every weight matrix of an attention block or an MLP is a :class:`Projection`, a small
``DenseGeneral``-style module with a ``kernel`` and an optional ``bias``. Keeping the head
axis explicit in the kernel (``[D, H, Dh]`` for query/key/value, ``[H, Dh, D]`` for the
output) lets per-head methods address heads without reshaping, and keeping each projection
a module of its own lets a later wrapper (LoRA, masks, quantisation) replace it in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rgft_jax.ops import active_group_spec, group_sparse_dot

Array = jax.Array
Initializer = Callable[..., Array]

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    # HF "gelu" is the exact erf formulation.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    # HF "gelu_new" / "gelu_pytorch_tanh" are the tanh approximation.
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

#: Names accepted for ``hidden_act`` / ``activation_function`` in HF configs.
SUPPORTED_ACTIVATIONS: frozenset[str] = frozenset(_ACTIVATIONS)


def get_activation(name: str) -> Callable[[Array], Array]:
    """Returns the activation function registered under ``name``.

    Args:
        name: HF activation name, one of :data:`SUPPORTED_ACTIVATIONS`.

    Returns:
        The element-wise activation function.

    Raises:
        ValueError: if ``name`` is not supported.
    """
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"activation={name!r} is not supported; allowed: {sorted(SUPPORTED_ACTIVATIONS)}"
        ) from None


_ZEROS: Initializer = nnx.initializers.zeros_init()


def _as_tuple(features: int | Sequence[int]) -> tuple[int, ...]:
    return (int(features),) if isinstance(features, int) else tuple(int(f) for f in features)


class Projection(nnx.Module):
    r"""Affine map contracting the trailing ``in_features`` axes into ``out_features`` axes.

    .. math::
        y_{\ldots o} = \sum_i x_{\ldots i} W_{i o} + b_o

    where ``i`` and ``o`` are multi-indices over ``in_features`` and ``out_features``.

    Attributes:
        kernel: ``nnx.Param`` of shape ``in_features + out_features``.
        bias: ``nnx.Param`` of shape ``out_features``, or ``None`` if ``use_bias=False``.
    """

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int | Sequence[int],
        *,
        use_bias: bool = True,
        kernel_init: Initializer | None = None,
        bias_init: Initializer = _ZEROS,
        param_dtype: jnp.dtype = jnp.float32,
        precision: jax.lax.PrecisionLike = None,
        rngs: nnx.Rngs,
    ) -> None:
        """Initialises the projection.

        Args:
            in_features: size(s) of the trailing input axes that are contracted.
            out_features: size(s) of the output axes that replace them.
            use_bias: whether to add a bias of shape ``out_features``.
            kernel_init: kernel initialiser; defaults to LeCun normal over the input axes.
            bias_init: bias initialiser.
            param_dtype: dtype of the parameters.
            precision: matmul precision passed to ``jnp.tensordot``.
            rngs: random streams; ``rngs.params`` draws the kernel.
        """
        self.in_features = _as_tuple(in_features)
        self.out_features = _as_tuple(out_features)
        self.precision = precision
        n_in, n_out = len(self.in_features), len(self.out_features)
        if kernel_init is None:
            kernel_init = nnx.initializers.variance_scaling(
                1.0,
                "fan_in",
                "truncated_normal",
                in_axis=tuple(range(n_in)),
                out_axis=tuple(range(n_in, n_in + n_out)),
            )
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), self.in_features + self.out_features, param_dtype)
        )
        self.bias = (
            nnx.Param(bias_init(rngs.params(), self.out_features, param_dtype))
            if use_bias
            else None
        )

    def __call__(self, x: Array) -> Array:
        """Applies the projection: ``[..., *in_features] -> [..., *out_features]``."""
        n_in = len(self.in_features)
        if x.shape[x.ndim - n_in :] != self.in_features:
            raise ValueError(
                f"input trailing shape {x.shape[x.ndim - n_in :]} does not match "
                f"in_features={self.in_features}"
            )
        spec = active_group_spec(self)
        if spec is None:
            y = jnp.tensordot(x, self.kernel[...], axes=n_in, precision=self.precision)
        else:  # an RGFT sparse step: weight gradients for the active groups only
            y = group_sparse_dot(x, self.kernel[...], spec, n_in)
        if self.bias is not None:
            y = y + self.bias[...]
        return y


def layer_norm(
    features: int, *, epsilon: float, param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
) -> nnx.LayerNorm:
    """LayerNorm with the two-pass variance that PyTorch uses (for parity)."""
    return nnx.LayerNorm(
        features,
        epsilon=epsilon,
        param_dtype=param_dtype,
        use_fast_variance=False,
        rngs=rngs,
    )


class MultiHeadAttention(nnx.Module):
    """Multi-head dot-product attention with an explicit head axis in every projection.

    Submodules ``query``, ``key``, ``value`` map ``[B, T, D] -> [B, T, H, Dh]`` and ``out``
    maps ``[B, T, H, Dh] -> [B, T, D]``; each is a :class:`Projection`.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        *,
        use_bias: bool = True,
        dropout_rate: float = 0.0,
        kernel_init: Initializer | None = None,
        out_kernel_init: Initializer | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        """Initialises the attention block.

        Args:
            hidden_size: model width ``D``.
            num_heads: number of heads ``H``; must divide ``hidden_size``.
            use_bias: whether query/key/value projections carry a bias (``out`` always does).
            dropout_rate: dropout on the attention probabilities.
            kernel_init: initialiser for the query/key/value kernels (and ``out`` by default).
            out_kernel_init: initialiser for the ``out`` kernel; defaults to ``kernel_init``.
            param_dtype: dtype of the parameters.
            rngs: random streams for initialisation.

        Raises:
            ValueError: if ``num_heads`` does not divide ``hidden_size``.
        """
        if num_heads <= 0 or hidden_size % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must be a positive divisor of hidden_size={hidden_size}"
            )
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        heads = (num_heads, self.head_dim)
        kw = dict(kernel_init=kernel_init, param_dtype=param_dtype, rngs=rngs)
        self.query = Projection(hidden_size, heads, use_bias=use_bias, **kw)
        self.key = Projection(hidden_size, heads, use_bias=use_bias, **kw)
        self.value = Projection(hidden_size, heads, use_bias=use_bias, **kw)
        kw["kernel_init"] = out_kernel_init or kernel_init
        self.out = Projection(heads, hidden_size, **kw)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(
        self,
        x: Array,
        mask: Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> Array:
        """Attends ``x`` to itself.

        Args:
            x: inputs ``[B, T, D]``.
            mask: boolean mask broadcastable to ``[B, H, T, S]``; ``True`` = attend.
            deterministic: disables dropout when ``True``.
            rngs: streams with a ``dropout`` key; required when ``deterministic=False``
                and ``dropout_rate > 0``.

        Returns:
            The attention output ``[B, T, D]``.
        """
        q = self.query(x)  # [B, T, H, Dh]
        k = self.key(x)  # [B, S, H, Dh]
        v = self.value(x)  # [B, S, H, Dh]
        logits = jnp.einsum("bthk,bshk->bhts", q, k) / math.sqrt(self.head_dim)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        probs = jax.nn.softmax(logits, axis=-1)  # [B, H, T, S]
        probs = self.dropout(probs, deterministic=deterministic, rngs=rngs)
        ctx = jnp.einsum("bhts,bshk->bthk", probs, v)  # [B, T, H, Dh]
        return self.out(ctx)


class Mlp(nnx.Module):
    """Two-layer feed-forward block ``down(act(up(x)))`` made of :class:`Projection` s."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        *,
        activation: str,
        kernel_init: Initializer | None = None,
        down_kernel_init: Initializer | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        """Initialises the MLP.

        Args:
            hidden_size: model width ``D``.
            intermediate_size: hidden width ``F``.
            activation: name in :data:`SUPPORTED_ACTIVATIONS`.
            kernel_init: initialiser for the ``up`` kernel (and ``down`` by default).
            down_kernel_init: initialiser for the ``down`` kernel; defaults to ``kernel_init``.
            param_dtype: dtype of the parameters.
            rngs: random streams for initialisation.
        """
        self.activation = activation
        self._act = get_activation(activation)
        kw = dict(kernel_init=kernel_init, param_dtype=param_dtype, rngs=rngs)
        self.up = Projection(hidden_size, intermediate_size, **kw)  # [D, F]
        kw["kernel_init"] = down_kernel_init or kernel_init
        self.down = Projection(intermediate_size, hidden_size, **kw)  # [F, D]

    def __call__(self, x: Array) -> Array:
        """Applies the MLP to ``[..., D]`` inputs."""
        return self.down(self._act(self.up(x)))


def iter_children(module: nnx.Module, prefix: str = ""):
    """Yields ``(parent, key, child, path)`` for every sub-module below ``module``, depth
    first, so a wrapper (LoRA, a Layer Card tap) can replace ``child`` in place with
    :func:`replace_child`; ``path`` is the '/'-joined module path."""
    for name, child in list(vars(module).items()):
        path = f"{prefix}/{name}" if prefix else name
        if isinstance(child, nnx.Module):
            yield module, name, child, path
            yield from iter_children(child, path)
        elif isinstance(child, (list, tuple, nnx.List)):
            for i, c in enumerate(child):
                if isinstance(c, nnx.Module):
                    yield child, i, c, f"{path}/{i}"
                    yield from iter_children(c, f"{path}/{i}")


def replace_child(parent, key: str | int, new: nnx.Module) -> None:
    """Puts ``new`` where :func:`iter_children` found a child (attribute or list slot)."""
    if isinstance(key, int):
        parent[key] = new
    else:
        setattr(parent, key, new)


def padding_mask(attention_mask: Array | None) -> Array | None:
    """Turns a ``[B, S]`` 0/1 key mask into a boolean ``[B, 1, 1, S]`` attention mask."""
    if attention_mask is None:
        return None
    return attention_mask.astype(bool)[:, None, None, :]


def causal_mask(length: int, attention_mask: Array | None = None) -> Array:
    """Boolean ``[B|1, 1, T, T]`` causal mask, combined with a ``[B, T]`` key mask if given."""
    mask = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask.astype(bool)[:, None, None, :]
    return mask
