# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The train step: partial backprop over a static pattern, for one compiled program.

:func:`make_train_step` returns a pure function ``step(state, batch)``. It differentiates
only the leaves whose pattern entry is not ``False`` (the others enter the model through
``stop_gradient``, so XLA drops their weight gradients and the backprop below the lowest
differentiated leaf), computes weight gradients of ``K`` active groups only for int
entries, fills the undifferentiated gradients with zeros and runs the method's optimizer
over the whole tree, telling it the pattern (``rgft_trainable``) and whether this is a
probe step (``rgft_observe``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rgft_jax import ops as sparse_grad
from rgft_jax._src import components as comp_lib
from rgft_jax._src import residual

TASKS = ("classification", "lm", "instruct", "image_classification")
#: Causal-LM tasks: ``'lm'`` (perplexity) and ``'instruct'`` (prompt -> label word, scored by
#: the highest label-word log-likelihood); both train on the next-token loss.
LM_TASKS = ("lm", "instruct")

#: Test hook (not a user code path): ``{'loss' | 'grads': steps}`` makes the steps built
#: while it is set return a NaN loss (and so NaN gradients) or an Inf gradient at those
#: ``state.step`` values. tests/faults/nonfinite_test.py sets it through monkeypatch.
FAULTS: dict[str, Any] | None = None


class TrainState(NamedTuple):
    """Everything a resumed run needs besides the data position."""

    step: jax.Array  # int32 []
    params: Any  # the model's nnx.Param state
    opt_state: Any  # the method's optimizer state (error map included)
    rng: jax.Array  # uint32 [2]: dropout stream
    dsca: Any = None  # DSCAState when the run clusters components on probe steps


def forward(model, batch, task, deterministic, rngs):
    """The model's logits on ``batch`` for ``task``.

    Causal-LM batches come in two formats: the rows of :mod:`rgft_jax.data` for decoders
    (``input_ids``, ``targets``, ``loss_mask``, ``segment_ids``: packed documents attend only
    within their segment, positions restart per segment) and the older ``input_ids`` +
    ``attention_mask`` (targets are the inputs shifted by one). Choice rows of the
    instruction evaluation (``[B, C, T]``) are flattened to ``[B * C, T]``.
    """
    if task == "image_classification":
        return model(batch["image"], deterministic=deterministic, rngs=rngs)
    if task in LM_TASKS:
        ids = batch["input_ids"]
        if "segment_ids" in batch:
            t = ids.shape[-1]
            return model(ids.reshape(-1, t), segment_ids=batch["segment_ids"].reshape(-1, t),
                         deterministic=deterministic, rngs=rngs)
        return model(ids, batch["attention_mask"], deterministic=deterministic, rngs=rngs)
    return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                 deterministic=deterministic, rngs=rngs)


def forward_prefix(model, batch, task, cut):
    """The split forward's lower half: ``model.hidden_at(cut, ...)`` (deterministic)."""
    if task == "image_classification":
        return model.hidden_at(cut, batch["image"])
    if task in LM_TASKS:
        if "segment_ids" in batch:  # decoder rows: packed documents stay apart
            return model.hidden_at(cut, batch["input_ids"], segment_ids=batch["segment_ids"])
        return model.hidden_at(cut, batch["input_ids"], batch["attention_mask"])
    return model.hidden_at(cut, batch["input_ids"], batch["attention_mask"],
                           batch.get("token_type_ids"))


def forward_suffix(model, hidden, batch, task, cut, deterministic, rngs):
    """The split forward's upper half: ``model.logits_from(cut, hidden, ...)``."""
    if task == "image_classification":
        return model.logits_from(cut, hidden, deterministic=deterministic, rngs=rngs)
    if task in LM_TASKS and "segment_ids" in batch:
        return model.logits_from(cut, hidden, segment_ids=batch["segment_ids"],
                                 deterministic=deterministic, rngs=rngs)
    return model.logits_from(cut, hidden, batch["attention_mask"], deterministic=deterministic,
                             rngs=rngs)


#: Batch key of the cached prefix output in an activation-cache ``'hit'`` step.
HIDDEN = "cached_hidden"
#: Modes of an activation-cache step: run the prefix and return its output / read it.
CACHE_MODES = ("fill", "hit")


def lm_token_nll(logits, batch):
    """Per-row NLL sums and loss-token counts ``([N], [N])`` of a causal-LM batch (float32).

    Rows with ``targets`` use them and ``loss_mask``; rows without shift ``input_ids`` and
    weight by ``attention_mask``. ``logits`` is ``[N, T, V]`` with ``N`` the flattened rows.
    """
    if "targets" in batch:
        t = batch["targets"].shape[-1]
        targets = batch["targets"].reshape(-1, t)
        mask = batch["loss_mask"].reshape(-1, t).astype(jnp.float32)
    else:
        logits = logits[:, :-1]
        targets = batch["input_ids"][:, 1:]
        mask = batch["attention_mask"][:, 1:].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.sum(nll * mask, axis=-1), jnp.sum(mask, axis=-1)


