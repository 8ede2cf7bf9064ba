# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""The linear additive performance predictor of MFTC (equations 6-7 of the seed).

A probe switches one node ``i`` of the base network :math:`N_e` to candidate ``j`` and
measures :math:`b^A_{ij} = \mathrm{Acc}(N_e \oplus b_{ij}) - \mathrm{Acc}(N_e)` and
:math:`b^L_{ij}` likewise for the loss (equation 6). Repeating each probe (seeds, batches)
gives the coefficients as means and their uncertainty as standard errors; configurations are
then predicted additively (equation 7):

.. math::

  \mathrm{Acc}(N) \approx \mathrm{Acc}(N_e) + \sum_i b^A_{i c_i}, \qquad
  \mathrm{Loss}(N) \approx \mathrm{Loss}(N_e) + \sum_i b^L_{i c_i}.

Host-side numpy; :func:`evaluate_predictor` scores predictions against configurations that
were really trained (MAE, :math:`R^2`, Spearman).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "LinearPredictor",
    "Prediction",
    "PredictorScores",
    "evaluate_predictor",
    "fit_predictor",
    "predict",
]


class LinearPredictor(NamedTuple):
    """Coefficients of the additive predictor, fitted by :func:`fit_predictor`."""

    accuracy: np.ndarray  # float64 [m, n]: mean probed accuracy change b^A_ij
    loss: np.ndarray  # float64 [m, n]: mean probed loss change b^L_ij
    accuracy_sigma: np.ndarray  # float64 [m, n]: standard error of accuracy (ddof=1)
    loss_sigma: np.ndarray  # float64 [m, n]: standard error of loss (ddof=1)
    repeats: int  # probe repeats per coefficient


class Prediction(NamedTuple):
    """Predicted performance of configurations, from :func:`predict`."""

    accuracy: np.ndarray  # float64 [b]: base_accuracy + sum_i b^A[i, c_i]
    loss: np.ndarray  # float64 [b]: base_loss + sum_i b^L[i, c_i]
    accuracy_sigma: np.ndarray  # float64 [b]: sqrt(sum_i sigma_A[i, c_i]^2)
    loss_sigma: np.ndarray  # float64 [b]: sqrt(sum_i sigma_L[i, c_i]^2)


class PredictorScores(NamedTuple):
    """Agreement of predicted and true values, from :func:`evaluate_predictor`."""

    mae: float  # mean |predicted - true|
    r2: float  # 1 - SS_res / SS_tot (NaN when true is constant)
    spearman: float  # rank correlation (NaN when either side is constant)


def _probes(name: str, value: Any) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"fit_predictor: {name} must be a real [repeats, m, n] array, got "
                        f"{value!r}.") from e
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(f"fit_predictor: {name} must be a [repeats, m, n] array with every "
                         f"axis >= 1, got shape {a.shape}.")
    if a.shape[0] < 2:
        raise ValueError(f"fit_predictor: {name} has {a.shape[0]} repeat(s); the standard "
                         "error needs repeats >= 2.")
    if not np.all(np.isfinite(a)):
        r, i, j = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"fit_predictor: {name}[{r}, {i}, {j}]={float(a[r, i, j])!r}; every probe "
                         "must be finite.")
    return a


def fit_predictor(accuracy_probes: Any, loss_probes: Any) -> LinearPredictor:
    r"""Fits the additive predictor (equation 7) from repeated single-switch probes.

    Coefficients are the probe means; their uncertainty is the standard error
    :math:`\sigma = \mathrm{std}_{\mathrm{ddof}=1} / \sqrt{\mathrm{repeats}}`, the ``sigma``
    of :func:`rgft_jax.search.solve`'s confidence penalty.

    Args:
      accuracy_probes: ``[repeats, m, n]`` measured accuracy change of switching node ``i``
        alone to candidate ``j`` (:math:`b^A_{ij}`, equation 6), one row per repeat.
      loss_probes: ``[repeats, m, n]`` measured loss change (:math:`b^L_{ij}`).

    Returns:
      A :class:`LinearPredictor`.

    Examples:
      >>> import numpy as np
      >>> from rgft_jax import search
      >>> acc = np.array([[[0.0, 1.0]], [[0.0, 3.0]]])  # 2 repeats, 1 node, 2 candidates
      >>> p = search.fit_predictor(acc, -acc)
      >>> p.accuracy.tolist(), p.accuracy_sigma.tolist()
      ([[0.0, 2.0]], [[0.0, 1.0]])
    """
    acc = _probes("accuracy_probes", accuracy_probes)
    loss = _probes("loss_probes", loss_probes)
    if acc.shape != loss.shape:
        raise ValueError(f"fit_predictor: accuracy_probes has shape {acc.shape} and "
                         f"loss_probes {loss.shape}; they must be equal.")
    reps = acc.shape[0]
    se = lambda a: a.std(axis=0, ddof=1) / np.sqrt(reps)
    return LinearPredictor(acc.mean(axis=0), loss.mean(axis=0), se(acc), se(loss), reps)


