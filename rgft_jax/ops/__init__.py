# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Operations the models use for RGFT's real savings (jax only).

:func:`group_sparse_tensordot` computes weight gradients for a projection's active groups
(heads, neuron groups) only; the models' projections find their group spec through
:func:`active_group_spec` inside a :func:`group_grads` context set by the training loop.
"""

from rgft_jax.ops._group_sparse import GroupGrad as GroupGrad
from rgft_jax.ops._group_sparse import active_group_spec as active_group_spec
from rgft_jax.ops._group_sparse import group_grads as group_grads
from rgft_jax.ops._group_sparse import group_sparse_dot as group_sparse_dot
from rgft_jax.ops._group_sparse import group_sparse_tensordot as group_sparse_tensordot

__all__ = ["GroupGrad", "active_group_spec", "group_grads", "group_sparse_dot",
           "group_sparse_tensordot"]
