# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Compute accounting of a run: FLOPs per compiled pattern, step times, memory, update ratio.

FLOPs come from XLA's cost analysis of each compiled step, with the matmul FLOPs of its
StableHLO beside them (XLA's count is backend-specific: on GPU it leaves out most matmul
work; see :mod:`rgft_jax.training._flops`), averaged over the steps that actually ran.

Step times are recorded per *timed interval*: the wall time from the dispatch of the first
step of the interval to the completion of its last step (``block_until_ready``), divided by
its steps. An interval holding the first run of a freshly compiled step (buffer set-up,
autotuning) is flagged ``fresh`` and left out of the means unless nothing else ran.
"""

from __future__ import annotations

import collections
import warnings
from typing import Any

import numpy as np

from rgft_jax._src.budget import cost_flops as cost_flops  # re-exported: the steps' count
from rgft_jax.training import _flops as flops_lib

#: Accounting key of a compiled step: ``(pattern, observe, ((batch key, shape), ...))``; an
#: activation-cache step has one more pair, ``('cache_fill', (cut,))`` or
#: ``('cache_hit', (cut,))`` (see :mod:`rgft_jax.training._cache`).
Key = tuple


def cache_mode(key: Key) -> str | None:
    """``'fill'``, ``'hit'`` or ``None``: the activation-cache mode of a step's key."""
    for name, _ in key[2]:
        if name in ("cache_fill", "cache_hit"):
            return name[len("cache_"):]
    return None


def matmul_flops(lowered) -> float:
    """:func:`rgft_jax.training._flops.matmul_flops`, or NaN (with a warning) if unreadable."""
    try:
        return flops_lib.matmul_flops(lowered)
    except ValueError as e:  # accounting must never stop training
        warnings.warn(f"matmul FLOPs not counted for a compiled step: {e}", RuntimeWarning,
                      stacklevel=3)
        return float("nan")


