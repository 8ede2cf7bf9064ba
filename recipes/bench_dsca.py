# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: DSCA spectral clustering vs scikit-learn on planted-partition graphs.

Three graphs with known clusters:

* ``m = 4,096``, ``k = 12`` (``--quick``: 512, ``k = 8``): a dense stochastic block model
  (edge probability ``p_in`` = 0.1 (``--quick``: 0.3) inside a cluster, ``p_out`` = 0.01
  across), as a dense ``[m, m]`` array;
* the same graph with weak dense background noise, as similarity graphs have: every pair
  also gets a weight ``noise * U(0, 1)`` (``noise`` = 0.02; the graph has no zero entries);
* ``m = 65,536`` (``--quick``: 4,096): a sparse planted kNN graph (each node draws ``knn``
  neighbours, a fraction ``mix`` of them outside its cluster), symmetrised, as a BCOO matrix
  with ``nnz = 2 m knn`` (scipy CSR for scikit-learn).

For each graph: :func:`rgft_jax.dsca.spectral_clustering` with the library's defaults
(``n_components = n_clusters``; compile time reported separately, then the median of
``--repeats`` timed runs) and (clean graphs) one dynamic update
:func:`rgft_jax.dsca.dsca_update` on sketches of planted block gradients, against
``sklearn.cluster.SpectralClustering(affinity="precomputed")`` on the same graph in the same
run, also the median of ``--repeats`` runs (skipped above ``--sklearn-max-m``: its default
ARPACK shift-invert solver needs ~165 s already at m = 8,192 on a 2-core CPU); ``speedup`` is
the ratio of the two medians. Prints a table and writes JSON (with the load average) to
``--out``.

Usage::

  python recipes/bench_dsca.py --out /tmp/bench_dsca.json
  python recipes/bench_dsca.py --quick --out /tmp/bench_dsca_quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from recipes import _cli
from rgft_jax import dsca


def sbm_dense(m: int, k: int, p_in: float, p_out: float, seed: int, noise: float = 0.0):
    """Planted partition (sizes ``m // k``, the remainder in the last cluster) plus
    ``noise * U(0, 1)`` on every pair; symmetric, zero diagonal."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(k), m // k)
    truth = np.concatenate([truth, np.full(m - truth.size, k - 1)])
    p = np.where(truth[:, None] == truth[None, :], p_in, p_out)
    a = (rng.random((m, m)) < p).astype(np.float32)
    if noise:
        a += noise * rng.random((m, m), dtype=np.float32)
    a = np.triu(a, 1)
    return a + a.T, truth


def planted_knn(m: int, k: int, knn: int, mix: float, seed: int):
    """kNN lists with ``(1 - mix) * knn`` neighbours inside the own cluster on average."""
    rng = np.random.default_rng(seed)
    size = m // k
    truth = np.repeat(np.arange(k), size)
    inside = rng.random((m, knn)) >= mix
    same = truth[:, None] * size + rng.integers(0, size, (m, knn))
    other = rng.integers(0, m, (m, knn))
    idx = np.where(inside, same, other).astype(np.int32)
    idx = np.where(idx == np.arange(m)[:, None], (idx + 1) % m, idx)
    w = rng.uniform(0.5, 1.0, (m, knn)).astype(np.float32)
    return idx, w, truth


def timed(fn, repeats: int):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return out, med, max(first - med, 0.0)


def sklearn_run(affinity, k: int, seed: int, repeats: int = 1):
    """scikit-learn's labels and the median wall time of ``repeats`` runs."""
    from sklearn.cluster import SpectralClustering

    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        labels = SpectralClustering(
            n_clusters=k, affinity="precomputed", random_state=seed
        ).fit_predict(affinity)
        times.append(time.perf_counter() - t0)
    return labels, statistics.median(times)


def planted_sketches(truth: np.ndarray, s: int, noise: float, seed: int) -> np.ndarray:
    """Block 'gradient sketches': a random direction per cluster plus isotropic noise."""
    rng = np.random.default_rng(seed)
    k = truth.max() + 1
    centers = rng.normal(size=(k, s))
    return (centers[truth] + noise * rng.normal(size=(truth.size, s))).astype(np.float32)


def bench_dynamic(truth, *, k: int, graph: str, repeats: int, seed: int):
    m = truth.size
    cfg = dsca.DSCAConfig(
        num_blocks=m,
        num_modules=k,
        embed_dim=k,
        sketch_dim=32,
        graph=graph,
        kmeans_restarts=1,
        recompute_every=1000,
    )
    x0 = jnp.asarray(planted_sketches(truth, 32, 0.5, seed))
    x1 = jnp.asarray(planted_sketches(truth, 32, 0.5, seed + 1))
    update = jax.jit(dsca.dsca_update, static_argnames=("config",))
    state = dsca.dsca_init(m, config=cfg)
    t0 = time.perf_counter()
    state, lib0 = jax.block_until_ready(update(state, x0, config=cfg))  # full recompute
    first = time.perf_counter() - t0
    times, libs = [], []
    for i in range(repeats):
        xi = x1 if i % 2 == 0 else x0
        t0 = time.perf_counter()
        state, lib = jax.block_until_ready(update(state, xi, config=cfg))
        times.append(time.perf_counter() - t0)
        libs.append(lib)
    lib = libs[-1]
    ari = float(dsca.adjusted_rand_index(jnp.asarray(truth), lib.labels))
    return dict(
        update_s=statistics.median(times),
        first_update_s=first,
        ari=ari,
        lobpcg_iters=int(lib.lobpcg_iters),
        ari_vs_prev=float(lib.ari),
        kappa=float(lib.kappa),
        drift=float(lib.drift),
    )


