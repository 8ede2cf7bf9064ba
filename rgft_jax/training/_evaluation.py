# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Evaluation: a jitted forward per batch, exact metrics over a whole held-out set."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from rgft_jax.training._metrics import classification_metrics
from rgft_jax.training._step import forward, loss_and_stats


def make_eval_step(graphdef: Any, rest: Any, task: str) -> Callable:
    """``eval_step(params, batch)``: predictions, or the NLL sum and token count (``'lm'``)."""

    @jax.jit
    def eval_step(params, batch):
        logits = forward(nnx.merge(graphdef, params, rest), batch, task, True, None)
        _, stats = loss_and_stats(logits, batch, task)
        return stats if task == "lm" else {"pred": stats["pred"]}

    return eval_step


def evaluate(
    eval_step: Callable, params: Any, batches: Iterable[Mapping[str, np.ndarray]], *,
    task: str, num_classes: int | None, put: Callable, progress: bool = False,
) -> dict[str, Any]:
    """Exact metrics over ``batches`` (padded examples flagged by ``valid`` are ignored).

    Args:
      eval_step: from :func:`make_eval_step`.
      params: the params to evaluate.
      batches: host batches.
      task: the task of ``eval_step``.
      num_classes: classes of a classification task.
      put: moves a host batch to the devices.
      progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    preds, labels, nll, tokens = [], [], 0.0, 0.0
    for batch in tqdm(batches, desc="eval", disable=not progress, leave=False):
        out = jax.device_get(eval_step(params, put(batch)))
        rows = len(next(iter(batch.values())))
        valid = np.asarray(batch.get("valid", np.ones(rows, bool)))
        if task == "lm":
            nll += float(out["nll_sum"])
            tokens += float(out["tokens"])
        else:
            preds.append(np.asarray(out["pred"])[valid])
            labels.append(np.asarray(batch["label"])[valid])
    if task == "lm":
        mean = nll / max(tokens, 1.0)
        return {"nll": mean, "perplexity": math.exp(mean), "tokens": tokens}
    return classification_metrics(np.concatenate(preds), np.concatenate(labels), num_classes)
