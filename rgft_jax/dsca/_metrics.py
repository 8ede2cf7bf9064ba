# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Clustering agreement scores in ``jax.numpy``: adjusted Rand index and normalised MI.

Both take integer label vectors with a *static* number of possible labels, build the
contingency table with one ``segment_sum`` and are jittable. They follow scikit-learn's
``adjusted_rand_score`` and ``normalized_mutual_info_score`` (arithmetic normaliser),
including their conventions for the degenerate cases.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["adjusted_rand_index", "contingency", "normalized_mutual_info"]


def _num_labels(labels, num, argname: str) -> int:
    if num is not None:
        if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 1:
            raise ValueError(f"{argname} must be an int >= 1, got {num!r}.")
        return int(num)
    try:
        return int(np.max(np.asarray(labels))) + 1
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError) as e:
        raise ValueError(
            f"{argname}=None needs concrete labels; under jit pass {argname} (a static int)."
        ) from e


def contingency(labels_a: jax.Array, labels_b: jax.Array, num_a: int, num_b: int) -> jax.Array:
    """``float32[num_a, num_b]`` counts ``n_ij = #{x : a(x) = i, b(x) = j}``.

    Labels outside ``[0, num)`` are dropped (they count in no cell).
    """
    a = jnp.asarray(labels_a).astype(jnp.int32)
    b = jnp.asarray(labels_b).astype(jnp.int32)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"contingency: labels must be two 1-D arrays of one length, got {a.shape} and "
            f"{b.shape}."
        )
    ok = (a >= 0) & (a < num_a) & (b >= 0) & (b < num_b)
    idx = jnp.where(ok, a * num_b + b, num_a * num_b)
    n = jax.ops.segment_sum(ok.astype(jnp.float32), idx, num_segments=num_a * num_b + 1)
    return n[:-1].reshape(num_a, num_b)


def _comb2(x: jax.Array) -> jax.Array:
    return x * (x - 1.0) * 0.5


def adjusted_rand_index(
    labels_true: jax.Array,
    labels_pred: jax.Array,
    *,
    num_true: int | None = None,
    num_pred: int | None = None,
) -> jax.Array:
    r"""Adjusted Rand index (Hubert & Arabie, 1985), equal to scikit-learn's.

    .. math::

      \mathrm{ARI} = \frac{\sum_{ij}\binom{n_{ij}}{2} - \sum_i\binom{a_i}{2}
      \sum_j\binom{b_j}{2}/\binom{n}{2}}{\tfrac12\left[\sum_i\binom{a_i}{2} +
      \sum_j\binom{b_j}{2}\right] - \sum_i\binom{a_i}{2}\sum_j\binom{b_j}{2}/\binom{n}{2}}

    All sums are divided by :math:`\binom{n}{2}` first, so float32 stays accurate for
    ``n`` in the millions. When the denominator is zero (both labelings put everything in
    one cluster, or every point in its own) the score is 1, as in scikit-learn.

    Args:
      labels_true: ``int[n]`` labels in ``[0, num_true)``.
      labels_pred: ``int[n]`` labels in ``[0, num_pred)``.
      num_true: number of possible true labels (static); ``None`` infers it from concrete
        labels (not under ``jit``).
      num_pred: the same for ``labels_pred``.

    Returns:
      ``float32`` scalar in ``[-1, 1]`` (``[-0.5, 1]`` in practice).
    """
    ka = _num_labels(labels_true, num_true, "num_true")
    kb = _num_labels(labels_pred, num_pred, "num_pred")
    n_ij = contingency(labels_true, labels_pred, ka, kb)
    n = jnp.sum(n_ij)
    pairs = jnp.maximum(_comb2(n), 1.0)
    x = jnp.sum(_comb2(n_ij)) / pairs
    a = jnp.sum(_comb2(jnp.sum(n_ij, axis=1))) / pairs
    b = jnp.sum(_comb2(jnp.sum(n_ij, axis=0))) / pairs
    expected = a * b
    den = 0.5 * (a + b) - expected
    degenerate = jnp.abs(den) <= 1e-12
    return jnp.where(degenerate, 1.0, (x - expected) / jnp.where(degenerate, 1.0, den))


def _entropy(counts: jax.Array, n: jax.Array) -> jax.Array:
    p = counts / n
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def normalized_mutual_info(
    labels_true: jax.Array,
    labels_pred: jax.Array,
    *,
    num_true: int | None = None,
    num_pred: int | None = None,
) -> jax.Array:
    r"""Normalised mutual information with the arithmetic mean, equal to scikit-learn's.

    .. math::

      \mathrm{NMI} = \frac{I(A; B)}{\tfrac12\,[H(A) + H(B)]},\qquad
      I(A;B) = \sum_{ij} \frac{n_{ij}}{n}\log\frac{n\,n_{ij}}{a_i b_j}.

    Both labelings with a single cluster give 1; otherwise ``I = 0`` gives 0.

    Args:
      labels_true: ``int[n]`` labels in ``[0, num_true)``.
      labels_pred: ``int[n]`` labels in ``[0, num_pred)``.
      num_true: number of possible true labels (static, or ``None`` for concrete labels).
      num_pred: the same for ``labels_pred``.

    Returns:
      ``float32`` scalar in ``[0, 1]``.
    """
    ka = _num_labels(labels_true, num_true, "num_true")
    kb = _num_labels(labels_pred, num_pred, "num_pred")
    n_ij = contingency(labels_true, labels_pred, ka, kb)
    n = jnp.maximum(jnp.sum(n_ij), 1.0)
    a = jnp.sum(n_ij, axis=1)
    b = jnp.sum(n_ij, axis=0)
    outer = a[:, None] * b[None, :]
    safe = n_ij > 0
    mi = jnp.sum(
        jnp.where(
            safe,
            (n_ij / n)
            * (
                jnp.log(jnp.where(safe, n_ij, 1.0))
                + jnp.log(n)
                - jnp.log(jnp.where(safe, outer, 1.0))
            ),
            0.0,
        )
    )
    mi = jnp.maximum(mi, 0.0)
    ha, hb = _entropy(a, n), _entropy(b, n)
    both_single = (jnp.sum(a > 0) <= 1) & (jnp.sum(b > 0) <= 1)
    norm = 0.5 * (ha + hb)
    nmi = jnp.where(mi <= 1e-12, 0.0, mi / jnp.where(norm > 0, norm, 1.0))
    return jnp.where(both_single, 1.0, jnp.clip(nmi, 0.0, 1.0))
