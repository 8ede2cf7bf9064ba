# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Generic loader from HF-style safetensors checkpoints into NNX models.

One loader serves every model family; a family only supplies a table of :class:`Rule` s
(regex on the checkpoint key -> '/'-joined NNX parameter path(s) + a :class:`Transform`).

The procedure follows the usual NNX recipe:

1. the caller builds the model abstractly with ``nnx.eval_shape`` (no memory, no compute);
2. every checkpoint tensor is matched against the rule table, transformed (transpose,
   reshape to the head axis, split of fused projections) and checked against the abstract
   parameter's shape and dtype;
3. every problem (unreadable file, unexpected key, missing parameter, shape/dtype mismatch,
   duplicate assignment) is collected and raised once in a single ``ValueError``;
4. parameters the checkpoint is allowed not to have (a fresh classifier head) are initialised
   under ``jax.jit`` so that XLA drops the initialisation of everything else;
5. arrays are ``device_put`` (optionally to given shardings) and merged with ``nnx.merge``.

Example:
    >>> abstract = nnx.eval_shape(lambda: BertEncoder(cfg, rngs=nnx.Rngs(0)))
    >>> result = load_checkpoint(abstract, "model.safetensors", bert_rules(), ignore=IGNORE)
    >>> model = result.model
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import jax
import numpy as np
from flax import nnx

M = TypeVar("M", bound=nnx.Module)
Shape = tuple[int, ...]
ShardingSpec = (
    jax.sharding.Sharding
    | Mapping[str, jax.sharding.Sharding]
    | Callable[[str, jax.ShapeDtypeStruct], jax.sharding.Sharding | None]
    | None
)

__all__ = [
    "Concat",
    "Conv1D",
    "ConvOIHW",
    "Identity",
    "LoadResult",
    "Rule",
    "TorchLinear",
    "Transform",
    "Unflatten",
    "abstract_params",
    "init_subset",
    "load_checkpoint",
    "load_pretrained",
    "log_loaded",
    "path_str",
    "read_safetensors",
]


# --------------------------------------------------------------------------- transforms


class Transform(Protocol):
    """Maps one checkpoint tensor onto one or more target parameters.

    ``source_shape`` gives the checkpoint shape that the targets imply, so that a mismatch is
    reported before any reshape could silently succeed on a wrongly-shaped tensor.
    """

    def source_shape(self, targets: Sequence[Shape]) -> Shape:
        """Returns the checkpoint tensor shape expected for the given target shapes."""
        ...

    def __call__(self, x: np.ndarray, targets: Sequence[Shape]) -> list[np.ndarray]:
        """Returns one array per target, each of the target's shape."""
        ...


def _single(targets: Sequence[Shape], name: str) -> Shape:
    if len(targets) != 1:
        raise ValueError(f"{name} maps onto exactly one target, got {len(targets)}")
    return tuple(targets[0])


@dataclasses.dataclass(frozen=True)
class Identity:
    """The checkpoint tensor already has the target's shape (norms, embeddings, biases)."""

    def source_shape(self, targets: Sequence[Shape]) -> Shape:
        return _single(targets, "Identity")

    def __call__(self, x: np.ndarray, targets: Sequence[Shape]) -> list[np.ndarray]:
        return [x]


@dataclasses.dataclass(frozen=True)
class Unflatten:
    """A flat ``[prod(target)]``-sized tensor reshaped to the target (e.g. bias -> [H, Dh])."""

    def source_shape(self, targets: Sequence[Shape]) -> Shape:
        t = _single(targets, "Unflatten")
        return (math.prod(t),)

    def __call__(self, x: np.ndarray, targets: Sequence[Shape]) -> list[np.ndarray]:
        return [x.reshape(targets[0])]


@dataclasses.dataclass(frozen=True)
class TorchLinear:
    """A ``torch.nn.Linear`` weight ``[out, in]`` to a kernel ``[*in_axes, *out_axes]``.

    Attributes:
        in_ndim: how many leading target axes are input axes (1 for ``[D, H, Dh]``, 2 for
            the attention output ``[H, Dh, D]``).
    """

    in_ndim: int = 1

    def source_shape(self, targets: Sequence[Shape]) -> Shape:
        t = _single(targets, "TorchLinear")
        return (math.prod(t[self.in_ndim :]), math.prod(t[: self.in_ndim]))

    def __call__(self, x: np.ndarray, targets: Sequence[Shape]) -> list[np.ndarray]:
        return [x.T.reshape(targets[0])]


