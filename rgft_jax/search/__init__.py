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

from rgft_jax.search._flops import NodeCosts as NodeCosts
from rgft_jax.search._flops import node_costs as node_costs
from rgft_jax.search._flops import solve_flops as solve_flops
from rgft_jax.search._predictor import LinearPredictor as LinearPredictor
from rgft_jax.search._predictor import Prediction as Prediction
from rgft_jax.search._predictor import PredictorScores as PredictorScores
from rgft_jax.search._predictor import evaluate_predictor as evaluate_predictor
from rgft_jax.search._predictor import fit_predictor as fit_predictor
from rgft_jax.search._predictor import predict as predict
from rgft_jax.search._probes import FirstOrder as FirstOrder
from rgft_jax.search._probes import ProbeResult as ProbeResult
from rgft_jax.search._probes import classification_eval as classification_eval
from rgft_jax.search._probes import classification_loss as classification_loss
from rgft_jax.search._probes import first_order as first_order
from rgft_jax.search._probes import probe as probe
from rgft_jax.search._solve import SearchResult as SearchResult
from rgft_jax.search._solve import solve as solve
from rgft_jax.search._space import DEFAULT_CANDIDATES as DEFAULT_CANDIDATES
from rgft_jax.search._space import Node as Node
from rgft_jax.search._space import candidate_kind as candidate_kind
from rgft_jax.search._space import layer_nodes as layer_nodes
from rgft_jax.search._space import module_nodes as module_nodes

__all__ = [
    "DEFAULT_CANDIDATES",
    "FirstOrder",
    "LinearPredictor",
    "Node",
    "NodeCosts",
    "Prediction",
    "PredictorScores",
    "ProbeResult",
    "SearchResult",
    "candidate_kind",
    "classification_eval",
    "classification_loss",
    "evaluate_predictor",
    "first_order",
    "fit_predictor",
    "layer_nodes",
    "module_nodes",
    "node_costs",
    "predict",
    "probe",
    "solve",
    "solve_flops",
]
