"""The curves and Pareto figures are drawn from a Trainer's histories and arena rows."""

import matplotlib.image as mpimg
import numpy as np

from rgft_jax import reporting


def _hist(scale):
    h = [{"step": s, "loss": scale / s, "accuracy": 0.5, "gflops_cum": 10.0 * s * scale}
         for s in range(1, 21)]
    ev = [{"step": s, "accuracy": 0.5 + 0.01 * s, "gflops_cum": 10.0 * s * scale}
          for s in (5, 10, 15, 20)]
    return h, ev


def test_curves_have_loss_and_eval_rows_against_steps_and_gflops(tmp_path):
    (h1, e1), (h2, e2) = _hist(1.0), _hist(0.5)
    out = reporting.plot_training_curves({"full": h1, "rgft": h2}, tmp_path / "c.png",
                                         evals={"full": e1, "rgft": e2}, title="t")
    img = mpimg.imread(out)
    assert img.shape[0] > img.shape[1] * 0.5  # two rows (steps, GFLOPs)
    # Without GFLOPs: one row.
    strip = lambda hs: [{k: v for k, v in h.items() if k != "gflops_cum"} for h in hs]
    out1 = reporting.plot_training_curves({"a": strip(h1)}, tmp_path / "c1.png",
                                          evals={"a": strip(e1)})
    assert mpimg.imread(out1).shape[0] < img.shape[0]
    assert reporting.plot_training_curves({"a": []}, tmp_path / "n.png") is None
    # Runs without periodic evaluations (the LM demo): the loss column alone, no empty panel.
    out2 = reporting.plot_training_curves({"full": h1, "rgft": h2}, tmp_path / "c2.png")
    img2 = mpimg.imread(out2)
    assert img2.shape[0] == img.shape[0] and img2.shape[1] < 0.6 * img.shape[1]


def test_average_histories_over_seeds():
    a = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 3.0}]
    b = [{"step": 1, "loss": 3.0}]
    assert reporting.average_histories([a, b], ["loss"]) == [{"step": 1, "loss": 2.0}]


def test_pareto_figure(tmp_path):
    rows = [{"regime": r, "method": m, "budget": b, "accuracy": a, "accuracy_std": 0.01,
             "gflops_total": g, "train_time_s": g / 10, "target": 0.8}
            for r in ("low", "one_pass")
            for m, b, a, g in (("full", None, 0.82, 100.0), ("rgft", 0.45, 0.8, 45.0),
                               ("top_layers", 0.45, 0.79, 44.0))]
    out = reporting.plot_pareto(rows, tmp_path / "p.png", title="arena")
    img = mpimg.imread(out)
    assert img.shape[0] > 600 and np.std(img) > 0
    assert reporting.plot_pareto([], tmp_path / "q.png") is None


def test_heatmaps_draw_every_finite_cell_and_leave_nan_cells_empty(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    texts = []
    real_savefig = plt.Figure.savefig

    def spy(fig, *a, **k):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = spy
    try:
        vals = [[0.71, 0.74, np.nan], [0.69, 0.72, 0.75]]
        out = reporting.plot_heatmaps(
            {"accuracy": dict(values=vals, rows=[4, 8], cols=[4, 8, 12], fmt="{:.2f}"),
             "stability": dict(values=[[1.0, 0.9, 0.8], [0.95, 0.85, 0.7]], rows=[4, 8],
                               cols=[4, 8, 12], cmap="magma")},
            tmp_path / "h.png", title="r x k")
    finally:
        plt.Figure.savefig = real_savefig
    img = mpimg.imread(out)
    assert img.shape[1] > 800 and np.std(img) > 0
    assert "0.75" in texts and "nan" not in texts and len(texts) == 5 + 6
    assert reporting.plot_heatmaps({}, tmp_path / "e.png") is None


def test_palette_does_not_repeat_colours_past_ten_methods():
    from rgft_jax import reporting

    for n in (3, 10, 13, 20):
        colors = reporting._palette([f"m{i}" for i in range(n)])
        assert len({tuple(c) for c in colors.values()}) == n
