"""Matmul FLOPs from StableHLO: exact on hand-sized programs, and against XLA's CPU count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgft_jax.models import bert
from rgft_jax.training._accounting import cost_flops
from rgft_jax.training._flops import matmul_flops


def _xla(lowered) -> float:
    return cost_flops(lowered.compile())


def test_dots_and_batched_einsums_by_hand():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    assert matmul_flops(jax.jit(jnp.dot).lower(a, b)) == 2 * 8 * 16 * 4
    q, k = jnp.ones((2, 3, 5, 7)), jnp.ones((2, 3, 11, 7))
    f = lambda q, k: jnp.einsum("bhqd,bhkd->bhqk", q, k)
    assert matmul_flops(jax.jit(f).lower(q, k)) == 2 * (2 * 3 * 5 * 11) * 7
    # Element-wise work is not a matmul.
    assert matmul_flops(jax.jit(lambda x: jnp.tanh(x) * 2).lower(a)) == 0


def test_called_functions_count_once_per_call():
    inner = jax.jit(lambda x, w: x @ w)

    def outer(x, w):
        return inner(inner(x, w), w)

    x, w = jnp.ones((4, 6)), jnp.ones((6, 6))
    text = jax.jit(outer).lower(x, w).as_text()
    assert "call @" in text  # the nested jit stays a called function
    assert matmul_flops(text) == 2 * (2 * 4 * 6 * 6)


@pytest.mark.parametrize("padding, groups, stride", [
    ("VALID", 1, 2), ("VALID", 3, 2), ("SAME", 1, 2), ("SAME", 3, 1), ("VALID", 6, 3)])
def test_convolutions_and_their_gradients(padding, groups, stride):
    conv = nnx.Conv(6, 12, kernel_size=(3, 3), strides=(stride, stride), padding=padding,
                    feature_group_count=groups, use_bias=False, rngs=nnx.Rngs(0))
    g, p = nnx.split(conv)
    x = jnp.ones((2, 9, 9, 6))
    f = lambda p, x: nnx.merge(g, p)(x).sum()
    low = jax.jit(f).lower(p, x)
    fwd = matmul_flops(low)
    if padding == "VALID":  # every window lies inside the input
        out = (9 - 3) // stride + 1
        assert fwd == 2 * (2 * out * out * 12) * (3 * 3 * 6 // groups)
    # Both gradients multiply exactly as often as the forward convolution.
    for fn in (jax.grad(f), jax.grad(f, argnums=1)):
        assert matmul_flops(jax.jit(fn).lower(p, x)) == fwd
    # XLA's CPU count: the same products, plus one add per output element for the sum.
    size = jax.eval_shape(lambda p, x: nnx.merge(g, p)(x), p, x).size
    assert _xla(low) == pytest.approx(fwd + size, abs=1.0)


def test_minilm_train_step_matmuls_are_almost_all_of_xlas_count():
    """Lowering only (no compile): 134.1 of XLA's 136.6 GFLOPs are matmuls (measured)."""
    cfg = bert.BertConfig.minilm_l6_h384()
    model = bert.BertForSequenceClassification(cfg, 3, rngs=nnx.Rngs(0))
    g, params, rest = nnx.split(model, nnx.Param, ...)
    batch = {"input_ids": jnp.ones((32, 64), jnp.int32),
             "attention_mask": jnp.ones((32, 64), jnp.int32), "label": jnp.zeros(32, jnp.int32)}

    def loss(p, b):
        logits = nnx.merge(g, p, rest)(b["input_ids"], b["attention_mask"], None)
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    step = jax.jit(jax.value_and_grad(loss))
    got = matmul_flops(step.lower(params, batch))
    tokens, d, f, layers = 32 * 64, 384, 1536, 6
    per_layer = 2 * tokens * (4 * d * d + 2 * d * f) + 4 * 32 * 64 * 64 * d  # forward
    np.testing.assert_allclose(got, 3 * layers * per_layer, rtol=0.01)
    assert 130e9 < got < 136.6e9


def test_unreadable_text_is_an_error():
    with pytest.raises(ValueError, match="no function"):
        matmul_flops("module {}")


