# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The layer rule: dependencies inside rgft_jax point one way (README, "Layers").

Every ``import`` statement of the package (top level or inside a function) is read from the
source with ``ast``, so a lazy import that breaks the rule fails here too.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "rgft_jax"

# Layer of each room (a top-level module or sub-package of rgft_jax), lowest first. A room may
# import rooms of its own layer or below, never above. Rooms of one layer that must not import
# each other are listed in FORBIDDEN.
LAYERS = {
    "_src": 0, "components": 0, "__init__": 0, "thresholds": 0,
    "ops": 1, "reporting": 1,
    "models": 2, "data": 2,
    "adapters": 3, "dsca": 3, "layer_card": 3, "search": 3, "export": 3,
    "training": 4,
}
# What the core may import from outside the standard library.
CORE_THIRD_PARTY = {"jax", "jaxlib", "optax", "numpy", "chex"}
FORBIDDEN = {("dsca", "adapters"), ("adapters", "dsca"), ("models", "data"), ("data", "models")}


def _room(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            if node.module == "rgft_jax":  # from rgft_jax import dsca -> rgft_jax.dsca
                out += [(node.lineno, f"rgft_jax.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; use absolute ones")
    return out


def _violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        room = _room(path)
        assert room in LAYERS, f"{path}: room {room!r} has no layer in tests/layering_test.py"
        for line, mod in _imports(path):
            top = mod.split(".")[0]
            where = f"{path.relative_to(ROOT.parent)}:{line} ({room}) imports {mod}"
            if top == "recipes":
                bad.append(where + ": the library never imports recipes")
            if top != "rgft_jax":
                if LAYERS[room] == 0 and top not in CORE_THIRD_PARTY and top not in (
                        sys.stdlib_module_names):
                    bad.append(where + f": the core uses only {sorted(CORE_THIRD_PARTY)}")
                continue
            parts = mod.split(".")
            if len(parts) == 1:
                continue  # `import rgft_jax` / `from rgft_jax import x` handled per name
            target = parts[1]
            if target not in LAYERS:
                continue  # a public name of the root package (rgft_jax.residual_guided, ...)
            if LAYERS[target] > LAYERS[room]:
                bad.append(where + f": layer {LAYERS[room]} importing layer {LAYERS[target]}")
            if (room, target) in FORBIDDEN:
                bad.append(where + ": these rooms are independent")
    return bad


def test_dependencies_point_one_way():
    bad = _violations()
    assert not bad, "layer rule broken:\n" + "\n".join(bad)


def test_rule_catches_an_upward_import(tmp_path, monkeypatch):
    # The check can fail: a core module importing the training engine is reported.
    fake = tmp_path / "rgft_jax"
    (fake / "_src").mkdir(parents=True)
    (fake / "_src" / "bad.py").write_text("from rgft_jax.training import Trainer\nimport flax\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    bad = _violations()
    assert len(bad) == 2, bad
    assert "layer 0 importing layer 4" in bad[0] and "the core uses only" in bad[1]


@pytest.mark.parametrize("module, banned", [
    ("rgft_jax", ["flax", "orbax", "tensorflow_datasets", "grain", "transformers",
                  "matplotlib", "rgft_jax.training", "rgft_jax.dsca", "rgft_jax.models"]),
    ("rgft_jax.models", ["orbax", "tensorflow_datasets", "grain", "rgft_jax.training",
                         "rgft_jax.dsca"]),
])
def test_import_pulls_only_its_layer(module, banned):
    code = (f"import sys, {module}\n"
            f"print(','.join(m for m in {banned!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"`import {module}` imported {out}"
