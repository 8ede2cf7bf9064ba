# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""MFTC module search: a linear additive predictor and a one-candidate-per-node solver.

Usable without a model: probe each single switch a few times, fit the predictor, search.

>>> import numpy as np
>>> from rgft_jax import search
>>> rng = np.random.default_rng(0)
>>> acc = rng.normal([[0.0, 1.0, 2.0]] * 4, 0.1, size=(5, 4, 3))  # [repeats, m, n]
>>> loss = rng.normal([[0.0, 0.1, 0.3]] * 4, 0.01, size=(5, 4, 3))
>>> p = search.fit_predictor(acc, loss)
>>> r = search.solve(p.accuracy, p.loss, base_loss=1.0, loss_limit=1.7,
...                  sigma=p.accuracy_sigma, tau=1.0)
>>> bool(r.predicted_loss <= 1.7), r.choice.shape
(True, (4,))
"""

from rgft_jax.search._predictor import LinearPredictor as LinearPredictor
from rgft_jax.search._predictor import Prediction as Prediction
from rgft_jax.search._predictor import PredictorScores as PredictorScores
from rgft_jax.search._predictor import evaluate_predictor as evaluate_predictor
from rgft_jax.search._predictor import fit_predictor as fit_predictor
from rgft_jax.search._predictor import predict as predict
from rgft_jax.search._solve import SearchResult as SearchResult
from rgft_jax.search._solve import solve as solve

__all__ = [
    "LinearPredictor",
    "Prediction",
    "PredictorScores",
    "SearchResult",
    "evaluate_predictor",
    "fit_predictor",
    "predict",
    "solve",
]
