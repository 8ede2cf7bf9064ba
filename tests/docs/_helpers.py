"""Helpers of the documentation tests: the docs tooling is in the ``test`` extra."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def require(module: str):
    """Imports ``module``; a skip locally when it is missing, a failure under CI.

    ``./dev.sh test`` installs the ``test`` extra, so in CI a missing tool is a broken setup,
    never a reason to stop checking the docs.
    """
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is in the test extra: ./dev.sh setup "
                               "installs it")


def load_script(relpath: str):
    """Imports a repository script that is not in a package (``docs/build_api.py``)."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
