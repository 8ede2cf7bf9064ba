"""Shared tiny models, data and (session-cached) training runs for the Trainer tests.

Compiling one train step of even a 1-layer width-32 BERT takes seconds of CPU (an RGFT step
about 1.6x a plain AdamW step), far more than running it. To keep the folder fast:

* runs that several tests inspect are trained once per session and shared (read-only)
  through the fixtures below; every test still asserts on its own facts;
* the models have 1 layer, except where depth is what is tested: ``top_layers`` (it trains
  the top 1 of 2 layers) and the ``full`` / ``bitfit`` runs whose FLOPs it is compared with
  use 2 layers (see :data:`SMOKE_LAYERS`);
* every test here compiles with ``jax_disable_most_optimizations``, JAX's switch for "the
  cost of optimization is greater than that of running a less-optimized program". It sets
  XLA's ``xla_backend_optimization_level=0`` and skips expensive LLVM passes, roughly halving
  compile times; XLA's cost analysis reports the same FLOPs for these steps as with the
  default build. Patterns, frozen bits, resume bit-exactness and gradients are properties
  of the program, not of the LLVM optimisation level. The flag is restored after each test.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgft_jax.data import TrainIterator
from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification
from rgft_jax.training import TrainConfig, Trainer, methods

VOCAB, SEQ, BATCH, NUM_CLASSES, NUM_HEADS = 50, 8, 8, 3, 4
#: Layers of the smoke-run model per method kind (1 when not listed).
SMOKE_LAYERS = {"full": 2, "bitfit": 2, "top_layers": 2}
#: Knobs of the smoke run of each kind (all with learning_rate=1e-2: 2 steps move things).
#: RGFT uses components 'heads' (the default) and a low threshold, so the refresh after step
#: 2 leaves some matrices partly active, which means group-sparse weight gradients on step 3.
_RGFT_SMOKE = dict(update_every=2, threshold=("percentile", 25))
SMOKE_KNOBS = {"full": {}, "rgft": _RGFT_SMOKE, "rgft_chain": _RGFT_SMOKE, "lora": dict(rank=4),
               "bitfit": {}, "top_layers": dict(k=1), "random_mask": {}, "magnitude_mask": {}}


def smoke_method(kind: str) -> methods.Method:
    """The method of ``kind``'s smoke run, built through the registry."""
    return methods.get(kind)(learning_rate=1e-2, **SMOKE_KNOBS[kind])


@pytest.fixture(autouse=True)
def _cheap_codegen(cheap_codegen):
    """Every test here compiles train steps: see ``cheap_codegen`` in tests/conftest.py."""


def bert_config(layers: int) -> BertConfig:
    return BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers,
                      num_attention_heads=NUM_HEADS, intermediate_size=64,
                      max_position_embeddings=16)


def bert(layers: int = 1, seed: int = 0) -> BertForSequenceClassification:
    return BertForSequenceClassification(bert_config(layers), NUM_CLASSES, rngs=nnx.Rngs(seed))


def examples(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random token sequences; the label is a function of the tokens (learnable)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(1, VOCAB, size=SEQ).astype(np.int32)
        out.append({"input_ids": ids, "attention_mask": np.ones(SEQ, np.int32),
                    "token_type_ids": np.zeros(SEQ, np.int32),
                    "label": np.int32(ids[0] % NUM_CLASSES)})
    return out


def stack(exs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(e[k]) for e in exs]) for k in exs[0]}