@dataclasses.dataclass(frozen=True)
class Conv1D:
    """An HF ``Conv1D`` weight ``[in, out]`` (GPT-2) to a kernel ``[*in_axes, *out_axes]``.

    Attributes:
        in_ndim: how many leading target axes are input axes.
    """

    in_ndim: int = 1

    def source_shape(self, targets: Sequence[Shape]) -> Shape:
        t = _single(targets, "Conv1D")
        return (math.prod(t[: self.in_ndim]), math.prod(t[self.in_ndim :]))

    def __call__(self, x: np.ndarray, targets: Sequence[Shape]) -> list[np.ndarray]:
        return [x.reshape(targets[0])]


@dataclasses.dataclass(frozen=True)
class ConvOIHW:
    """A PyTorch conv weight ``[O, I, kh, kw]`` to a Flax kernel ``[kh, kw, I, O]``."""

    def source_shape(self, targets: Sequence[Shape]) -> Shape:
        kh, kw, i, o = _single(targets, "ConvOIHW")
        return (o, i, kh, kw)

    def __call__(self, x: np.ndarray, targets: Sequence[Shape]) -> list[np.ndarray]:
        return [x.transpose(2, 3, 1, 0)]


@dataclasses.dataclass(frozen=True)
class Concat:
    """A tensor whose last axis concatenates several targets (GPT-2 fused ``c_attn``).

    The source is ``[*in_axes, sum_j prod(out_axes_j)]`` (a ``Conv1D`` ``[in, out]`` layout;
    for a bias ``in_ndim=0``); each slice is reshaped to its target.

    Attributes:
        in_ndim: number of leading target axes that are input axes (shared by all targets).
    """

    in_ndim: int = 1

    def source_shape(self, targets: Sequence[Shape]) -> Shape:
        lead = tuple(targets[0][: self.in_ndim])
        return lead + (sum(math.prod(t[self.in_ndim :]) for t in targets),)

    def __call__(self, x: np.ndarray, targets: Sequence[Shape]) -> list[np.ndarray]:
        sizes = [math.prod(t[self.in_ndim :]) for t in targets]
        parts = np.split(x, np.cumsum(sizes)[:-1], axis=-1)
        return [p.reshape(t) for p, t in zip(parts, targets, strict=True)]


