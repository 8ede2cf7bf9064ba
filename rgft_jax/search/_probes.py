# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Probes of the MFTC predictor on a model (equation 6 of the seed).

For every node ``i`` and candidate ``j`` the probe fine-tunes the base network with that one
switch for ``steps`` steps and measures

.. math::

  b^A_{ij} = \mathrm{Acc}(N_e \oplus b_{ij}) - \mathrm{Acc}(N_e), \qquad
  b^L_{ij} = \mathrm{Loss}(N_e \oplus b_{ij}) - \mathrm{Loss}(N_e)

on a probe split, where :math:`N_e` (every node off) trains only its task head on the same
batches. Each repeat draws its own head initialisation, LoRA initialisation and batches, so
the repeats give the coefficients' uncertainty (:func:`rgft_jax.search.fit_predictor`).

How it is batched: per LoRA rank, one model carries rank-``r`` adapters on the matrices of
*every* node, and one compiled step takes a per-component *gate* vector as a traced input
(``1`` on the switched node's blocks or adapters and the task head, ``0`` elsewhere; the
adapters' gate is ``lora_scale``, their learning-rate ratio). Every switch of that rank (and
the sparse switches and the base, on the first model) reuses that one step, so a probe run
compiles one train step and one eval step per LoRA rank. Probe steps differentiate every
leaf and mask the updates: they cost a full step each (the probes' cost is reported as it
is); the configurations they predict are trained with real sparse steps by the engine.

The first-order estimate replaces the ``steps`` of fine-tuning by one gradient per model:
Adam's early updates are about :math:`-\eta\,\mathrm{sign}(g)`, so to first order
:math:`\hat b^L_{ij} = -\texttt{steps} \cdot \eta \cdot \lVert \mathrm{gate}_{ij} \odot g
\rVert_1` (:math:`\eta` = ``first_order_lr``, e.g. the schedule's mean rate). LoRA's ``B``
starts at zero, so its gradient is the adapters' only first-order signal. It has no accuracy
counterpart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rgft_jax._src import components as comp_lib
from rgft_jax._src.budget import cost_flops
from rgft_jax.search import _space

__all__ = ["FirstOrder", "ProbeResult", "classification_eval", "classification_loss",
           "first_order", "probe"]


class ProbeResult(NamedTuple):
    """Measured single-switch probes, from :func:`probe`."""

    accuracy: np.ndarray  # float64 [repeats, m, n]: b^A_ij (column 'off' is 0)
    loss: np.ndarray  # float64 [repeats, m, n]: b^L_ij
    base_accuracy: np.ndarray  # float64 [repeats]: Acc(N_e) on the probe split
    base_loss: np.ndarray  # float64 [repeats]: Loss(N_e)
    first_order_loss: np.ndarray  # float64 [m, n]: -steps * lr * |gate * g|_1 (repeat 0)
    seconds: float  # wall time of the measured probes (compilation included)
    first_order_seconds: float  # wall time of the first-order estimate
    probe_steps: int  # train steps the measured probes ran, all switches and repeats
    nodes: tuple[_space.Node, ...]
    candidates: tuple[str, ...]


def classification_loss(model: Any, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Mean cross-entropy of a sequence classifier ``model(ids, mask, token_types)``."""
    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def classification_eval(model: Any, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, ...]:
    """``(loss sum, correct, count)`` over the rows of ``batch`` flagged ``valid`` (all if
    the batch has no ``valid``)."""
    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    w = batch["valid"].astype(jnp.float32) if "valid" in batch else jnp.ones_like(ce)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return jnp.sum(ce * w), jnp.sum(correct * w), jnp.sum(w)


def _as_device(batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in batch.items()}


class _Variant:
    """One model of the probes (a LoRA rank, or 0: no adapters) and its compiled steps."""

    def __init__(self, model, rank, nodes, rules, optimizer, loss_fn, eval_fn, alpha_ratio,
                 seed):
        self.rank, self.nodes, self.alpha_ratio = rank, nodes, alpha_ratio
        self.graphdef, self.params, self.rest = self._split(model, seed)
        self.part = comp_lib.Partition.build(self.params, rules)
        graphdef, rest, part = self.graphdef, self.rest, self.part

        def loss(p, batch):
            return loss_fn(nnx.merge(graphdef, p, rest), batch)

        self._grad = jax.jit(jax.grad(loss))
        self._grads: dict[Any, tuple[Any, float]] = {}  # batch shape -> (compiled, FLOPs)
        self._l1 = jax.jit(lambda g: part.reduce(g, jnp.abs))
        if optimizer is None:  # first-order only
            return

        def step(params, opt_state, gate, batch):
            value, g = jax.value_and_grad(loss)(params, batch)
            u, opt_state = optimizer.update(g, opt_state, params)
            u = jax.tree.map(lambda a, b: a * b.astype(a.dtype), u,
                             part.broadcast(gate, fill=1.0))
            return optax.apply_updates(params, u), opt_state, value

        self.init = jax.jit(optimizer.init)
        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.eval = jax.jit(lambda p, b: eval_fn(nnx.merge(graphdef, p, rest), b))

    def first_order(self, batches) -> tuple[np.ndarray, float]:
        r"""Per component :math:`\lVert g \rVert_1` of the gradient averaged over ``batches``
        (device batches), and XLA's FLOP count of those gradients."""
        g, flops = None, 0.0
        for b in batches:
            shape = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in b.items()))
            if shape not in self._grads:  # one compile per batch shape, counted by XLA
                run = self._grad.lower(self.params, b).compile()
                self._grads[shape] = (run, cost_flops(run))
            run, f = self._grads[shape]
            flops += f
            gb = run(self.params, b)
            g = gb if g is None else jax.tree.map(jnp.add, g, gb)
        # Per component: ||g||_1, the loss decrease of a unit sign step (Adam's early steps
        # are about -lr * sign(g)); the gate is linear in it.
        per_comp = self._l1(jax.tree.map(lambda x: x / len(batches), g))
        return np.asarray(per_comp, np.float64), flops

    def _split(self, model, seed):
        if self.rank:
            from rgft_jax.adapters import add_lora

            targets = [m for n in self.nodes for m in n.matrices]
            add_lora(model, targets=_space.anchored(dict.fromkeys(targets)), rank=self.rank,
                     alpha=self.alpha_ratio * self.rank, seed=seed)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return graphdef, jax.tree.map(jnp.asarray, nnx.to_pure_dict(params)), rest

    def load(self, model, seed) -> None:
        """Takes a fresh model's params (same structure: the compiled steps are reused)."""
        graphdef, params, _ = self._split(model, seed)
        if graphdef != self.graphdef:
            raise ValueError("probe: make_model returned models of different structures.")
        self.params = params

    def gate(self, node: _space.Node | None, kind: str, lora_scale: float) -> np.ndarray:
        g = np.zeros(len(self.part), np.float32)
        if node is None or kind == "off":
            return g
        if kind == "sparse":
            g[_space.component_indices(self.part, node.components, "probe")] = 1.0
        else:
            g[_space.lora_component_indices(self.part, node.matrices)] = lora_scale
        return g

    def run(self, gate: np.ndarray, batches, eval_batches) -> tuple[float, float]:
        params = jax.tree.map(jnp.copy, self.params)
        opt_state = self.init(params)
        gate = jnp.asarray(gate)
        for b in batches:
            params, opt_state, _ = self.step(params, opt_state, gate, b)
        s_loss = s_correct = s_n = 0.0
        for b in eval_batches:
            lo, co, n = jax.device_get(self.eval(params, b))
            s_loss, s_correct, s_n = s_loss + float(lo), s_correct + float(co), s_n + float(n)
        s_n = max(s_n, 1.0)
        return s_correct / s_n, s_loss / s_n


