"""Partition: rules, presets on real MiniLM shapes, reductions, nnx trees, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rgft_jax as rgft
from rgft_jax.components import Partition, Rule, layer_of
from rgft_jax.models import bert

D, H, DH, F, L, V = 384, 12, 32, 1536, 6, 30522  # all-MiniLM-L6-v2


def _sds(shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def minilm_ours():
    """The param tree of rgft_jax.models' BERT classifier for all-MiniLM-L6-v2 (abstract)."""
    return bert.abstract_params(bert.BertConfig.minilm_l6_h384(), num_labels=3)


def minilm_hf_flax():
    """Hugging Face Flax BERT naming (fused [D, D] projections)."""
    def dense(i, o):
        return {"kernel": _sds((i, o)), "bias": _sds((o,))}

    def ln():
        return {"LayerNorm": {"scale": _sds((D,)), "bias": _sds((D,))}}

    layer = {
        "attention": {"self": {n: dense(D, D) for n in ("query", "key", "value")},
                      "output": {"dense": dense(D, D), **ln()}},
        "intermediate": {"dense": dense(D, F)},
        "output": {"dense": dense(F, D), **ln()},
    }
    return {"bert": {
        "embeddings": {"word_embeddings": {"embedding": _sds((V, D))}, **ln()},
        "encoder": {"layer": {str(i): layer for i in range(L)}},
        "pooler": {"dense": dense(D, D)},
    }}


@pytest.mark.parametrize("tree_fn", [minilm_ours, minilm_hf_flax])
def test_bert_preset_on_real_minilm_shapes(tree_fn):
    tree = tree_fn()
    part = Partition.build(tree, rgft.components.bert(num_heads=H, neuron_width=32))
    kinds = {}
    for c in part.components:
        kinds.setdefault(c.kind, []).append(c)
    assert len(kinds["head"]) == L * H
    assert len(kinds["neuron"]) == L * F // 32
    head = kinds["head"][0]
    # q, k, v kernels + biases and the output kernel's slice of one head.
    assert head.size == 3 * (D * DH + DH) + DH * D
    assert head.layer == 0 and head.group == 0
    neuron = kinds["neuron"][0]
    assert neuron.size == 32 * D + 32 + 32 * D
    assert part.total_size == sum(np.prod(x.shape) for x in jax.tree.leaves(tree))
    assert sorted(set(part.layers.tolist())) == [-1, *range(L)]


def test_llama_preset_gqa_and_gpt2_fused_qkv():
    Dm, Hq, Hkv, Dh, Fm = 576, 9, 3, 64, 1536  # SmolLM2-135M
    layer = {"self_attn": {"q_proj": {"kernel": _sds((Dm, Hq * Dh))},
                           "k_proj": {"kernel": _sds((Dm, Hkv * Dh))},
                           "v_proj": {"kernel": _sds((Dm, Hkv * Dh))},
                           "o_proj": {"kernel": _sds((Hq * Dh, Dm))}},
             "mlp": {"gate_proj": {"kernel": _sds((Dm, Fm))}, "up_proj": {"kernel": _sds((Dm, Fm))},
                     "down_proj": {"kernel": _sds((Fm, Dm))}},
             "input_layernorm": {"weight": _sds((Dm,))}}
    tree = {"model": {"layers": [layer] * 2, "embed_tokens": {"embedding": _sds((100, Dm))}}}
    part = Partition.build(tree, rgft.components.llama(Hq, Hkv))
    kinds = [c.kind for c in part.components]
    assert kinds.count("head") == 2 * Hq and kinds.count("kv_head") == 2 * Hkv
    assert kinds.count("neuron") == 2 * Fm // 32
    # Fused c_attn with its head axis explicit: one head per (layer, head), merged with c_proj.
    gpt2 = {"h": [{"attn": {"c_attn": {"kernel": _sds((64, 3, 4, 16)), "bias": _sds((3, 4, 16))},
                            "c_proj": {"kernel": _sds((64, 64)), "bias": _sds((64,))}}}]}
    part = Partition.build(gpt2, rgft.components.gpt2(4, neuron_width=None))
    assert [c.kind for c in part.components].count("head") == 4


def test_by_layer_preset():
    part = Partition.build(minilm_ours(), rgft.components.by_layer())
    layers = [c for c in part.components if c.kind == "layer"]
    assert [c.layer for c in layers] == list(range(L))
    assert len({c.size for c in layers}) == 1


