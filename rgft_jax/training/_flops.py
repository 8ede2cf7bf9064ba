# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Matmul FLOPs of a lowered JAX program, counted from its StableHLO text.

XLA's cost analysis is backend-specific. On CPU it counts what a training step costs (the
MiniLM step at batch 32 x 64: 136.6 GFLOPs, of which these matmuls are 134.1). On the GPU
backend it does not: measured on an H200 (jax 0.11.2), a BERT-base step at batch 64 x 128,
whose matmuls alone are about 4.2 TFLOPs, was reported as 131 GFLOPs, by the lowered and the
optimised module alike. The StableHLO a step lowers to is the same program on every backend,
so counting its ``dot_general`` and ``convolution`` ops gives a figure that means the same on
CPU, GPU and TPU.

Counted: ``2 * prod(result) * prod(contracted sizes)`` for every ``dot_general``, and for
every ``convolution`` twice its products with real input (padding and the holes of an
input-dilated gradient convolution left out, as XLA does), in every function, times how
often it is called. Element-wise work is not counted. A matmul inside a loop or a
conditional makes the count NaN (how often it runs is not in the text): the models' train
steps have none; a probe step that runs DSCA has.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from typing import Any

__all__ = ["matmul_flops"]

_SYMBOL = r'@("[^"]+"|[\w.$-]+)'  # MLIR symbol names, quoted when they hold other characters
_FUNC = re.compile(r"^\s*func\.func\s+(?:public\s+|private\s+)?" + _SYMBOL + r"\(")
_CALL = re.compile(r"\bcall\s+" + _SYMBOL + r"\(")
_TENSOR = re.compile(r"tensor<([^>]*)>")
_CONTROL = re.compile(r"stablehlo\.(?:while|case|if)\b")
_CONTRACT = re.compile(r"contracting_dims\s*=\s*\[([\d,\s]*)\]\s*x\s*\[")
_CONV_DIMS = re.compile(r"dim_numbers\s*=\s*\[([^\]]*)\]x\[([^\]]*)\]->\[([^\]]*)\]")


def _shape(spec: str) -> tuple[int, ...]:
    """``'8x16x64xf32'`` -> ``(8, 16, 64)``; ``'f32'`` -> ``()``."""
    dims = spec.split("x")[:-1]
    if any(not d.isdigit() for d in dims):  # dynamic ('?') dims: not countable
        raise ValueError(f"matmul_flops: dynamic shape tensor<{spec}>")
    return tuple(int(d) for d in dims)


def _signature(line: str) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """Operand shapes and result shape of an op from its trailing ``: (...) -> ...`` type."""
    head, _, result = line.rpartition("->")
    operands = _TENSOR.findall(head.rsplit(" : ", 1)[-1])
    out = _TENSOR.findall(result)
    if len(operands) < 2 or not out:
        raise ValueError(f"matmul_flops: cannot read the types of {line.strip()[:160]!r}")
    return [_shape(s) for s in operands[-2:]], _shape(out[0])


def _dot(line: str) -> float:
    (lhs, _), out = _signature(line)
    m = _CONTRACT.search(line)
    if m:
        dims = [int(d) for d in m.group(1).split(",") if d.strip()]
    elif "stablehlo.dot_general" in line:
        raise ValueError(f"matmul_flops: no contracting_dims in {line.strip()[:160]!r}")
    else:  # stablehlo.dot: the lhs's last axis with the rhs's first
        dims = [len(lhs) - 1] if lhs else []
    return 2.0 * math.prod(out) * math.prod(lhs[d] for d in dims)


def _window(line: str, name: str, n: int, default: int) -> list:
    m = re.search(name + r"\s*=\s*(\[[\d,\s\[\]-]*\])", line)
    if m is None:
        return [default] * n
    return json.loads(m.group(1))


