"""The predicted-vs-true figure of the module search (rgft_jax.reporting)."""

import numpy as np

from rgft_jax import reporting


def test_predicted_vs_true_png(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(size=12)
    hi = np.zeros(12, bool)
    hi[3] = True
    path = reporting.plot_predicted_vs_true(
        {"accuracy": {"predicted": t + 0.1, "true": t, "labels": list(range(12)),
                      "highlight": hi, "note": "Spearman 1.00"},
         "loss": {"predicted": -t, "true": t}}, tmp_path / "pvt.png")
    assert path == str(tmp_path / "pvt.png")
    assert (tmp_path / "pvt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert reporting.plot_predicted_vs_true({}, tmp_path / "none.png") is None
