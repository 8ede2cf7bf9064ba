# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Fine-tuning methods: one frozen object per kind, and a registry of their constructors.

A method knows three things about itself: which leaves it differentiates (a static regex),
which optimizer runs on the params tree, and its *pattern policy* (how the step pattern
changes over the run):

* ``'dense'``: every step differentiates the method's trainable leaves (full fine-tuning,
  LoRA, BitFit, the top layers);
* ``'refresh'``: probe steps (everything differentiated, error map observed) on mask
  refreshes, sparse steps between them (RGFT);
* ``'fixed'``: a mask known before training (:meth:`initial_mask`), installed by the Trainer
  before the first step; every step sparse (random and magnitude masks, DSCA modules, a
  searched configuration);
* ``'schedule'``: the host decides every step's mask (and its probe steps) with the method's
  :meth:`make_schedule` and installs it in the tracker's mask; sparse steps (the anchors
  of :mod:`rgft_jax.training._anchors`: LISA, BAdam, AutoFreeze, GreenTrainer, ...).

The Trainer reads these attributes and calls :meth:`Method.build` and
:meth:`Method.prepare_model`; it never switches on a method's name, so a new method plugs
in with :func:`register` (e.g. ``register('lisa', lisa)``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgft_jax._src import components as comp_lib
from rgft_jax._src import residual
from rgft_jax._src.budget import budget_threshold
from rgft_jax.training import _components as parts

__all__ = [
    "BitFit", "Full", "LoRA", "Layers", "MagnitudeMask", "Method", "Modules", "Plan", "RGFT",
    "RGFTChain", "RandomMask", "TopLayers", "bitfit", "full", "get", "layers", "lora",
    "magnitude_mask", "modules", "names", "random_mask", "register", "rgft", "rgft_chain",
    "top_layers",
]

POLICIES = ("dense", "refresh", "fixed", "schedule")


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class Plan(NamedTuple):
    """What a method builds for one params tree."""

    tx: optax.GradientTransformationExtraArgs  # runs on the whole params tree
    partition: comp_lib.Partition | None  # components of the mask (None: no mask)
    trainable: str | None  # regex of the differentiated leaves (None: all of them)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """Settings every method shares; subclasses add their own (validated when built).

    Args:
      name: label in reports (default: the method's registry name).
      learning_rate: peak learning rate of AdamW (linear warm-up, cosine decay).
      weight_decay: AdamW's decoupled weight decay.
      warmup_ratio: fraction of the steps with linear LR warm-up.
      seed: seed of whatever the method draws at random (masks, LoRA initialisation).
    """

    kind: ClassVar[str] = "method"
    #: How the step pattern changes over the run (see the module docstring).
    policy: ClassVar[str] = "dense"

    name: str | None = None
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    seed: int = 0

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls in _BASES:
            kind = repr(args[0]) if args else "'<kind>'"
            raise TypeError(
                f"{cls.__name__} is a base class; build a method with its constructor, e.g. "
                f"Method({kind}, ...) -> rgft_jax.training.methods.get({kind})(...) or "
                "methods.rgft(...); registered: " + ", ".join(names()) + ".")
        return super().__new__(cls)

    def __post_init__(self):
        self._check(self.name is None or isinstance(self.name, str), "name", "a str or None")
        self._check(_is_real(self.learning_rate) and self.learning_rate > 0, "learning_rate",
                    "a number > 0")
        self._check(_is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
                    "a number >= 0")
        self._check(_is_real(self.warmup_ratio) and 0 <= self.warmup_ratio < 1, "warmup_ratio",
                    "a number in [0, 1)")
        self._check(_is_int(self.seed), "seed", "an int")

    def _check(self, ok: bool, arg: str, allowed: str) -> None:
        if not ok:
            raise ValueError(f"{self.kind}: {arg}={getattr(self, arg)!r}; allowed: {allowed}.")

    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def uses_mask(self) -> bool:
        """Whether the method keeps a component mask in its optimizer state."""
        return False

    @property
    def uses_sparse_steps(self) -> bool:
        """Whether steps between probes differentiate only the active components."""
        return False

    def trainable_regex(self, num_layers: int) -> str | None:
        """Regex of the differentiated leaves (``None``: all of them)."""
        del num_layers
        return None

    def prepare_model(self, model: Any) -> Any:
        """Changes the model in place before it is split (LoRA inserts its adapters)."""
        del model
        return None

    def schedule(self, total_steps: int) -> optax.Schedule:
        # At least one warmup step and one decay step (a 1-step run is a valid run).
        warmup = max(int(round(self.warmup_ratio * total_steps)), 1)
        return optax.schedules.warmup_cosine_decay_schedule(
            0.0, self.learning_rate, warmup, max(total_steps, warmup + 1),
            end_value=0.1 * self.learning_rate)

    def base_optimizer(self, total_steps: int) -> optax.GradientTransformation:
        return optax.adamw(self.schedule(total_steps), weight_decay=self.weight_decay)

    def build(self, params: Any, *, total_steps: int, num_heads: int, num_layers: int,
              target_ratio: float | None = None,
              batch_shape: tuple[int, int] | None = None) -> Plan:
        """The optimizer over the whole params tree (frozen leaves get zero updates)."""
        del num_heads, target_ratio, batch_shape
        return _plan(self, params, self.base_optimizer(total_steps),
                     self.trainable_regex(num_layers))


def _plan(method: Method, params: Any, base: optax.GradientTransformation,
          trainable: str | None) -> Plan:
    """``base`` on the leaves matching ``trainable`` (all: ``None``), zero updates elsewhere."""
    if trainable is None:
        return Plan(optax.with_extra_args_support(base), None, None)
    rx = re.compile(trainable)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    labels = ["train" if rx.search(comp_lib.key_path_to_str(p)) else "frozen"
              for p, _ in flat]
    if "train" not in labels:
        raise ValueError(f"{method.kind} {method.label!r}: its trainable regex "
                         f"{trainable!r} matches no leaf.")
    tx = optax.multi_transform({"train": base, "frozen": optax.set_to_zero()},
                               jax.tree_util.tree_unflatten(treedef, labels))
    return Plan(optax.with_extra_args_support(tx), None, trainable)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Full(Method):
    """Full fine-tuning: every leaf, AdamW."""

    kind: ClassVar[str] = "full"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoRA(Method):
    """LoRA adapters on the projections matching ``targets`` (plus the task head).

    Args:
      rank: adapter rank.
      alpha: adapter scale numerator (the update is ``alpha / rank * B A``).
      targets: module-path regexes of the adapted projections.
      layers: adapt only projections inside these layer indices (PEFT's
        ``layers_to_transform``; e.g. a :func:`rgft_jax.layer_card.place` result); ``None``:
        every layer.
    """

    kind: ClassVar[str] = "lora"

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = (r"attention/query$", r"attention/value$")
    layers: tuple[int, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        self._check(_is_int(self.rank) and self.rank >= 1, "rank", "an int >= 1")
        self._check(_is_real(self.alpha) and self.alpha > 0, "alpha", "a number > 0")
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        self._check(isinstance(self.targets, (tuple, list)) and len(self.targets) > 0 and all(
            isinstance(t, str) for t in self.targets), "targets", "a non-empty tuple of regexes")
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.layers is not None:
            object.__setattr__(self, "layers", _layer_tuple(self, self.layers))

    @property
    def module_regexes(self) -> tuple[str, ...]:
        """The regexes :func:`rgft_jax.adapters.add_lora` receives: ``targets``, restricted to
        ``layers`` when given."""
        if self.layers is None:
            return self.targets
        return tuple(rf"{_layer_prefix(self.layers)}(?:.*/)?(?:{t.lstrip('^')})"
                     for t in self.targets)

    def trainable_regex(self, num_layers: int) -> str:
        from rgft_jax.adapters import LORA_TRAINABLE

        return LORA_TRAINABLE

    def prepare_model(self, model: Any) -> Any:
        from rgft_jax.adapters import add_lora

        return add_lora(model, targets=self.module_regexes, rank=self.rank, alpha=self.alpha,
                        seed=self.seed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BitFit(Method):
    """BitFit: only biases (and the task head) train; on a model without biases (Llama),
    its equivalent: the norm scales (:data:`NORM_SCALES_TRAINABLE`)."""

    kind: ClassVar[str] = "bitfit"

    def trainable_regex(self, num_layers: int) -> str:
        from rgft_jax.adapters import BITFIT_TRAINABLE

        return BITFIT_TRAINABLE

    def build(self, params: Any, *, total_steps: int, **kwargs: Any) -> Plan:
        paths = [comp_lib.key_path_to_str(p)
                 for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        if any(p.endswith("/bias") for p in paths):
            return super().build(params, total_steps=total_steps, **kwargs)
        return _plan(self, params, self.base_optimizer(total_steps), NORM_SCALES_TRAINABLE)


#: BitFit's equivalent on bias-free models (Llama): every norm scale and the task head.
NORM_SCALES_TRAINABLE = r"(?:norm/scale$|^classifier/|^head/)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopLayers(Method):
    """The "train the top ``k`` layers" heuristic (plus the final norm and the task head).

    Args:
      k: how many of the highest layers train (capped at the model's depth).
    """

    kind: ClassVar[str] = "top_layers"

    k: int = 2

    def __post_init__(self):
        super().__post_init__()
        self._check(_is_int(self.k) and self.k >= 1, "k", "an int >= 1")

    def trainable_regex(self, num_layers: int) -> str:
        k = min(self.k, num_layers)
        top = "|".join(str(i) for i in range(num_layers - k, num_layers))
        return rf"(?:(?:^|/)layers/(?:{top})/|final_norm/|{parts.HEAD_REGEX[1:]})"


def _layer_tuple(method: Method, layers: Any) -> tuple[int, ...]:
    ok = isinstance(layers, (tuple, list, range)) and len(layers) > 0 and all(
        _is_int(x) and x >= 0 for x in layers)
    method._check(ok, "layers", "a non-empty sequence of layer indices >= 0")
    return tuple(sorted({int(x) for x in layers}))


def _layer_prefix(layers: tuple[int, ...]) -> str:
    return rf"(?:^|/)(?:layers?|h|blocks?|blk)/(?:{'|'.join(map(str, layers))})/"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layers(Method):
    """Train the weights of the given layers (plus the final norm and the task head), e.g. a
    Layer Card placement; backprop stops at the lowest of them.

    Args:
      layers: the layer indices to train.
    """

    kind: ClassVar[str] = "layers"

    layers: tuple[int, ...] = (0,)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "layers", _layer_tuple(self, self.layers))

    def trainable_regex(self, num_layers: int) -> str:
        bad = [x for x in self.layers if x >= num_layers]
        if bad:
            raise ValueError(f"Method {self.label!r}: layers={self.layers!r} has {bad} but the "
                             f"model has {num_layers} layers (0 .. {num_layers - 1}).")
        return rf"(?:{_layer_prefix(self.layers)}|final_norm/|{parts.HEAD_REGEX[1:]})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Masked(Method):
    """Settings of methods with a component mask (RGFT and the mask baselines).

    Args:
      components: granularity: ``'heads'`` (heads + 32-neuron groups + whole leaves),
        ``'leaves'`` (every matrix one component), ``'layers'`` or a tuple of
        :class:`rgft_jax.Rule`.
      embeddings: with ``components='heads'``: embedding tables as whole-leaf components
        (``'component'``), always trained (``'train'``) or never (``'freeze'``).
      sparse: sparse steps differentiate only leaves holding an active component.
      moments: Adam moments of masked components: ``'keep'``, ``'reset'`` or
        ``('decay', rho)`` (see :func:`rgft_jax.residual_guided`); ``None``: its default.
      capacity: compact optimizer state holding this fraction of the partitioned entries
        (``None``: dense state).
    """

    components: Any = "heads"
    embeddings: str = "component"
    sparse: bool = True
    moments: Any = None
    capacity: float | None = None

    def __post_init__(self):
        super().__post_init__()
        comps = self.components
        if isinstance(comps, list):
            object.__setattr__(self, "components", comps := tuple(comps))
        self._check(comps in parts.COMPONENTS if isinstance(comps, str) else (
            isinstance(comps, tuple) and len(comps) > 0
            and all(isinstance(r, comp_lib.Rule) for r in comps)), "components",
            f"one of {parts.COMPONENTS} or a non-empty tuple of rgft_jax.Rule")
        self._check(self.embeddings in parts.EMBEDDING_POLICIES, "embeddings",
                    ", ".join(map(repr, parts.EMBEDDING_POLICIES)))
        self._check(isinstance(self.sparse, bool), "sparse", "True or False")
        try:
            residual._check_moments(self.moments, self.capacity)
        except ValueError as e:
            raise ValueError(f"{self.kind}: {e}") from None

    @property
    def uses_mask(self) -> bool:
        return True

    @property
    def uses_sparse_steps(self) -> bool:
        return self.sparse

    def rules(self, num_heads: int, params: Any = None) -> tuple[comp_lib.Rule, ...]:
        return parts.component_rules(self.components, self.embeddings, num_heads, params)

    def partition(self, params: Any, num_heads: int) -> comp_lib.Partition:
        return comp_lib.Partition.build(params, self.rules(num_heads, params))

    def initial_mask(self, part: comp_lib.Partition, params: Any,
                     target_ratio: float | None) -> np.ndarray:
        raise NotImplementedError

    def build(self, params: Any, *, total_steps: int, num_heads: int, num_layers: int,
              target_ratio: float | None = None,
              batch_shape: tuple[int, int] | None = None) -> Plan:
        """A fixed mask (``update_every=1``, no LR scaling): the Trainer installs
        :meth:`initial_mask` before the first step (without it, the first update does)."""
        del num_layers, batch_shape
        part = self.partition(params, num_heads)
        mask = jnp.asarray(self.initial_mask(part, params, target_ratio))
        tx = residual.residual_guided(
            self.base_optimizer(total_steps), part, threshold=lambda r: mask, gamma=0.0,
            beta=0.0, update_every=1, moments=self.moments, capacity=self.capacity)
        return Plan(tx, part, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RGFT(_Masked):
    """Residual-guided fine-tuning (the wrapper :func:`rgft_jax.residual_guided`).

    Args:
      threshold: ``'median'``, ``('percentile', p)``, ``('top_k', k)``,
        ``('top_fraction', f)``, a callable ``residuals -> tau | bool[C]``, or
        ``('budget', f)`` (same as ``budget=f``).
      budget: at every refresh, the mask that captures the most residual mass within this
        fraction of the full step's FLOPs (:func:`rgft_jax.budget_threshold` over the
        analytic costs of the model and batch shape); replaces ``threshold``.
      cache_hits: with ``budget``: the expected fraction of steps that read the frozen
        prefix from the activation cache (``TrainConfig.activation_cache``; about
        ``(epochs - 1) / epochs`` over a repeated training set). The budget then bounds the
        *expected* step cost (:meth:`rgft_jax.ComponentCosts.with_cache`): a shallow mask
        whose prefix is cached costs less, so the budget reaches deeper components that a
        cached step can afford. ``0``: the uncached cost.
      gamma, beta, alpha, update_every, warmup_steps: see :func:`rgft_jax.residual_guided`.
    """

    kind: ClassVar[str] = "rgft"
    policy: ClassVar[str] = "refresh"

    threshold: Any = "median"
    budget: float | None = None
    cache_hits: float = 0.0
    gamma: float = 0.0
    beta: float = 0.5
    alpha: float = 0.9
    update_every: int = 25
    warmup_steps: int = 0

    def __post_init__(self):
        th = self.threshold
        if isinstance(th, (tuple, list)) and len(th) == 2 and th[0] == "budget":
            if self.budget is not None:
                raise ValueError(f"{self.kind}: threshold={th!r} and budget={self.budget!r}; "
                                 "allowed: one of them.")
            object.__setattr__(self, "budget", th[1])
            object.__setattr__(self, "threshold", "median")
        super().__post_init__()
        self._check(self.budget is None or (_is_real(self.budget) and 0 < self.budget <= 1),
                    "budget", "None or the fraction of the full step's FLOPs, in (0, 1]")
        self._check(_is_int(self.update_every) and self.update_every >= 1, "update_every",
                    "an int >= 1")
        self._check(_is_real(self.cache_hits) and 0 <= self.cache_hits <= 1, "cache_hits",
                    "a number in [0, 1]")
        self._check(self.cache_hits == 0 or self.budget is not None, "cache_hits",
                    "0 without a budget (it changes what the budget counts)")
        try:  # the transform validates its own knobs: now, not at the first step
            residual.residual_mask(
                alpha=self.alpha, threshold=self.threshold, gamma=self.gamma, beta=self.beta,
                update_every=self.update_every, warmup_steps=self.warmup_steps)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{self.kind}: {e}") from None

    def knobs(self, threshold: Any) -> dict[str, Any]:
        return dict(alpha=self.alpha, threshold=threshold, gamma=self.gamma, beta=self.beta,
                    update_every=self.update_every, warmup_steps=self.warmup_steps)

    def resolved_threshold(self, part, params, num_heads, num_layers, batch_shape) -> Any:
        if self.budget is None:
            return self.threshold
        return budget_threshold(self.budget_costs(part, params, num_heads, num_layers,
                                                  batch_shape), self.budget)

    def budget_costs(self, part, params, num_heads, num_layers, batch_shape):
        """The cost model the budget bounds: per step, expected over ``cache_hits``."""
        costs = parts.costs_for(part, params, num_heads, num_layers, batch_shape,
                                f"{self.kind} {self.label!r}: budget={self.budget}")
        return costs.with_cache(self.cache_hits)

    def build(self, params: Any, *, total_steps: int, num_heads: int, num_layers: int,
              target_ratio: float | None = None,
              batch_shape: tuple[int, int] | None = None) -> Plan:
        del target_ratio
        part = self.partition(params, num_heads)
        th = self.resolved_threshold(part, params, num_heads, num_layers, batch_shape)
        tx = residual.residual_guided(self.base_optimizer(total_steps), part, **self.knobs(th),
                                      moments=self.moments, capacity=self.capacity)
        return Plan(tx, part, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RGFTChain(RGFT):
    """RGFT in chain form: ``optax.chain(residual_mask(...), adamw)``; no sparse steps."""

    kind: ClassVar[str] = "rgft_chain"

    def __post_init__(self):
        super().__post_init__()
        if self.moments is not None or self.capacity is not None:
            raise ValueError(f"{self.kind}: moments={self.moments!r}, capacity="
                             f"{self.capacity!r}; allowed: None (the chain form keeps the "
                             "inner optimizer's state untouched; use rgft for these).")

    @property
    def uses_sparse_steps(self) -> bool:
        return False

    def build(self, params: Any, *, total_steps: int, num_heads: int, num_layers: int,
              target_ratio: float | None = None,
              batch_shape: tuple[int, int] | None = None) -> Plan:
        del target_ratio
        part = self.partition(params, num_heads)
        th = self.resolved_threshold(part, params, num_heads, num_layers, batch_shape)
        tx = optax.chain(residual.residual_mask(part, **self.knobs(th)),
                         self.base_optimizer(total_steps))
        return Plan(tx, part, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _RatioMask(_Masked):
    """A fixed mask over ``update_ratio`` of the maskable parameters.

    Args:
      update_ratio: fraction of the maskable parameters to train, in ``(0, 1]`` (the
        Trainer's ``target_ratio=`` overrides it, e.g. with RGFT's measured ratio).
    """

    policy: ClassVar[str] = "fixed"

    update_ratio: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        self._check(_is_real(self.update_ratio) and 0 < self.update_ratio <= 1,
                    "update_ratio", "a number in (0, 1]")

    def order(self, part: comp_lib.Partition, params: Any) -> np.ndarray:
        raise NotImplementedError

    def initial_mask(self, part, params, target_ratio=None) -> np.ndarray:
        """Components in :meth:`order` until their parameters reach the target ratio."""
        ratio = self.update_ratio if target_ratio is None else target_ratio
        sizes = part.sizes.astype(np.float64)
        budget = ratio * sizes.sum()
        mask = np.zeros(len(part), bool)
        used = 0.0
        for i in self.order(part, params):
            if used >= budget:
                break
            mask[i] = True
            used += sizes[i]
        return mask


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomMask(_RatioMask):
    """Random components (seeded) up to ``update_ratio`` of the maskable parameters."""

    kind: ClassVar[str] = "random_mask"

    def order(self, part, params) -> np.ndarray:
        return np.random.default_rng(self.seed).permutation(len(part))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MagnitudeMask(_RatioMask):
    """Components by decreasing mean absolute weight up to ``update_ratio``."""

    kind: ClassVar[str] = "magnitude_mask"

    def order(self, part, params) -> np.ndarray:
        sizes = part.sizes.astype(np.float64)
        mean_abs = np.asarray(part.reduce(params, jnp.abs)) / np.maximum(sizes, 1)
        return np.argsort(-mean_abs, kind="stable")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Modules(_Masked):
    """A given set of components, e.g. DSCA modules (``rgft_jax.dsca.module_mask``).

    Args:
      mask: a bool per component of ``components``; at least one ``True``.
    """

    kind: ClassVar[str] = "modules"
    policy: ClassVar[str] = "fixed"

    mask: tuple[bool, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        try:
            mask = tuple(bool(m) for m in np.asarray(self.mask, dtype=object).ravel())
        except TypeError:
            mask = ()
        self._check(any(mask), "mask", "a sequence of bools selecting at least one component")
        object.__setattr__(self, "mask", mask)

    def initial_mask(self, part, params, target_ratio=None) -> np.ndarray:
        if len(self.mask) != len(part):
            raise ValueError(f"{self.kind}: mask has {len(self.mask)} entries but the "
                             f"partition has {len(part)} components.")
        return np.asarray(self.mask, bool)


#: Classes that only hold shared settings: not methods of their own.
_BASES = (Method, _Masked, _RatioMask)


# ---------------------------------------------------------------------------- constructors
def full(**common: Any) -> Full:
    """Full fine-tuning (``common``: see :class:`Method`)."""
    return Full(**common)


def rgft(**kwargs: Any) -> RGFT:
    """RGFT, wrapper form (see :class:`RGFT` and :class:`Method` for the arguments)."""
    return RGFT(**kwargs)


def rgft_chain(**kwargs: Any) -> RGFTChain:
    """RGFT, chain form (see :class:`RGFTChain`)."""
    return RGFTChain(**kwargs)


def lora(rank: int = 8, **kwargs: Any) -> LoRA:
    """LoRA adapters of rank ``rank`` (see :class:`LoRA`)."""
    return LoRA(rank=rank, **kwargs)


def bitfit(**common: Any) -> BitFit:
    """BitFit (see :class:`BitFit`)."""
    return BitFit(**common)


def top_layers(k: int = 2, **common: Any) -> TopLayers:
    """The top ``k`` layers (see :class:`TopLayers`)."""
    return TopLayers(k=k, **common)


def layers(layers: Any = (0,), **common: Any) -> Layers:
    """The weights of the given layers (see :class:`Layers`)."""
    return Layers(layers=layers, **common)


def random_mask(update_ratio: float = 0.5, **kwargs: Any) -> RandomMask:
    """A random fixed mask over ``update_ratio`` of the parameters (see :class:`RandomMask`)."""
    return RandomMask(update_ratio=update_ratio, **kwargs)


def magnitude_mask(update_ratio: float = 0.5, **kwargs: Any) -> MagnitudeMask:
    """A magnitude fixed mask over ``update_ratio`` (see :class:`MagnitudeMask`)."""
    return MagnitudeMask(update_ratio=update_ratio, **kwargs)


def modules(mask: Any, **kwargs: Any) -> Modules:
    """Train the components selected by ``mask`` (see :class:`Modules`)."""
    return Modules(mask=mask, **kwargs)


# ---------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., Method]] = {}


def register(name: str, constructor: Callable[..., Method], *, replace: bool = False) -> None:
    """Registers ``constructor`` (keywords -> :class:`Method`) under ``name``.

    Raises:
      ValueError: ``name`` is not an identifier, or is taken and ``replace`` is False.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register: name={name!r}; allowed: a Python identifier.")
    if not callable(constructor):
        raise TypeError(f"register: constructor={constructor!r} is not callable.")
    if name in _REGISTRY and not replace:
        raise ValueError(f"register: name={name!r} is taken by {_REGISTRY[name]!r}; pass "
                         "replace=True to replace it.")
    _REGISTRY[name] = constructor


def get(name: str) -> Callable[..., Method]:
    """The constructor registered under ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"method {name!r} is not registered; allowed: {', '.join(names())}.")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Registered method names, in registration order."""
    return tuple(_REGISTRY)


for _ctor in (full, rgft, rgft_chain, lora, bitfit, top_layers, layers, random_mask,
              magnitude_mask, modules):
    register(_ctor.__name__, _ctor)
del _ctor

# The anchors (policy 'schedule') live in their own module, which imports this one and
# registers them.
from rgft_jax.training import _anchors  # noqa: E402,F401