@_cli.command
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_dsca.json")
    ap.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sklearn-max-m",
        type=int,
        default=20000,
        help="skip scikit-learn above this m (it takes minutes)",
    )
    ap.add_argument("--no-dynamic", action="store_true", help="skip the dsca_update rows")
    args = ap.parse_args(argv)

    if args.quick:
        cases = [("dense", 512, 8), ("noisy", 512, 8), ("sparse", 4096, 8)]
        if args.sklearn_max_m == 20000:
            args.sklearn_max_m = 1024
    else:
        cases = [("dense", 4096, 12), ("noisy", 4096, 12), ("sparse", 65536, 16)]
    noise = 0.02
    rows = []
    for kind, m, k in cases:
        if kind in ("dense", "noisy"):
            p_in = 0.3 if args.quick else 0.1  # 64-node clusters need denser blocks to be separable
            nz = noise if kind == "noisy" else 0.0
            a_np, truth = sbm_dense(m, k, p_in=p_in, p_out=0.01, seed=args.seed, noise=nz)
            a = jnp.asarray(a_np)
            sk_aff = a_np
            graph = f"SBM dense p_in={p_in} p_out=0.01 ({int((a_np >= 1).sum()):,} edges)"
            if nz:
                graph += f" + {nz} * U(0, 1) on every pair"
        else:
            knn = 16
            idx, w, truth = planted_knn(m, k, knn=knn, mix=0.3, seed=args.seed)
            a = dsca.knn_to_bcoo(jnp.asarray(idx), jnp.asarray(w))
            graph = f"planted kNN k={knn} mix=0.3 (BCOO nnz={a.nse:,})"
            import scipy.sparse as sp

            half = sp.csr_matrix(
                (np.asarray(w).ravel(), (np.repeat(np.arange(m), knn), np.asarray(idx).ravel())),
                shape=(m, m),
            )
            sk_aff = ((half + half.T) * 0.5).tocsr()  # the same matrix as the BCOO, exactly
        key = jax.random.PRNGKey(args.seed)
        # The library's defaults (n_components = n_clusters, as scikit-learn's).
        fn = lambda a=a, k=k, key=key: dsca.spectral_clustering(a, k, key=key)  # noqa: E731
        labels, t, compile_s = timed(fn, args.repeats)
        ari = float(dsca.adjusted_rand_index(jnp.asarray(truth), labels))
        row = dict(
            graph_kind=kind, m=m, k=k, graph=graph, dsca_s=t, dsca_compile_s=compile_s, dsca_ari=ari
        )
        if m <= args.sklearn_max_m:
            from sklearn.metrics import adjusted_rand_score

            sk_labels, sk_t = sklearn_run(sk_aff, k, args.seed, args.repeats)
            row.update(
                sklearn_s=sk_t,
                sklearn_ari=float(adjusted_rand_score(truth, sk_labels)),
                speedup=sk_t / t,
            )
        else:
            row.update(
                sklearn_s=None,
                sklearn_ari=None,
                speedup=None,
                sklearn_note=f"skipped: m > --sklearn-max-m={args.sklearn_max_m}",
            )
        if not args.no_dynamic and kind != "noisy":
            row["dynamic"] = bench_dynamic(
                truth, k=k, graph=kind, repeats=args.repeats, seed=args.seed
            )
        rows.append(row)
        print(json.dumps(row), flush=True)

    hdr = (
        f"{'graph':<7}{'m':>8}{'k':>4} | {'dsca s':>8}{'compile s':>10}{'ARI':>7} | "
        f"{'sklearn s':>10}{'ARI':>7}{'speedup':>9} | {'update s':>9}{'ARI':>7}{'iters':>6}"
    )
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for r in rows:
        sk = (
            f"{r['sklearn_s']:>10.3f}{r['sklearn_ari']:>7.3f}{r['speedup']:>8.1f}x"
            if r["sklearn_s"] is not None
            else f"{'skipped':>10}{'':>7}{'':>9}"
        )
        dyn = r.get("dynamic")
        dy = f"{dyn['update_s']:>9.3f}{dyn['ari']:>7.3f}{dyn['lobpcg_iters']:>6d}" if dyn else ""
        print(
            f"{r['graph_kind']:<7}{r['m']:>8,}{r['k']:>4} | {r['dsca_s']:>8.3f}"
            f"{r['dsca_compile_s']:>10.2f}{r['dsca_ari']:>7.3f} | {sk} | {dy}"
        )
    meta = dict(
        jax=jax.__version__,
        backend=jax.default_backend(),
        devices=str(jax.devices()),
        cpu_count=os.cpu_count(),
        platform=platform.platform(),
        quick=args.quick,
        repeats=args.repeats,
        loadavg=os.getloadavg(),
    )
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=2)
    print(f"\nwrote {args.out}")
    return rows


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