def loss_and_stats(logits, batch, task):
    """Mean loss and per-example statistics used by metrics.

    ``'lm'`` / ``'instruct'``: the token-weighted next-token NLL over ``loss_mask`` (answer
    tokens only for instruction rows), padded rows (``valid`` False) left out. Choice rows
    (``input_ids`` ``[B, C, T]``, evaluation only) add ``pred``: the choice with the highest
    summed log-likelihood, and score the gold choice's answer tokens as the loss.
    """
    if task in LM_TASKS:
        nll, count = lm_token_nll(logits, batch)
        stats = {}
        if batch["input_ids"].ndim == 3:  # [B, C, T] choices: score every label word
            b, c = batch["input_ids"].shape[:2]
            nll, count = nll.reshape(b, c), count.reshape(b, c)
            stats["pred"] = jnp.argmax(-nll, axis=-1).astype(jnp.int32)
            gold = batch["label"][:, None].astype(jnp.int32)
            nll = jnp.take_along_axis(nll, gold, axis=1)[:, 0]
            count = jnp.take_along_axis(count, gold, axis=1)[:, 0]
        if "valid" in batch:
            w = batch["valid"].reshape(-1).astype(jnp.float32)
            nll, count = nll * w, count * w
        total, tokens = jnp.sum(nll), jnp.sum(count)
        return total / jnp.maximum(tokens, 1.0), {"nll_sum": total, "tokens": tokens, **stats}
    labels = batch["label"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    valid = batch.get("valid")
    w = jnp.ones_like(losses) if valid is None else valid.astype(jnp.float32)
    loss = jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, {"pred": jnp.argmax(logits, -1).astype(jnp.int32)}


def cast_params(leaves, dtype):
    """Floating leaves cast to ``dtype`` (``None``: unchanged); a list or a pytree."""
    if dtype is None:
        return leaves
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, leaves)


def _group_specs(part: comp_lib.Partition, pattern, opt_state) -> dict[str, Any]:
    """Per kernel path: the indices of its ``K`` groups (active first), from the mask."""
    specs = {}
    grouped = [(i, k) for i, k in enumerate(pattern) if not isinstance(k, bool)]
    if grouped:
        mask = residual.error_map(opt_state).mask
        for i, k in grouped:
            s = part.leaves[i]
            inactive = mask[np.asarray(s.component_ids)] <= 0
            idx = jnp.argsort(inactive, stable=True)[:k].astype(jnp.int32)
            specs[s.path] = sparse_grad.GroupGrad(idx, s.axis, s.n_groups, s.merge)
    return specs


def _by_module(model, specs: dict[str, Any]) -> dict[int, Any]:
    by_module = {}
    for path, node in nnx.iter_graph(model):
        key = "/".join(map(str, path)) + "/kernel"
        if key in specs:
            by_module[id(node)] = specs[key]
    if len(by_module) != len(specs):
        owned = {"/".join(map(str, p)) + "/kernel" for p, _ in nnx.iter_graph(model)}
        raise ValueError(f"group-sparse gradients: no projection module owns "
                         f"{sorted(set(specs) - owned)}")
    return by_module