def _conv(line: str) -> float:
    """Products of a convolution that touch real input (padding and dilation holes left out).

    ``prod(result batch and feature dims) * kernel_input_features * prod_s count_s``, where
    ``count_s`` counts the (output position, kernel position) pairs of spatial dim ``s``
    whose input position is inside the (dilated) input and not a dilation hole. This is
    exact for forward convolutions and for both gradients (an input gradient is a
    convolution of the input-dilated output gradient), grouped ones included.
    """
    (lhs, kernel), out = _signature(line)
    m = _CONV_DIMS.search(line)
    if m is None:
        raise ValueError(f"matmul_flops: no dim_numbers in {line.strip()[:160]!r}")
    lhs_roles, k_roles, out_roles = (
        [r.strip() for r in part.split(",")] for part in m.groups())
    spatial = sorted((r for r in k_roles if r.isdigit()), key=int)
    n = len(spatial)
    stride = _window(line, "stride", n, 1)
    pad = _window(line, "pad", n, None)
    lhs_d = _window(line, "lhs_dilate", n, 1)
    rhs_d = _window(line, "rhs_dilate", n, 1)
    pairs = 1
    for j, dim in enumerate(spatial):
        size_in = lhs[lhs_roles.index(dim)]
        size_k = kernel[k_roles.index(dim)]
        size_out = out[out_roles.index(dim)]
        lo = pad[j][0] if pad[j] is not None else 0
        top = (size_in - 1) * lhs_d[j]
        count = 0
        for o in range(size_out):
            for k in range(size_k):
                pos = o * stride[j] + k * rhs_d[j] - lo
                count += 0 <= pos <= top and pos % lhs_d[j] == 0
        pairs *= count
    rest = math.prod(d for d, r in zip(out, out_roles) if not r.isdigit())
    return 2.0 * rest * kernel[k_roles.index("i")] * pairs


def _per_function(text: str) -> tuple[dict[str, float], dict[str, list[str]], str]:
    """Matmul FLOPs and calls per function; NaN for a function with matmuls in control flow.

    A matmul inside a ``while`` body or a ``case`` / ``if`` branch runs as often as the trip
    count or the branch taken says, which the text does not: that function's count is NaN
    rather than a wrong number. Calls from such regions are marked ``?`` (NaN if the callee
    does any matmul).
    """
    flops: dict[str, float] = {}
    calls: dict[str, list[str]] = {}
    current, first = None, None
    # Brace depth, and the depth of every control-flow op whose regions are open (a region
    # may open on the op's line or on a later one: "cond {").
    depth, control = 0, []
    for line in text.splitlines():
        m = _FUNC.match(line)
        if m:
            current = m.group(1)
            first = first or current
            flops.setdefault(current, 0.0)
            calls.setdefault(current, [])
        elif current is not None:
            inside = bool(control)
            if "stablehlo.dot_general" in line or "stablehlo.dot " in line:
                flops[current] += float("nan") if inside else _dot(line)
            elif "stablehlo.convolution" in line:
                flops[current] += float("nan") if inside else _conv(line)
            # A call in a loop or a branch runs an unknown number of times: marked "?".
            calls[current].extend(("?" + c if inside else c) for c in _CALL.findall(line))
            if _CONTROL.search(line):
                control.append([depth, False])
        depth += line.count("{") - line.count("}")
        for c in control:
            c[1] = c[1] or depth > c[0]
        while control and control[-1][1] and depth <= control[-1][0]:
            control.pop()
    entry = "main" if "main" in flops else first
    if entry is None:
        raise ValueError("matmul_flops: no function in the module text")
    return flops, calls, entry


def matmul_flops(lowered: Any) -> float:
    """Matmul + convolution FLOPs of a lowered computation (``jax.jit(f).lower(...)``).

    Args:
      lowered: a ``jax.stages.Lowered``, or its StableHLO text (``lowered.as_text()``).

    Returns:
      The FLOPs, counting each called function as often as it is called.

    Raises:
      ValueError: when the text holds no function or an op's shapes cannot be read.
    """
    text = lowered if isinstance(lowered, str) else lowered.as_text()
    flops, calls, entry = _per_function(text)

    @cache
    def total(name: str) -> float:
        out = flops.get(name, 0.0)
        for c in calls.get(name, ()):
            sub = total(c.lstrip("?"))
            out += float("nan") if c.startswith("?") and sub != 0 else sub
        return out

    return float(total(entry))