# --------------------------------------------------------------------------- rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """Maps checkpoint keys matching ``pattern`` onto NNX parameter paths.

    Attributes:
        pattern: regex that must match the whole checkpoint key.
        targets: '/'-joined NNX path template(s), formatted with the regex groups, e.g.
            ``"layers/{0}/attention/query/kernel"``. Several targets split one tensor.
        transform: how the tensor becomes the target(s); defaults to :class:`Identity`.
    """

    pattern: str
    targets: str | tuple[str, ...]
    transform: Transform = Identity()

    def match(self, key: str) -> list[str] | None:
        """Returns the target paths for ``key``, or ``None`` if the rule does not apply."""
        m = re.fullmatch(self.pattern, key)
        if m is None:
            return None
        templates = (self.targets,) if isinstance(self.targets, str) else self.targets
        return [t.format(*m.groups()) for t in templates]


@dataclasses.dataclass(frozen=True)
class LoadResult(Generic[M]):
    """What :func:`load_checkpoint` did.

    Attributes:
        model: the concrete model.
        loaded: NNX path -> checkpoint key it came from.
        ignored: checkpoint keys that matched an ``ignore`` pattern (buffers, unused heads).
        initialized: NNX paths that were freshly initialised (absent from the checkpoint).
        cast: ``"key: src_dtype -> dst_dtype"`` for tensors whose float dtype was converted.
    """

    model: M
    loaded: dict[str, str]
    ignored: tuple[str, ...]
    initialized: tuple[str, ...]
    cast: tuple[str, ...]


# --------------------------------------------------------------------------- helpers


def path_str(path: Sequence[Any]) -> str:
    """Joins an NNX state path (strings and list indices) with '/'."""
    return "/".join(str(p) for p in path)


def read_safetensors(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> dict[str, np.ndarray]:
    """Reads one or several (sharded) safetensors files into numpy arrays.

    Args:
        files: a file, or a list of shard files.

    Returns:
        Mapping from tensor name to array.

    Raises:
        FileNotFoundError: naming every file that does not exist.
        ValueError: if two shards hold the same key.
    """
    from safetensors.numpy import load_file  # Lazy: only needed when reading files.

    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    missing = [os.fspath(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"safetensors file(s) not found: {missing}")
    out: dict[str, np.ndarray] = {}
    for p in paths:
        for k, v in load_file(os.fspath(p)).items():
            if k in out:
                raise ValueError(f"checkpoint key {k!r} appears in several shards ({p})")
            out[k] = v
    return out


def init_subset(model_fn: Callable[[], nnx.Module], paths: Sequence[str]) -> dict[str, Any]:
    """Initialises only the variables at ``paths`` of the model built by ``model_fn``.

    The whole constructor runs under ``jax.jit`` but only the requested leaves are outputs,
    so XLA removes the initialisation of everything else (e.g. a 30k x 384 embedding).

    Args:
        model_fn: builds the concrete model, e.g. ``lambda: Model(cfg, rngs=nnx.Rngs(seed))``.
        paths: '/'-joined variable paths to return.

    Returns:
        Mapping path -> array.
    """
    wanted = set(paths)

    @jax.jit
    def _init() -> dict[str, Any]:
        state = nnx.state(model_fn())
        return {
            path_str(p): v.get_value() for p, v in nnx.to_flat_state(state) if path_str(p) in wanted
        }

    return _init()


def _sharding_for(shardings: ShardingSpec, path: str, abstract: jax.ShapeDtypeStruct) -> Any:
    if shardings is None:
        return None
    if isinstance(shardings, jax.sharding.Sharding):
        return shardings
    if isinstance(shardings, Mapping):
        return shardings.get(path)
    return shardings(path, abstract)


# --------------------------------------------------------------------------- loader


def load_checkpoint(
    abstract_model: M,
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Mapping[str, Any],
    rules: Sequence[Rule],
    *,
    ignore: Sequence[str] = (),
    allow_missing: Sequence[str] = (),
    init_fn: Callable[[], M] | None = None,
    shardings: ShardingSpec = None,
) -> LoadResult[M]:
    """Loads a checkpoint into an abstract NNX model through a rule table.

    Args:
        abstract_model: the model built with ``nnx.eval_shape``; it is not modified.
        source: a safetensors file, a list of shard files, or a mapping key -> array.
        rules: the key-mapping table; the first matching rule wins.
        ignore: regexes (full match) of checkpoint keys that are known not to be parameters
            of this model (buffers such as ``embeddings.position_ids``, unused heads); they
            are reported in :attr:`LoadResult.ignored`, not as errors.
        allow_missing: regexes (full match) of NNX paths that the checkpoint may lack; they
            are initialised from ``init_fn``.
        init_fn: builds the concrete model (same structure, seeded ``nnx.Rngs``); only the
            allowed-missing leaves are computed (see :func:`init_subset`).
        shardings: ``None`` (default device), one ``Sharding`` for all leaves, a mapping
            NNX path -> ``Sharding``, or a callable ``(path, abstract) -> Sharding | None``.

    Returns:
        A :class:`LoadResult` holding the concrete model.

    Raises:
        FileNotFoundError: if a checkpoint file does not exist.
        ValueError: listing *every* problem found: unexpected checkpoint keys, rule targets
            that do not exist in the model, shape or dtype mismatches, parameters loaded
            twice, and parameters missing from the checkpoint.
    """
    graphdef, abstract_state = nnx.split(abstract_model)
    flat = list(nnx.to_flat_state(abstract_state))
    targets: dict[str, Any] = {path_str(p): v for p, v in flat}

    tensors = dict(source) if isinstance(source, Mapping) else read_safetensors(source)

    problems: list[str] = []
    values: dict[str, np.ndarray] = {}
    loaded: dict[str, str] = {}
    ignored: list[str] = []
    cast: list[str] = []
    # Targets whose tensor was present but faulty: reported once, not again as missing.
    faulty: set[str] = set()
    ignore_res = [re.compile(p) for p in ignore]

    for key in sorted(tensors):
        tensor = np.asarray(tensors[key])
        hit = next(((r, ps) for r in rules if (ps := r.match(key)) is not None), None)
        if hit is None:
            if any(r.fullmatch(key) for r in ignore_res):
                ignored.append(key)
            else:
                problems.append(
                    f"unexpected checkpoint key {key!r} {tuple(tensor.shape)} (no rule matches)"
                )
            continue
        rule, rule_paths = hit
        absent = [p for p in rule_paths if p not in targets]
        if absent:
            problems.append(f"checkpoint key {key!r} maps to {absent}, not in the model")
            continue
        abstract = [targets[p].get_value() for p in rule_paths]
        shapes = [tuple(a.shape) for a in abstract]
        expected = tuple(rule.transform.source_shape(shapes))
        if tuple(tensor.shape) != expected:
            faulty.update(rule_paths)
            problems.append(
                f"shape mismatch for {key!r}: checkpoint {tuple(tensor.shape)}, expected "
                f"{expected} for {rule_paths} {shapes}"
            )
            continue
        dst_dtype = np.dtype(abstract[0].dtype)
        src_kind, dst_kind = tensor.dtype.kind, dst_dtype.kind
        if src_kind != dst_kind and not (src_kind in "fV" and dst_kind in "fV"):
            # 'V' covers ml_dtypes (bfloat16) as numpy sees them.
            faulty.update(rule_paths)
            problems.append(
                f"dtype mismatch for {key!r}: checkpoint {tensor.dtype}, model {dst_dtype} "
                f"at {rule_paths}"
            )
            continue
        if tensor.dtype != dst_dtype:
            cast.append(f"{key}: {tensor.dtype} -> {dst_dtype}")
        for p, arr in zip(rule_paths, rule.transform(tensor, shapes), strict=True):
            if p in values:
                problems.append(f"parameter {p!r} is loaded twice ({loaded[p]!r} and {key!r})")
                continue
            values[p] = np.asarray(arr, dtype=dst_dtype)
            loaded[p] = key

    allow_res = [re.compile(p) for p in allow_missing]
    to_init = [p for p in targets if p not in values and any(r.fullmatch(p) for r in allow_res)]
    missing = [p for p in targets if p not in values and p not in to_init and p not in faulty]
    for p in missing:
        problems.append(f"parameter {p!r} {tuple(targets[p].get_value().shape)} not in checkpoint")
    if to_init and init_fn is None:
        problems.append(f"allow_missing paths {to_init} need init_fn, which is None")

    if problems:
        raise ValueError(
            f"cannot load checkpoint into {type(abstract_model).__name__}: "
            f"{len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        )

    fresh = init_subset(init_fn, to_init) if to_init else {}
    new_flat = []
    for p, var in flat:
        name = path_str(p)
        abstract = var.get_value()
        value = values[name] if name in values else fresh[name]
        if tuple(value.shape) != tuple(abstract.shape) or value.dtype != abstract.dtype:
            raise ValueError(  # Only reachable if init_fn builds a different model.
                f"init_fn produced {name!r} with {value.shape}/{value.dtype}, expected "
                f"{abstract.shape}/{abstract.dtype}"
            )
        sharding = _sharding_for(shardings, name, abstract)
        new_flat.append((p, var.replace(jax.device_put(value, sharding))))
    model = nnx.merge(graphdef, nnx.from_flat_state(new_flat))
    return LoadResult(
        model=model,
        loaded=loaded,
        ignored=tuple(ignored),
        initialized=tuple(to_init),
        cast=tuple(cast),
    )


# --------------------------------------------------------------------------- families


def load_pretrained(
    local_dir: str | os.PathLike[str],
    build: Callable[[], M],
    rules: Sequence[Rule],
    *,
    ignore: Sequence[str] = (),
    allow_missing: Sequence[str] = (),
    shardings: ShardingSpec = None,
) -> LoadResult[M]:
    """Loads a model family's HF directory: what every family's ``load`` does.

    The model is built abstractly from ``build`` (``nnx.eval_shape``), the directory's
    safetensors file(s) go through ``rules``, and the ``allow_missing`` leaves (a fresh task
    head) are initialised by ``build`` itself. No network access is attempted.

    Args:
        local_dir: directory with ``config.json`` and safetensors weights.
        build: builds the concrete model (config read from ``local_dir``, seeded ``nnx.Rngs``).
        rules: the family's key-mapping table.
        ignore: checkpoint keys that are known not to be parameters (see
            :func:`load_checkpoint`).
        allow_missing: NNX paths the checkpoint may lack, initialised by ``build``.
        shardings: optional target shardings, see :func:`load_checkpoint`.

    Returns:
        The load result.
    """
    from rgft_jax.models._hf_config import checkpoint_files

    return load_checkpoint(
        nnx.eval_shape(build),
        checkpoint_files(local_dir),
        rules,
        ignore=ignore,
        allow_missing=allow_missing,
        init_fn=build if allow_missing else None,
        shardings=shardings,
    )


def log_loaded(local_dir: str | os.PathLike[str], result: LoadResult[M]) -> M:
    """Logs what a ``from_pretrained`` loaded, skipped and initialised; returns the model."""
    logging.info(
        "Loaded %d tensors from %s; ignored %s; initialised %s",
        len(result.loaded),
        os.fspath(local_dir),
        list(result.ignored),
        list(result.initialized),
    )
    return result.model


def abstract_params(build: Callable[[], nnx.Module]) -> nnx.State:
    """The ``nnx.Param`` state of ``build()`` as ``jax.ShapeDtypeStruct`` s (nothing allocated).

    Use it to build component partitions, cost models or shardings before any weights are
    loaded.
    """
    return nnx.state(nnx.eval_shape(build), nnx.Param)
