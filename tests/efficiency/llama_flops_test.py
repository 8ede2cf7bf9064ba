"""The budget cost model on a Llama tree (GQA, tied or untied LM head) against the lowered
steps' matmuls, as tests/efficiency/flops_test.py does for BERT.

A causal LM's output matmul is ``2 * tokens * V * D`` forward, and as much again for its
weight gradient and for backpropagating through it: with a large vocabulary next to a small
model (SmolLM2: ~21 % of the forward pass) a cost model without it is far off.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from rgft_jax.components import Partition, key_path_to_str, layer_of
from rgft_jax.models.llama import LlamaConfig, LlamaForCausalLM
from rgft_jax.training import _components as parts
from rgft_jax.training._flops import matmul_flops


@pytest.mark.parametrize("tied", [True, False])
def test_llama_cost_model_matches_the_lowered_steps(tied):
    b, seq, num_layers = 2, 32, 3
    cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                      tie_word_embeddings=tied)
    model = nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)))
    g, params, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [key_path_to_str(p) for p, _ in flat]
    leaves = [x for _, x in flat]
    ids = jax.ShapeDtypeStruct((b, seq), jnp.int32)

    def step_flops(trained: set[int]) -> float:
        def loss(tr, fr, ids):
            it_t, it_f = iter(tr), iter(fr)
            p = jax.tree_util.tree_unflatten(
                treedef, [next(it_t) if i in trained else next(it_f) for i in range(len(leaves))])
            logits = nnx.merge(g, p, rest)(ids)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

        tr = [x for i, x in enumerate(leaves) if i in trained]
        fr = [x for i, x in enumerate(leaves) if i not in trained]
        f = jax.value_and_grad(loss) if trained else loss
        return matmul_flops(jax.jit(f).lower(tr, fr, ids))

    part = Partition.build(params, parts.component_rules("heads", "component", 4, params))
    costs = parts.costs_for(part, params, 4, num_layers, (b, seq), "test")
    full = step_flops(set(range(len(leaves))))
    forward = step_flops(set())
    head = 2.0 * b * seq * cfg.vocab_size * cfg.hidden_size
    assert head / forward > 0.3  # the LM head matters here: leaving it out fails the asserts
    assert costs.full == pytest.approx(full, rel=0.01)
    assert costs.forward == pytest.approx(forward, rel=0.01)
    for k in (1, 2):  # the top k layers and the final norm
        trained = {i for i, p in enumerate(paths)
                   if layer_of(p)[0] >= num_layers - k or p.startswith("final_norm")}
        sel = (costs.layer >= num_layers - k) & (costs.layer < num_layers)
        sel |= costs.layer == num_layers  # the final norm (and an untied head)
        if not tied:  # the untied head is a component above the layers: not in top-k
            sel &= ~_is(part, "lm_head")
        got = costs.step_cost(sel)
        assert got / full == pytest.approx(step_flops(trained) / full, rel=0.05), k
    # The final norm alone needs the backprop through the head (counted as layer L - 1: an
    # upper bound, the top layer's dX included, that the top layer's step reaches).
    norm_only = step_flops({paths.index("final_norm/scale")})
    alone = costs.step_cost(_is(part, "final_norm"))
    assert norm_only - forward > 0.9 * head  # the head's backprop is really paid
    top = {i for i, p in enumerate(paths) if layer_of(p)[0] == num_layers - 1}
    assert norm_only * 0.99 <= alone <= step_flops(top) * 1.01


def _is(part: Partition, prefix: str):
    import numpy as np

    return np.array([c.name.startswith(prefix) for c in part.components])
