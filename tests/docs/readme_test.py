"""The README's Python examples run, in order, as a reader would paste them."""

from __future__ import annotations

import re

import jax
import pytest

from tests.docs._helpers import ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.fixture(autouse=True)
def _cheap_codegen(cheap_codegen):
    """The examples compile train steps: see ``cheap_codegen`` in tests/conftest.py."""


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    assert len(BLOCKS) >= 3, "the README lost its examples"
    monkeypatch.chdir(tmp_path)  # the export example writes delta.safetensors here
    namespace: dict = {}
    for i, block in enumerate(BLOCKS):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "Partition:" in out and "entries stored" in out and "| layer |" in out
    restored, tuned = namespace["restored"], namespace["tuned"]
    assert all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(restored),
                                                     jax.tree.leaves(tuned)))
    assert namespace["summary"].changed_leaves == ("classifier/bias",)


@pytest.mark.parametrize("page", ["README.md", "docs/design.md", "docs/results.md"])
def test_markdown_renders_sanely(page):
    text = (ROOT / page).read_text()
    assert text.count("```") % 2 == 0, f"{page}: an unclosed code fence"
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    # Tables: every row has as many cells as its header (GitHub drops the extra ones).
    for table in re.findall(r"(?:^\|.*\|\n)+", prose, re.M):
        rows = table.strip().splitlines()
        widths = {len(re.split(r"(?<!\\)\|", r.strip())) for r in rows}
        assert len(widths) == 1, f"{page}: ragged table starting {rows[0][:60]!r}"
    # Relative links point at files of the repository.
    for target in re.findall(r"\]\(([^)#:]+)\)", prose):
        assert ((ROOT / page).parent / target).exists(), f"{page}: broken link {target}"
