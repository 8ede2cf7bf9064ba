"""Every notebook runs on CPU with a tiny configuration, is committed without outputs, and
stays in sync with its ``# %%`` script."""

from __future__ import annotations

import json
import pathlib

import pytest

from tests.docs._helpers import ROOT, require

NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))


def _ids(paths):
    return [p.name for p in paths]


def test_there_are_notebooks():
    assert NOTEBOOKS, "colab/ has no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_without_outputs(path: pathlib.Path):
    # Outputs and execution counts belong to a run, not to the repository (noise in diffs,
    # stale numbers). Strip them with: jupytext --to ipynb colab/<name>.py
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_paired_script_in_sync(path: pathlib.Path):
    jupytext = require("jupytext")
    nbformat = require("nbformat")
    script = path.with_suffix(".py")
    assert script.is_file(), f"{path.name} has no paired script {script.name}"
    cells = lambda nb: [(c.cell_type, c.source.strip(), c.metadata.get("tags", []))
                        for c in nb.cells]
    from_script = cells(jupytext.read(script))
    from_notebook = cells(nbformat.read(path, as_version=4))
    assert from_script == from_notebook, (
        f"{path.name} and {script.name} differ: edit the script, then "
        f"`jupytext --to ipynb colab/{script.name}`")


@pytest.fixture(scope="module")
def tiny_demo_inputs(tmp_path_factory):
    from tests.recipes.demo_test import tiny_checkpoint, tiny_csv

    folder = tmp_path_factory.mktemp("notebook_inputs")
    return tiny_checkpoint(folder / "model"), tiny_csv(folder / "train.csv")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_on_cpu_tiny(path: pathlib.Path, tiny_demo_inputs, tmp_path,
                                   monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    model, csv = tiny_demo_inputs
    out = tmp_path / "out"
    # The demo at toy size: a random 2-layer BERT checkpoint and a 120-line CSV.
    overrides = dict(model=str(model), train=str(csv), steps=4, update_every=2, batch_size=8,
                     max_length=16, eval_examples=0, progress=False, checkpoint_every=0,
                     out=str(out))
    monkeypatch.setenv("RGFT_NOTEBOOK_OVERRIDES", json.dumps(overrides))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # As in tests/training/conftest.py: about half the compile time, the same programs.
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError with the cell's traceback on any failure
    skipped = [c for c in nb.cells if "skip-execution" in c.metadata.get("tags", [])]
    assert all(c.cell_type == "code" and "pip install" in c.source for c in skipped)
    assert (out / "report.json").is_file() and (out / "error_map.png").is_file()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, "the notebook displayed no figure"
