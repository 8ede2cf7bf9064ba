"""Method constructors, the registry, and what each method builds for a params tree."""

import dataclasses
import re

import jax
import numpy as np
import pytest
from flax import nnx

from rgft_jax.components import key_path_to_str
from rgft_jax.training import _methods, methods

from .conftest import NUM_HEADS, bert

KINDS = ("full", "rgft", "rgft_chain", "lora", "bitfit", "top_layers", "layers", "random_mask",
         "magnitude_mask", "modules")


def _params():
    return nnx.to_pure_dict(nnx.state(bert(2), nnx.Param))


def _build(method, params=None):
    return method.build(params or _params(), total_steps=10, num_heads=NUM_HEADS, num_layers=2)


def test_every_kind_is_registered_under_its_name():
    assert methods.names()[:len(KINDS)] == KINDS
    for kind in KINDS:
        args = ([True],) if kind == "modules" else ()
        m = methods.get(kind)(*args)
        assert m.kind == kind == m.label
        with pytest.raises(dataclasses.FrozenInstanceError):
            m.learning_rate = 1.0


def test_constructor_arguments_are_their_own():
    assert methods.top_layers(3).k == 3
    assert methods.random_mask(0.25).update_ratio == 0.25
    assert methods.lora(4, targets=r"query$").targets == ("query$",)
    assert methods.rgft(threshold=("budget", 0.4)).budget == 0.4
    with pytest.raises(TypeError, match="update_every"):
        methods.full(update_every=3)  # not a knob of full fine-tuning


def test_plans_of_the_builtin_methods():
    params = _params()
    n = len(jax.tree.leaves(params))
    tx, part, trainable = _build(methods.full(), params)
    assert part is None and trainable is None
    tx, part, trainable = _build(methods.top_layers(1), params)
    assert part is None and "layers/(?:1)/" in trainable
    tx, part, trainable = _build(methods.rgft(), params)
    assert part is not None and trainable is None and len(part.leaves) == n
    state = tx.init(params)  # the plan's optimizer runs on the whole params tree
    assert jax.tree.structure(tx.update(params, state, params)[0]) == jax.tree.structure(params)


@pytest.mark.parametrize("make", [methods.random_mask, methods.magnitude_mask])
def test_ratio_masks_stop_at_the_target_ratio(make):
    params = _params()
    method = make(0.3, seed=1)
    part = method.partition(params, NUM_HEADS)
    mask = method.initial_mask(part, params, None)
    frac = part.sizes[mask].sum() / part.sizes.sum()
    # Components are added until the target is reached: at least 30 %, by at most one more.
    assert 0.3 <= frac < 0.3 + part.sizes.max() / part.sizes.sum()
    assert np.array_equal(method.initial_mask(part, params, None), mask)  # deterministic
    assert method.initial_mask(part, params, 0.6).sum() > mask.sum()  # target_ratio wins


def test_modules_mask_must_match_the_partition():
    with pytest.raises(ValueError, match="modules: mask has 2 entries but the partition has"):
        _build(methods.modules([True, False]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Embeddings(methods.Method):
    """A method the engine does not know: train only the embeddings (and the head)."""

    kind = "embeddings_only"

    def trainable_regex(self, num_layers):
        return r"(?:embeddings/|^classifier/)"


def test_chosen_layers_train_or_get_adapters_only_there():
    # The Layer Card's path into training: full training of chosen layers (partial backprop)
    # and LoRA restricted to them (PEFT's layers_to_transform).
    params = _params()
    _, _, trainable = _build(methods.layers([0]), params)
    paths = [key_path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    hit = [p for p in paths if re.search(trainable, p)]
    assert any("layers/0/" in p for p in hit) and not any("layers/1/" in p for p in hit)
    assert any(p.startswith("classifier/") for p in hit)
    model = bert(2)
    adapted = methods.lora(2, targets=(r"attention/query$", r"mlp/up$"), layers=[1]).prepare_model(
        model)
    assert sorted(adapted) == ["encoder/layers/1/attention/query", "encoder/layers/1/mlp/up"]
    with pytest.raises(ValueError, match=r"layers=\(5,\) has \[5\] but the model has 2 layers"):
        _build(methods.layers([5]), params)
    with pytest.raises(ValueError, match="layers"):
        methods.lora(layers=[])


def test_a_new_method_plugs_in_through_the_registry():
    methods.register("embeddings_only", _Embeddings)
    try:
        assert "embeddings_only" in methods.names()
        with pytest.raises(ValueError, match="taken"):
            methods.register("embeddings_only", _Embeddings)
        methods.register("embeddings_only", _Embeddings, replace=True)
        method = methods.get("embeddings_only")(learning_rate=1e-3)
        params = _params()
        tx, part, trainable = _build(method, params)
        assert part is None
        paths = [key_path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        grads, state = jax.tree.map(np.ones_like, params), tx.init(params)
        for _ in range(2):  # the first step has learning rate 0 (warm-up)
            updates, state = tx.update(grads, state, params)
        moved = {p for p, u in zip(paths, jax.tree.leaves(updates)) if np.any(u != 0)}
        assert moved and all("embeddings/" in p or p.startswith("classifier/") for p in moved)
    finally:
        _methods._REGISTRY.pop("embeddings_only", None)


def test_base_classes_point_to_the_constructors():
    with pytest.raises(TypeError, match=r"Method\('rgft', ...\) -> .*methods.get\('rgft'\)"):
        methods.Method("rgft")
    with pytest.raises(TypeError, match="base class"):
        _methods._Masked()


@pytest.mark.parametrize("name", ["METHOD_KINDS", "build_optimizer", "component_rules",
                                  "fixed_mask", "sparse_pattern"])
def test_moved_names_say_where_they_went(name):
    import rgft_jax.training as training

    with pytest.raises(AttributeError, match=f"{name} is no longer public; use "):
        getattr(training, name)