def predict(
    coeffs: LinearPredictor,
    choices: Any,
    *,
    base_accuracy: float = 0.0,
    base_loss: float = 0.0,
) -> Prediction:
    """Predicts accuracy and loss of a batch of configurations (equation 7).

    The uncertainties add in quadrature: the probes of different coefficients are independent.

    Args:
      coeffs: a :class:`LinearPredictor`.
      choices: int ``[b, m]`` (or ``[m]``: one configuration), candidate index per node.
      base_accuracy: accuracy of the base network :math:`N_e` (``0``: predict changes).
      base_loss: loss of the base network (``0``: predict changes).

    Returns:
      A :class:`Prediction` with ``[b]`` fields (``[]`` for a single ``[m]`` configuration).

    Examples:
      >>> import numpy as np
      >>> from rgft_jax import search
      >>> p = search.LinearPredictor(np.array([[0.0, 1.0], [0.0, 2.0]]), np.zeros((2, 2)),
      ...                            np.zeros((2, 2)), np.zeros((2, 2)), 2)
      >>> search.predict(p, [[0, 0], [1, 1]], base_accuracy=0.5).accuracy.tolist()
      [0.5, 3.5]
    """
    m, n = np.shape(coeffs.accuracy)
    c = np.asarray(choices)
    if not np.issubdtype(c.dtype, np.integer) or c.ndim not in (1, 2) or c.shape[-1] != m:
        raise ValueError(f"predict: choices must be an int [b, {m}] or [{m}] array (one "
                         f"candidate index per node), got dtype {c.dtype} shape {c.shape}.")
    if c.size and (c.min() < 0 or c.max() >= n):
        raise ValueError(f"predict: choices holds {int(c.min())}..{int(c.max())}; candidate "
                         f"indices must lie in [0, {n}).")
    rows = np.arange(m)
    pick = lambda a: np.asarray(a, np.float64)[rows, c]  # [..., m]
    return Prediction(
        accuracy=float(base_accuracy) + pick(coeffs.accuracy).sum(-1),
        loss=float(base_loss) + pick(coeffs.loss).sum(-1),
        accuracy_sigma=np.sqrt((pick(coeffs.accuracy_sigma) ** 2).sum(-1)),
        loss_sigma=np.sqrt((pick(coeffs.loss_sigma) ** 2).sum(-1)),
    )


def evaluate_predictor(predicted: Any, true: Any) -> PredictorScores:
    r"""Scores predictions against measured values: MAE, :math:`R^2` and Spearman's rho.

    Call it once per quantity (accuracy, loss) on configurations that were really trained.

    Args:
      predicted: ``[k]`` predicted values (``k >= 2``).
      true: ``[k]`` measured values.

    Returns:
      :class:`PredictorScores`; :math:`R^2 = 1 - \sum (p - t)^2 / \sum (t - \bar t)^2` is NaN
      when ``true`` is constant, Spearman is NaN when either side is constant.

    Examples:
      >>> from rgft_jax import search
      >>> s = search.evaluate_predictor([1.0, 2.0, 4.0], [1.0, 3.0, 5.0])
      >>> round(s.mae, 6), round(s.r2, 6), s.spearman
      (0.666667, 0.75, 1.0)
    """
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.ndim != 1 or p.shape != t.shape or p.size < 2:
        raise ValueError(f"evaluate_predictor: predicted and true must be 1-D arrays of one "
                         f"length >= 2, got shapes {p.shape} and {t.shape}.")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ValueError("evaluate_predictor: predicted and true must be finite.")
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float(((p - t) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    # spearmanr warns (an error under filterwarnings=error) on constant input: NaN directly.
    const = np.all(p == p[0]) or np.all(t == t[0])
    rho = float("nan") if const else float(stats.spearmanr(p, t).statistic)
    return PredictorScores(float(np.abs(p - t).mean()), r2, rho)
