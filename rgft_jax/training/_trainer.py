# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The loop: one model, one method, and the pieces that run it.

The Trainer only orchestrates; each piece is a module of its own and testable alone:

* the method (:mod:`~rgft_jax.training._methods`) builds the optimizer and says which
  leaves train and how the step pattern changes;
* :func:`~rgft_jax.training._patterns.next_pattern` picks each step's pattern from a host
  copy of the error map;
* :func:`~rgft_jax.training._step.make_train_step` builds the step of a pattern;
* :class:`~rgft_jax.training._compile_cache.CompileCache` keeps compiled steps, keyed on
  the full abstract signature of their inputs;
* :class:`~rgft_jax.training._accounting.Accounting` counts FLOPs, times and memory;
* :class:`~rgft_jax.training._checkpoint.Checkpointer` saves and restores runs.

Host syncs happen only where the host needs device values: before and after steps that may
change the mask (the refresh schedule is known in advance), at log points, evaluations,
checkpoints and the end. Between them steps are dispatched without waiting, so the device
queues step ``t + 1`` while step ``t`` runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from rgft_jax._src import residual
from rgft_jax.training import _accounting as acc_lib
from rgft_jax.training import _anchors as anchors
from rgft_jax.training import _cache as cache_lib
from rgft_jax.training import _checkpoint as _ckpt
from rgft_jax.training import _components as parts
from rgft_jax.training import _methods as methods_lib
from rgft_jax.training import _patterns as patterns
from rgft_jax.training import _sharding as sharding
from rgft_jax.training._checkpoint import Checkpointer, RunMismatchError
from rgft_jax.training._compile_cache import CompileCache, signature
from rgft_jax.training._evaluation import evaluate, make_eval_step
from rgft_jax.training._step import HIDDEN, TASKS, TrainState, make_train_step

EXAMPLE_ID = cache_lib.EXAMPLE_ID

__all__ = ["TrainConfig", "Trainer", "fit_together"]

#: Steps whose metrics may wait on the device before the host fetches them.
MAX_PENDING = 64


def _whole(flops: float) -> int | float:
    """``flops`` as a Python int (NaN stays NaN): sums of them are exact in any order."""
    return round(flops) if math.isfinite(flops) else flops


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings shared by every method (validated when built).

    Args:
      steps: optimizer steps.
      task: ``'classification'`` (batches with ``input_ids``, ``attention_mask``,
        ``token_type_ids``, ``label``), ``'lm'`` (``input_ids``, ``attention_mask``, or the
        causal-LM rows ``input_ids``, ``targets``, ``loss_mask``, ``segment_ids``),
        ``'instruct'`` (causal-LM rows; evaluated on choice rows with a ``label``) or
        ``'image_classification'`` (``image``, ``label``).
      dropout: train with the model's dropout (``False``: deterministic forward).
      seed: seed of the dropout stream.
      max_compiled: bound of the compiled-step cache.
      log_every: steps between TensorBoard / history points.
      checkpoint_every: steps between checkpoints (0: none).
      keep_checkpoints: how many checkpoints orbax keeps.
      progress: show progress bars.
      donate_optimizer_state: let each step write the new optimizer state into the old one's
        buffers. ``None`` (default): yes for methods without a component mask, no for RGFT
        and the mask baselines, whose moment freeze reads every old moment next to the
        in-place write and makes XLA copy every donated moment (203 copies, ~180 MB per
        MiniLM step; docs/results.md). Not donating costs one extra optimizer state of peak
        memory instead.
      compute_dtype: mixed precision, e.g. ``'bfloat16'``: the params are kept as float32
        masters (so is the optimizer state) and cast to this dtype for every forward and
        backward pass. Build the model in that dtype (e.g. ``param_dtype=jnp.bfloat16``) so
        its activations follow. ``None``: params train in their own dtype.
      activation_cache: reuse the frozen prefix's outputs (:mod:`rgft_jax.training._cache`):
        a step whose embeddings and lowest layers hold no differentiated leaf reads their
        output per example from the cache instead of computing it. ``None`` (default): on
        when it is exact and of use: dropout off, batches with ``example_id`` (as
        :class:`rgft_jax.data.TrainIterator` makes them), a model with the split forward
        (``hidden_at`` / ``logits_from``), and a run that sees its data again (``fit`` with
        an iterator whose ``steps_per_epoch`` is below ``steps``; a run of one epoch or of
        bare :meth:`Trainer.train_step` calls would only fill it). ``True``: on whenever
        batches carry ids (dropout off and the split forward required).
      cache_device_bytes: device memory the cached rows may take.
      cache_host_bytes: host memory the cached rows may take beyond the device's share.
      cache_dir: folder for ``np.memmap`` rows beyond both (``None``: such rows are not
        cached).
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
    donate_optimizer_state: bool | None = None
    compute_dtype: str | None = None
    activation_cache: bool | None = None
    cache_device_bytes: int = 1 << 30
    cache_host_bytes: int = 2 << 30
    cache_dir: str | None = None

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
        if self.donate_optimizer_state not in (None, True, False):
            raise ValueError(f"TrainConfig: donate_optimizer_state="
                             f"{self.donate_optimizer_state!r}; allowed: None, True, False.")
        if self.compute_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"TrainConfig: compute_dtype={self.compute_dtype!r}; allowed: "
                             "None, 'float32', 'bfloat16', 'float16'.")
        if self.activation_cache not in (None, True, False):
            raise ValueError(f"TrainConfig: activation_cache={self.activation_cache!r}; "
                             "allowed: None, True, False.")
        if self.activation_cache is True and self.dropout:
            raise ValueError("TrainConfig: activation_cache=True with dropout=True; allowed: "
                             "dropout=False (cached prefix outputs are exact only without "
                             "dropout).")
        for name in ("cache_device_bytes", "cache_host_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig: {name}={v!r} must be an int >= 0.")
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ValueError(f"TrainConfig: cache_dir={self.cache_dir!r}; allowed: None or a "
                             "path.")


