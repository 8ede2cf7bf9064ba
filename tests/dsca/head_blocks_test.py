"""DSCA blocks respect attention heads (per head, then d_b columns) on every model family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgft_jax import dsca, export
from rgft_jax._src import compact
from rgft_jax.components import Partition, Rule
from rgft_jax.ops import GroupGrad, group_sparse_dot

D, HEADS, KV_HEADS, DH = 32, 4, 2, 8


def _family(kind: str):
    """(params state, num_heads, num_kv_heads) of a tiny model of each family."""
    if kind == "bert":
        from rgft_jax.models.bert.modeling import BertConfig, BertForSequenceClassification

        model = BertForSequenceClassification(
            BertConfig(vocab_size=40, hidden_size=D, num_hidden_layers=2,
                       num_attention_heads=HEADS, intermediate_size=64,
                       max_position_embeddings=16), 3, rngs=nnx.Rngs(0))
        heads, kv = HEADS, None
    elif kind == "gpt2":
        from rgft_jax.models import gpt2

        model = gpt2.GPT2LMHeadModel(gpt2.GPT2Config(vocab_size=40, n_positions=16, n_embd=D,
                                                     n_layer=2, n_head=HEADS, n_inner=64),
                                     rngs=nnx.Rngs(0))
        heads, kv = HEADS, None
    elif kind == "vit":
        from rgft_jax.models import vit

        model = vit.ViTForImageClassification(
            vit.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=D,
                          num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=64,
                          ), 3, rngs=nnx.Rngs(0))
        heads, kv = HEADS, None
    else:
        from rgft_jax.models import llama

        model = llama.LlamaForCausalLM(
            llama.LlamaConfig(vocab_size=40, hidden_size=D, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=HEADS,
                              num_key_value_heads=KV_HEADS, max_position_embeddings=16),
            rngs=nnx.Rngs(0))
        heads, kv = HEADS, KV_HEADS
    return nnx.state(model, nnx.Param), heads, kv


def _leaves(params):
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p): x
            for p, x in flat}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "vit", "llama"])
@pytest.mark.parametrize("width", [4, 8, 16])
def test_every_attention_block_lies_inside_one_head(kind, width):
    params, heads, kv = _family(kind)
    part = Partition.build(params, dsca.dsca_rules(heads, block_width=width, attention="block",
                                                   num_kv_heads=kv))
    ids = _leaves(part.broadcast(jnp.arange(part.num_components, dtype=jnp.int32), fill=-1))
    names = np.array(part.names)
    checked = 0
    for path, cid in ids.items():
        cid = np.asarray(cid)
        kinds = {names[c].split("/")[-2] for c in np.unique(cid) if c >= 0}
        if not kinds & {"q_block", "k_block", "v_block", "o_block"}:
            continue
        # The head and head-dim axes: [D, H, Dh] (q/k/v), [H, Dh] (bias), [H, Dh, D] (out).
        h_axis = 0 if cid.ndim == 2 or kinds == {"o_block"} else 1
        for c in np.unique(cid):
            where = np.nonzero(cid == c)
            # One head (d_b <= Dh: d_b columns of it) or d_b / Dh whole heads.
            assert len(np.unique(where[h_axis])) == max(1, width // DH), (path, c)
            within = np.unique(where[h_axis + 1])
            assert len(within) == min(width, DH), (path, c)
        n_heads = cid.shape[h_axis]
        assert len(np.unique(cid)) == n_heads * DH // width, path
        checked += 1
    assert checked >= 2 * (4 if kind != "gpt2" else 4)  # q, k, v, o kernels of both layers


def test_block_wider_than_a_head_takes_whole_heads_and_a_straddling_width_is_refused():
    params, heads, _ = _family("bert")
    part = Partition.build(params, dsca.dsca_rules(heads, block_width=16, attention="block"))
    q = [n for n in part.names if "/q_block/" in n]
    assert len(q) == 2 * heads * DH // 16  # two heads per block, two layers
    # 3 heads of 4: width 6 divides 12 but would put half of head 1 in each of two blocks.
    with pytest.raises(ValueError, match=r"q: width=6 on the merged axes \(1, 2\) of shape "
                                         r"\(2, 3, 4\) would span two entries of axis 1: it must "
                                         r"divide 4 or be a multiple of it"):
        Partition.build({"q": np.zeros((2, 3, 4))}, [Rule("q", axis=(1, 2), width=6)])
    with pytest.raises(ValueError, match=r"the merged axes \(1, 2\) has size 32, not divisible "
                                         r"by width=12"):
        Partition.build(params, dsca.dsca_rules(heads, block_width=12, attention="block"))


def test_flat_kernels_are_cut_along_their_head_major_axis():
    rng = np.random.default_rng(0)
    tree = {"layers": {"0": {"attention": {
        "query": {"kernel": rng.normal(size=(D, HEADS * DH)), "bias": rng.normal(size=HEADS * DH)},
        "out": {"kernel": rng.normal(size=(HEADS * DH, D))}}}}}
    part = Partition.build(tree, dsca.dsca_rules(HEADS, block_width=4, attention="block"))
    ids = _leaves(part.broadcast(jnp.arange(part.num_components), fill=-1))
    q = np.asarray(ids["layers/0/attention/query/kernel"])
    assert all(len(np.unique(q[:, j * 4:(j + 1) * 4])) == 1 for j in range(HEADS * DH // 4))
    o = np.asarray(ids["layers/0/attention/out/kernel"])  # rows: the head-major input axis
    assert all(len(np.unique(o[j * 4:(j + 1) * 4])) == 1 for j in range(HEADS * DH // 4))


def test_merged_axis_reductions_broadcasts_and_compact_rows_equal_the_flat_layout():
    # A [D, H, Dh] kernel with axes (1, 2) merged is the flat [D, H * Dh] kernel split on 1.
    x = jax.random.normal(jax.random.key(0), (D, HEADS, DH))
    merged = Partition.build({"q": x}, [Rule("q", kind="b", axis=(1, 2), width=4)])
    flat = Partition.build({"q": x.reshape(D, -1)}, [Rule("q", kind="b", axis=1, width=4)])
    assert merged.num_components == flat.num_components == HEADS * DH // 4
    np.testing.assert_allclose(merged.sq_norms({"q": x}), flat.sq_norms({"q": x.reshape(D, -1)}),
                               rtol=1e-6)
    v = jnp.arange(merged.num_components, dtype=jnp.float32)
    np.testing.assert_array_equal(merged.broadcast(v)["q"].reshape(D, -1),
                                  flat.broadcast(v)["q"])
    np.testing.assert_array_equal(merged.scale({"q": x}, v)["q"].reshape(D, -1),
                                  flat.scale({"q": x.reshape(D, -1)}, v)["q"])
    active = v % 3 == 0
    np.testing.assert_array_equal(
        merged.where(active, {"q": x}, {"q": jnp.zeros_like(x)})["q"].reshape(D, -1),
        flat.where(active, {"q": x.reshape(D, -1)}, {"q": jnp.zeros((D, HEADS * DH))})["q"])
    pool = compact.Pool(merged, 1.0)
    np.testing.assert_array_equal(pool.scatter(pool.gather({"q": x}, pool.indices(
        jnp.ones(merged.num_components))), pool.indices(jnp.ones(merged.num_components)),
        {"q": jnp.zeros_like(x)})["q"], x)
    s1 = dsca.sketch(merged, {"q": x}, dim=8)
    s2 = dsca.sketch(flat, {"q": x.reshape(D, -1)}, dim=8, align="leaf")
    assert s1.shape == s2.shape == (merged.num_components, 8)
    # Sketches are linear in the block: a block's sketch is zero iff its entries are.
    z = x.at[:, 1].set(0.0)  # head 1 (blocks 2 and 3 of width 4) zeroed
    s = np.asarray(dsca.sketch(merged, {"q": z}, dim=8))
    assert np.all(s[2:4] == 0) and np.all(np.any(s[:2] != 0, axis=1))


def test_delta_export_round_trips_merged_blocks(tmp_path):
    params, heads, _ = _family("bert")
    part = Partition.build(params, dsca.dsca_rules(heads, block_width=4, attention="block"))
    base = jax.tree.map(np.asarray, params)
    active = np.array(["/q_block/3" in n or "/o_block/5" in n for n in part.names])
    where = part.broadcast(jnp.asarray(active), fill=False)
    moved = jax.tree.map(lambda m, x: np.where(np.asarray(m), x + 1.0, x).astype(x.dtype),
                         where, base)
    f = tmp_path / "d.safetensors"
    summary = export.save_delta(moved, base, part, f)
    back = export.apply_delta(base, f)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(moved)):
        np.testing.assert_array_equal(np.asarray(a), b)
    info = export.read_delta_info(f)
    q = next(p for p in info["leaves"] if p.endswith("layers/0/attention/self/query/kernel")
             or p.endswith("0/attention/query/kernel"))
    assert info["leaves"][q]["stored"] == "groups" and info["leaves"][q]["merge"] == 2
    assert summary.stored_entries == int(np.sum(np.asarray(part.sizes)[active]))


@pytest.mark.parametrize("ks,n_in,axis,merge", [
    ((8, 4, 6), 1, 1, 2),  # query [D, H, Dh]: merged output axes
    ((4, 6, 8), 2, 0, 2),  # out [H, Dh, D]: merged input axes
])
def test_group_sparse_dot_on_merged_axes_equals_dense_slices(ks, n_in, axis, merge):
    kx, kw = jax.random.split(jax.random.key(1))
    xs = (2, 5) + ks[:n_in]
    x, w = jax.random.normal(kx, xs), jax.random.normal(kw, ks)
    groups = 8  # 24 merged entries, width 3: each head (6) holds two groups
    idx = jnp.array([5, 0], jnp.int32)
    spec = GroupGrad(idx, axis, groups, merge)

    def dense(x, w):
        return jnp.sum(jnp.sin(jnp.tensordot(x, w, n_in)))

    def sparse(x, w):
        return jnp.sum(jnp.sin(group_sparse_dot(x, w, spec, n_in)))

    np.testing.assert_allclose(dense(x, w), sparse(x, w), rtol=1e-6)
    dx0, dw0 = jax.grad(dense, (0, 1))(x, w)
    dx1, dw1 = jax.jit(jax.grad(sparse, (0, 1)))(x, w)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-5, atol=1e-5)
    split = ks[:axis] + (groups, -1) + ks[axis + merge:]
    d0, d1 = np.asarray(dw0).reshape(split), np.asarray(dw1).reshape(split)
    for g in range(groups):
        sl = (slice(None),) * axis + (g,)
        if g in (5, 0):
            np.testing.assert_allclose(d1[sl], d0[sl], rtol=1e-5, atol=1e-5)
        else:
            assert np.all(d1[sl] == 0)
    with pytest.raises(ValueError, match="straddle"):
        group_sparse_dot(jnp.ones((2, 8, 4)), jnp.ones((8, 4, 6)), GroupGrad(idx, 0, 8, 2), 1)


@pytest.mark.parametrize("bad,match", [
    (dict(axis=(1, 3), width=2), "consecutive axes"),
    (dict(axis=(-1, 0), width=2), "consecutive axes"),
    (dict(axis=(), width=2), "axis must be an int or a tuple"),
    (dict(ndim=-1), "ndim must be an int >= 0"),
])
def test_bad_merged_axis_rules_fail_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        Rule("q", **bad)


def test_fused_gpt2_qkv_blocks_stay_inside_heads_and_keep_q_k_v_together():
    tree = {"h": {"0": {"attn": {"c_attn": {"kernel": np.zeros((D, 3, HEADS, DH)),
                                            "bias": np.zeros((3, HEADS, DH))},
                                 "c_proj": {"kernel": np.zeros((HEADS, DH, D))}}}}}
    part = Partition.build(tree, dsca.dsca_rules(HEADS, block_width=4, attention="block"))
    ids = _leaves(part.broadcast(jnp.arange(part.num_components), fill=-1))
    k = np.asarray(ids["h/0/attn/c_attn/kernel"])  # [D, 3, H, Dh]
    assert len(np.unique(k)) == HEADS * DH // 4
    for c in np.unique(k):
        where = np.nonzero(k == c)
        assert len(np.unique(where[2])) == 1  # one head
        assert set(np.unique(where[1])) == {0, 1, 2}  # its q, k and v slices together
        assert len(np.unique(where[3])) == 4
    b = np.asarray(ids["h/0/attn/c_attn/bias"])
    np.testing.assert_array_equal(b, k[0])  # the bias's blocks are the kernel's
    o = np.asarray(ids["h/0/attn/c_proj/kernel"])  # [H, Dh, D]: its own o_block kind
    assert len(np.unique(o)) == HEADS * DH // 4 and not set(np.unique(o)) & set(np.unique(k))
