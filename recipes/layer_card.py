# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Layer Card of a real model on a real task, and (``--validate``) its placements tested.

Default: all-MiniLM-L6-v2 on the CrowdFlower tweets (3 classes, max length 64), the card
computed at the start of fine-tuning (pretrained encoder, the task head at its seed's
initialisation) from ``--probe-batches`` training batches.

    python -m recipes.layer_card                       # card.{json,md,png} into runs/layer_card
    python -m recipes.layer_card --model DIR --train a.csv --test b.csv --out runs/x

Writes ``card.json``, ``card.md`` and ``card.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from recipes import demo


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

    def __post_init__(self):
        for name in ("batch_size", "max_length", "probe_batches", "micro_batch", "lora_rank"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} {v!r}: must be an int >= 1.")
        if self.batch_size % self.micro_batch:
            raise ValueError(f"--micro-batch {self.micro_batch} must divide --batch-size "
                             f"{self.batch_size}.")
        if self.test and not self.train:
            raise ValueError("--test needs --train.")


def classification_loss(model, batch):
    """Mean cross-entropy of a sequence classifier on a tokenised batch."""
    import optax

    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def compute_card(cfg: CardConfig):
    """Loads the model and data and computes the card; returns ``(card, model_dir)``."""
    from rgft_jax import data, layer_card
    from rgft_jax.models import bert

    dcfg = demo.DemoConfig(model=cfg.model, train=cfg.train, test=cfg.test,
                           text_column=cfg.text_column, label_column=cfg.label_column,
                           out=cfg.out, data_dir=cfg.data_dir, batch_size=cfg.batch_size,
                           max_length=cfg.max_length)
    model_dir = cfg.model or demo.default_model_dir()
    bcfg = bert.BertConfig.from_hf(model_dir)
    train_src, _, names, _ = demo.load_data(dcfg)
    tok = data.TextTokenizer.from_pretrained(model_dir, max_length=cfg.max_length)
    it = data.TrainIterator(train_src, batch_size=cfg.batch_size, seed=cfg.seed,
                            batch_fn=data.ClassificationBatcher(tok))
    batches = [next(it) for _ in range(cfg.probe_batches)]
    model = bert.from_pretrained(model_dir, num_labels=len(names), seed=cfg.seed)
    card = layer_card.compute(
        model, batches, classification_loss, num_heads=bcfg.num_attention_heads,
        batch_shape=(cfg.batch_size, cfg.max_length), ridge=cfg.ridge, lora_rank=cfg.lora_rank,
        micro_batch=cfg.micro_batch, seed=cfg.seed, name=demo._model_name(model_dir))
    return card, model_dir


def run(cfg: CardConfig) -> dict:
    """Computes and writes the card; returns the paths written."""
    os.makedirs(cfg.out, exist_ok=True)
    t0 = time.time()
    card, _ = compute_card(cfg)
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


def parse_args(argv: list[str]) -> CardConfig:
    d = CardConfig()
    p = argparse.ArgumentParser(prog="python -m recipes.layer_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="local BERT-family checkpoint dir (default: MiniLM package)")
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
    a = p.parse_args(argv)
    return CardConfig(**{k: v for k, v in vars(a).items()})


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
        run(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