class _Compiled(NamedTuple):
    fn: Callable  # (state, batch) -> (state, metrics, library, emap, prefix output | None)
    n_trainable: float  # parameters the step differentiates
    key: tuple  # accounting key: (pattern, observe, batch shapes)


class _Interval:
    """Steps dispatched since the last sync: timed from the first dispatch to completion."""

    def __init__(self):
        self.t0, self.steps, self.fresh, self.seconds = time.perf_counter(), 0, False, None


class _Tracker(NamedTuple):
    """Host copy of what the patterns need of the error map."""

    step: int  # the tracker's count (finite steps seen; predicted between syncs)
    mask: np.ndarray  # float32 [C]


class Trainer:
    """Fine-tunes one NNX model with one :class:`~rgft_jax.training.Method`.

    Args:
      model: the NNX model (the method may change it first, e.g. LoRA inserts adapters).
      method: the method (see :mod:`rgft_jax.training.methods`).
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
        components for methods without a mask). A sparse fixed mask never probes (it is
        installed before the first step): ``ValueError``.
      batch_shape: ``(batch, seq_len)`` of the training batches; needed by the cost model
        of budgeted RGFT.
      dsca_adjust: with ``dsca``, act on the diagnostics after every DSCA update (MFTC
        appendix D.3, :func:`rgft_jax.dsca.adjust`): raise ``r`` when kappa is low, ``alpha``
        when modules are unstable; the actions go into :attr:`module_history` and
        :attr:`dsca_fallback` turns True when LoRA is the advice.

    .. note::
      Step times: :meth:`train_step` times one step, from its dispatch to its completion.
      :meth:`fit` dispatches steps without waiting and times *intervals*: from the dispatch
      of the first step after a sync to the completion of the last one before the next
      sync, divided by the steps in between (host work between dispatches, such as reading
      the next batch, overlaps the device's work and is included). Compilation is never
      timed, and the first run of a freshly compiled step is timed alone and flagged.
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
        dsca_adjust: bool = False,
    ):
        if not isinstance(method, methods_lib.Method):
            raise TypeError(f"Trainer: method={method!r}; allowed: a Method, e.g. "
                            "rgft_jax.training.methods.rgft().")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer: config={config!r}; allowed: a TrainConfig.")
        if config.task != "lm" and (num_classes is None or num_classes < 2):
            raise ValueError(f"Trainer: num_classes={num_classes!r} must be >= 2 for "
                             f"task={config.task!r}.")
        self.method, self.config, self.num_classes, self.mesh = method, config, num_classes, mesh
        self.workdir = None if workdir is None else os.fspath(workdir)
        self.lora_paths = method.prepare_model(model)
        from rgft_jax.models import Projection

        # Leaves that support group-sparse weight gradients.
        self._group_leaves = frozenset(
            "/".join(map(str, path)) + "/kernel" for path, node in nnx.iter_graph(model)
            if isinstance(node, Projection))
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        # Plain nested dicts of arrays, not nnx Variables: every compiled call flattens its
        # inputs and rebuilds its outputs, and Variable objects make that host work grow
        # with the number of leaves of params + optimizer state (same paths, same order).
        # The compiled steps donate their state: copy, so the caller's model (and any tree
        # sharing its arrays) stays usable after training starts.
        params = jax.tree.map(jnp.copy, nnx.to_pure_dict(params))
        ints = [f"{'/'.join(p)} ({x.dtype})" for p, x in zip(
            _ckpt.path_names(params), jax.tree.leaves(params))
            if not jnp.issubdtype(x.dtype, jnp.inexact)]
        if ints:
            raise ValueError(f"Trainer: model params {ints[:3]} are not floating point; allowed: "
                             "float params only (keep integer state in an nnx.Variable that "
                             "is not an nnx.Param).")
        if config.compute_dtype is not None:  # float32 masters; steps cast for compute
            params = jax.tree.map(
                lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating)
                else x, params)
        self.tx, self.partition, trainable = method.build(
            params, total_steps=config.steps, num_heads=num_heads, num_layers=num_layers,
            target_ratio=target_ratio, batch_shape=batch_shape)
        base = patterns.trainable_pattern(params, trainable)
        if self.partition is not None:  # frozen leaves (Rule(freeze=True)): never differentiated
            base = tuple(b and not s.frozen for b, s in zip(base, self.partition.leaves))
        self.base_pattern = base
        # DropBP: per-branch backward drop rates and the target fraction.
        self._drop_rates = None if not hasattr(method, "backward_drop_rates") else (
            method.backward_drop_rates(num_layers), method.drop_rate)
        # Schedule methods (policy 'schedule'): the host decides each step's mask.
        self.schedule = None if method.policy != "schedule" else method.make_schedule(
            self.partition, params, total_steps=config.steps, num_heads=num_heads,
            num_layers=num_layers, batch_shape=batch_shape)
        self.accounting = acc_lib.Accounting(patterns.count_params(params))
        if mesh is not None:
            params = jax.device_put(params, sharding.fsdp_shardings(params, mesh))
        # A sparse fixed mask is known before the first step: the Trainer installs it (below),
        # so such a run never probes (a compact state admits its first set on the device).
        self._installs_mask = (method.policy == "fixed" and method.uses_sparse_steps
                               and getattr(method, "capacity", None) is None)
        self.dsca_config = self.dsca_partition = None
        self.dsca_adjust, self.dsca_fallback = bool(dsca_adjust), False
        self.state = self._init_state(params)._replace(dsca=self._init_dsca(dsca, params,
                                                                            num_heads))
        self.activation_cache = self._init_activation_cache(model, params, num_layers)
        # Probe steps of hard masks change only the masked-in leaves (see _advance_probe).
        self._hard_mask = (method.uses_mask and method.uses_sparse_steps
                           and self.partition is not None
                           and getattr(method, "gamma", 0.0) == 0.0)
        self._probe_advance: int | None = None  # a probe step whose advance waits for its mask
        self._tracker: _Tracker | None = None
        self._stale = True  # the device's mask may differ from the tracker's
        # Installed now, the first step is already sparse (a probe would differentiate
        # everything to install what the host knows).
        if self._installs_mask:
            mask = np.asarray(method.initial_mask(self.partition, params, target_ratio)) > 0
            self.state = self.state._replace(
                opt_state=anchors.install_mask(self.state.opt_state, mask))
            self._tracker, self._stale = _Tracker(0, mask.astype(np.float32)), False
        self._data_repeats = False  # set by fit: the run sees its examples again
        self._cache: CompileCache[_Compiled] = CompileCache(config.max_compiled)
        self.history: list[dict[str, Any]] = []
        # Periodic evaluations: step, cumulative training GFLOPs and time, and eval_fn's
        # scalars (time-to-quality and the curves read these).
        self.eval_history: list[dict[str, Any]] = []
        # Cumulative XLA-counted training FLOPs of the steps run, in whole FLOPs: a sum of
        # integers is exact in any order, so a resumed run's total equals the straight run's.
        self._flops_total: int | float = 0
        self.error_history: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.module_history: list[dict[str, Any]] = []
        self._step = 0  # host mirror of state.step (reading the device's would sync)
        self._memo: dict[bytes, patterns.Pattern] = {}
        self._pending: list[dict[str, Any]] = []  # dispatched, metrics still on device
        self._interval: _Interval | None = None
        self._last: dict[str, float] = {}  # host metrics of the last drained step
        #: Steps skipped because their loss or gradient was not finite (they changed
        #: nothing but the step counter; README, "Runs that fail").
        self.skipped_steps = 0
        self._eval_fn = self._writer = self._ckpt = None
        #: JSON values a checkpoint must match to resume this run (e.g. the data's
        #: identity); saved with every checkpoint (see :meth:`run_fingerprint`).
        self.run_info: dict[str, Any] = {}

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
            shardings = sharding.fsdp_shardings(jax.eval_shape(self.tx.init, params), self.mesh)
            opt_state = jax.jit(self.tx.init, out_shardings=shardings)(params)
        return TrainState(jnp.zeros([], jnp.int32), params, opt_state, rng)

    def _init_dsca(self, dsca: Any, params: Any, num_heads: int) -> Any:
        if dsca is None:
            return None
        if self._installs_mask:
            raise ValueError(
                f"Trainer: dsca={dsca!r} observes probe steps (full gradients), but method "
                f"{self.method.kind!r} installs its fixed mask before the first step and "
                "never probes; allowed: dsca=None, or a method with probe steps (RGFT, "
                "the anchors, dense methods, or sparse=False).")
        from rgft_jax import dsca as dsca_lib
        from rgft_jax._src import components as comp_lib

        self.dsca_partition = self.partition or comp_lib.Partition.build(
            params, parts.component_rules("heads", "component", num_heads, params))
        self.dsca_config = (dsca_lib.DSCAConfig.for_partition(self.dsca_partition, **dsca)
                            if isinstance(dsca, Mapping) else dsca)
        return dsca_lib.dsca_init(self.dsca_partition, config=self.dsca_config)

    def _init_activation_cache(self, model, params, num_layers) -> cache_lib.ActivationCache | None:
        cfg = self.config
        if cfg.activation_cache is False or cfg.dropout:
            return None
        split = all(callable(getattr(model, n, None)) for n in ("hidden_at", "logits_from"))
        if not split:
            if cfg.activation_cache:
                raise ValueError(f"TrainConfig: activation_cache=True but "
                                 f"{type(model).__name__} has no split forward (hidden_at / "
                                 "logits_from).")
            return None
        return cache_lib.ActivationCache(
            cache_lib.leaf_blocks(params, num_layers), num_layers,
            device_bytes=cfg.cache_device_bytes, host_bytes=cfg.cache_host_bytes,
            disk_dir=None if cfg.cache_dir is None else os.fspath(cfg.cache_dir))

    @property
    def model(self) -> nnx.Module:
        """The model with the current params (a fresh merge)."""
        return nnx.merge(self.graphdef, self.state.params, self.rest)

    # ------------------------------------------------------------------ patterns
    def _sync_tracker(self) -> None:
        """Reads the error map's count and mask back to the host (waits for the device)."""
        self._close_interval()
        em = jax.device_get(residual.error_map(self.state.opt_state))
        self._tracker = _Tracker(int(em.step), np.asarray(em.mask))
        self._stale = False

    def next_pattern(self) -> tuple[patterns.Pattern, bool]:
        """The pattern of the next step and whether it is a probe step (may sync)."""
        if not self.method.uses_sparse_steps:
            return self.base_pattern, True
        if self.schedule is not None:
            mask, probe, opt_state = self.schedule.plan(self._step, self.state.opt_state)
            if self._tracker is None or not np.array_equal(mask, self._tracker.mask):
                opt_state = self.state.opt_state if opt_state is None else opt_state
                opt_state = anchors.install_mask(opt_state, mask)
            if opt_state is not None:
                self.state = self.state._replace(opt_state=opt_state)
            self._tracker, self._stale = _Tracker(self._step, np.asarray(mask)), False
            if probe:
                return self.base_pattern, True
        elif self._stale or self._tracker is None or patterns.mask_may_change(
                self.method, self._tracker.step):
            self._sync_tracker()
        return patterns.next_pattern(
            self._tracker, self.method, self.partition, base_pattern=self.base_pattern,
            group_leaves=self._group_leaves, memo=self._memo)

    # ------------------------------------------------------------------ steps
    def _put_batch(self, batch: Mapping[str, np.ndarray]):
        batch = {k: np.asarray(v) for k, v in batch.items()}
        sh = sharding.batch_sharding(self.mesh)
        if sh is None:
            return jax.tree.map(jnp.asarray, batch)
        if jax.process_count() > 1:  # each process passes its own share of the global batch
            return {k: jax.make_array_from_process_local_data(sh, v) for k, v in batch.items()}
        return jax.device_put(batch, sh)

    def _compile(self, pattern, observe, batch, cache=None) -> _Compiled:
        step = make_train_step(
            self.graphdef, self.rest, self.tx, pattern, observe, task=self.config.task,
            dropout=self.config.dropout, partition=self.partition,
            dsca=None if self.dsca_config is None else (self.dsca_config, self.dsca_partition),
            compute_dtype=self.config.compute_dtype, cache=cache,
            drop_rates=self._drop_rates)
        donate_opt = self.config.donate_optimizer_state
        if donate_opt is None:
            donate_opt = self.partition is None
        # The optimizer state is its own argument so that it can stay undonated.
        jitted = jax.jit(lambda rest, opt_state, b: step(rest._replace(opt_state=opt_state), b),
                         donate_argnums=(0, 1) if donate_opt else 0)
        lowered = jitted.lower(self.state._replace(opt_state=None), self.state.opt_state, batch)
        run = lowered.compile()

        def compiled(state, b):
            out = run(state._replace(opt_state=None), state.opt_state, b)
            return out if len(out) == 5 else (*out, None)

        shapes = tuple(sorted((k, tuple(v.shape)) for k, v in batch.items()))
        if cache is not None:  # a cached step: its own accounting entry ("cache_fill", (cut,))
            shapes = (*shapes, (f"cache_{cache[0]}", (cache[1],)))
        key = (pattern, observe, shapes)
        self.accounting.record_compile(key, acc_lib.cost_flops(run),
                                       acc_lib.matmul_flops(lowered), acc_lib.peak_bytes(run))
        n = patterns.count_params(self.state.params, pattern, self.partition)
        return _Compiled(compiled, n, key)

    def _dispatch(self, batch: Mapping[str, np.ndarray]) -> None:
        """Runs one step without waiting for it; its metrics stay on the device."""
        pattern, observe = self.next_pattern()
        if self._probe_advance is not None:  # the mask a probe step applied is known now
            self._advance_probe()
        batch = dict(batch)
        ids = batch.pop(EXAMPLE_ID, None)
        cache, hidden = self._cache_plan(pattern, ids, observe)
        dev_batch = self._put_batch(batch)
        if hidden is not None:
            dev_batch[HIDDEN] = self._put_hidden(hidden)
        key = (pattern, observe, cache, self.dsca_config, signature(self.state, dev_batch))
        if key not in self._cache:
            self._close_interval()  # compilation is not timed
        entry, fresh = self._cache.get(
            key, lambda: self._compile(pattern, observe, dev_batch, cache))
        if self._interval is None:
            self._interval = _Interval()
        self.state, metrics, library, emap, prefix = entry.fn(self.state, dev_batch)
        if self.activation_cache is not None:
            if prefix is not None:
                self.activation_cache.put(ids, prefix, cache[1], version=self._step)
            if observe and self._hard_mask and self.schedule is not None:
                # A schedule's probe applies the mask the host installed for it.
                pattern = patterns.update_pattern(self.partition, self._tracker.mask,
                                                  self.base_pattern)
            elif observe and self._hard_mask:
                # Refreshed on the device by this step: known at the next step's sync.
                self._probe_advance = self._step
                pattern = None
            if pattern is not None:
                self.activation_cache.advance(pattern, self._step)
        self._step += 1
        self._interval.steps += 1
        self._interval.fresh |= fresh
        self._pending.append(dict(step=self._step, entry=entry, observe=observe,
                                  device=(metrics, library, emap), interval=self._interval))
        if self._tracker is not None:
            if patterns.mask_may_change(self.method, self._tracker.step):
                self._stale = True
            self._tracker = self._tracker._replace(step=self._tracker.step + 1)
        if fresh:
            self._close_interval()  # a fresh step's first run is timed alone
        if len(self._pending) >= MAX_PENDING:
            self._drain()

    def _advance_probe(self) -> None:
        """Invalidates the cache by what the deferred probe step's update reached: the
        leaves of the mask it applied (the tracker's, read back after it), not every leaf
        it differentiated. Exact: a hard mask zeroes the other components' updates."""
        step, self._probe_advance = self._probe_advance, None
        if self._stale or self._tracker is None:
            self._sync_tracker()
        self.activation_cache.advance(
            patterns.update_pattern(self.partition, self._tracker.mask, self.base_pattern), step)

    def _cache_plan(self, pattern, ids, observe=False) -> tuple[tuple[str, int] | None, Any]:
        """``(cache mode, prefix rows)`` of the next step: ``('hit', cut)`` with the cached
        rows, ``('fill', cut)`` (rows ``None``) or ``(None, None)`` (no cache)."""
        if self.activation_cache is None or ids is None or (
                self.config.activation_cache is None and not self._data_repeats):
            return None, None
        if observe and self._hard_mask and self._tracker is not None:
            # A probe differentiates everything, but its forward passes the cut of the mask
            # it refreshes: it fills the rows it lacks there. They stay valid when the mask
            # it applies keeps that cut (_advance_probe), so examples first seen in a probe
            # do not make every later batch that holds one miss.
            cut = self.activation_cache.cut(patterns.update_pattern(
                self.partition, self._tracker.mask, self.base_pattern))
            if cut is None or all(self.activation_cache.valid(i, cut)
                                  for i in np.asarray(ids).reshape(-1)):
                return None, None
            return ("fill", cut), None
        cut = self.activation_cache.cut(pattern)
        if cut is None:
            return None, None
        rows = self.activation_cache.lookup(ids, cut)
        return (("fill", cut), None) if rows is None else (("hit", cut), rows)

    def _put_hidden(self, rows):
        sh = sharding.batch_sharding(self.mesh)
        if sh is None:
            return jnp.asarray(rows)
        return jax.device_put(rows, sh)

    def _close_interval(self) -> None:
        if self._interval is None:
            return
        jax.block_until_ready(self.state)
        iv, self._interval = self._interval, None
        iv.seconds = time.perf_counter() - iv.t0
        self.accounting.record_interval(iv.steps, iv.seconds, iv.fresh)

    def _drain(self) -> list[dict[str, Any]]:
        """Fetches the pending steps' metrics (waits for the device); returns them."""
        if not self._pending:
            return []
        self._close_interval()
        pending, self._pending = self._pending, []
        fetched = jax.device_get([p["device"] for p in pending])
        if self.activation_cache is not None:
            self.activation_cache.flush()  # the steps are done: copy their rows off the device
        out = []
        for p, (metrics, library, emap) in zip(pending, fetched):
            m = {k: float(v) for k, v in metrics.items()}
            skipped = m.get("skipped", 0.0) > 0
            if skipped:  # non-finite loss or gradient: the step changed nothing
                self.skipped_steps += 1
                # The tracker did not count it: the host's prediction of its count is off.
                self._stale = True
            iv, entry = p["interval"], p["entry"]
            m.update(step=p["step"], step_time_s=iv.seconds / iv.steps, probe=float(p["observe"]),
                     trainable_fraction=entry.n_trainable / self.accounting.total_params)
            if emap is not None:
                ratio, hard = residual.update_ratio(emap, self.partition)
                m.update(update_ratio=float(ratio), hard_active=float(hard))
                if p["observe"] and not skipped:
                    self.error_history.append(
                        (p["step"], np.asarray(emap.residuals), np.asarray(emap.mask)))
            else:
                m.update(update_ratio=entry.n_trainable / self.accounting.total_params)
            self.accounting.record_step(entry.key, m["update_ratio"])
            self._flops_total += _whole(self.accounting.flops_by_pattern.get(entry.key, 0.0))
            m["gflops_cum"] = self._flops_total / 1e9
            if library is not None and not skipped:
                self.module_history.append({
                    "step": p["step"], "labels": np.asarray(library.labels),
                    **{k: float(getattr(library, k)) for k in ("ari", "nmi", "kappa", "drift")}})
                if self.dsca_adjust:
                    self._adjust_dsca(library)
            if self.config.log_every and (p["step"] % self.config.log_every == 0
                                          or p["step"] == self.config.steps):
                self.history.append(m)
                self._log_scalars(p["step"], m, "train")
            out.append(m)
        self._last = m
        return out

    def _adjust_dsca(self, library) -> None:
        """MFTC appendix D.3's closed loop (:func:`rgft_jax.dsca.adjust`); a new ``r``
        re-initialises the DSCA state, and a new config compiles new probe steps."""
        from rgft_jax import dsca as dsca_lib

        adj = dsca_lib.adjust(library, self.dsca_config)
        self.module_history[-1]["actions"] = list(adj.actions)
        self.dsca_fallback = self.dsca_fallback or adj.fallback
        if adj.config is self.dsca_config:
            return
        old, new = self.dsca_config, adj.config
        if any(getattr(new, f) != getattr(old, f)
               for f in ("embed_dim", "kappa_rank", "subspace_window")):
            fresh = dsca_lib.dsca_init(self.dsca_partition, config=new)
            # The gradient window (kappa(r)'s history) does not depend on r: keep its newest
            # rows, so a raised r is judged on the same steps, not after a new warm-up.
            kept = self.state.dsca.grad_window
            n = min(kept.shape[0], new.subspace_window)
            order = (int(self.state.dsca.count) - 1 - np.arange(n)) % kept.shape[0]
            # Oldest first: the fresh state's ring (count 0) overwrites the oldest row next.
            fresh = fresh._replace(grad_window=fresh.grad_window.at[:n].set(kept[order[::-1]]))
            self.state = self.state._replace(dsca=fresh)
        self.dsca_config = new

    def train_step(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Runs one step on a host batch, waits for it; returns its metrics (host floats).

        ``step_time_s`` is the step's dispatch + completion (see the class note).
        """
        self._dispatch(batch)
        self._drain()
        return self._last

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

    @property
    def step(self) -> int:
        """Steps taken (host copy; reading it does not wait for the device)."""
        return self._step

    def _after_step(self, eval_fn, eval_every, data_state) -> None:
        """Log points, periodic evaluation and checkpoints after one step."""
        step, cfg = self._step, self.config
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps):
            self._drain()
        if eval_fn is not None and eval_every and step % eval_every == 0 and step < cfg.steps:
            self._drain()
            self._record_eval(step, eval_fn(self))
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            self.save(data_state() if data_state else None)

    def _finish(self, eval_fn) -> list[dict[str, Any]]:
        self._drain()
        final = {}
        if eval_fn is not None:
            final = dict(eval_fn(self))
            self._record_eval(self._step, final)
        if self._writer is not None:
            self._writer.flush()
        return [*self.history, {"final_eval": final}]

    # ------------------------------------------------------------------ evaluation
    def _record_eval(self, step: int, values: Mapping[str, Any]) -> None:
        """Logs an evaluation and appends its scalars to :attr:`eval_history`."""
        self._log_scalars(step, values, "eval")
        scalars = {k: float(v) for k, v in values.items()
                   if isinstance(v, (int, float, np.integer, np.floating))
                   and not isinstance(v, bool)}
        self.eval_history.append({**scalars, "step": step, "gflops_cum": self._flops_total / 1e9,
                                  "train_time_s": self.accounting.train_time_s})

    def evaluate(self, batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, Any]:
        """Exact metrics over ``batches`` (padded examples flagged by ``valid`` are ignored)."""
        if self._eval_fn is None:
            self._eval_fn = make_eval_step(self.graphdef, self.rest, self.config.task,
                                           self.config.compute_dtype)
        return evaluate(self._eval_fn, self.state.params, batches, task=self.config.task,
                        num_classes=self.num_classes, put=self._put_batch,
                        progress=self.config.progress)

    # ------------------------------------------------------------------ accounting
    def summary(self) -> dict[str, Any]:
        """Compute accounting of the run so far (see :class:`Accounting`)."""
        self._drain()
        cache = {} if self.activation_cache is None else self.activation_cache.stats()
        return {"method": self.method.label, "kind": self.method.kind,
                **self.accounting.summary(), **cache, "skipped_steps": self.skipped_steps,
                "opt_state_bytes": int(sum(x.nbytes for x in
                                           jax.tree.leaves(self.state.opt_state)))}

    @property
    def compilations(self) -> int:
        return self._cache.compilations

    @property
    def step_times(self) -> list[float]:
        """Per timed step, its interval's mean step time (see the class note)."""
        self._drain()
        return self.accounting.step_times

    @property
    def fresh_steps(self) -> list[bool]:
        """Per timed step, whether its interval ran a freshly compiled step."""
        self._drain()
        return self.accounting.fresh_steps

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
    @property
    def checkpoint_dir(self) -> str | None:
        """Where this method's checkpoints go (``None`` without a workdir)."""
        if self.workdir is None:
            return None
        return os.path.abspath(os.path.join(self.workdir, "checkpoints", self.method.label))

    def _checkpointer(self) -> Checkpointer:
        if self.workdir is None:
            raise ValueError("Trainer: checkpoints need workdir=, got None.")
        if self._ckpt is None:
            self._ckpt = Checkpointer(self.checkpoint_dir, self.config.keep_checkpoints)
        return self._ckpt

    def save(self, data_state: Any = None) -> None:
        """Saves state, data position and accounting atomically (orbax writes, then renames)."""
        self._drain()
        self._checkpointer().save(self._step, self.state, data_state, self._host_state())

    def _host_state(self) -> dict[str, Any]:
        """The run's accounting and histories, as JSON."""
        return {**self.accounting.to_json(), "run": self.run_fingerprint(),
                "skipped_steps": self.skipped_steps, "history": self.history,
                "eval_history": self.eval_history,
                "schedule": None if self.schedule is None else self.schedule.state_dict(),
                "error_history": [[s, r.tolist(), m.tolist()] for s, r, m in self.error_history],
                "module_history": [{**h, "labels": np.asarray(h["labels"]).tolist()}
                                   for h in self.module_history]}

    def run_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to resume this run: method, steps, seed, the params'
        paths, shapes and dtypes, and :attr:`run_info` (e.g. the data's identity)."""
        import hashlib

        from rgft_jax.training._checkpoint import path_names

        sig = [("/".join(p), tuple(x.shape), str(x.dtype)) for p, x in zip(
            path_names(self.state.params), jax.tree.leaves(self.state.params))]
        return {"method": self.method.label, "steps": self.config.steps,
                "seed": self.config.seed, "dsca": self.dsca_config is not None,
                "params": hashlib.sha256(repr(sig).encode()).hexdigest()[:16],
                **{k: v for k, v in self.run_info.items()}}

    def _check_fingerprint(self, host: Mapping[str, Any], where: str) -> None:
        import json

        # Compared as JSON (tuples in run_info come back from a checkpoint as lists).
        saved, mine = host.get("run"), json.loads(json.dumps(self.run_fingerprint()))
        if saved is None:  # written by an older version
            return
        diff = [k for k in sorted(set(saved) | set(mine)) if saved.get(k) != mine.get(k)]
        if diff:
            shown = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, this run {mine.get(k)!r}"
                              for k in diff)
            raise RunMismatchError(
                f"restore: {where} belongs to another run ({shown}). Use another "
                "workdir/--out, or delete the checkpoints to start afresh.")

    def restore(self, step: int | None = None) -> Any:
        """Restores the latest (or given) checkpoint; returns the saved data position.

        Without ``step``, a damaged latest checkpoint is skipped with a logged warning and
        the previous good one restored (see :mod:`rgft_jax.training._checkpoint`).

        Raises:
          ValueError: the checkpoint belongs to another run (method, model, ``steps``, seed
            or :attr:`run_info` differ); the message names what differs.
        """
        ckpt = self._checkpointer()
        self._drain()
        check = lambda host, where: self._check_fingerprint(host, f"the checkpoint at {where}")
        if step is None:
            found = ckpt.restore_latest(self.state, check)
            if found is None:
                return None
            step, state, data, host = found
        else:
            state, data, host = ckpt.restore(step, self.state, check)
        self.state = state
        self._step, self._tracker, self._stale = int(self.state.step), None, True
        if self.activation_cache is not None:  # dropped: refilled lazily (exact)
            self.activation_cache.reset()
            self._probe_advance = None
        self.accounting.load_json(host)
        self.history = list(host["history"])
        self.eval_history = list(host.get("eval_history", []))
        self._flops_total = sum(_whole(self.accounting.flops_by_pattern.get(k, 0.0)) * n
                                for k, n in self.accounting.pattern_steps.items())
        if self.schedule is not None and host.get("schedule") is not None:
            self.schedule.load_state_dict(host["schedule"])
        self.skipped_steps = int(host.get("skipped_steps", 0))
        self.error_history = [(s, np.asarray(r, np.float32), np.asarray(m, np.float32))
                              for s, r, m in host["error_history"]]
        self.module_history = [{**h, "labels": np.asarray(h["labels"], np.int32)}
                               for h in host["module_history"]]
        return data

    def close(self) -> None:
        self._drain()
        if self.activation_cache is not None:
            self.activation_cache.close()
        if self._ckpt is not None:
            self._ckpt.close()
        if self._writer is not None:
            self._writer.close()


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
    benchmarks compare methods. With several trainers each step is timed alone (dispatch
    to completion: they share the device); a single trainer dispatches without waiting.
    Each trainer resumes from its own step.

    Returns:
      Each trainer's history (as :meth:`Trainer.fit`).
    """
    from tqdm.auto import tqdm

    if len(trainers) != len(train_iters):
        raise ValueError(f"fit_together: {len(trainers)} trainers but {len(train_iters)} "
                         "iterators.")
    states = checkpoint_data_states or [None] * len(trainers)
    for tr, it in zip(trainers, train_iters):  # the activation cache's default needs epochs
        per_epoch = getattr(it, "steps_per_epoch", None)
        tr._data_repeats = per_epoch is not None and tr.config.steps > per_epoch
    total = max(t.config.steps for t in trainers)
    starts = [t.step for t in trainers]
    show = any(t.config.progress for t in trainers)
    bar = tqdm(total=total, initial=min(starts), disable=not show, dynamic_ncols=True,
               leave=False, desc=",".join(t.method.label for t in trainers))
    for step in range(min(starts), total):
        for tr, it, data_state in zip(trainers, train_iters, states):
            if step < tr.step or step >= tr.config.steps:
                continue
            if len(trainers) > 1:
                tr.train_step(next(it))
            else:
                tr._dispatch(next(it))
            tr._after_step(eval_fn, eval_every, data_state)
        if show and any(tr.history and tr.history[-1]["step"] == step + 1 for tr in trainers):
            bar.set_postfix({tr.method.label: f"{tr.history[-1]['loss']:.3f}"
                             for tr in trainers if tr.history}, refresh=False)
        bar.update(1)
    bar.close()
    return [tr._finish(eval_fn) for tr in trainers]