def batches(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    exs = examples(n * BATCH, seed)
    return [stack(exs[i * BATCH:(i + 1) * BATCH]) for i in range(n)]


def host(tree: Any) -> Any:
    """A host (numpy) copy: safe to keep after the device buffers are donated."""
    return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def bits(x: Any) -> np.ndarray:
    """The raw bits of a float array (so -0.0 != +0.0 and NaN payloads count)."""
    x = np.ascontiguousarray(np.asarray(x))
    return x.view(np.dtype(f"u{x.dtype.itemsize}")) if x.dtype.kind == "f" else x


def assert_bitwise_equal(a: Any, b: Any) -> None:
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb, f"tree structures differ:\n{ta}\n{tb}"
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(bits(x), bits(y), err_msg=jax.tree_util.keystr(path))


@dataclasses.dataclass
class Run:
    """A finished run: the trainer (its state is live) and what the tests need of it."""

    trainer: Trainer
    params0: Any  # host copy of the initial params
    history: list[dict[str, Any]]
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per-step records
    data_states: dict[int, Any] = dataclasses.field(default_factory=dict)
    workdir: Any = None


def smoke_run(kind: str) -> Run:
    layers = SMOKE_LAYERS.get(kind, 1)
    trainer = Trainer(bert(layers), smoke_method(kind),
                      TrainConfig(steps=2, progress=False, log_every=1),
                      num_heads=NUM_HEADS, num_layers=layers, num_classes=NUM_CLASSES)
    params0 = host(trainer.state.params)
    history = trainer.fit(iter(batches(2)))
    return Run(trainer, params0, history)


@pytest.fixture(scope="session")
def smoke_runs() -> Callable[[str], Run]:
    """``smoke_runs(kind)``: a 2-step run of ``kind`` on the tiny BERT (trained once)."""
    cache: dict[str, Run] = {}

    def get(kind: str) -> Run:
        if kind not in cache:
            cache[kind] = smoke_run(kind)
        return cache[kind]

    return get


# ------------------------------------------------------------------ resumable 6-step runs
RESUME_STEPS, CHECKPOINT_EVERY, NUM_EXAMPLES = 6, 3, 20


def scrambled_threshold(residuals: jax.Array) -> jax.Array:
    """Active iff the 6th decimal of the residual is even: a hard mask over about half the
    components that changes at every refresh, so consecutive sparse steps have different
    patterns (a realistic threshold keeps the same leaves active on a run this short)."""
    return jnp.floor(residuals * 1e6) % 2 == 0


RESUME_METHODS = {
    "full": methods.full(learning_rate=1e-2),
    # Hard mask (gamma=0), one component per leaf: sparse steps skip whole leaves.
    "rgft": methods.rgft(learning_rate=1e-2, components="leaves", update_every=2, gamma=0.0,
                         threshold=scrambled_threshold),
}


def resume_trainer(kind: str, workdir) -> Trainer:
    config = TrainConfig(steps=RESUME_STEPS, progress=False, log_every=1, max_compiled=2,
                         checkpoint_every=CHECKPOINT_EVERY, keep_checkpoints=3)
    return Trainer(bert(1), RESUME_METHODS[kind], config, num_heads=NUM_HEADS,
                   num_layers=1, num_classes=NUM_CLASSES, workdir=workdir)


def train_iterator() -> TrainIterator:
    # 20 examples in batches of 8: 2 batches per epoch, so 6 steps cross two epoch ends.
    return TrainIterator(examples(NUM_EXAMPLES, seed=1), batch_size=BATCH, seed=3,
                         num_threads=0, prefetch=0)


def record_steps(trainer: Trainer, out: list[dict[str, Any]]) -> None:
    """Wraps the trainer's step dispatch to record, per step, its pattern and host snapshots
    (the snapshots wait for the device, which a plain run would not)."""
    inner = trainer._dispatch

    def dispatch(batch):
        pattern, probe = trainer.next_pattern()
        rec = {"key": (pattern, probe), "params_before": host(trainer.state.params),
               "opt_before": host(trainer.state.opt_state), "batch": copy.deepcopy(batch)}
        inner(batch)
        rec.update(params_after=host(trainer.state.params),
                   opt_after=host(trainer.state.opt_state),
                   cache_size=len(trainer._cache), compilations=trainer.compilations)
        out.append(rec)

    trainer._dispatch = dispatch


@pytest.fixture(scope="session")
def resume_runs(tmp_path_factory):
    """``resume_runs(kind)``: an uninterrupted, recorded 6-step run checkpointed every 3."""
    cache: dict[str, Run] = {}

    def get(kind: str) -> Run:
        if kind not in cache:
            workdir = tmp_path_factory.mktemp(f"resume_{kind}")
            trainer = resume_trainer(kind, workdir)
            run = Run(trainer, host(trainer.state.params), [], workdir=workdir)
            it = train_iterator()
            record_steps(trainer, run.steps)

            def data_state():
                state = it.get_state()
                run.data_states[int(trainer.state.step)] = state
                return state

            run.history = trainer.fit(it, checkpoint_data_state=data_state)
            cache[kind] = run
        return cache[kind]

    yield get
    for run in cache.values():
        run.trainer.close()
