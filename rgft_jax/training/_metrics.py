# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Evaluation metrics computed on the host."""

from __future__ import annotations

import numpy as np


def classification_metrics(
    preds: np.ndarray, labels: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Accuracy and macro-F1 (classes absent from both preds and labels are skipped)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    f1 = []
    for c in range(num_classes):
        if support[c] == 0 and predicted[c] == 0:
            continue
        denom = support[c] + predicted[c]
        f1.append(2 * tp[c] / denom if denom else 0.0)
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(np.mean(f1)) if f1 else 0.0,
        "confusion": cm.tolist(),
    }
