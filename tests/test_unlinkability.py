"""ISO/IEC 30136 unlinkability (D_sys) and renewability, on constructed scores and synthetic embeddings."""

import numpy as np
import pytest

from facepii.datasets import FaceSet
from facepii.metrics._linkability import dsys, local_linkability
from facepii.stages import EmbeddedSet, protect
from facepii.unlinkability import unlinkability


def test_dsys_on_constructed_scores():
    rng = np.random.default_rng(0)
    nonmated = rng.normal(0.0, 0.1, 5000)
    assert dsys(rng.normal(1.0, 0.1, 500), nonmated) == pytest.approx(1.0)     # fully linkable
    assert dsys(nonmated, nonmated) == 0.0                                      # identical distributions
    assert dsys(rng.normal(0.0, 0.1, 50_000), rng.normal(0.0, 0.1, 50_000)) < 0.05
    half = dsys(np.r_[rng.normal(1.0, 0.1, 500), rng.normal(0.0, 0.1, 500)], nonmated)
    assert 0.4 < half < 0.6                                                     # half the mated pairs linkable
    _, d, pm, pn = local_linkability(rng.normal(0.5, 0.2, 500), nonmated)
    assert ((0 <= d) & (d <= 1)).all() and pm.sum() == pytest.approx(1) and pn.sum() == pytest.approx(1)


def world(n_ids=60, per=3, d=64, spread=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, d))
    E = (np.repeat(centres, per, axis=0) + spread * rng.normal(size=(n_ids * per, d))).astype(np.float32)
    labels = np.repeat([f"id{i}" for i in range(n_ids)], per)
    fs = FaceSet(labels=labels, embeddings=E, source="synthetic")
    return EmbeddedSet(fs, {"target": E}, {"target": {"comparator": "cosine"}}, None, [], {})


@pytest.mark.parametrize("spec, params, linkable, renewable", [
    ("none", {}, True, False),                       # raw embeddings: fully linkable, nothing to renew
    ("noise", {"sigma": 0.02}, True, False),         # fresh noise does not unlink
    ("projection", {"dim": 32}, False, True),        # a new key: unrelated templates
    ("biohash", {"bits": 32}, False, True),
    ("quantize", {"bits": 4}, True, False),          # deterministic and unkeyed: no renewal possible
])
def test_unlinkability_and_renewability_per_defense(spec, params, linkable, renewable):
    emb = world()
    t = protect(emb, spec, params, None, "disclosed", seed=0)
    iso = unlinkability(emb, t, n_boot=200, seed=0)
    d, match = iso.dsys.value, iso.renewal_match.value
    if linkable:
        assert d > 0.85, d
    else:
        assert d < 0.25, d
    assert (match < 0.1) if renewable else (match > 0.5), match


def test_gate_rules_on_iso_figures():
    from facepii.gate import judge_rule

    row = {"defense": "biohash", "params": {}, "iso30136": {
        "scenario": "re-issued key", "unlinkability": {"dsys": {"value": 0.05, "ci95": [0.02, 0.08]}},
        "renewability": {"old_template_match@fmr=1e-3": {"value": 0.0, "ci95": [0.0, 0.02]}}}}
    assert judge_rule("max_dsys", 0.1, row, None).passed
    assert not judge_rule("max_dsys", 0.05, row, None).passed      # judged on the upper bound
    assert judge_rule("max_renewal_match", 0.05, row, None).passed
    assert not judge_rule("max_dsys", 0.5, {"defense": "x", "params": {}}, None).passed  # missing: fails
