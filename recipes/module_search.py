# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""MFTC module search end to end: probes -> predictor -> search -> train the choice.

Default: all-MiniLM-L6-v2 on the CrowdFlower tweets (3 classes); nodes are the 6 layers
(``--nodes dsca``: DSCA modules of the gradient sketches at the start of fine-tuning),
candidates off / sparse / LoRA 4 / LoRA 8 per node.

1. Probes: every single switch trained ``--steps`` steps (``--repeats`` times, each with its
   own head and LoRA initialisation and data order), evaluated on a probe split (the first
   ``--probe-examples`` of the test split); plus the first-order estimate (gradient .
   update) and the cost of both.
2. Predictor (equation 7) with its sigma; search (equation 8): maximise predicted accuracy
   minus ``--tau`` sigma subject to predicted loss <= the base network's and a parameter
   budget (``--budget`` of the parameters of all nodes' blocks); greedy + 2-opt and the ILP,
   with the LP bound and the gap.
3. Validation: ``--validation`` random configurations, the chosen one, the energy
   heuristic's and the base network, trained for real with the engine (same steps,
   schedule, data order) per ``--validation-seeds``; Spearman, MAE, R^2 of predicted vs
   measured accuracy and loss on the probe split, and the predicted-vs-true figure.
4. The chosen configuration against full fine-tuning and the energy heuristic (the nodes of
   the largest gradient energy, sparse-trained, within the chosen configuration's trainable
   parameters) per ``--seeds``: accuracy on the report split (the next
   ``--eval-examples`` test examples), GFLOPs per step (XLA), step time, update ratio.

