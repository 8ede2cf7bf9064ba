# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""One jitted train step and one loop for every fine-tuning method.

The model is split once into ``graphdef`` and a params tree. A step differentiates only
the leaves of a static *pattern* (so XLA never computes the weight gradients of frozen
leaves, nor backprop below the lowest trainable layer), fills the others with zeros, and
runs the method's optimizer over the whole tree. Patterns come from the method (LoRA,
BitFit, top layers: fixed) or, for RGFT and the mask baselines, from the current mask:
*probe steps* differentiate everything and update the error map, *sparse steps* only the
leaves holding an active component. Each pattern is compiled once and kept in a bounded
cache; FLOPs come from XLA's cost analysis of each compiled step, averaged over the steps
that actually ran, with the matmul FLOPs of its StableHLO beside them (XLA's count is
backend-specific: on GPU it leaves out most matmul work; see :mod:`rgft_jax.training._flops`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rgft_jax import ops as sparse_grad
from rgft_jax._src import residual
from rgft_jax.training import _flops as flops_lib
from rgft_jax.training import _methods as methods_lib

__all__ = ["TrainConfig", "TrainState", "Trainer", "classification_metrics", "fit_together"]

TASKS = ("classification", "lm", "image_classification")


class TrainState(NamedTuple):
    """Everything a resumed run needs besides the data position."""

    step: jax.Array  # int32 []
    params: Any  # the model's nnx.Param state
    opt_state: Any  # the method's optimizer state (error map included)
    rng: jax.Array  # uint32 [2]: dropout stream
    dsca: Any = None  # DSCAState when the run clusters components on probe steps


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings shared by every method (validated when built).

    Args:
      steps: optimizer steps.
      task: ``'classification'`` (batches with ``input_ids``, ``attention_mask``,
        ``token_type_ids``, ``label``), ``'lm'`` (``input_ids``, ``attention_mask``) or
        ``'image_classification'`` (``image``, ``label``).
      dropout: train with the model's dropout (``False``: deterministic forward).
      seed: seed of the dropout stream.
      max_compiled: bound of the compiled-step cache.
      log_every: steps between TensorBoard / history points.
      checkpoint_every: steps between checkpoints (0: none).
      keep_checkpoints: how many checkpoints orbax keeps.
      progress: show progress bars.
    """

    steps: int = 100
    task: str = "classification"
    dropout: bool = False
    seed: int = 0
    max_compiled: int = 8
    log_every: int = 10
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"TrainConfig: steps={self.steps!r} must be an int >= 1.")
        if self.task not in TASKS:
            raise ValueError(f"TrainConfig: task={self.task!r}; allowed: {TASKS}.")
        if not isinstance(self.max_compiled, int) or self.max_compiled < 1:
            raise ValueError(f"TrainConfig: max_compiled={self.max_compiled!r} must be >= 1.")
        for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig: {name}={v!r} must be an int >= 0.")


def _forward(model, batch, task, deterministic, rngs):
    if task == "image_classification":
        return model(batch["image"], deterministic=deterministic, rngs=rngs)
    if task == "lm":
        return model(batch["input_ids"], batch["attention_mask"], deterministic=deterministic,
                     rngs=rngs)
    return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                 deterministic=deterministic, rngs=rngs)


def _loss(logits, batch, task):
    """Mean loss and per-example statistics used by metrics."""
    if task == "lm":
        logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
        targets = batch["input_ids"][:, 1:]
        nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        mask = batch["attention_mask"][:, 1:].astype(jnp.float32)
        if "valid" in batch:
            mask = mask * batch["valid"][:, None].astype(jnp.float32)
        total = jnp.sum(nll * mask)
        count = jnp.sum(mask)
        return total / jnp.maximum(count, 1.0), {"nll_sum": total, "tokens": count}
    labels = batch["label"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    valid = batch.get("valid")
    w = jnp.ones_like(losses) if valid is None else valid.astype(jnp.float32)
    loss = jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, {"pred": jnp.argmax(logits, -1).astype(jnp.int32)}


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


def _peak_bytes(compiled) -> int:
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001 - backends without a memory analysis
        return -1


def _cost_flops(stage) -> float:
    """XLA's cost-analysis FLOPs of a lowered or compiled step (NaN when unavailable)."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without a cost analysis
        return float("nan")
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def _matmul_flops(lowered) -> float:
    """:func:`rgft_jax.training._flops.matmul_flops`, or NaN (with a warning) if unreadable."""
    try:
        return flops_lib.matmul_flops(lowered)
    except ValueError as e:  # accounting must never stop training
        import warnings

        warnings.warn(f"matmul FLOPs not counted for a compiled step: {e}", RuntimeWarning,
                      stacklevel=3)
        return float("nan")


def fsdp_spec(x: Any, mesh: Mesh, min_size: int = 2**18) -> P:
    """``P('fsdp', ...)`` on the first axis divisible by the fsdp size for large leaves."""
    n = mesh.shape.get("fsdp", 1)
    if n > 1 and x.size >= min_size:
        for axis, d in enumerate(x.shape):
            if d % n == 0:
                spec = [None] * x.ndim
                spec[axis] = "fsdp"
                return P(*spec)
    return P()


class _CompiledStep(NamedTuple):
    fn: Callable
    flops: float  # XLA's cost analysis of the compiled step
    matmul_flops: float  # dot_general + convolution FLOPs of its StableHLO (any backend)
    n_trainable: int
    peak_bytes: int  # XLA's memory analysis: arguments + outputs + temporaries - aliased


class Trainer:
    """Fine-tunes one NNX model with one :class:`~rgft_jax.training.Method`.

    Args:
      model: the NNX model (LoRA adapters are inserted in place for ``kind='lora'``).
      method: the method.
      config: loop settings.
      num_heads: attention heads per layer (component presets).
      num_layers: number of transformer layers (top-layer heuristic).
      num_classes: classes of a classification task (metrics).
      mesh: optional device mesh with axes ``('data', 'fsdp')``: batches are split over both
        axes, large matrices sharded over ``fsdp``, small state replicated.
      target_ratio: update ratio of the random / magnitude masks (e.g. RGFT's measured one).
      workdir: checkpoints and TensorBoard events go here (``None``: neither).
      dsca: DSCA on probe steps: a mapping of :class:`rgft_jax.dsca.DSCAConfig` keywords
        (``num_blocks`` is filled in) or a config for exactly this partition. Every probe step
        sketches the full gradient and updates the module library
        (:attr:`module_history`); the blocks are the method's components (the ``'heads'``
        components for methods without a mask).
      batch_shape: ``(batch, seq_len)`` of the training batches; needed by the cost model
        of ``threshold=('budget', f)``.
    """

    def __init__(
        self,
        model: nnx.Module,
        method: methods_lib.Method,
        config: TrainConfig,
        *,
        num_heads: int,
        num_layers: int,
        num_classes: int | None = None,
        mesh: Mesh | None = None,
        target_ratio: float | None = None,
        workdir: str | os.PathLike | None = None,
        dsca: Any = None,
        batch_shape: tuple[int, int] | None = None,
    ):
        if not isinstance(method, methods_lib.Method):
            raise TypeError(f"Trainer: method must be a Method, got {method!r}.")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer: config must be a TrainConfig, got {config!r}.")
        if config.task != "lm" and (num_classes is None or num_classes < 2):
            raise ValueError(f"Trainer: num_classes={num_classes!r} must be >= 2 for "
                             f"task={config.task!r}.")
        self.method, self.config = method, config
        self.num_classes = num_classes
        self.mesh = mesh
        self.workdir = None if workdir is None else os.fspath(workdir)
        if method.kind == "lora":
            from rgft_jax.adapters import add_lora

            self.lora_paths = add_lora(model, targets=method.lora_targets, rank=method.lora_rank,
                                       alpha=method.lora_alpha, seed=method.seed)
        from rgft_jax.models import Projection

        self._projection_kernels = frozenset(
            "/".join(map(str, path)) + "/kernel" for path, node in nnx.iter_graph(model)
            if isinstance(node, Projection))
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        # Plain nested dicts of arrays, not nnx Variables: every compiled call flattens its
        # inputs and rebuilds its outputs, and Variable objects make that host work grow
        # with the number of leaves of params + optimizer state (same paths, same order).
        params = nnx.to_pure_dict(params)
        self.treedef = jax.tree_util.tree_structure(params)
        self.tx, self.partition, trainable = methods_lib.build_optimizer(
            method, params, total_steps=config.steps, num_heads=num_heads,
            num_layers=num_layers, target_ratio=target_ratio, batch_shape=batch_shape)
        self.base_pattern = methods_lib.trainable_pattern(params, trainable)
        if self.partition is not None:  # frozen leaves (Rule(freeze=True)): never differentiated
            self.base_pattern = tuple(b and not s.frozen for b, s in
                                      zip(self.base_pattern, self.partition.leaves))
        self.total_params = methods_lib.count_params(params)
        self._param_shardings = None
        if mesh is not None:
            self._param_shardings = jax.tree.map(
                lambda x: NamedSharding(mesh, fsdp_spec(x, mesh)), params)
            params = jax.device_put(params, self._param_shardings)
        self.dsca_config = self.dsca_partition = None
        dsca_state = None
        if dsca is not None:
            from rgft_jax import dsca as dsca_lib
            from rgft_jax._src import components as comp_lib

            self.dsca_partition = self.partition or comp_lib.Partition.build(
                params, methods_lib.component_rules(
                    methods_lib.Method("rgft"), num_heads, params))
            if isinstance(dsca, Mapping):
                self.dsca_config = dsca_lib.DSCAConfig.for_partition(self.dsca_partition, **dsca)
            else:
                self.dsca_config = dsca
            dsca_state = dsca_lib.dsca_init(self.dsca_partition, config=self.dsca_config)
        self.module_history: list[dict[str, Any]] = []
        self.state = self._init_state(params)._replace(dsca=dsca_state)
        self._cache: collections.OrderedDict[tuple, _CompiledStep] = collections.OrderedDict()
        self.compilations = 0
        self.peak_bytes = 0  # largest XLA memory analysis of a compiled step
        self.pattern_steps: collections.Counter = collections.Counter()
        self.flops_by_pattern: dict[tuple, float] = {}
        self.matmul_flops_by_pattern: dict[tuple, float] = {}
        self.history: list[dict[str, Any]] = []
        self.error_history: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.step_times: list[float] = []
        # Per step: the first run of a freshly compiled step (buffer set-up, autotuning).
        self.fresh_steps: list[bool] = []
        self._host_map = None  # host copy of the error map after the last step
        self._sparse_cache: tuple[bytes, tuple] | None = None  # last mask -> its pattern
        self._ratio_sum = 0.0  # sum over every step (not just logged ones) of the update ratio
        self._eval_fn = None
        self._writer = None
        self._ckpt = None

    # ------------------------------------------------------------------ state
    def _init_state(self, params) -> TrainState:
        rng = jax.random.key_data(jax.random.key(self.config.seed))
        if self.mesh is None:
            opt_state = jax.jit(self.tx.init)(params)
        else:
            # jit(init) does not carry params' shardings to the state: derive them. fsdp_spec
            # depends on the shape only, so moments get their params' specs and the small
            # leaves (counts, RGFT's per-component vectors) are replicated. (Not
            # optax.tree_utils.tree_map_params: it calls init on a placeholder, which RGFT's
            # init rejects: it needs the real tree to check its partition.)
            abstract = jax.eval_shape(self.tx.init, params)
            shardings = jax.tree.map(
                lambda x: NamedSharding(self.mesh, fsdp_spec(x, self.mesh)), abstract)
            opt_state = jax.jit(self.tx.init, out_shardings=shardings)(params)
        return TrainState(jnp.zeros([], jnp.int32), params, opt_state, rng)

    @property
    def model(self) -> nnx.Module:
        """The model with the current params (a fresh merge)."""
        return nnx.merge(self.graphdef, self.state.params, self.rest)

    # ------------------------------------------------------------------ patterns
    def _current_map(self) -> residual.ErrorMap | None:
        if self.partition is None:
            return None
        return jax.device_get(residual.error_map(self.state.opt_state))

    def next_pattern(self) -> tuple[tuple[bool, ...], bool]:
        """The pattern of the next step and whether it is a probe step (error map observed)."""
        full = self.base_pattern
        if not self.method.uses_sparse_steps:
            return full, True
        em = self._host_map if self._host_map is not None else self._current_map()
        mask = np.asarray(em.mask)
        # The transform refreshes on its own count (finite steps seen), which lags the
        # trainer's step after a skipped non-finite gradient: align probes with it.
        step = int(em.step)
        fixed = self.method.kind in methods_lib.FIXED_MASK_KINDS
        if step == 0 and self.method.capacity is not None:
            return full, True  # the compact state's first step refreshes the mask
        if not fixed:
            refresh_next = bool(residual.refreshes(
                step + 1, self.method.update_every, self.method.warmup_steps))
            if refresh_next or np.all(mask > 0):
                return full, True  # probe: the refresh needs every component's gradient
        elif step == 0:
            return full, True  # the fixed mask is installed by the first update
        key = mask.tobytes()
        if self._sparse_cache is None or self._sparse_cache[0] != key:
            # The mask only changes on refresh steps: recompute the pattern only then.
            sparse = methods_lib.sparse_pattern(self.partition, mask)
            # Group-sparse weight gradients exist for projection kernels; other leaves dense.
            sparse = tuple(
                True if (not isinstance(b, bool) and s.path not in self._projection_kernels)
                else b for b, s in zip(sparse, self.partition.leaves))
            self._sparse_cache = (key, tuple(b if a else False for a, b in zip(full, sparse)))
        return self._sparse_cache[1], False

    # ------------------------------------------------------------------ steps
    def _make_step(self, pattern: tuple[bool, ...], observe: bool) -> Callable:
        graphdef, rest, tx, treedef = self.graphdef, self.rest, self.tx, self.treedef
        task, dropout = self.config.task, self.config.dropout
        part = self.partition
        dsca_cfg, dsca_part = self.dsca_config, self.dsca_partition
        # Leaves with an int entry get weight gradients for their K active groups only.
        grouped = {part.leaves[i].path: (i, k) for i, k in enumerate(pattern)
                   if not isinstance(k, bool)}

        def step(state: TrainState, batch):
            leaves = jax.tree_util.tree_leaves(state.params)
            train = [x for x, t in zip(leaves, pattern) if t is not False]
            specs = {}
            if grouped:
                mask = residual.error_map(state.opt_state).mask
                for path, (i, k) in grouped.items():
                    s = part.leaves[i]
                    inactive = mask[np.asarray(s.component_ids)] <= 0
                    idx = jnp.argsort(inactive, stable=True)[:k].astype(jnp.int32)
                    specs[path] = sparse_grad.GroupGrad(idx, s.axis, s.n_groups)

            def loss_fn(train_leaves):
                it = iter(train_leaves)
                full = [next(it) if t is not False else jax.lax.stop_gradient(x)
                        for x, t in zip(leaves, pattern)]
                model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, full), rest)
                by_module = {}
                if specs:
                    for path, node in nnx.iter_graph(model):
                        key = "/".join(map(str, path)) + "/kernel"
                        if key in specs:
                            by_module[id(node)] = specs[key]
                    if len(by_module) != len(specs):
                        missing = sorted(set(specs) - {
                            "/".join(map(str, p)) + "/kernel" for p, _ in nnx.iter_graph(model)})
                        raise ValueError(
                            f"group-sparse gradients: no projection module owns {missing}")
                rngs = None
                if dropout:
                    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
                    rngs = nnx.Rngs(dropout=key)
                with sparse_grad.group_grads(by_module):
                    logits = _forward(model, batch, task, not dropout, rngs)
                loss, stats = _loss(logits, batch, task)
                return loss, stats

            (loss, stats), g_train = jax.value_and_grad(loss_fn, has_aux=True)(train)
            it = iter(g_train)
            grads = jax.tree_util.tree_unflatten(
                treedef, [next(it) if t is not False else jnp.zeros_like(x)
                          for x, t in zip(leaves, pattern)])
            updates, opt_state = tx.update(
                grads, state.opt_state, state.params, rgft_observe=jnp.asarray(observe))
            params = optax.apply_updates(state.params, updates)
            metrics = {"loss": loss, "grad_norm": optax.tree.norm(g_train)}
            if task != "lm":
                hits = (stats["pred"] == batch["label"]).astype(jnp.float32)
                metrics["accuracy"] = jnp.mean(hits)
            dsca_state, library = state.dsca, None
            if dsca_cfg is not None and observe:  # probe step: the full gradient is here
                from rgft_jax import dsca as dsca_lib

                dsca_state, library = dsca_lib.dsca_step(state.dsca, dsca_part, grads, dsca_cfg)
            new = TrainState(state.step + 1, params, opt_state, state.rng, dsca_state)
            # The error map leaves with the metrics: one device-to-host copy per step.
            emap = None if part is None else residual.error_map(opt_state)
            return new, metrics, library, emap

        return step

    def _batch_sharding(self):
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, P(tuple(self.mesh.axis_names)))

    def _put_batch(self, batch: Mapping[str, np.ndarray]):
        batch = {k: np.asarray(v) for k, v in batch.items()}
        sh = self._batch_sharding()
        if sh is None:
            return jax.tree.map(jnp.asarray, batch)
        return jax.device_put(batch, sh)

    @staticmethod
    def _key(pattern, observe, batch) -> tuple:
        # Batch shapes are part of the key: a batch of a new shape compiles its own step.
        return (pattern, observe, tuple(sorted((k, tuple(v.shape)) for k, v in batch.items())))

    def _compiled(self, key: tuple, batch) -> _CompiledStep:
        pattern, observe, _ = key
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        jitted = jax.jit(self._make_step(pattern, observe), donate_argnums=0)
        lowered = jitted.lower(self.state, batch)
        compiled = lowered.compile()
        self.compilations += 1
        entry = _CompiledStep(compiled, _cost_flops(compiled), _matmul_flops(lowered),
                              methods_lib.count_params(self.state.params, pattern, self.partition),
                              _peak_bytes(compiled))
        self.peak_bytes = max(self.peak_bytes, entry.peak_bytes)
        self.flops_by_pattern[key] = entry.flops
        self.matmul_flops_by_pattern[key] = entry.matmul_flops
        self._cache[key] = entry
        while len(self._cache) > self.config.max_compiled:
            self._cache.popitem(last=False)
        return entry

    def train_step(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Runs one step on a host batch; returns its metrics (host floats)."""
        pattern, observe = self.next_pattern()
        dev_batch = self._put_batch(batch)
        key = self._key(pattern, observe, dev_batch)
        compiled_before = self.compilations
        entry = self._compiled(key, dev_batch)
        t0 = time.perf_counter()
        self.state, metrics, library, emap = entry.fn(self.state, dev_batch)
        metrics, emap = jax.device_get((metrics, emap))
        metrics = {k: float(v) for k, v in metrics.items()}
        if library is not None:
            lib = jax.device_get(library)
            self.module_history.append({
                "step": int(self.state.step), "labels": np.asarray(lib.labels),
                **{k: float(getattr(lib, k)) for k in ("ari", "nmi", "kappa", "drift")}})
        dt = time.perf_counter() - t0
        self.step_times.append(dt)
        self.fresh_steps.append(self.compilations > compiled_before)
        self.pattern_steps[key] += 1
        metrics.update(step_time_s=dt, probe=float(observe),
                       trainable_fraction=entry.n_trainable / self.total_params)
        if self.partition is not None:
            em = self._host_map = emap  # next_pattern() reuses it
            ratio, hard = residual.update_ratio(em, self.partition)
            metrics.update(update_ratio=float(ratio), hard_active=float(hard))
            self._ratio_sum += metrics["update_ratio"]
            if observe:
                self.error_history.append(
                    (int(self.state.step), np.asarray(em.residuals), np.asarray(em.mask)))
        else:
            metrics.update(update_ratio=entry.n_trainable / self.total_params)
            self._ratio_sum += metrics["update_ratio"]
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(
        self,
        train_iter: Iterator[Mapping[str, np.ndarray]],
        *,
        eval_fn: Callable[[Trainer], Mapping[str, float]] | None = None,
        eval_every: int = 0,
        checkpoint_data_state: Callable[[], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Trains until ``config.steps``; resumes from the state's step (after :meth:`restore`).

        Args:
          train_iter: host batches (e.g. :class:`rgft_jax.data.TrainIterator`).
          eval_fn: called as ``eval_fn(trainer)`` every ``eval_every`` steps and at the end.
          eval_every: 0 evaluates only at the end.
          checkpoint_data_state: returns the data position saved with each checkpoint.
        """
        return fit_together([self], [train_iter], eval_fn=eval_fn, eval_every=eval_every,
                            checkpoint_data_states=[checkpoint_data_state])[0]

    def _after_step(self, metrics, eval_fn, eval_every, data_state) -> None:
        """Logging, periodic evaluation and checkpoints after one step."""
        step = int(metrics["step"])
        if self.config.log_every and (step % self.config.log_every == 0
                                      or step == self.config.steps):
            self.history.append(metrics)
            self._log_scalars(step, metrics, "train")
        if eval_fn is not None and eval_every and step % eval_every == 0 and (
                step < self.config.steps):
            self._log_scalars(step, eval_fn(self), "eval")
        if self.config.checkpoint_every and step % self.config.checkpoint_every == 0:
            self.save(data_state() if data_state else None)

    def _finish(self, eval_fn) -> list[dict[str, Any]]:
        final = {}
        if eval_fn is not None:
            final = dict(eval_fn(self))
            self._log_scalars(self.config.steps, final, "eval")
        if self._writer is not None:
            self._writer.flush()
        return [*self.history, {"final_eval": final}]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, Any]:
        """Exact metrics over ``batches`` (padded examples flagged by ``valid`` are ignored)."""
        from tqdm.auto import tqdm

        if self._eval_fn is None:
            graphdef, rest, task = self.graphdef, self.rest, self.config.task

            @jax.jit
            def eval_step(params, batch):
                model = nnx.merge(graphdef, params, rest)
                logits = _forward(model, batch, task, True, None)
                loss, stats = _loss(logits, batch, task)
                return stats if task == "lm" else {"pred": stats["pred"]}

            self._eval_fn = eval_step
        preds, labels, nll, tokens = [], [], 0.0, 0.0
        for batch in tqdm(batches, desc="eval", disable=not self.config.progress, leave=False):
            out = jax.device_get(self._eval_fn(self.state.params, self._put_batch(batch)))
            rows = len(next(iter(batch.values())))
            valid = np.asarray(batch.get("valid", np.ones(rows, bool)))
            if self.config.task == "lm":
                nll += float(out["nll_sum"])
                tokens += float(out["tokens"])
            else:
                preds.append(np.asarray(out["pred"])[valid])
                labels.append(np.asarray(batch["label"])[valid])
        if self.config.task == "lm":
            return {"nll": nll / max(tokens, 1.0), "perplexity": math.exp(nll / max(tokens, 1.0)),
                    "tokens": tokens}
        return classification_metrics(np.concatenate(preds), np.concatenate(labels),
                                      self.num_classes)

    # ------------------------------------------------------------------ accounting
    def summary(self) -> dict[str, Any]:
        """Compute accounting of the run so far (FLOPs averaged over the steps that ran)."""
        steps = sum(self.pattern_steps.values())
        gflops = sum(self.flops_by_pattern[k] * n for k, n in self.pattern_steps.items())
        matmul = sum(self.matmul_flops_by_pattern.get(k, float("nan")) * n
                     for k, n in self.pattern_steps.items())
        # First runs of freshly compiled steps are left out, unless nothing else ran.
        fresh = np.asarray(self.fresh_steps[-len(self.step_times):], bool)
        times = np.asarray(self.step_times)
        if fresh.shape == times.shape and (~fresh).any():
            times = times[~fresh]
        probe_steps = sum(n for (p, obs, _), n in self.pattern_steps.items() if obs)
        out = {
            "method": self.method.label,
            "kind": self.method.kind,
            "steps": steps,
            "gflops_per_step": gflops / max(steps, 1) / 1e9,
            "matmul_gflops_per_step": matmul / max(steps, 1) / 1e9,
            "gflops_full_step": max(self.flops_by_pattern.values(), default=float("nan")) / 1e9,
            # Mean, probes included: what a step of this run costs on average.
            "step_time_s": float(np.mean(times)) if len(times) else float("nan"),
            "median_step_time_s": float(np.median(times)) if len(times) else float("nan"),
            "train_time_s": float(np.sum(self.step_times)),
            "compilations": self.compilations,
            "probe_steps": probe_steps,
            "total_params": self.total_params,
            "opt_state_bytes": int(sum(x.nbytes for x in jax.tree.leaves(self.state.opt_state))),
            "peak_step_bytes": self.peak_bytes,
        }
        out["update_ratio"] = self._ratio_sum / steps if steps else 1.0
        return out

    # ------------------------------------------------------------------ logging
    def _log_scalars(self, step: int, values: Mapping[str, Any], prefix: str) -> None:
        if self.workdir is None:
            return
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(os.path.join(self.workdir, "tb", self.method.label))
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._writer.add_scalar(f"{prefix}/{k}", v, step)

    # ------------------------------------------------------------------ checkpoints
    def _manager(self):
        import orbax.checkpoint as ocp

        if self.workdir is None:
            raise ValueError("Trainer: checkpoints need workdir=, got None.")
        if self._ckpt is None:
            self._ckpt = ocp.CheckpointManager(
                self.checkpoint_dir, options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.config.keep_checkpoints or None, create=True),
                # Known handlers: a fresh manager can read a checkpoint's metadata.
                item_handlers={"state": ocp.StandardCheckpointHandler(),
                               "data": ocp.JsonCheckpointHandler(),
                               "host": ocp.JsonCheckpointHandler()})
        return self._ckpt

    @property
    def checkpoint_dir(self) -> str | None:
        """Where this method's checkpoints go (``None`` without a workdir)."""
        if self.workdir is None:
            return None
        return os.path.abspath(os.path.join(self.workdir, "checkpoints", self.method.label))

    def save(self, data_state: Any = None) -> None:
        """Saves state + data position atomically (orbax writes, then renames)."""
        import orbax.checkpoint as ocp

        mgr = self._manager()
        step = int(self.state.step)
        mgr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(self.state),
            data=ocp.args.JsonSave({"data": data_state}),
            host=ocp.args.JsonSave(self._host_state())))
        mgr.wait_until_finished()

    def restore(self, step: int | None = None) -> Any:
        """Restores the latest (or given) checkpoint; returns the saved data position."""
        import orbax.checkpoint as ocp

        mgr = self._manager()
        step = mgr.latest_step() if step is None else step
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self.state)
        target = _on_disk_target(abstract, mgr.item_metadata(step)["state"],
                                 os.path.join(self.checkpoint_dir, str(step)))
        out = mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
            host=ocp.args.JsonRestore()))
        self.state = jax.tree.map(lambda x: x["value"] if _is_wrapped(x) else x,
                                  out["state"], is_leaf=_is_wrapped)
        self._host_map = None
        self._load_host_state(out["host"])
        return out["data"]["data"]

    def _host_state(self) -> dict[str, Any]:
        """The run's accounting (history, error map history, FLOPs, times) as JSON."""
        def key(k):
            pattern, observe, shapes = k
            return [[p if isinstance(p, bool) else int(p) for p in pattern], bool(observe),
                    [[name, list(shape)] for name, shape in shapes]]

        return {
            "history": self.history,
            "error_history": [[s, r.tolist(), m.tolist()] for s, r, m in self.error_history],
            "module_history": [{**h, "labels": np.asarray(h["labels"]).tolist()}
                               for h in self.module_history],
            "pattern_steps": [[key(k), n] for k, n in self.pattern_steps.items()],
            "flops_by_pattern": [[key(k), f] for k, f in self.flops_by_pattern.items()],
            "matmul_flops_by_pattern": [[key(k), f]
                                        for k, f in self.matmul_flops_by_pattern.items()],
            "step_times": self.step_times,
            "fresh_steps": self.fresh_steps,
            "compilations": self.compilations,
            "peak_bytes": self.peak_bytes,
            "ratio_sum": self._ratio_sum,
        }

    def _load_host_state(self, host: Mapping[str, Any]) -> None:
        def key(k):
            pattern, observe, shapes = k
            return (tuple(pattern), observe, tuple((n, tuple(s)) for n, s in shapes))

        self.history = list(host["history"])
        self.error_history = [(s, np.asarray(r, np.float32), np.asarray(m, np.float32))
                              for s, r, m in host["error_history"]]
        self.module_history = [{**h, "labels": np.asarray(h["labels"], np.int32)}
                               for h in host["module_history"]]
        self.pattern_steps = collections.Counter({key(k): n for k, n in host["pattern_steps"]})
        self.flops_by_pattern = {key(k): f for k, f in host["flops_by_pattern"]}
        self.matmul_flops_by_pattern = {
            key(k): f for k, f in host.get("matmul_flops_by_pattern", [])}
        self.step_times = list(host["step_times"])
        self.fresh_steps = [bool(f) for f in host.get("fresh_steps", [])]
        self.compilations = int(host["compilations"])
        self.peak_bytes = int(host.get("peak_bytes", 0))
        self._ratio_sum = float(host["ratio_sum"])

    def close(self) -> None:
        if self._ckpt is not None:
            self._ckpt.close()
        if self._writer is not None:
            self._writer.close()


