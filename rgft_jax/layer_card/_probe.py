# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Layer Card's probe: input covariances, gradients and gradient sketches of a model.

Each adaptable matrix (a :class:`rgft_jax.models.Projection` whose path matches
``targets``) is swapped, in a *copy* of the model, for a tap that records its input and then
computes exactly what the projection computes, so outputs are unchanged
(``tests/layer_card/probe_test.py``). For every batch one jitted call returns the weighted
``x x^T`` sums of every tap (padding rows weighted 0 through the batch's attention mask) and
the loss gradient of every target kernel; the gradient sketches for coupling come from
micro-batches inside the same call (``lax.map``, so memory does not grow with their number).
Only the target kernels are differentiated: XLA drops everything else's weight gradients.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rgft_jax._src.budget import cost_flops
from rgft_jax._src.components import layer_of
from rgft_jax.layer_card import _stats
from rgft_jax.models import Projection
from rgft_jax.models._layers import iter_children, replace_child

__all__ = ["MatrixProbe", "ProbeResult", "probe"]

#: Default targets: every projection inside a numbered layer.
DEFAULT_TARGETS = r"(?:^|/)(?:layers?|h|blocks?|blk)/\d+/"

_RECORD: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "rgft_layer_card_record", default=None)


class _Tap(nnx.Module):
    """A projection that records its input (inside :func:`_recording`) and then applies the
    wrapped projection's own parameters exactly as :class:`Projection` does."""

    def __init__(self, base: Projection, name: str):
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.precision = base.precision
        self.kernel = base.kernel
        self.bias = base.bias
        self.tap_name = name

    def __call__(self, x: jax.Array) -> jax.Array:
        rec = _RECORD.get()
        if rec is not None:
            rec[self.tap_name] = x
        n_in = len(self.in_features)
        y = jnp.tensordot(x, self.kernel[...], axes=n_in, precision=self.precision)
        if self.bias is not None:
            y = y + self.bias[...]
        return y


@contextlib.contextmanager
def _recording():
    rec: dict[str, Any] = {}
    token = _RECORD.set(rec)
    try:
        yield rec
    finally:
        _RECORD.reset(token)


def _insert_taps(model: nnx.Module, targets: str) -> list[tuple[str, Projection]]:
    rx = re.compile(targets)
    found, seen = [], []
    for parent, key, child, path in list(iter_children(model)):
        if not isinstance(child, Projection):
            continue
        seen.append(path)
        if rx.search(path + "/"):
            found.append((path, child))
            replace_child(parent, key, _Tap(child, path))
    if not found:
        raise ValueError(f"layer_card: targets={targets!r} match no Projection; projections: "
                         f"{seen[:12]}")
    return found


class MatrixProbe(NamedTuple):
    """What the probe measured for one adaptable matrix."""

    path: str  # module path, e.g. 'encoder/layers/3/attention/query'
    layer: int  # layer index (rgft_jax.components.layer_of)
    d_in: int  # flattened input width
    d_out: int  # flattened output width
    moments: _stats.MomentState  # streaming E[x x^T]
    grad: np.ndarray  # float32 [d_in, d_out]: mean loss gradient over the probe batches


class ProbeResult(NamedTuple):
    """Per-matrix measurements plus per-layer gradient sketches."""

    matrices: list[MatrixProbe]
    layers: list[int]  # the layers that hold targets, ascending
    sketches: np.ndarray  # float32 [samples, len(layers), k]: per-micro-batch gradient sketches
    # ([0, L, 0] when probed with coupling=False)
    batches: int
    tokens: float  # weighted input rows seen by the first target
    flops: float = float("nan")  # XLA's count of the probe's compiled batch steps, summed