def peak_bytes(compiled) -> int:
    """XLA's memory analysis: arguments + outputs + temporaries - aliased (-1: unknown)."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001 - backends without a memory analysis
        return -1


class Accounting:
    """What a run's steps cost (host values only; JSON round trip for checkpoints).

    Args:
      total_params: parameters of the model (the update ratio's denominator).
    """

    def __init__(self, total_params: float):
        self.total_params = total_params
        self.compilations = 0
        self.peak_bytes = 0  # largest XLA memory analysis of a compiled step
        self.pattern_steps: collections.Counter = collections.Counter()
        self.flops_by_pattern: dict[Key, float] = {}
        self.matmul_flops_by_pattern: dict[Key, float] = {}
        self.intervals: list[tuple[int, float, bool]] = []  # (steps, seconds, fresh)
        self.ratio_sum = 0.0  # sum over every step of its update ratio

    # ------------------------------------------------------------------ recording
    def record_compile(self, key: Key, flops: float, matmul: float, peak: int) -> None:
        self.compilations += 1
        self.peak_bytes = max(self.peak_bytes, peak)
        self.flops_by_pattern[key] = flops
        self.matmul_flops_by_pattern[key] = matmul

    def record_step(self, key: Key, update_ratio: float) -> None:
        self.pattern_steps[key] += 1
        self.ratio_sum += update_ratio

    def record_interval(self, steps: int, seconds: float, fresh: bool) -> None:
        if steps > 0:
            self.intervals.append((int(steps), float(seconds), bool(fresh)))

    # ------------------------------------------------------------------ views
    @property
    def steps(self) -> int:
        return sum(self.pattern_steps.values())

    @property
    def step_times(self) -> list[float]:
        """Per timed step: its interval's mean step time."""
        return [s / n for n, s, _ in self.intervals for _ in range(n)]

    @property
    def fresh_steps(self) -> list[bool]:
        """Per timed step: whether its interval ran a freshly compiled step."""
        return [f for n, _, f in self.intervals for _ in range(n)]

    @property
    def train_time_s(self) -> float:
        return float(sum(s for _, s, _ in self.intervals))

    def summary(self) -> dict[str, Any]:
        """FLOPs (averaged over the steps that ran), times, compilations, update ratio."""
        steps = self.steps
        gflops = sum(self.flops_by_pattern.get(k, float("nan")) * n
                     for k, n in self.pattern_steps.items())
        matmul = sum(self.matmul_flops_by_pattern.get(k, float("nan")) * n
                     for k, n in self.pattern_steps.items())
        warm = [(n, s) for n, s, f in self.intervals if not f] or [
            (n, s) for n, s, _ in self.intervals]
        n_timed = sum(n for n, _ in warm)
        per_step = np.repeat([s / n for n, s in warm], [n for n, _ in warm]) if warm else []
        return {
            "steps": steps,
            "gflops_per_step": gflops / max(steps, 1) / 1e9,
            "matmul_gflops_per_step": matmul / max(steps, 1) / 1e9,
            # The most expensive compiled step (a full step only where one ran: a fixed
            # sparse mask installed up front never runs one).
            "gflops_max_step": max(self.flops_by_pattern.values(), default=float("nan")) / 1e9,
            # Mean, probes included: what a step of this run costs on average.
            "step_time_s": sum(s for _, s in warm) / n_timed if n_timed else float("nan"),
            "median_step_time_s": float(np.median(per_step)) if n_timed else float("nan"),
            "train_time_s": self.train_time_s,
            "compilations": self.compilations,
            "probe_steps": sum(n for (_, obs, _), n in self.pattern_steps.items() if obs),
            "total_params": self.total_params,
            "peak_step_bytes": self.peak_bytes,
            "update_ratio": self.ratio_sum / steps if steps else 1.0,
            **self._cache_summary(),
        }

    def _cache_summary(self) -> dict[str, Any]:
        """Activation-cache steps and the mean XLA GFLOPs of its hit steps (when any ran)."""
        n = {"fill": 0, "hit": 0}
        hit_flops = hit_matmul = 0.0
        for k, c in self.pattern_steps.items():
            mode = cache_mode(k)
            if mode is not None:
                n[mode] += c
            if mode == "hit":
                hit_flops += self.flops_by_pattern.get(k, float("nan")) * c
                hit_matmul += self.matmul_flops_by_pattern.get(k, float("nan")) * c
        out = {"cache_hit_steps": n["hit"], "cache_fill_steps": n["fill"]}
        if n["hit"]:  # absent without hit steps (a NaN would break summary equality)
            out["gflops_per_hit_step"] = hit_flops / n["hit"] / 1e9
            out["matmul_gflops_per_hit_step"] = hit_matmul / n["hit"] / 1e9
        return out

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        def key(k):
            pattern, observe, shapes = k
            return [[p if isinstance(p, bool) else int(p) for p in pattern], bool(observe),
                    [[name, list(shape)] for name, shape in shapes]]

        return {
            "pattern_steps": [[key(k), n] for k, n in self.pattern_steps.items()],
            "flops_by_pattern": [[key(k), f] for k, f in self.flops_by_pattern.items()],
            "matmul_flops_by_pattern": [[key(k), f]
                                        for k, f in self.matmul_flops_by_pattern.items()],
            "intervals": [list(i) for i in self.intervals],
            "compilations": self.compilations,
            "peak_bytes": self.peak_bytes,
            "ratio_sum": self.ratio_sum,
        }

    def load_json(self, host: dict[str, Any]) -> None:
        """Restores :meth:`to_json`'s output (and the per-step times of older checkpoints)."""
        def key(k):
            pattern, observe, shapes = k
            return (tuple(pattern), observe, tuple((n, tuple(s)) for n, s in shapes))

        self.pattern_steps = collections.Counter({key(k): n for k, n in host["pattern_steps"]})
        self.flops_by_pattern = {key(k): f for k, f in host["flops_by_pattern"]}
        self.matmul_flops_by_pattern = {
            key(k): f for k, f in host.get("matmul_flops_by_pattern", [])}
        if "intervals" in host:
            self.intervals = [(int(n), float(s), bool(f)) for n, s, f in host["intervals"]]
        else:  # one timed step per entry
            fresh = host.get("fresh_steps") or [False] * len(host["step_times"])
            self.intervals = [(1, float(s), bool(f)) for s, f in zip(host["step_times"], fresh)]
        self.compilations = int(host["compilations"])
        self.peak_bytes = int(host.get("peak_bytes", 0))
        self.ratio_sum = float(host["ratio_sum"])