def _path_names(tree: Any) -> list[tuple[str, ...]]:
    def name(k):
        return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))

    return [tuple(name(k) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _is_wrapped(x: Any) -> bool:
    return isinstance(x, dict) and set(x) == {"value"}


def _on_disk_target(abstract: Any, metadata: Any, where: str) -> Any:
    """``abstract`` in the layout of the checkpoint on disk.

    Checkpoints written before the loop kept params as plain dicts hold every params-shaped
    leaf (params, Adam moments) as an nnx ``Variable``, saved one level deeper under
    ``value``; those leaves are read from there (and unwrapped by the caller).
    """
    disk = set(_path_names(metadata))
    paths = _path_names(abstract)
    if all(p in disk for p in paths):
        return abstract
    missing = [p for p in paths if p not in disk and p + ("value",) not in disk]
    if missing:
        shown = ", ".join("/".join(p) for p in missing[:3])
        raise ValueError(
            f"Trainer.restore: the checkpoint at {where} does not hold this run's state "
            f"({len(missing)} leaves missing, e.g. {shown}); was it written by another "
            "method, model or partition?")
    flat, treedef = jax.tree_util.tree_flatten(abstract)
    return jax.tree_util.tree_unflatten(treedef, [
        x if p in disk else {"value": x} for p, x in zip(paths, flat)])


def fit_together(
    trainers: list[Trainer],
    train_iters: list[Iterator[Mapping[str, np.ndarray]]],
    *,
    eval_fn: Callable[[Trainer], Mapping[str, float]] | None = None,
    eval_every: int = 0,
    checkpoint_data_states: list[Callable[[], Any] | None] | None = None,
) -> list[list[dict[str, Any]]]:
    """Trains several trainers in lockstep: step ``t`` of every method, then step ``t + 1``.

    Interleaving makes step-time ratios between methods robust to whatever else the machine
    is doing (a background job slows every method alike), which is how the demo and the
    benchmarks compare methods. Each trainer resumes from its own step.

    Returns:
      Each trainer's history (as :meth:`Trainer.fit`).
    """
    from tqdm.auto import tqdm

    if len(trainers) != len(train_iters):
        raise ValueError(f"fit_together: {len(trainers)} trainers but {len(train_iters)} "
                         "iterators.")
    states = checkpoint_data_states or [None] * len(trainers)
    total = max(t.config.steps for t in trainers)
    starts = [int(t.state.step) for t in trainers]
    show = any(t.config.progress for t in trainers)
    bar = tqdm(total=total, initial=min(starts), disable=not show, dynamic_ncols=True,
               leave=False, desc=",".join(t.method.label for t in trainers))
    for step in range(min(starts), total):
        losses = {}
        for tr, it, data_state in zip(trainers, train_iters, states):
            if step < int(tr.state.step) or step >= tr.config.steps:
                continue
            metrics = tr.train_step(next(it))
            metrics["step"] = step + 1
            losses[tr.method.label] = f"{metrics['loss']:.3f}"
            tr._after_step(metrics, eval_fn, eval_every, data_state)
        bar.set_postfix(losses, refresh=False)
        bar.update(1)
    bar.close()
    return [tr._finish(eval_fn) for tr in trainers]
