"""dsca.adjust: the closed loop of MFTC appendix D.3 acts on the diagnostics."""

import math
from types import SimpleNamespace

import pytest

from rgft_jax import dsca

NAN = float("nan")


def _lib(kappa=0.99, ari=0.95, nmi=0.95, drift=0.0, grad_drift=0.05,
         module_stability=(0.9, 1.0, NAN), valid=(True, True, False)):
    return SimpleNamespace(kappa=kappa, ari=ari, nmi=nmi, drift=drift, grad_drift=grad_drift,
                           module_stability=module_stability, valid=valid)


def _cfg(**kw):
    return dsca.DSCAConfig(**dict(dict(num_blocks=400, num_modules=8, embed_dim=8), **kw))


def test_in_range_changes_nothing():
    cfg = _cfg()
    out = dsca.adjust(_lib(), cfg)
    assert out.config is cfg and out.actions == () and not out.fallback
    # The first update's NaN stability and drift are not findings.
    assert dsca.adjust(_lib(ari=NAN, nmi=NAN, drift=NAN), cfg).config is cfg


def test_low_kappa_doubles_r_then_falls_back_to_lora():
    cfg = _cfg()
    out = dsca.adjust(_lib(kappa=0.5), cfg, max_embed_dim=16)
    assert out.config.embed_dim == 16 and not out.fallback
    assert out.actions == ("embed_dim 8 -> 16",)
    again = dsca.adjust(_lib(kappa=0.5), out.config, max_embed_dim=16)
    assert again.fallback and again.config.embed_dim == 16
    assert "fall back to LoRA" in again.actions[0]


def test_sparse_graph_keeps_r_below_a_fifth_of_the_blocks():
    cfg = _cfg(num_blocks=60, embed_dim=8, graph="sparse", num_modules=4)
    out = dsca.adjust(_lib(kappa=0.1), cfg)
    assert out.config.embed_dim == 11  # < 60 / 5
    dsca.DSCAConfig(**{**cfg.__dict__, "embed_dim": out.config.embed_dim})  # valid


@pytest.mark.parametrize("lib", [_lib(ari=0.3), _lib(nmi=0.5),
                                 _lib(drift=0.9 * math.sqrt(16)), _lib(grad_drift=0.6),
                                 _lib(module_stability=(0.9, 0.4, NAN))])
def test_instability_or_drift_raises_alpha_up_to_the_cap(lib):
    cfg = _cfg(alpha=0.9)
    out = dsca.adjust(lib, cfg)
    assert out.config.alpha == pytest.approx(0.95) and out.config.embed_dim == 8
    capped = dsca.adjust(lib, _cfg(alpha=0.97), max_alpha=0.98)
    assert capped.config.alpha == pytest.approx(0.98)
    assert dsca.adjust(lib, capped.config, max_alpha=0.98).config is capped.config


def test_an_unstable_empty_module_is_not_a_finding_and_advice_names_the_module():
    cfg = _cfg()
    assert dsca.adjust(_lib(module_stability=(0.9, 1.0, 0.0)), cfg).config is cfg
    advice = dsca.diagnose(_lib(module_stability=(0.9, 0.4, NAN)), cfg)
    assert len(advice) == 1 and "module 1 0.40" in advice[0]


def test_low_kappa_raises_an_explicit_kappa_rank_and_keeps_the_window_above_it():
    cfg = _cfg(kappa_rank=12, subspace_window=16)
    out = dsca.adjust(_lib(kappa=0.5), cfg, max_embed_dim=16)
    assert out.config.embed_dim == 16 and out.config.kappa_rank == 16
    assert out.config.subspace_window == 32
    assert out.actions == ("embed_dim 8 -> 16", "kappa_rank 12 -> 16",
                           "subspace_window 16 -> 32")