def _runs_on(kind: str, r: int, rank: int, variant: int) -> bool:
    """Whether switch ``(kind, r)`` is probed on the model of ``rank`` (index ``variant``):
    LoRA on its own rank's model, sparse switches on the first model."""
    return (kind == "lora" and r == rank) or (kind == "sparse" and variant == 0)


def _first_order_cells(out: np.ndarray, var: _Variant, variant: int, nodes, kinds,
                       per_comp: np.ndarray, scale: float, lora_scale: float) -> None:
    """Fills ``out[i, j] = -scale * per_comp . gate_ij`` for the switches of ``var``."""
    for i, node in enumerate(nodes):
        for j, (kind, r) in enumerate(kinds):
            if _runs_on(kind, r, var.rank, variant):
                out[i, j] = -scale * float(per_comp @ var.gate(node, kind, lora_scale))


class FirstOrder(NamedTuple):
    """The first-order estimate of every single switch, from :func:`first_order`."""

    loss: np.ndarray  # float64 [m, n]: -steps * lr * |gate_ij * g|_1 (column 'off': 0)
    flops: float  # XLA's FLOP count of the gradients computed (every model, every batch)
    seconds: float  # wall time (compilation included)
    nodes: tuple[_space.Node, ...]
    candidates: tuple[str, ...]
    #: The partition of the last model probed: carrying rank-``lora_rank`` adapters on every
    #: node's matrices (the largest LoRA rank among the candidates), or the plain model
    #: (``lora_rank=None``): what :func:`~rgft_jax.search.node_costs` and the cost model
    #: (over ``params``, that model's param shapes) read, without building it again.
    partition: comp_lib.Partition
    params: Any  # jax.ShapeDtypeStruct per param of that model
    lora_rank: int | None