def test_matmuls_in_loops_and_branches_are_not_guessed():
    x = jnp.ones((4, 4))
    loops = {
        "fori": lambda x: jax.lax.fori_loop(0, 10, lambda i, y: y @ x, x),
        "scan": lambda x: jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=6)[0],
        "cond": lambda x: jax.lax.cond(x[0, 0] > 0, lambda: x @ x, lambda: x + 1),
    }
    for name, f in loops.items():
        assert np.isnan(matmul_flops(jax.jit(f).lower(x))), name
    # A loop without matmuls does not spoil the count of the matmul after it.
    f = lambda x: jax.lax.fori_loop(0, 10, lambda i, y: y + 1, x) @ x
    assert matmul_flops(jax.jit(f).lower(x)) == 2 * 4 * 4 * 4


def test_a_dot_general_without_contracting_dims_is_an_error():
    line = ("module {\n func.func public @main() {\n %0 = stablehlo.dot_general %a, %b : "
            "(tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>\n }\n}")
    with pytest.raises(ValueError, match="no contracting_dims"):
        matmul_flops(line)


@pytest.mark.parametrize("seq_len", [64, 1024])
def test_budget_cost_model_ratios_match_the_compiled_step(seq_len):
    """``analytic_costs`` forward/full and top-k/full against the lowered steps' matmuls.

    A 3-layer width-64 BERT: at s = 1,024 attention is 3/4 of the step, so a wrong
    attention backward (4 B s^2 D instead of 8) puts forward/full 32 % off. Measured with
    XLA's CPU cost analysis too (compiling, not run here): s = 64 forward 0.359, top-1 0.550,
    top-2 0.763; s = 1,024 forward 0.344, top-1 0.555, top-2 0.774 of the full step.
    """
    import rgft_jax as rgft
    from rgft_jax._src.budget import analytic_costs
    from rgft_jax.components import Partition, Rule, key_path_to_str, layer_of

    b, num_layers = 2, 3
    cfg = bert.BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=num_layers,
                          num_attention_heads=2, intermediate_size=256,
                          max_position_embeddings=1024)
    model = nnx.eval_shape(lambda: bert.BertForSequenceClassification(cfg, 3, rngs=nnx.Rngs(0)))
    g, params, rest = nnx.split(model, nnx.Param, ...)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [key_path_to_str(p) for p, _ in flat]
    leaves = [x for _, x in flat]
    ids = jax.ShapeDtypeStruct((b, seq_len), jnp.int32)

    def step_flops(trained: set[int]) -> float:
        """Matmul FLOPs of a step differentiating only the leaves in ``trained``."""
        def loss(tr, fr, ids):
            it_t, it_f = iter(tr), iter(fr)
            p = jax.tree_util.tree_unflatten(
                treedef, [next(it_t) if i in trained else next(it_f) for i in range(len(leaves))])
            return jnp.mean(jax.nn.log_softmax(nnx.merge(g, p, rest)(ids, None, None))[:, 0])

        tr = [x for i, x in enumerate(leaves) if i in trained]
        fr = [x for i, x in enumerate(leaves) if i not in trained]
        f = jax.value_and_grad(loss) if trained else loss
        return matmul_flops(jax.jit(f).lower(tr, fr, ids))

    part = Partition.build(params, [Rule(r"^classifier/", exclude=True),
                                     *rgft.components.bert(2)])
    costs = analytic_costs(part, tokens=b * seq_len, seq_len=seq_len, batch=b,
                           num_layers=num_layers, hidden=64, num_heads=2)
    full = step_flops(set(range(len(leaves))))
    assert costs.full == pytest.approx(full, rel=0.01)
    assert costs.fixed / costs.full == pytest.approx(step_flops(set()) / full, rel=0.03)
    for k in (1, 2):  # train the top k layers (and the always-trained classifier)
        trained = {i for i, p in enumerate(paths)
                   if layer_of(p)[0] >= num_layers - k or p.startswith("classifier")}
        got = costs.step_cost(costs.layer >= num_layers - k) / costs.full
        assert got == pytest.approx(step_flops(trained) / full, rel=0.05), k
