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
from rgft_jax.training._step import LM_TASKS, cast_params, forward, loss_and_stats


def make_eval_step(graphdef: Any, rest: Any, task: str, compute_dtype: Any = None) -> Callable:
    """``eval_step(params, batch)``: predictions, and the NLL sum and token count of LM tasks.

    ``compute_dtype`` casts the params for the forward pass as the train step does.
    """

    @jax.jit
    def eval_step(params, batch):
        model = nnx.merge(graphdef, cast_params(params, compute_dtype), rest)
        _, stats = loss_and_stats(forward(model, batch, task, True, None), batch, task)
        return stats if task in LM_TASKS else {"pred": stats["pred"]}

    return eval_step


def evaluate(
    eval_step: Callable, params: Any, batches: Iterable[Mapping[str, np.ndarray]], *,
    task: str, num_classes: int | None, put: Callable, progress: bool = False,
) -> dict[str, Any]:
    """Exact metrics over ``batches`` (padded examples flagged by ``valid`` are ignored).

    ``'lm'``: token-weighted NLL and perplexity, ``exp(sum nll / sum loss tokens)`` over the
    whole set (padded rows and padding tokens count for nothing, so the batching does not
    change it). ``'instruct'`` with choice rows (``[B, C, T]``): accuracy and macro-F1 of the
    label word with the highest log-likelihood, plus the perplexity of the gold answers;
    with plain rows, as ``'lm'``.

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
        if task in LM_TASKS:
            nll += float(out["nll_sum"])
            tokens += float(out["tokens"])
        if "pred" in out:
            preds.append(np.asarray(out["pred"])[valid])
            labels.append(np.asarray(batch["label"])[valid])
    result: dict[str, Any] = {}
    if task in LM_TASKS:
        mean = nll / max(tokens, 1.0)
        result = {"nll": mean, "perplexity": math.exp(mean), "tokens": tokens}
    if preds:
        if num_classes is None:
            raise ValueError(f"evaluate: task={task!r} with predictions needs num_classes.")
        result.update(classification_metrics(np.concatenate(preds), np.concatenate(labels),
                                             num_classes))
    return result