def first_order(
    make_model: Callable[[int], nnx.Module],
    nodes: Sequence[_space.Node],
    *,
    rules: Sequence[comp_lib.Rule],
    batches: Sequence[Mapping[str, Any]],
    candidates: Sequence[str] = _space.DEFAULT_CANDIDATES,
    loss_fn: Callable[[Any, Any], jax.Array] = classification_loss,
    steps: int = 1,
    lr: float = 1.0,
    lora_scale: float = 1.0,
    lora_alpha_ratio: float = 2.0,
    seed: int = 0,
) -> FirstOrder:
    r"""The first-order estimate of every switch's loss change, without fine-tuning.

    One gradient of the base network, averaged over ``batches``, per model: one carrying
    rank-``r`` adapters on every node's matrices per LoRA rank (the first one also gives the
    ``'sparse'`` switches: the adapters' ``B`` starts at zero), or the plain model when
    there is no LoRA candidate: :math:`\hat b^L_{ij} = -\texttt{steps} \cdot \texttt{lr}
    \cdot \lVert \mathrm{gate}_{ij} \odot g \rVert_1` (see the module docstring). This is what
    :func:`probe` computes besides its measured probes, at the cost of ``len(batches)``
    gradients per model: cheap enough to choose a configuration inside a training budget.

    Args:
      make_model: ``seed -> model`` (a fresh model per call: adapters are added to it).
      nodes: the search space's nodes.
      rules: component rules of the partition the nodes were built on.
      batches: host batches the gradient is averaged over (at least one).
      candidates: candidate names, ``'off'`` first.
      loss_fn: ``(model, batch) -> scalar loss``.
      steps, lr: the estimate's scale (``steps`` sign steps of size ``lr``); the ranking
        does not depend on them.
      lora_scale: LoRA adapters' learning rate over the rest's.
      lora_alpha_ratio: LoRA ``alpha = ratio * rank``.
      seed: the models' seed (task head, adapters).

    Returns:
      A :class:`FirstOrder`.

    """
    cands = _space.check_candidates(candidates)
    nodes = tuple(nodes)
    if not nodes:
        raise ValueError("first_order: nodes is empty; allowed: at least one Node.")
    batches = [_as_device(b) for b in batches]
    if not batches:
        raise ValueError("first_order: batches is empty; allowed: at least one batch.")
    for name, v in (("steps", steps), ("lr", lr), ("lora_scale", lora_scale),
                    ("lora_alpha_ratio", lora_alpha_ratio)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"first_order: {name}={v!r}; allowed: a number > 0.")
    kinds = [_space.candidate_kind(c) for c in cands]
    # As in probe: sparse switches read the first model (adapters' B starts at 0, so the base
    # weights' gradient is the plain model's).
    ranks = sorted({r for k, r in kinds if k == "lora"}) or [0]
    out = np.zeros((len(nodes), len(cands)))
    flops, t0 = 0.0, time.perf_counter()
    for vi, rank in enumerate(ranks):
        var = _Variant(make_model(seed), rank, nodes, rules, None, loss_fn, None,
                       lora_alpha_ratio, seed)
        per_comp, f = var.first_order(batches)
        flops += f
        _first_order_cells(out, var, vi, nodes, kinds, per_comp, float(steps * lr),
                           float(lora_scale))
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), var.params)
    return FirstOrder(out, flops, time.perf_counter() - t0, nodes, cands, var.part, shapes,
                      rank or None)