def test_norms_match_numpy_under_strict_promotion():
    rng = np.random.default_rng(0)
    tree = {"layers": [{"q": rng.normal(size=(5, 4, 3)).astype(np.float32)} for _ in range(2)],
            "w": rng.normal(size=(7,)).astype(np.float32)}
    part = Partition.build(tree, [Rule("q$", kind="head", axis=1, groups=4)])
    with jax.numpy_dtype_promotion("strict"):
        n = jax.jit(part.norms)(tree)
        bcast = jax.jit(lambda v: part.broadcast(v, fill=0.0))(jnp.arange(9.0))
    want = [np.linalg.norm(tree["layers"][i]["q"][:, h]) for i in range(2) for h in range(4)]
    np.testing.assert_allclose(n, want + [np.linalg.norm(tree["w"])], rtol=1e-6)
    np.testing.assert_array_equal(bcast["layers"][1]["q"][:, 2], np.full((5, 3), 6.0))
    np.testing.assert_array_equal(bcast["w"], np.full(7, 8.0))


def test_bf16_reductions_in_float32():
    tree = {"w": jnp.full((4, 8), 300.0, jnp.bfloat16)}
    part = Partition.build(tree, [Rule("w", axis=1, groups=2)])
    assert part.norms(tree).dtype == jnp.float32
    np.testing.assert_allclose(part.norms(tree), [300.0 * 4] * 2, rtol=1e-6)
    scaled = part.scale(tree, jnp.array([0.5, 2.0]))
    assert scaled["w"].dtype == jnp.bfloat16


def test_nnx_state_paths_and_one_liner_on_an_nnx_model():
    class Block(nnx.Module):
        def __init__(self, *, rngs):
            self.query = nnx.Linear(8, 8, rngs=rngs)

    class Net(nnx.Module):
        def __init__(self, *, rngs):
            self.layers = nnx.List([Block(rngs=rngs) for _ in range(2)])

    model = Net(rngs=nnx.Rngs(0))
    rules = [Rule(r"query/kernel$", kind="head", axis=1, groups=2)]
    state = nnx.state(model, nnx.Param)
    part = Partition.build(state, rules)
    assert part.names[:3] == ["layers/0/query/bias", "layers/0/head/0", "layers/0/head/1"]
    import optax
    opt = nnx.Optimizer(model, optax.chain(rgft.residual_mask(rules), optax.adamw(1e-3)),
                        wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, state)
    opt.update(model, grads)
    assert int(rgft.error_map(opt.opt_state).step) == 1


def test_layer_parsing():
    assert layer_of("encoder/layers/3/attention/query/kernel") == (3, "encoder/layers/3")
    assert layer_of("bert/encoder/layer/11/output/dense/kernel") == (11, "bert/encoder/layer/11")
    assert layer_of("h_2/attn/c_attn/kernel") == (2, "h_2")
    assert layer_of("classifier/kernel") == (-1, "")


def test_unmatched_exclude_and_select():
    tree = {"a": jnp.ones((2, 4)), "b": jnp.ones(3)}
    part = Partition.build(tree, [Rule("a", axis=1, width=2)], unmatched="exclude")
    assert part.num_components == 2 and part.excluded_size == 3
    np.testing.assert_array_equal(part.select(lambda c: c.group == 1), [False, True])
    out = part.scale(tree, jnp.zeros(2))
    np.testing.assert_array_equal(out["b"], np.ones(3))  # excluded: untouched
    assert "2 components" in part.summary()


def test_sq_norms_has_no_scatter_and_equals_segment_sum():
    """Deterministic reductions: a static gather + row sum, never a scatter-add."""
    params = {"layers": [{"q": jnp.ones((6, 4, 3)), "k": jnp.ones((6, 4, 3)),
                          "up": jnp.ones((6, 8))} for _ in range(2)], "head": jnp.ones((6, 3))}
    part = Partition.build(params, [Rule(r"/[qk]$", kind="head", axis=1, groups=4),
                                    Rule(r"/up$", kind="neuron", axis=1, width=2)])
    rng = np.random.default_rng(0)
    g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    hlo = jax.jit(part.sq_norms).lower(g).as_text()
    assert "scatter" not in hlo
    vals = part.leaf_group_values(g, lambda x, axes: jnp.sum(x * x, axis=axes))
    old = jax.ops.segment_sum(vals, part._segment_ids, num_segments=part.num_components)
    np.testing.assert_allclose(part.sq_norms(g), old, rtol=1e-6)
    assert any(len(c.paths) > 1 for c in part.components)  # merged groups were exercised