def make_train_step(
    graphdef: Any,
    rest: Any,
    tx: optax.GradientTransformationExtraArgs,
    pattern: tuple[bool | int, ...],
    observe: bool,
    *,
    task: str,
    dropout: bool,
    partition: comp_lib.Partition | None = None,
    dsca: tuple[Any, comp_lib.Partition] | None = None,
    compute_dtype: Any = None,
    cache: tuple[str, int] | None = None,
    drop_rates: tuple[np.ndarray, float] | None = None,
) -> Callable:
    """The step ``(state, batch) -> (state, metrics, library, error_map)`` of one pattern.

    Args:
      graphdef, rest: the model's graph and its non-param state (``nnx.split``).
      tx: the method's optimizer over the whole params tree.
      pattern: per params leaf ``False`` / ``True`` / ``K`` (see
        :func:`rgft_jax.training._patterns.sparse_pattern`); static.
      observe: a probe step: the optimizer observes the gradient (``rgft_observe``).
      task: one of :data:`TASKS`.
      dropout: train with dropout (keys folded from ``state.rng`` and the step).
      partition: the method's partition; needed for int pattern entries.
      dsca: ``(DSCAConfig, partition)``: on probe steps, sketch the full gradient and update
        the module library (``rgft_jax.dsca`` is imported only then).
      compute_dtype: mixed precision: the params (float32 masters, as is the optimizer
        state) enter the forward pass cast to this dtype (e.g. ``bfloat16``); their
        gradients come back in float32 through the cast. ``None``: as stored.
      cache: ``(mode, cut)`` of a frozen-prefix activation-cache step
        (:mod:`rgft_jax.training._cache`): ``'fill'`` runs ``hidden_at(cut)`` then
        ``logits_from(cut)`` and also returns the prefix output; ``'hit'`` reads it from
        ``batch[HIDDEN]`` and runs ``logits_from(cut)`` only. Deterministic steps only.
      drop_rates: DropBP: ``(rates [L, 2], target)``; each step drops the backward of the
        residual branches :func:`rgft_jax.training._anchors.sample_drop_flags` draws (key
        folded from ``state.rng`` and the step).

    Returns:
      The step; ``metrics`` are device scalars (``loss``, ``grad_norm``, ``accuracy``),
      ``library`` the DSCA library of a probe step (else ``None``) and ``error_map`` the
      optimizer's :class:`rgft_jax.ErrorMap` after the update (``None`` without a mask).
      A ``'fill'`` step returns the prefix output ``[B, ...]`` as a fifth element.
    """
    if task not in TASKS:
        raise ValueError(f"make_train_step: task={task!r}; allowed: {TASKS}.")
    if cache is not None:
        if (not isinstance(cache, tuple) or len(cache) != 2 or cache[0] not in CACHE_MODES
                or isinstance(cache[1], bool) or not isinstance(cache[1], int) or cache[1] < 0):
            raise ValueError(f"make_train_step: cache={cache!r}; allowed: None or (mode, cut) "
                             f"with mode in {CACHE_MODES} and an int cut >= 0.")
        if dropout:
            raise ValueError("make_train_step: cache= needs dropout=False (a cached prefix "
                             "output is only exact for a deterministic forward).")
    pattern = tuple(pattern)
    if partition is None and any(not isinstance(k, bool) for k in pattern):
        raise ValueError("make_train_step: int pattern entries need partition=.")
    # What the optimizer is told: False = not differentiated in this compiled step.
    trainable = tuple(k is not False for k in pattern)
    faults = dict(FAULTS or {})

    def at_fault(kind, step):
        steps = tuple(faults.get(kind, ()))
        return jnp.isin(step, jnp.asarray(steps, jnp.int32)) if steps else jnp.asarray(False)

    def step(state: TrainState, batch):
        treedef = jax.tree_util.tree_structure(state.params)
        leaves = jax.tree_util.tree_leaves(state.params)
        train = [x for x, t in zip(leaves, pattern) if t is not False]
        specs = {} if partition is None else _group_specs(partition, pattern, state.opt_state)

        def loss_fn(train_leaves):
            it = iter(train_leaves)
            full = [next(it) if t is not False else jax.lax.stop_gradient(x)
                    for x, t in zip(leaves, pattern)]
            model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(
                treedef, cast_params(full, compute_dtype)), rest)
            rngs = None
            if dropout:
                key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
                rngs = nnx.Rngs(dropout=key)
            drop = contextlib.nullcontext()
            if drop_rates is not None:
                from rgft_jax.models import _dropbp
                from rgft_jax.training._anchors import sample_drop_flags

                key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
                flags = sample_drop_flags(jax.random.fold_in(key, 0xDB), *drop_rates)
                drop = _dropbp.drop_backward(flags)
            with drop, sparse_grad.group_grads(_by_module(model, specs) if specs else {}):
                if cache is None:
                    logits, hidden = forward(model, batch, task, not dropout, rngs), None
                else:
                    hidden = (batch[HIDDEN] if cache[0] == "hit"
                              else forward_prefix(model, batch, task, cache[1]))
                    logits = forward_suffix(model, hidden, batch, task, cache[1], True, None)
            loss, stats = loss_and_stats(logits, batch, task)
            if cache is not None and cache[0] == "fill":
                stats = {**stats, HIDDEN: hidden}
            return jnp.where(at_fault("loss", state.step), jnp.nan, 1.0) * loss, stats

        (loss, stats), g_train = jax.value_and_grad(loss_fn, has_aux=True)(train)
        if g_train and "grads" in faults:
            g_train = [g_train[0] * jnp.where(at_fault("grads", state.step), jnp.inf, 1.0),
                       *g_train[1:]]
        # A step whose loss or gradient is not finite changes nothing (params, optimizer
        # state, DSCA state) but the step counter; the step is reported as skipped.
        grad_norm = optax.tree.norm(g_train)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        it = iter(g_train)
        grads = jax.tree_util.tree_unflatten(
            treedef, [next(it) if t is not False else jnp.zeros_like(x)
                      for x, t in zip(leaves, pattern)])
        updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                       rgft_observe=jnp.asarray(observe),
                                       rgft_trainable=trainable)
        # Masking the updates (not params): the same memory traffic as a plain update.
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": grad_norm,
                   "skipped": (~finite).astype(jnp.float32)}
        if task not in LM_TASKS:
            metrics["accuracy"] = jnp.mean((stats["pred"] == batch["label"]).astype(jnp.float32))
        dsca_state, library = state.dsca, None
        if dsca is not None and observe:  # probe step: the full gradient is here
            from rgft_jax import dsca as dsca_lib

            dsca_state, library = dsca_lib.dsca_step(state.dsca, dsca[1], grads, dsca[0],
                                                     updates=updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        opt_state = keep(opt_state, state.opt_state)
        if dsca_state is not None:
            dsca_state = keep(dsca_state, state.dsca)
        new = TrainState(state.step + 1, params, opt_state, state.rng, dsca_state)
        emap = None if partition is None else residual.error_map(opt_state)
        if cache is not None and cache[0] == "fill":
            return new, metrics, library, emap, stats[HIDDEN]
        return new, metrics, library, emap

    return step