Every trained configuration is one JSON line in ``runs.jsonl`` (the probes are cached in
``probes.npz``): a rerun with the same ``--out`` skips what is done.

    python -m recipes.module_search                               # the full default
    python -m recipes.module_search --steps 12 --repeats 2 --batch-size 16 --max-length 48 \\
        --probe-examples 128 --eval-examples 256 --out runs/module_search_reduced
    python -m recipes.module_search --model DIR --train a.csv --test b.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from recipes import demo


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Embedded defaults (the full run: several hours on a 2-core CPU)."""

    model: str | None = None
    train: str | None = None
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    out: str = "runs/module_search"
    data_dir: str | None = None
    batch_size: int = 32
    max_length: int = 64
    nodes: str = "layers"  # or "dsca"
    dsca_modules: int = 8
    candidates: tuple[str, ...] = ("off", "sparse", "lora4", "lora8")
    steps: int = 100  # of every probe and every trained configuration
    repeats: int = 3
    learning_rate: float = 3e-4  # the demo's full fine-tuning rate
    lora_scale: float = 5.0  # LoRA adapters at 5x (the Layer Card recipe's LoRA rate)
    tau: float = 1.0
    budget: float = 0.35
    probe_examples: int = 512
    eval_examples: int = 1024
    validation: int = 10
    validation_seeds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0, 1, 2)
    search_seed: int = 1234
    # XLA backend optimisation level 0 (jax_disable_most_optimizations): about half the
    # compile time, same programs and FLOP counts, slower steps. For reduced runs, where
    # compiling dominates; step times are then not comparable with other runs.
    cheap_compile: bool = False
    # Train nothing: report from the probes and the configurations already in runs.jsonl
    # (e.g. a run stopped at a deadline).
    report_only: bool = False

    def __post_init__(self):
        for name in ("batch_size", "max_length", "steps", "probe_examples", "eval_examples",
                     "dsca_modules"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} {v!r}: must be an int >= 1.")
        if self.repeats < 2:
            raise ValueError(f"--repeats {self.repeats}: the predictor's sigma needs >= 2.")
        if self.nodes not in ("layers", "dsca"):
            raise ValueError(f"--nodes {self.nodes!r}: allowed: layers, dsca.")
        if not 0 < self.budget <= 1:
            raise ValueError(f"--budget {self.budget}: must be in (0, 1].")
        if self.test and not self.train:
            raise ValueError("--test needs --train.")


class _Task:
    """Model directory, data, tokeniser, probe and report splits of a config."""

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg
        dcfg = demo.DemoConfig(model=cfg.model, train=cfg.train, test=cfg.test,
                               text_column=cfg.text_column, label_column=cfg.label_column,
                               out=cfg.out, data_dir=cfg.data_dir, batch_size=cfg.batch_size,
                               max_length=cfg.max_length)
        self.task = demo.ClassificationTask(dcfg)
        self.model_dir, self.bcfg = self.task.model_dir, self.task.config
        self.train_src, test_src = self.task.train, self.task.test
        self.names, self.batch_fn = self.task.label_names, self.task.batch_fn
        n = len(test_src)
        n_probe = min(cfg.probe_examples, n // 2)
        n_eval = min(cfg.eval_examples, n - n_probe)
        rows = [test_src[i] for i in range(n_probe + n_eval)]
        self.probe_set = self.task.eval_batches(rows[:n_probe], cfg.batch_size)
        self.report_set = self.task.eval_batches(rows[n_probe:], cfg.batch_size)
        self.num_heads = self.bcfg.num_attention_heads
        self.num_layers = self.bcfg.num_hidden_layers

    def model(self, seed: int):
        return self.task.model(seed)

    def iterator(self, seed: int):
        from rgft_jax import data

        return data.TrainIterator(self.train_src, batch_size=self.cfg.batch_size, seed=seed,
                                  batch_fn=self.batch_fn)

    def params(self):
        from flax import nnx

        _, p, _ = nnx.split(self.model(0), nnx.Param, ...)
        return nnx.to_pure_dict(p)

    def rules(self, params):
        from rgft_jax.training import _components as parts

        return parts.component_rules("heads", "component", self.num_heads, params)


def _nodes(task: _Task, params, part):
    """Layer nodes, or DSCA modules of the gradient sketches of a few probe batches."""
    from rgft_jax import search

    if task.cfg.nodes == "layers":
        return search.layer_nodes(part)
    import jax
    from flax import nnx

    from rgft_jax import dsca

    model = task.model(0)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    conf = dsca.DSCAConfig.for_partition(part, num_modules=task.cfg.dsca_modules)
    state = dsca.dsca_init(part, config=conf)

    @jax.jit
    def grads(p, b):
        return jax.grad(lambda q: search.classification_loss(nnx.merge(graphdef, q, rest), b))(p)

    step = jax.jit(dsca.dsca_step, static_argnames=("partition", "config"))
    it = task.iterator(0)
    for _ in range(8):
        b = {k: jax.numpy.asarray(v) for k, v in next(it).items()}
        state, lib = step(state, part, grads(params, b), conf)
    labels = np.asarray(jax.device_get(lib.labels))
    # Embeddings stay out of every node (as with layer nodes).
    emb = [c.index for c in part.components if c.layer < 0]
    labels[emb] = -1
    return tuple(n for n in search.module_nodes(part, labels) if n.name != "module -1")


def _costs(part, nodes, candidates, params):
    """Trainable parameters of each (node, candidate): blocks, or adapters of its matrices."""
    import jax

    from rgft_jax import search
    from rgft_jax._src import components as comp_lib
    from rgft_jax.search import _space

    shapes = {comp_lib.key_path_to_str(p): x.shape
              for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    in_axes = {"query": 1, "key": 1, "value": 1, "out": 2, "up": 1, "down": 1}
    cost = np.zeros((len(nodes), len(candidates)))
    for i, node in enumerate(nodes):
        ids = _space.component_indices(part, node.components, "costs")
        for j, c in enumerate(candidates):
            kind, r = search.candidate_kind(c)
            if kind == "sparse":
                cost[i, j] = float(part.sizes[ids].sum())
            elif kind == "lora":
                for m in node.matrices:
                    s = shapes[m + "/kernel"]
                    k = in_axes.get(m.rsplit("/", 1)[-1], 1)
                    cost[i, j] += r * (np.prod(s[:k]) + np.prod(s[k:]))
    return cost


class _Runs:
    """``runs.jsonl``: one line per trained configuration; reruns skip what is there."""

    def __init__(self, path: str):
        self.path, self.rows = path, {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        self.rows[row["key"]] = row

    def add(self, row: dict) -> dict:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[row["key"]] = row
        return row


def _evaluate(model, batches) -> tuple[float, float]:
    import jax
    from flax import nnx

    from rgft_jax import search

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fn = jax.jit(lambda p, b: search.classification_eval(nnx.merge(graphdef, p, rest), b))
    s_l = s_c = s_n = 0.0
    for b in batches:
        lo, co, n = jax.device_get(fn(params, {k: jax.numpy.asarray(v) for k, v in b.items()}))
        s_l, s_c, s_n = s_l + float(lo), s_c + float(co), s_n + float(n)
    return s_c / max(s_n, 1), s_l / max(s_n, 1)


def _train(task: _Task, runs: _Runs, key: str, method, seed: int, extra: dict) -> dict:
    if key in runs.rows:
        return runs.rows[key]
    if task.cfg.report_only:
        return None
    from rgft_jax.training import TrainConfig, Trainer

    cfg = task.cfg
    t0 = time.time()
    tr = Trainer(task.model(seed), method,
                 TrainConfig(steps=cfg.steps, seed=seed, progress=False, log_every=0),
                 num_heads=task.num_heads, num_layers=task.num_layers,
                 num_classes=len(task.names), batch_shape=(cfg.batch_size, cfg.max_length))
    tr.fit(task.iterator(seed))
    model = tr.model
    p_acc, p_loss = _evaluate(model, task.probe_set)
    r_acc, r_loss = _evaluate(model, task.report_set)
    s = tr.summary()
    row = {"key": key, "seed": seed, "probe_accuracy": p_acc, "probe_loss": p_loss,
           "accuracy": r_acc, "eval_loss": r_loss, "gflops_per_step": s["gflops_per_step"],
           "step_time_s": s["step_time_s"], "update_ratio": s["update_ratio"],
           "seconds": time.time() - t0, **extra}
    print(json.dumps({k: v for k, v in row.items() if k != "choice"}), flush=True)
    return runs.add(row)


def _probes(task: _Task, nodes, params, path: str):
    from rgft_jax import search
    from rgft_jax.training import methods

    cfg = task.cfg
    if os.path.exists(path):
        z = np.load(path, allow_pickle=False)
        if list(z["candidates"]) == list(cfg.candidates) and int(z["steps"]) == cfg.steps \
                and z["accuracy"].shape[:2] == (cfg.repeats, len(nodes)):
            print(f"probes: reusing {path}")
            return {k: z[k] for k in z.files}
    full = methods.full(learning_rate=cfg.learning_rate)
    opt = full.base_optimizer(cfg.steps)
    sched = full.schedule(cfg.steps)
    mean_lr = float(np.mean([sched(t) for t in range(cfg.steps)]))
    res = search.probe(task.model, nodes, rules=task.rules(params), optimizer=opt,
                       train_batches=task.iterator, eval_batches=task.probe_set,
                       steps=cfg.steps, repeats=cfg.repeats, candidates=cfg.candidates,
                       lora_scale=cfg.lora_scale, first_order_lr=mean_lr,
                       progress=lambda s: print(s, flush=True))
    out = dict(accuracy=res.accuracy, loss=res.loss, base_accuracy=res.base_accuracy,
               base_loss=res.base_loss, first_order_loss=res.first_order_loss,
               seconds=res.seconds, first_order_seconds=res.first_order_seconds,
               probe_steps=res.probe_steps, candidates=np.asarray(cfg.candidates),
               steps=cfg.steps)
    np.savez(path, **out)
    return out


def run(cfg: SearchConfig) -> dict:
    from rgft_jax import reporting, search
    from rgft_jax._src import components as comp_lib
    from rgft_jax.training import methods

    os.makedirs(cfg.out, exist_ok=True)
    t_start = time.time()
    if cfg.cheap_compile:
        import jax

        jax.config.update("jax_disable_most_optimizations", True)
    task = _Task(cfg)
    params = task.params()
    part = comp_lib.Partition.build(params, task.rules(params))
    nodes = _nodes(task, params, part)
    m, n = len(nodes), len(cfg.candidates)
    print(f"{m} nodes x {n} candidates: {[nd.name for nd in nodes]}", flush=True)

    # 1. Probes (measured and first order).
    pr = _probes(task, nodes, params, os.path.join(cfg.out, "probes.npz"))
    coeffs = search.fit_predictor(pr["accuracy"], pr["loss"])
    base_acc, base_loss = float(pr["base_accuracy"].mean()), float(pr["base_loss"].mean())
    cells = np.ones((m, n), bool)
    cells[:, 0] = False
    fo = search.evaluate_predictor(pr["first_order_loss"][cells], coeffs.loss[cells])
    fo_acc = search.evaluate_predictor(-pr["first_order_loss"][cells], coeffs.accuracy[cells])

    # 2. Search.
    cost = _costs(part, nodes, cfg.candidates, params)
    sparse_col = [j for j, c in enumerate(cfg.candidates) if c == "sparse"]
    full_cost = cost[:, sparse_col[0]].sum() if sparse_col else cost.max(1).sum()
    budget = cfg.budget * full_cost
    kw = dict(base_loss=base_loss, loss_limit=base_loss, cost=cost, budget=budget,
              sigma=coeffs.accuracy_sigma, tau=cfg.tau)
    t0 = time.perf_counter()
    greedy = search.solve(coeffs.accuracy, coeffs.loss, method="greedy_2opt", **kw)
    t_greedy = time.perf_counter() - t0
    t0 = time.perf_counter()
    ilp = search.solve(coeffs.accuracy, coeffs.loss, method="ilp", **kw)
    t_ilp = time.perf_counter() - t0
    describe = lambda c: ", ".join(f"{nd.name}={cfg.candidates[j]}" for nd, j in zip(nodes, c))
    print(f"greedy+2opt: {describe(greedy.choice)} objective {greedy.objective:.4f}; "
          f"ILP {ilp.objective:.4f}; LP bound {ilp.bound:.4f}", flush=True)

    # Energy heuristic: nodes by gradient energy (first-order |g.u|), sparse-trained, within
    # the chosen configuration's trainable parameters.
    chosen_cost = float(cost[np.arange(m), greedy.choice].sum())
    energy = -pr["first_order_loss"][:, sparse_col[0]] if sparse_col else np.zeros(m)
    energy_choice = np.zeros(m, int)
    used = 0.0
    for i in np.argsort(-energy):
        if sparse_col and used + cost[i, sparse_col[0]] <= max(chosen_cost, 1.0):
            energy_choice[i] = sparse_col[0]
            used += cost[i, sparse_col[0]]

    mk = lambda choice, seed, name: methods.searched(
        tuple(int(c) for c in choice), nodes, candidates=cfg.candidates, name=name,
        learning_rate=cfg.learning_rate, lora_scale=cfg.lora_scale, seed=seed)
    runs = _Runs(os.path.join(cfg.out, "runs.jsonl"))
    rng = np.random.default_rng(cfg.search_seed)
    val_choices = [rng.integers(0, n, size=m) for _ in range(cfg.validation)]
    named = {"chosen": greedy.choice, "ilp": ilp.choice, "energy": energy_choice,
             "base": np.zeros(m, int)}

    # 3. Validation: random configurations + named ones, trained for real.
    val_rows = []
    for seed in cfg.validation_seeds:
        todo = [(f"random{v}", c) for v, c in enumerate(val_choices)] + [
            (k, c) for k, c in named.items() if not (k == "ilp" and np.array_equal(
                c, greedy.choice))]
        for label, c in todo:
            row = _train(task, runs, f"{label}|{'-'.join(map(str, c))}|seed{seed}",
                         mk(c, seed, label), seed, {"label": label, "choice": list(map(int, c))})
            if row is not None:
                val_rows.append(row)
    # Full fine-tuning, chosen and energy heuristic over the seeds (the report table).
    table = []
    for seed in cfg.seeds:
        table.append(_train(
            task, runs, f"full|seed{seed}", methods.full(learning_rate=cfg.learning_rate,
                                                          seed=seed, name="full"),
            seed, {"label": "full"}))
        for label in ("chosen", "energy"):
            c = named[label]
            table.append(_train(
                task, runs, f"{label}|{'-'.join(map(str, c))}|seed{seed}", mk(c, seed, label),
                seed, {"label": label, "choice": list(map(int, c))}))
    table = [r for r in table if r is not None]

    # Predictor scores on the really trained configurations (probe split).
    choices = np.array([r["choice"] for r in val_rows], dtype=np.int64).reshape(-1, m)
    pred = search.predict(coeffs, choices, base_accuracy=base_acc, base_loss=base_loss)
    is_rand = np.array([r["label"].startswith("random") for r in val_rows])
    true_acc = np.array([r["probe_accuracy"] for r in val_rows])
    true_loss = np.array([r["probe_loss"] for r in val_rows])
    scores = {}
    for subset, sel in (("random", is_rand), ("all", np.ones(len(val_rows), bool))):
        if sel.sum() >= 2:
            scores[subset] = {
                "accuracy": search.evaluate_predictor(pred.accuracy[sel], true_acc[sel])._asdict(),
                "loss": search.evaluate_predictor(pred.loss[sel], true_loss[sel])._asdict(),
                "n": int(sel.sum())}
    hi = np.array([r["label"] == "chosen" for r in val_rows])
    labels = [r["label"].replace("random", "r") for r in val_rows]
    png = os.path.join(cfg.out, "predicted_vs_true.png")
    sc = scores.get("all", {})
    png = png if len(val_rows) else None
    png and reporting.plot_predicted_vs_true({
        "accuracy (probe split)": {"predicted": pred.accuracy, "true": true_acc,
                                   "labels": labels, "highlight": hi,
                                   "note": _note(sc.get("accuracy"))},
        "loss (probe split)": {"predicted": pred.loss, "true": true_loss, "labels": labels,
                               "highlight": hi, "note": _note(sc.get("loss"))}}, png)

    # Report.
    full_g = np.mean([r["gflops_per_step"] for r in table if r["label"] == "full"] or [np.nan])
    summary_rows = []
    for label in ("full", "chosen", "energy"):
        rs = [r for r in table if r["label"] == label]
        if not rs:
            continue
        acc = np.array([r["accuracy"] for r in rs])
        summary_rows.append({
            "method": {"full": "full fine-tuning", "chosen": "searched (greedy+2opt)",
                       "energy": "energy heuristic"}[label],
            "accuracy": f"{acc.mean():.4f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.4f}",
            "gflops_per_step": float(np.mean([r["gflops_per_step"] for r in rs])),
            "gflops_ratio": float(np.mean([r["gflops_per_step"] for r in rs]) / full_g),
            "step_time_s": float(np.mean([r["step_time_s"] for r in rs])),
            "update_ratio": float(np.mean([r["update_ratio"] for r in rs])),
            "seeds": len(rs)})
    # Paired t-tests over the seeds (paired by seed: same data order and head init).
    by = {label: {r["seed"]: r["accuracy"] for r in table if r["label"] == label}
          for label in ("full", "chosen", "energy")}
    for row, label in zip(summary_rows, [x for x in ("full", "chosen", "energy") if by[x]]):
        for ref, key in (("full", "p_vs_full"), ("energy", "p_vs_energy")):
            common = sorted(set(by[label]) & set(by[ref]))
            if label != ref and len(common) >= 2:
                row[key] = reporting.paired_ttest([by[label][k] for k in common],
                                                  [by[ref][k] for k in common])[1]
    result = {
        "config": dataclasses.asdict(cfg), "nodes": [nd.name for nd in nodes],
        "base": {"accuracy": base_acc, "loss": base_loss},
        "probes": {"seconds": float(pr["seconds"]), "steps": int(pr["probe_steps"]),
                   "first_order_seconds": float(pr["first_order_seconds"]),
                   "first_order_vs_measured_loss": fo._asdict(),
                   "first_order_vs_measured_accuracy_spearman": fo_acc.spearman},
        "coefficients": {"accuracy": coeffs.accuracy.tolist(), "loss": coeffs.loss.tolist(),
                         "accuracy_sigma": coeffs.accuracy_sigma.tolist()},
        "search": {"greedy": _res(greedy, describe, t_greedy), "ilp": _res(ilp, describe, t_ilp),
                   "gap_greedy_vs_ilp": ilp.objective - greedy.objective,
                   "gap_ilp_vs_lp": ilp.bound - ilp.objective, "budget_params": budget,
                   "energy_choice": describe(energy_choice)},
        "predictor": scores, "table": summary_rows, "figure": png,
        "seconds": time.time() - t_start}
    with open(os.path.join(cfg.out, "module_search.json"), "w") as f:
        json.dump(result, f, indent=2, default=float)
    md = _markdown(result)
    with open(os.path.join(cfg.out, "module_search.md"), "w") as f:
        f.write(md)
    print(md)
    return result


def _note(s) -> str:
    if not s:
        return ""
    return f"Spearman {s['spearman']:.2f}, MAE {s['mae']:.4f}, R² {s['r2']:.2f}"


def _res(r, describe, seconds) -> dict:
    return {"choice": describe(r.choice), "objective": r.objective, "gain": r.gain,
            "predicted_loss": r.predicted_loss, "cost": r.cost, "bound": r.bound,
            "evaluations": r.evaluations, "seconds": seconds}


def _markdown(res: dict) -> str:
    from rgft_jax import reporting

    lines = [f"# MFTC module search ({len(res['nodes'])} nodes)", ""]
    p = res["probes"]
    lines += [f"Base network (heads only): accuracy {res['base']['accuracy']:.4f}, loss "
              f"{res['base']['loss']:.4f} on the probe split.", "",
              f"Probes: {p['steps']} train steps, {p['seconds']:.0f} s; first-order estimate "
              f"{p['first_order_seconds']:.1f} s; Spearman(first-order, measured) loss "
              f"{p['first_order_vs_measured_loss']['spearman']:.3f}, accuracy "
              f"{p['first_order_vs_measured_accuracy_spearman']:.3f}.", ""]
    rows = []
    for subset, s in res["predictor"].items():
        for q in ("accuracy", "loss"):
            rows.append({"set": f"{subset} (n={s['n']})", "quantity": q, **s[q]})
    lines += [reporting.markdown_table(rows, (("set", "configurations", "{}"),
                                              ("quantity", "quantity", "{}"),
                                              ("spearman", "Spearman", "{:.3f}"),
                                              ("mae", "MAE", "{:.4f}"), ("r2", "R²", "{:.3f}"))),
              ""]
    s = res["search"]
    lines += [f"Search: greedy+2opt `{s['greedy']['choice']}` objective "
              f"{s['greedy']['objective']:.4f}; ILP `{s['ilp']['choice']}` "
              f"{s['ilp']['objective']:.4f}; LP bound {s['ilp']['bound']:.4f}; gap greedy vs "
              f"ILP {s['gap_greedy_vs_ilp']:.2e}. Energy heuristic: `{s['energy_choice']}`.",
              ""]
    lines += [reporting.markdown_table(res["table"], (
        ("method", "method", "{}"), ("accuracy", "accuracy (mean ± sd)", "{}"),
        ("gflops_per_step", "GFLOPs/step", "{:.1f}"), ("gflops_ratio", "GFLOPs / full",
                                                        "{:.2f}"),
        ("step_time_s", "step time (s)", "{:.3f}"), ("update_ratio", "update ratio", "{:.3f}"),
        ("p_vs_full", "p vs full (paired t)", "{:.3g}"),
        ("p_vs_energy", "p vs energy (paired t)", "{:.3g}"), ("seeds", "seeds", "{}"))), ""]
    return "\n".join(lines)


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def main(argv=None) -> dict:
    d = SearchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(SearchConfig):
        flag = "--" + f.name.replace("_", "-")
        v = getattr(d, f.name)
        if isinstance(v, tuple):
            p.add_argument(flag, default=",".join(map(str, v)))
        elif isinstance(v, bool):
            p.add_argument(flag, action="store_true", default=v)
        else:
            p.add_argument(flag, type=type(v) if v is not None else str, default=v)
    a = vars(p.parse_args(argv))
    a["candidates"] = tuple(a["candidates"].split(","))
    for k in ("validation_seeds", "seeds"):
        a[k] = _ints(a[k])
    return run(SearchConfig(**a))


if __name__ == "__main__":
    main()