def probe(
    make_model: Callable[[int], nnx.Module],
    nodes: Sequence[_space.Node],
    *,
    rules: Sequence[comp_lib.Rule],
    optimizer: optax.GradientTransformation,
    train_batches: Callable[[int], Iterable[Mapping[str, Any]]],
    eval_batches: Sequence[Mapping[str, Any]],
    steps: int,
    repeats: int = 2,
    candidates: Sequence[str] = _space.DEFAULT_CANDIDATES,
    loss_fn: Callable[[Any, Any], jax.Array] = classification_loss,
    eval_fn: Callable[[Any, Any], tuple[jax.Array, ...]] = classification_eval,
    lora_scale: float = 1.0,
    lora_alpha_ratio: float = 2.0,
    first_order_batches: int = 4,
    first_order_lr: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Measures :math:`b^A_{ij}, b^L_{ij}` of every single switch, ``repeats`` times.

    Args:
      make_model: ``seed -> model`` (a fresh model; the seed draws the task head).
      nodes: the search space's nodes (:func:`layer_nodes`, :func:`module_nodes`).
      rules: component rules of the partition the nodes were built on (task head excluded:
        excluded leaves always train).
      optimizer: the optimizer of the probes (e.g. a method's ``base_optimizer(steps)``: the
        schedule of the configurations the predictor is for).
      train_batches: ``repeat -> host batches``; the first ``steps`` are used, the same
        ones for the base network and every switch of that repeat.
      eval_batches: the probe split (host batches, padding rows flagged ``valid``).
      steps: train steps of each probe.
      repeats: probe repeats (>= 2: the predictor's sigma needs two).
      candidates: candidate names, ``'off'`` first (see :mod:`rgft_jax.search`).
      loss_fn: ``(model, batch) -> scalar loss`` of a train step.
      eval_fn: ``(model, batch) -> (loss sum, correct, count)``.
      lora_scale: LoRA adapters' learning rate over the rest's (a gate on their updates).
      lora_alpha_ratio: LoRA ``alpha = ratio * rank`` (same adapter scale at every rank).
      first_order_batches: batches averaged into the first-order estimate's gradient.
      first_order_lr: the step size of the first-order estimate (its ranking does not
        depend on it).
      progress: called with a line per finished switch (e.g. ``print``).

    Returns:
      A :class:`ProbeResult`; ``accuracy[:, :, 0]`` and ``loss[:, :, 0]`` (``'off'``) are 0.
    """
    cands = _space.check_candidates(candidates)
    nodes = tuple(nodes)
    if not nodes:
        raise ValueError("probe: nodes is empty; allowed: at least one Node.")
    for name, v, lo in (("steps", steps, 1), ("repeats", repeats, 2),
                        ("first_order_batches", first_order_batches, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"probe: {name}={v!r}; allowed: an int >= {lo}.")
    if not (isinstance(lora_scale, (int, float)) and lora_scale > 0):
        raise ValueError(f"probe: lora_scale={lora_scale!r}; allowed: a number > 0.")
    eval_set = [_as_device(b) for b in eval_batches]
    if not eval_set:
        raise ValueError("probe: eval_batches is empty; the probe split needs a batch.")
    kinds = [_space.candidate_kind(c) for c in cands]
    ranks = sorted({r for k, r in kinds if k == "lora"}) or [0]
    m, n = len(nodes), len(cands)
    acc = np.zeros((repeats, m, n))
    loss = np.zeros((repeats, m, n))
    base_acc, base_loss = np.zeros(repeats), np.zeros(repeats)
    first = np.zeros((m, n))
    say = progress or (lambda s: None)
    t_probe = t_first = 0.0
    probe_steps = 0
    variants: dict[int, _Variant] = {}
    for rep in range(repeats):
        it = iter(train_batches(rep))
        batches = [_as_device(next(it)) for _ in range(steps)]
        for vi, rank in enumerate(ranks):
            t0 = time.perf_counter()
            if rank not in variants:
                variants[rank] = _Variant(make_model(rep), rank, nodes, rules, optimizer,
                                          loss_fn, eval_fn, lora_alpha_ratio, seed=rep)
            else:
                variants[rank].load(make_model(rep), seed=rep)
            var = variants[rank]
            if rep == 0:  # first-order estimate: one averaged gradient per model
                t1 = time.perf_counter()
                per_comp, _ = var.first_order(batches[:first_order_batches])
                _first_order_cells(first, var, vi, nodes, kinds, per_comp,
                                   steps * first_order_lr, lora_scale)
                t_first += time.perf_counter() - t1
            if vi == 0:
                base_acc[rep], base_loss[rep] = var.run(var.gate(None, "off", 1.0), batches,
                                                        eval_set)
                probe_steps += steps
                say(f"repeat {rep}: base acc {base_acc[rep]:.4f} loss {base_loss[rep]:.4f}")
            for i, node in enumerate(nodes):
                for j, (kind, r) in enumerate(kinds):
                    if not _runs_on(kind, r, rank, vi):
                        continue
                    a, lo = var.run(var.gate(node, kind, lora_scale), batches, eval_set)
                    acc[rep, i, j], loss[rep, i, j] = a - base_acc[rep], lo - base_loss[rep]
                    probe_steps += steps
                    say(f"repeat {rep}: {node.name} {cands[j]}: dAcc {acc[rep, i, j]:+.4f} "
                        f"dLoss {loss[rep, i, j]:+.4f}")
            t_probe += time.perf_counter() - t0
    return ProbeResult(acc, loss, base_acc, base_loss, first, t_probe - t_first, t_first,
                       probe_steps, nodes, cands)