def probe(
    model: nnx.Module,
    batches: Iterable[Mapping[str, Any]],
    loss_fn: Callable[[nnx.Module, Mapping[str, Any]], jax.Array],
    *,
    targets: str = DEFAULT_TARGETS,
    micro_batch: int = 1,
    sketch_width: int = 2,
    weights_key: str | None = "attention_mask",
    seed: int = 0,
    coupling: bool = True,
) -> ProbeResult:
    """Runs ``loss_fn`` on every batch and accumulates the Layer Card's raw statistics.

    Args:
      model: an NNX model whose adaptable matrices are :class:`~rgft_jax.models.Projection`
        modules (it is not modified: the probe works on a copy).
      batches: host batches (mappings of arrays with a leading batch axis).
      loss_fn: ``loss_fn(model, batch) -> scalar`` mean loss (e.g. cross-entropy of the task).
      targets: regex searched in each projection's module path (with a trailing ``/``).
      micro_batch: rows per gradient sample for coupling; must divide every batch.
      sketch_width: ``w``: each matrix's gradient is sketched to ``w * w`` numbers.
      weights_key: batch key of a ``[B, T]`` 0/1 mask weighting input rows (padding rows
        do not enter ``Σ``); ``None`` or a missing key: every row counts.
      seed: seed of the sketch factors.
      coupling: ``False``: no micro-batch gradient sketches (about one full step per batch
        less; ``sketches`` then has no samples and ``micro_batch`` is not used).

    Returns:
      A :class:`ProbeResult`.
    """
    if not isinstance(coupling, bool):
        raise ValueError(f"layer_card.probe: coupling={coupling!r} must be True or False.")
    if not isinstance(micro_batch, int) or micro_batch < 1:
        raise ValueError(f"layer_card.probe: micro_batch={micro_batch!r} must be an int >= 1.")
    if not isinstance(sketch_width, int) or sketch_width < 1:
        raise ValueError(f"layer_card.probe: sketch_width={sketch_width!r} must be an int >= 1.")
    try:
        re.compile(targets)
    except re.error as e:
        raise ValueError(f"layer_card.probe: targets={targets!r} is not a regex: {e}") from e

    work = nnx.clone(model)
    found = _insert_taps(work, targets)
    graphdef, params, rest = nnx.split(work, nnx.Param, ...)
    params = nnx.to_pure_dict(params)

    def get(tree, path):
        for p in path.split("/"):
            tree = tree[int(p)] if isinstance(tree, list) else tree[p if p in tree else int(p)]
        return tree

    kernels = {path: get(params, path)["kernel"] for path, _ in found}
    meta = {}
    for path, proj in found:
        d_in, d_out = math.prod(proj.in_features), math.prod(proj.out_features)
        meta[path] = (layer_of(path)[0], d_in, d_out)
    layers = sorted({m[0] for m in meta.values()})
    key = jax.random.key(seed)
    factors = {}
    for i, path in enumerate(sorted(kernels)):
        _, d_in, d_out = meta[path]
        factors[path] = _stats.sketch_matrix(jax.random.fold_in(key, i), (d_in, d_out),
                                             sketch_width)

    def set_kernels(p, ks):
        p = jax.tree.map(lambda x: x, p)
        for path, k in ks.items():
            get(p, path)["kernel"] = k
        return p

    def loss_of(ks, p, batch):
        model_ = nnx.merge(graphdef, set_kernels(p, ks), rest)
        with _recording() as rec:
            loss = loss_fn(model_, batch)
        return loss, dict(rec)

    def moments_of(rec, batch):
        out = {}
        for path, x in rec.items():
            d_in = meta[path][1]
            n_in = len(get_proj[path].in_features)
            lead = x.shape[: x.ndim - n_in]
            w = None
            if weights_key is not None and weights_key in batch:
                m = batch[weights_key]
                if tuple(m.shape) == tuple(lead):
                    w = m
            rows = jnp.reshape(x, (-1, d_in)).astype(jnp.float32)
            wv = (jnp.ones(rows.shape[:1], jnp.float32) if w is None
                  else jnp.reshape(w, (-1,)).astype(jnp.float32))
            out[path] = (jnp.sum(wv), jnp.einsum("n,ni,nj->ij", wv, rows, rows,
                                                 precision=jax.lax.Precision.HIGHEST))
        return out

    get_proj = dict(found)

    def sketch(grads):
        per_layer = {lay: [] for lay in layers}
        for path in sorted(grads):
            layer, d_in, d_out = meta[path]
            r, c = factors[path]
            g = jnp.reshape(grads[path], (d_in, d_out)).astype(jnp.float32)
            s = (r.T @ g @ c).reshape(-1) / math.sqrt(d_in * d_out)
            per_layer[layer].append(s)
        return jnp.stack([jnp.concatenate(per_layer[lay]) for lay in layers])

    @jax.jit
    def batch_stats(p, batch):
        ks = {path: get(p, path)["kernel"] for path in kernels}
        (_, rec), grads = jax.value_and_grad(loss_of, has_aux=True)(ks, p, batch)
        moms = moments_of(rec, batch)
        if not coupling:
            return moms, grads, jnp.zeros((0, len(layers), 0), jnp.float32)
        rows = jax.tree.leaves(batch)[0].shape[0]
        micro = jax.tree.map(
            lambda x: jnp.reshape(x, (rows // micro_batch, micro_batch) + x.shape[1:]), batch)

        def one(mb):
            g = jax.grad(lambda k: loss_of(k, p, mb)[0])(ks)
            return sketch(g)

        sketches = jax.lax.map(one, micro)
        return moms, grads, sketches

    sums = {path: _stats.moments_init(meta[path][1]) for path in kernels}
    grad_sum = {path: np.zeros((meta[path][1], meta[path][2]), np.float64) for path in kernels}
    all_sketches, n = [], 0
    # One compiled step per batch shape; its FLOPs as XLA counts them (the Trainer's count).
    compiled: dict[Any, tuple[Any, float]] = {}
    flops = 0.0
    for batch in batches:
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        rows = jax.tree.leaves(batch)[0].shape[0]
        if coupling and rows % micro_batch:
            raise ValueError(f"layer_card.probe: micro_batch={micro_batch} does not divide the "
                             f"batch of {rows} rows.")
        shape = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in batch.items()))
        if shape not in compiled:
            run = batch_stats.lower(params, batch).compile()
            compiled[shape] = (run, cost_flops(run))
        run, f = compiled[shape]
        flops += f
        moms, grads, sk = jax.device_get(run(params, batch))
        for path in kernels:
            cnt, xx = moms[path]
            sums[path] = _stats.MomentState(sums[path].count + cnt, sums[path].xx + xx)
            grad_sum[path] += np.reshape(grads[path], grad_sum[path].shape)
        all_sketches.append(np.asarray(sk))
        n += 1
    if n == 0:
        raise ValueError("layer_card.probe: batches is empty; pass at least one batch.")
    matrices = [
        MatrixProbe(path, meta[path][0], meta[path][1], meta[path][2], sums[path],
                    (grad_sum[path] / n).astype(np.float32))
        for path in sorted(kernels, key=lambda q: (meta[q][0], q))
    ]
    return ProbeResult(matrices, layers, np.concatenate(all_sketches).astype(np.float32), n,
                       float(matrices[0].moments.count), flops)
